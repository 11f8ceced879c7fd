//! Login proofs: accepted from the enrolled key only, for its device and
//! the current challenge.

use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};

use super::*;

fn key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(t))
}

const CHALLENGE: [u8; 32] = [5; 32];

fn proof(device: &str, challenge: &[u8], timestamp: u64, k: &FileKeySource) -> Vec<u8> {
    LoginProof { device_id: device.into(), challenge: challenge.to_vec(), timestamp }.sign(k).unwrap()
}

#[test]
fn proofs_verify_with_the_enrolled_key_only() {
    for t in [KeyType::P256, KeyType::Ed25519] {
        let k = key(t);
        let policy = LoginPolicy {
            device_key: k.public_key(),
            device_id: "dev-1",
            challenge: &CHALLENGE,
            now: Some(10_000),
            max_clock_skew: 300,
        };
        let good = proof("dev-1", &CHALLENGE, 10_100, &k);
        let v = verify_login_proof(&good, &policy).unwrap();
        assert_eq!((v.device_id(), v.timestamp(), v.key_id()), ("dev-1", 10_100, k.key_id()));
        assert_eq!(claimed_device_id(&proof("dev-1", &CHALLENGE, 0, &k)).unwrap(), "dev-1");
        // No clock on the device: never a skew error.
        verify_login_proof(&proof("dev-1", &CHALLENGE, 0, &k), &policy).unwrap();

        // Another device's key (what a device stealing another's id has).
        let thief = key(t);
        let e = verify_login_proof(&proof("dev-1", &CHALLENGE, 0, &thief), &policy).unwrap_err();
        assert!(matches!(e, LoginError::UnknownKey), "{e}");
        // A valid proof of this device for another device id.
        let e = verify_login_proof(&proof("dev-2", &CHALLENGE, 0, &k), &policy).unwrap_err();
        assert!(matches!(e, LoginError::WrongDevice));
        // An old proof, replayed against a new challenge.
        let e = verify_login_proof(&proof("dev-1", &[6; 32], 0, &k), &policy).unwrap_err();
        assert!(matches!(e, LoginError::ChallengeMismatch));
        assert_eq!(e.code(), "challenge-mismatch");
        // A clock far off, when the server asks for a check.
        let e = verify_login_proof(&proof("dev-1", &CHALLENGE, 20_000, &k), &policy).unwrap_err();
        assert!(matches!(e, LoginError::ClockSkew { timestamp: 20_000, now: 10_000, max_skew: 300 }));
        verify_login_proof(&proof("dev-1", &CHALLENGE, 20_000, &k), &LoginPolicy { now: None, ..policy }).unwrap();
        // Tampered payload: timestamp changed after signing.
        let mut t = proof("dev-1", &CHALLENGE, 10_001, &k);
        let at = t.windows(3).position(|w| w == [0x03, 0x19, 0x27]).unwrap();
        t[at + 2] ^= 1;
        assert!(matches!(verify_login_proof(&t, &policy), Err(LoginError::SignatureInvalid)));
        // Truncations never verify.
        for cut in 0..good.len() {
            assert!(verify_login_proof(&good[..cut], &policy).is_err());
        }
    }
}

#[test]
fn device_ids_are_url_safe() {
    for ok in ["a", "dev-1", "SN:0042.rev_b", &"x".repeat(128)] {
        assert!(valid_device_id(ok), "{ok}");
    }
    for bad in ["", "a b", "a/b", "ü", &"x".repeat(129), "a?b"] {
        assert!(!valid_device_id(bad), "{bad}");
    }
    let k = key(KeyType::Ed25519);
    assert!(LoginProof { device_id: "a/b".into(), challenge: CHALLENGE.to_vec(), timestamp: 0 }.sign(&k).is_err());
    assert!(LoginProof { device_id: "a".into(), challenge: vec![0; 8], timestamp: 0 }.sign(&k).is_err());
}
