//! Tickets: what verifies, and each attack refused by its own check.

use gantry_keys::trust::{Role, TrustRoot};
use gantry_keys::{FileKeySource, KeySource as _, KeyType, PublicKey, SigningKey};

use super::*;
use crate::device_auth::LoginProof;

fn key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(t))
}

const NONCE: [u8; 16] = [7; 16];

fn ticket() -> Ticket {
    Ticket {
        device_id: "dev-1".into(),
        nonce: NONCE.to_vec(),
        issued_at: 1_000,
        expires_at: 4_600,
        assignments: vec![
            TicketAssignment {
                stream: "sensor-filter".into(),
                manifest_digest: [1; 32],
                sequence: 4,
                envelope_sha256: [2; 32],
            },
            TicketAssignment {
                stream: "firmware".into(),
                manifest_digest: [3; 32],
                sequence: 9,
                envelope_sha256: [4; 32],
            },
        ],
    }
}

fn policy<'p>(keys: &'p [PublicKey]) -> TicketPolicy<'p> {
    TicketPolicy {
        server_keys: keys,
        server_threshold: 1,
        device_id: "dev-1",
        nonce: &NONCE,
        now: Some(2_000),
        last_issued_at: Some(900),
    }
}

#[test]
fn issued_ticket_verifies_and_names_its_assignments() {
    for t in [KeyType::Ed25519, KeyType::P256] {
        let server = key(t);
        let keys = [key(t).public_key().clone(), server.public_key().clone()];
        let bytes = ticket().sign(&server).unwrap();
        let v = verify_ticket(&bytes, &policy(&keys)).unwrap();
        assert_eq!(v.signer(), server.key_id());
        assert_eq!(v.issued_at(), 1_000);
        assert_eq!(v.contents().expires_at(), 4_600);
        // Deterministic order: the shorter key ("firmware") first.
        let streams: Vec<_> = v.assignments().map(|a| a.stream).collect();
        assert_eq!(streams, ["firmware", "sensor-filter"]);
        let a = v.assignment("sensor-filter").unwrap();
        assert_eq!((a.manifest_digest, a.sequence, a.envelope_sha256), ([1; 32], 4, [2; 32]));
        assert!(v.authorizes("firmware", &[3; 32]));
        assert!(!v.authorizes("firmware", &[1; 32]));
        assert!(!v.authorizes("other", &[1; 32]));
        // No clock, no previous ticket: still fine.
        let p = TicketPolicy { now: None, last_issued_at: None, ..policy(&keys) };
        verify_ticket(&bytes, &p).unwrap();
    }
}

#[test]
fn an_empty_ticket_is_valid() {
    let server = key(KeyType::Ed25519);
    let keys = [server.public_key().clone()];
    let bytes = Ticket { assignments: vec![], ..ticket() }.sign(&server).unwrap();
    let v = verify_ticket(&bytes, &policy(&keys)).unwrap();
    assert_eq!(v.assignments().count(), 0);
}

#[test]
fn attacks_are_refused_by_their_own_check() {
    let server = key(KeyType::Ed25519);
    let keys = [server.public_key().clone()];
    let good = ticket().sign(&server).unwrap();
    let p = policy(&keys);

    // A ticket for another device, validly signed.
    let other = Ticket { device_id: "dev-2".into(), ..ticket() }.sign(&server).unwrap();
    assert!(matches!(verify_ticket(&other, &p), Err(TicketError::WrongDevice)));
    // A replayed ticket: it echoes the nonce of an earlier check-in.
    let fresh = [8u8; 16];
    assert!(matches!(verify_ticket(&good, &TicketPolicy { nonce: &fresh, ..p }), Err(TicketError::NonceMismatch)));
    // Expired, by the device's clock.
    let e = verify_ticket(&good, &TicketPolicy { now: Some(4_600), ..p }).unwrap_err();
    assert!(matches!(e, TicketError::Expired { expires_at: 4_600, now: 4_600 }), "{e}");
    // Older than the last ticket accepted.
    let e = verify_ticket(&good, &TicketPolicy { last_issued_at: Some(1_001), ..p }).unwrap_err();
    assert!(matches!(e, TicketError::Stale { issued_at: 1_000, last_accepted: 1_001 }), "{e}");
    assert_eq!(e.code(), "stale");
    // Same second as the last one: accepted (monotonic, not strictly).
    verify_ticket(&good, &TicketPolicy { last_issued_at: Some(1_000), ..p }).unwrap();
    // Signed by a key that is not a server key (e.g. a release key).
    let stranger = key(KeyType::Ed25519);
    let forged = ticket().sign(&stranger).unwrap();
    assert!(matches!(verify_ticket(&forged, &p), Err(TicketError::UnknownSigner)));
    // ... and without a kid to give it away: the signature fails.
    let no_kid = strip_kid(&forged);
    assert!(matches!(verify_ticket(&no_kid, &p), Err(TicketError::SignatureInvalid)));
    // A server key of the other type: no candidate.
    let p256 = key(KeyType::P256);
    let e = verify_ticket(&ticket().sign(&p256).unwrap(), &p).unwrap_err();
    assert!(matches!(e, TicketError::UnknownSigner));
    // Tampered payload: the sequence number raised after signing.
    let mut tampered = good.clone();
    // {1: h'0101…', 2: 4, …}: the sensor-filter assignment's sequence number.
    let mut needle = vec![1u8; 32];
    needle.extend_from_slice(&[0x02, 0x04]);
    let at = find(&tampered, &needle).unwrap() + 33;
    tampered[at] = 0x05;
    assert!(matches!(verify_ticket(&tampered, &p), Err(TicketError::SignatureInvalid)));
    // A trust root asking for two server signatures cannot authorize tickets.
    let e = verify_ticket(&good, &TicketPolicy { server_threshold: 2, ..p }).unwrap_err();
    assert!(matches!(e, TicketError::ServerThreshold { threshold: 2 }));
    assert!(matches!(verify_ticket(&good, &TicketPolicy { server_keys: &[], ..p }), Err(TicketError::NoServerKeys)));
}

#[test]
fn a_login_proof_never_passes_as_a_ticket() {
    // Same key, same shape of COSE: the external AAD separates them.
    let k = key(KeyType::Ed25519);
    let keys = [k.public_key().clone()];
    let proof = LoginProof { device_id: "dev-1".into(), challenge: NONCE.to_vec(), timestamp: 0 }.sign(&k).unwrap();
    assert!(verify_ticket(&proof, &policy(&keys)).is_err());
    // A ticket payload signed with the login AAD fails the signature.
    let payload = ticket().encode_payload().unwrap();
    let wrong_domain = build::sign_attached(payload, crate::device_auth::LOGIN_AAD, &k).unwrap();
    assert!(matches!(verify_ticket(&wrong_domain, &policy(&keys)), Err(TicketError::SignatureInvalid)));
}

#[test]
fn malformed_tickets_are_typed_errors() {
    let server = key(KeyType::Ed25519);
    let keys = [server.public_key().clone()];
    let p = policy(&keys);
    let good = ticket().sign(&server).unwrap();
    for cut in 0..good.len() {
        assert!(verify_ticket(&good[..cut], &p).is_err());
        assert!(decode_ticket_unverified(&good[..cut]).is_err());
    }
    assert!(matches!(verify_ticket(&vec![0; MAX_TICKET_LEN + 1], &p), Err(TicketError::TooLarge { .. })));
    // Builder refusals mirror the verifier's rules.
    for bad in [
        Ticket { nonce: vec![0; 15], ..ticket() },
        Ticket { nonce: vec![0; 33], ..ticket() },
        Ticket { device_id: "a b".into(), ..ticket() },
        Ticket { expires_at: 1_000, ..ticket() },
        Ticket { assignments: vec![ticket().assignments[0].clone(); 2], ..ticket() },
    ] {
        assert!(bad.sign(&server).is_err(), "{bad:?}");
    }
    // Payloads that are signed but do not follow the format.
    let signed_payload = |payload: Vec<u8>| build::sign_attached(payload, TICKET_AAD, &server).unwrap();
    // A payload map claiming six members.
    let mut six = ticket().encode_payload().unwrap();
    six[0] = 0xa6;
    assert!(matches!(verify_ticket(&signed_payload(six), &p), Err(TicketError::Format(_))));
    assert!(matches!(verify_ticket(&signed_payload(vec![0xa0]), &p), Err(TicketError::Format(_))));
    let mut trailing = ticket().encode_payload().unwrap();
    trailing.push(0);
    assert!(matches!(verify_ticket(&signed_payload(trailing), &p), Err(TicketError::Format(Error::TrailingBytes(_)))));
    // Decoding without verification reads the same contents.
    let c = decode_ticket_unverified(&good).unwrap();
    assert_eq!((c.device_id(), c.nonce(), c.assignment_count()), ("dev-1", &NONCE[..], 2));
}

#[test]
fn server_role_comes_from_the_trust_root() {
    let (r, s, rel) = (key(KeyType::Ed25519), key(KeyType::Ed25519), key(KeyType::P256));
    let root = TrustRoot::new(
        1,
        u64::MAX,
        &[
            (Role::Root, vec![r.public_key().clone()], 1),
            (Role::Server, vec![s.public_key().clone()], 1),
            (Role::Release, vec![rel.public_key().clone()], 1),
        ],
    )
    .unwrap();
    let (keys, threshold) = server_role(&root);
    let p = TicketPolicy { server_threshold: threshold, ..policy(&keys) };
    verify_ticket(&ticket().sign(&s).unwrap(), &p).unwrap();
    // The release key is not a server key.
    assert!(matches!(verify_ticket(&ticket().sign(&rel).unwrap(), &p), Err(TicketError::UnknownSigner)));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites the unprotected header `{4: kid}` to `{}` (keeping the signature).
fn strip_kid(sign1: &[u8]) -> Vec<u8> {
    let at = find(sign1, &[0xa1, 0x04, 0x58, 0x20]).unwrap();
    let mut out = sign1[..at].to_vec();
    out.push(0xa0);
    out.extend_from_slice(&sign1[at + 4 + 32..]);
    out
}

#[test]
fn the_documented_example_has_the_documented_size() {
    // docs/formats.md §11: one assignment, a 16-byte nonce, Ed25519.
    let t = Ticket {
        device_id: "gw-0042".into(),
        nonce: vec![0x5a; 16],
        issued_at: 1_764_160_000,
        expires_at: 1_764_163_600,
        assignments: vec![TicketAssignment {
            stream: "sensor-filter".into(),
            manifest_digest: [1; 32],
            sequence: 4,
            envelope_sha256: [2; 32],
        }],
    };
    assert_eq!(t.sign(&key(KeyType::Ed25519)).unwrap().len(), 239);
}
