use super::*;
use crate::{FileKeySource, KeyType, SigningKey};

fn source(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(t))
}

struct Keys {
    root: Vec<FileKeySource>,
    release: FileKeySource,
    server: FileKeySource,
}

fn keys() -> Keys {
    Keys {
        root: vec![source(KeyType::Ed25519), source(KeyType::P256), source(KeyType::Ed25519)],
        release: source(KeyType::P256),
        server: source(KeyType::P256),
    }
}

fn root_doc(k: &Keys, version: u64, expires: u64) -> SignedTrustRoot {
    let root = TrustRoot::new(
        version,
        expires,
        &[
            (Role::Root, k.root.iter().map(|s| s.public_key().clone()).collect(), 2),
            (Role::Release, vec![k.release.public_key().clone()], 1),
            (Role::Server, vec![k.server.public_key().clone()], 1),
        ],
    )
    .unwrap();
    SignedTrustRoot::new(root).unwrap()
}

const NOW: u64 = 1_800_000_000;

#[test]
fn threshold_of_own_root_keys_is_required() {
    let k = keys();
    let mut doc = root_doc(&k, 1, NOW + 100);
    doc.sign_with(&k.root[0]).unwrap();
    let err = doc.verify_self_signed(NOW).unwrap_err();
    assert!(matches!(err, TrustError::UnderSigned { have: 1, need: 2, .. }), "{err}");
    // A signature by a key outside the root role does not count.
    doc.sign_with(&k.release).unwrap();
    assert!(matches!(doc.verify_self_signed(NOW), Err(TrustError::UnderSigned { have: 1, .. })));
    doc.sign_with(&k.root[1]).unwrap();
    let verified = doc.verify_self_signed(NOW).unwrap();
    assert_eq!(verified.root().role_keys(Role::Release), vec![k.release.public_key().clone()]);
}

#[test]
fn survives_encoding_and_rejects_tampering() {
    let k = keys();
    let mut doc = root_doc(&k, 1, NOW + 100);
    doc.sign_with(&k.root[0]).unwrap();
    doc.sign_with(&k.root[2]).unwrap();
    let bytes = doc.to_bytes();
    let parsed = SignedTrustRoot::from_bytes(&bytes).unwrap();
    assert_eq!(parsed.unverified_content(), doc.unverified_content());
    parsed.verify_self_signed(NOW).unwrap();

    // Flip one bit of the expiry inside the payload: still well-formed, no longer signed.
    let payload = doc.unverified_content().encode();
    let pos = bytes.windows(payload.len()).position(|w| w == payload).unwrap();
    let mut tampered = bytes.clone();
    tampered[pos + 5] ^= 0x01;
    let t = SignedTrustRoot::from_bytes(&tampered).unwrap();
    assert!(matches!(t.verify_self_signed(NOW), Err(TrustError::UnderSigned { have: 0, .. })));
}

#[test]
fn expired_root_is_refused() {
    let k = keys();
    let mut doc = root_doc(&k, 1, NOW);
    doc.sign_with(&k.root[0]).unwrap();
    doc.sign_with(&k.root[1]).unwrap();
    assert!(matches!(doc.verify_self_signed(NOW), Err(TrustError::Expired { .. })));
}

#[test]
fn rotation_needs_old_and_new_thresholds() {
    let old_keys = keys();
    let mut old = root_doc(&old_keys, 1, NOW + 10);
    old.sign_with(&old_keys.root[0]).unwrap();
    old.sign_with(&old_keys.root[1]).unwrap();
    let old = old.verify_self_signed(NOW).unwrap();

    let new_keys = keys();
    let mut next = root_doc(&new_keys, 2, NOW + 1000);
    next.sign_with(&new_keys.root[0]).unwrap();
    next.sign_with(&new_keys.root[1]).unwrap();
    // Self-signed by the new keys only: an attacker's root.
    let err = old.verify_successor(&next, NOW).unwrap_err();
    assert!(matches!(err, TrustError::UnderSigned { which: "the previous root", have: 0, .. }), "{err}");
    // One old key is not enough either.
    next.sign_with(&old_keys.root[2]).unwrap();
    assert!(matches!(old.verify_successor(&next, NOW), Err(TrustError::UnderSigned { have: 1, .. })));
    next.sign_with(&old_keys.root[0]).unwrap();
    let new = old.verify_successor(&next, NOW + 500).unwrap();
    assert_eq!(new.root().version, 2);
    // The old root has expired by now; rotation still works, expiry counts for the new root.
    assert!(old.verify_successor(&next, NOW + 2000).is_err());

    // Old keys alone cannot make a successor that its own keys did not sign.
    let mut rogue = root_doc(&new_keys, 3, NOW + 1000);
    rogue.sign_with(&old_keys.root[0]).unwrap();
    rogue.sign_with(&old_keys.root[1]).unwrap();
    assert!(matches!(old.verify_successor(&rogue, NOW), Err(TrustError::UnderSigned { which: "its own root", .. })));

    // A device holding the expired old root catches up through the chain.
    let chain = [SignedTrustRoot::from_bytes(old.to_bytes()).unwrap(), next.clone()];
    assert_eq!(SignedTrustRoot::verify_chain(&chain, NOW + 500).unwrap().root().version, 2);
    assert!(SignedTrustRoot::verify_chain(&[next.clone(), chain[0].clone()], NOW).is_err());

    // No going back.
    assert!(matches!(new.verify_successor(&next, NOW), Err(TrustError::VersionNotIncreasing { .. })));
}

/// A device that slept through two rotations, holding an expired root,
/// catches up from its own anchor; a chain with a forged link, or nothing
/// newer, is refused.
#[test]
fn a_device_catches_up_through_successors_from_its_own_root() {
    let signed = |k: &Keys, version, expires, by: &[&Keys]| {
        let mut doc = root_doc(k, version, expires);
        for signer in by {
            doc.sign_with(&signer.root[0]).unwrap();
            doc.sign_with(&signer.root[1]).unwrap();
        }
        doc
    };
    let (k1, k2, k3) = (keys(), keys(), keys());
    let v1 = signed(&k1, 1, NOW + 10, &[&k1]);
    let v2 = signed(&k2, 2, NOW + 20, &[&k1, &k2]);
    let v3 = signed(&k3, 3, NOW + 1000, &[&k2, &k3]);
    let held = v1.verify_signatures_only().unwrap();
    assert!(matches!(held.check_unexpired(NOW + 500), Err(TrustError::Expired { version: 1, .. })));
    let caught_up = held.verify_successors(&[v1.clone(), v2.clone(), v3.clone()], NOW + 500).unwrap();
    assert_eq!(caught_up.root().version, 3);
    caught_up.check_unexpired(NOW + 500).unwrap();
    assert!(held.verify_successors(&[v2.clone(), v3.clone()], NOW + 2000).is_err(), "the last one expired");
    assert!(
        matches!(held.verify_successors(std::slice::from_ref(&v3), NOW), Err(TrustError::UnderSigned { .. })),
        "v2 skipped"
    );
    let forged = signed(&k3, 3, NOW + 1000, &[&k3]);
    assert!(held.verify_successors(&[v2.clone(), forged], NOW).is_err());
    assert!(matches!(caught_up.verify_successors(&[v1, v2], NOW), Err(TrustError::VersionNotIncreasing { .. })));
    assert!(matches!(caught_up.verify_successors(&[], NOW), Err(TrustError::VersionNotIncreasing { .. })));
}

#[test]
fn duplicate_signer_and_bad_policies_are_refused() {
    let k = keys();
    let mut doc = root_doc(&k, 1, NOW + 100);
    doc.sign_with(&k.root[0]).unwrap();
    assert!(matches!(doc.sign_with(&k.root[0]), Err(KeyError::Trust(TrustError::AlreadySigned(_)))));

    let pk = k.release.public_key().clone();
    let too_high = TrustRoot::new(
        1,
        NOW,
        &[(Role::Root, vec![pk.clone()], 2), (Role::Release, vec![pk.clone()], 1), (Role::Server, vec![pk.clone()], 1)],
    );
    assert!(matches!(too_high, Err(TrustError::InvalidPolicy(_))));
    let missing = TrustRoot::new(1, NOW, &[(Role::Root, vec![pk.clone()], 1)]);
    assert!(matches!(missing, Err(TrustError::InvalidPolicy(_))));
    let zero = TrustRoot::new(
        1,
        NOW,
        &[(Role::Root, vec![pk.clone()], 0), (Role::Release, vec![pk.clone()], 1), (Role::Server, vec![pk], 1)],
    );
    assert!(matches!(zero, Err(TrustError::InvalidPolicy(_))));
}

#[test]
fn malformed_documents_are_typed_errors() {
    for bad in [&b""[..], &[0xd8, 0x62], &[0xd8, 0x62, 0x84, 0x40, 0xa0, 0xf6, 0x80], &[0x5b, 0, 0, 0, 1, 0, 0, 0, 0]] {
        assert!(matches!(SignedTrustRoot::from_bytes(bad), Err(TrustError::Malformed(_))));
    }
    assert!(matches!(TrustRoot::decode(&[0xa4, 0x01]), Err(TrustError::Malformed(_))));
}
