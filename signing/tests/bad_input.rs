//! Hostile and broken input: every case is a typed error, never a panic.
//! (Bounded memory is shown in `no_alloc.rs`: verification allocates nothing.)

use gantry_keys::cbor_vec::VecWriter;
use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use gantry_signing::build::{
    CONFIG_PAYLOAD, ContainerRelease, add_signature, class_id_from_model, vendor_id_from_domain,
};
use gantry_signing::config::ContainerConfig;
use gantry_signing::cose::{Sign1, TagRule};
use gantry_signing::inspect::inspect;
use gantry_signing::{Envelope, Error, IntegratedPayload, Policy, verify, verify_pinned};

fn key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(t))
}

fn release(seq: u64) -> Vec<u8> {
    let config = ContainerConfig::from_toml("name = \"bad\"\nversion = \"1\"\n").unwrap();
    let vendor = vendor_id_from_domain("example.com");
    ContainerRelease {
        config: &config,
        module: b"\0asm\x01\0\0\0 module bytes",
        blobs: &[],
        sequence: seq,
        vendor_id: vendor,
        class_id: class_id_from_model(&vendor, "board"),
    }
    .build_unsigned()
    .unwrap()
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncations_and_bit_flips_never_verify() {
    let k = key(KeyType::Ed25519);
    let anchors = [k.public_key().clone()];
    let signed = add_signature(&release(3), &k).unwrap();
    let policy = Policy::new(&anchors, 1);
    verify(&signed, &policy).unwrap();
    for cut in 0..signed.len() {
        assert!(verify(&signed[..cut], &policy).is_err(), "prefix of {cut} bytes verified");
    }
    let digest = *verify(&signed, &policy).unwrap().digest();
    let (mut refused, mut harmless) = (0, 0);
    for pos in 0..signed.len() {
        for bit in [0x01, 0x80] {
            let mut b = signed.clone();
            b[pos] ^= bit;
            match verify(&b, &policy) {
                Err(_) => refused += 1,
                // A flip in the integrated config is not a SUIT signature
                // matter: verify() passes and the config's signed digest
                // and size catch it before anyone reads the config.
                Ok(m) if m.check_integrated_payloads().is_err() => refused += 1,
                // A flip in the unprotected header (e.g. the kid label) is
                // not integrity-protected by COSE, and changes nothing that is
                // installed: the same manifest, signed by the same key.
                Ok(m) => {
                    assert_eq!(m.digest(), &digest, "flip at byte {pos} changed the manifest");
                    harmless += 1;
                }
            }
        }
    }
    assert_eq!(refused + harmless, signed.len() * 2);
    assert!(harmless <= 4, "{harmless} flips accepted");
}

#[test]
fn random_bytes_are_refused() {
    let k = key(KeyType::P256);
    let anchors = [k.public_key().clone()];
    let policy = Policy::new(&anchors, 1);
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    for round in 0..20_000 {
        let len = (rng.next() % 300) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the time, start like an envelope to get past the first checks.
        if round % 2 == 0 && len > 3 {
            buf[..3].copy_from_slice(&[0xd8, 0x6b, 0xa2]);
        }
        assert!(verify(&buf, &policy).is_err());
        let _ = inspect(&buf);
        let _ = Sign1::parse(&buf, TagRule::Optional);
        let _ = ContainerConfig::from_cbor(&buf);
    }
}

#[test]
fn wrong_tags() {
    let k = key(KeyType::Ed25519);
    let anchors = [k.public_key().clone()];
    let policy = Policy::new(&anchors, 1);
    let mut b = add_signature(&release(1), &k).unwrap();
    b[1] = 0x6c; // tag 108
    assert!(matches!(verify(&b, &policy), Err(Error::WrongTag { expected: 107, found: 108 })));
    // A COSE_Sign (98) where a COSE_Sign1 belongs, and a COSE_Mac0.
    assert!(matches!(
        Sign1::parse(&[0xd8, 0x62, 0x84, 0x40, 0xa0, 0xf6, 0x40], TagRule::Required),
        Err(Error::WrongTag { expected: 18, found: 98 })
    ));
    assert!(matches!(
        Sign1::parse(&[0xd1, 0x84, 0x40, 0xa0, 0xf6, 0x40], TagRule::Required),
        Err(Error::UnsupportedAuthentication)
    ));
    assert!(matches!(Sign1::parse(&[0x84, 0x40, 0xa0, 0xf6, 0x40], TagRule::Required), Err(Error::Missing(_))));
}

#[test]
fn huge_length_claims_and_deep_nesting() {
    let k = key(KeyType::Ed25519);
    let anchors = [k.public_key().clone()];
    let policy = Policy::new(&anchors, 1);
    // {2: bstr of 4 GiB - 1 (absent)}
    let four_gib = [0xd8, 0x6b, 0xa1, 0x02, 0x5a, 0xff, 0xff, 0xff, 0xff, 0x00];
    assert!(matches!(verify(&four_gib, &policy), Err(Error::Cbor { .. })));
    let eight_byte = [0xd8, 0x6b, 0xa1, 0x02, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(verify(&eight_byte, &policy), Err(Error::Cbor { .. })));
    // An array claiming 2^32 elements, an array of 100,000 nested arrays.
    assert!(matches!(
        verify(&[0xd8, 0x6b, 0xa1, 0x01, 0x9a, 0xff, 0xff, 0xff, 0xff], &policy),
        Err(Error::LimitExceeded { .. })
    ));
    let mut deep = vec![0xd8, 0x6b, 0xa1, 0x01];
    deep.extend(std::iter::repeat_n(0x81, 100_000));
    deep.push(0x00);
    assert!(matches!(verify(&deep, &policy), Err(Error::TooDeep)));
    // Indefinite lengths are not deterministic encoding.
    assert!(matches!(verify(&[0xd8, 0x6b, 0xbf, 0xff], &policy), Err(Error::NonCanonical { .. })));
}

#[test]
fn duplicate_and_non_canonical_keys() {
    let k = key(KeyType::Ed25519);
    let anchors = [k.public_key().clone()];
    let policy = Policy::new(&anchors, 1);
    let signed = add_signature(&release(1), &k).unwrap();
    let env = Envelope::parse(&signed).unwrap();
    let auth = env.authentication_wrapper();
    let manifest = env.manifest().wrapped;
    let bstr = |b: &[u8]| {
        let mut v = vec![0x59, (b.len() >> 8) as u8, b.len() as u8];
        v.extend_from_slice(b);
        v
    };
    let build = |entries: &[(&[u8], &[u8])]| {
        let mut v = vec![0xd8, 0x6b, 0xa0 + entries.len() as u8];
        for (k, val) in entries {
            v.extend_from_slice(k);
            v.extend_from_slice(val);
        }
        v
    };
    let a = bstr(auth);
    // The members in order verify (with a non-minimal bstr length, which is a value, not a key)...
    let ok = build(&[(&[0x02], &a), (&[0x03], manifest)]);
    verify(&ok, &policy).unwrap();
    // ...but not reordered, duplicated, or with a non-minimal key.
    assert!(matches!(verify(&build(&[(&[0x03], manifest), (&[0x02], &a)]), &policy), Err(Error::NonCanonical { .. })));
    assert!(matches!(
        verify(&build(&[(&[0x02], &a), (&[0x02], &a), (&[0x03], manifest)]), &policy),
        Err(Error::DuplicateKey { .. })
    ));
    assert!(matches!(
        verify(&build(&[(&[0x18, 0x02], &a), (&[0x03], manifest)]), &policy),
        Err(Error::NonCanonical { .. })
    ));
}

/// The signed digest (auth-wrapper element 0) of an envelope.
fn signed_digest(envelope: &[u8]) -> Vec<u8> {
    let env = Envelope::parse(envelope).unwrap();
    let mut d = minicbor::Decoder::new(env.authentication_wrapper());
    d.array().unwrap();
    d.bytes().unwrap().to_vec()
}

/// A COSE_Sign1 over the envelope's digest with `protected`, signed by `key`.
fn sign1(envelope: &[u8], protected: coset::Header, key: &FileKeySource) -> Vec<u8> {
    let block = coset::CoseSign1Builder::new()
        .protected(protected)
        .create_detached_signature(&signed_digest(envelope), b"", |m| key.sign(m).unwrap())
        .build();
    coset::TaggedCborSerializable::to_tagged_vec(block).unwrap()
}

/// The envelope with its authentication blocks replaced by `blocks`.
fn with_blocks(envelope: &[u8], blocks: &[Vec<u8>]) -> Vec<u8> {
    let env = Envelope::parse(envelope).unwrap();
    let mut a = minicbor::Encoder::new(VecWriter::default());
    a.array(1 + blocks.len() as u64).unwrap().bytes(&signed_digest(envelope)).unwrap();
    for b in blocks {
        a.bytes(b).unwrap();
    }
    let mut e = minicbor::Encoder::new(VecWriter::default());
    e.tag(minicbor::data::Tag::new(107)).unwrap().map(3).unwrap();
    e.u8(2).unwrap().bytes(&a.into_writer().0).unwrap().u8(3).unwrap();
    e.writer_mut().0.extend_from_slice(env.manifest().wrapped);
    e.str("#config").unwrap().bytes(env.integrated_payload("#config").unwrap()).unwrap();
    e.into_writer().0
}

#[test]
fn a_signature_in_an_unknown_algorithm_does_not_veto_a_valid_one() {
    let ed = key(KeyType::Ed25519);
    let anchors = [ed.public_key().clone()];
    let unsigned = release(2);
    let alg = |a| coset::HeaderBuilder::new().algorithm(a).build();
    // ES384 is not in Gantry's set: the block is skipped, not fatal.
    let future = sign1(&unsigned, alg(coset::iana::Algorithm::ES384), &ed);
    let good = sign1(&unsigned, alg(coset::iana::Algorithm::EdDSA), &ed);
    verify(&with_blocks(&unsigned, &[future.clone(), good]), &Policy::new(&anchors, 1)).unwrap();
    let alone = with_blocks(&unsigned, &[future]);
    assert!(matches!(verify(&alone, &Policy::new(&anchors, 1)), Err(Error::UnsupportedAlgorithm(-35))));
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let pos = hay.windows(needle.len()).position(|w| w == needle).expect("needle");
    let mut v = hay[..pos].to_vec();
    v.extend_from_slice(with);
    v.extend_from_slice(&hay[pos + needle.len()..]);
    v
}

#[test]
fn algorithm_must_match_the_key_and_crit_must_be_understood() {
    let ed = key(KeyType::Ed25519);
    let anchors = [ed.public_key().clone()];
    let signed = add_signature(&release(1), &ed).unwrap();
    // Protected header {1: -19} (bstr a1 01 32) rewritten to {1: -9} (ESP256).
    let lied = replace(&signed, &[0x43, 0xa1, 0x01, 0x32], &[0x43, 0xa1, 0x01, 0x28]);
    let err = verify(&lied, &Policy::new(&anchors, 1)).unwrap_err();
    assert!(matches!(err, Error::Key(gantry_keys::KeyError::AlgorithmMismatch { .. })), "{err}");
    assert_eq!(err.code(), "algorithm-mismatch");
    // An unknown algorithm.
    let unknown = replace(&signed, &[0x43, 0xa1, 0x01, 0x32], &[0x43, 0xa1, 0x01, 0x20]);
    assert!(matches!(verify(&unknown, &Policy::new(&anchors, 1)), Err(Error::UnsupportedAlgorithm(-1))));

    // A correctly signed block whose protected header marks IV (5) critical:
    // a parameter this verifier does not process, so it must refuse.
    let unsigned = release(1);
    let crit_header = coset::HeaderBuilder::new()
        .algorithm(coset::iana::Algorithm::EdDSA)
        .add_critical(coset::iana::HeaderParameter::Iv)
        .build();
    let crit = with_blocks(&unsigned, &[sign1(&unsigned, crit_header, &ed)]);
    assert!(matches!(verify(&crit, &Policy::new(&anchors, 1)), Err(Error::UnknownCriticalHeader)));
}

#[test]
fn rollback_identity_and_thresholds() {
    let a = key(KeyType::Ed25519);
    let b = key(KeyType::P256);
    let anchors = [a.public_key().clone(), b.public_key().clone()];
    let one = add_signature(&release(5), &a).unwrap();
    let err = verify(&one, &Policy::new(&anchors, 1).min_sequence(6)).unwrap_err();
    assert!(matches!(err, Error::SequenceTooLow { sequence: 5, minimum: 6 }));
    assert_eq!(err.code(), "sequence-too-low");
    assert!(matches!(verify(&one, &Policy::new(&anchors, 2)), Err(Error::ThresholdNotMet { have: 1, need: 2 })));
    let both = add_signature(&one, &b).unwrap();
    verify(&both, &Policy::new(&anchors, 2)).unwrap();
    // The same key trusted twice does not make one signature count twice.
    let twice = [a.public_key().clone(), a.public_key().clone()];
    assert!(matches!(verify(&one, &Policy::new(&twice, 2)), Err(Error::Invalid(_))));
    // A key the policy does not trust, naming itself by key id.
    let stranger = key(KeyType::Ed25519);
    let by_stranger = add_signature(&release(5), &stranger).unwrap();
    assert!(matches!(verify(&by_stranger, &Policy::new(&anchors, 1)), Err(Error::UnknownSigner)));
    // Unsafe policies are refused rather than read as "accept anything".
    assert!(verify(&one, &Policy::new(&anchors, 0)).is_err());
    assert!(verify(&one, &Policy::new(&[], 0)).is_err());
    assert!(verify(&one, &Policy::new(&anchors, 3)).is_err());
    let vendor = vendor_id_from_domain("example.com");
    let other = vendor_id_from_domain("example.org");
    assert!(matches!(verify(&one, &Policy::new(&anchors, 1).identity(Some(&other), None)), Err(Error::WrongVendor)));
    verify(&one, &Policy::new(&anchors, 1).identity(Some(&vendor), Some(&class_id_from_model(&vendor, "board"))))
        .unwrap();
}

/// What a device verified once is re-checked by its recorded digest: its
/// signer may since have left the trust root, but a changed manifest, a
/// wrong digest, a sequence below the minimum or another device's class is
/// still refused, and bit flips never pass.
#[test]
fn a_pinned_digest_rechecks_what_was_verified_before() {
    let signer = key(KeyType::P256);
    let signed = add_signature(&release(7), &signer).unwrap();
    let digest = *verify(&signed, &Policy::new(&[signer.public_key().clone()], 1)).unwrap().digest();
    let rotated = [key(KeyType::Ed25519).public_key().clone()];
    let policy = Policy::new(&rotated, 1);
    assert!(matches!(verify(&signed, &policy), Err(Error::UnknownSigner)));
    let m = verify_pinned(&signed, &digest, &policy).unwrap();
    assert_eq!((m.digest(), m.sequence_number(), m.signer_indices().count()), (&digest, 7, 0));

    let other = add_signature(&release(8), &signer).unwrap();
    assert!(matches!(verify_pinned(&other, &digest, &policy), Err(Error::DigestMismatch)));
    assert!(matches!(
        verify_pinned(&signed, &digest, &policy.min_sequence(8)),
        Err(Error::SequenceTooLow { sequence: 7, minimum: 8 })
    ));
    let vendor = vendor_id_from_domain("example.com");
    let class = class_id_from_model(&vendor, "other-board");
    assert!(matches!(verify_pinned(&signed, &digest, &policy.identity(None, Some(&class))), Err(Error::WrongClass)));
    // Every flip in the manifest is refused (signature bytes are not
    // looked at, so flips there are not).
    let wrapped = Envelope::parse(&signed).unwrap().manifest().wrapped;
    let start = wrapped.as_ptr() as usize - signed.as_ptr() as usize;
    for pos in start..start + wrapped.len() {
        let mut b = signed.clone();
        b[pos] ^= 0x10;
        assert!(verify_pinned(&b, &digest, &policy).is_err(), "flip at {pos} passed");
    }
    for cut in 0..signed.len() {
        assert!(verify_pinned(&signed[..cut], &digest, &policy).is_err(), "prefix of {cut} bytes");
    }
}

/// The envelope with its integrated payloads replaced by `payloads`, given
/// in deterministic key order.
fn with_payloads(envelope: &[u8], payloads: &[(&str, &[u8])]) -> Vec<u8> {
    let env = Envelope::parse(envelope).unwrap();
    let mut e = minicbor::Encoder::new(VecWriter::default());
    e.tag(minicbor::data::Tag::new(107)).unwrap().map(2 + payloads.len() as u64).unwrap();
    e.u8(2).unwrap().bytes(env.authentication_wrapper()).unwrap().u8(3).unwrap();
    e.writer_mut().0.extend_from_slice(env.manifest().wrapped);
    for (name, bytes) in payloads {
        e.str(name).unwrap().bytes(bytes).unwrap();
    }
    e.into_writer().0
}

#[test]
fn integrated_payloads_are_checked_against_their_signed_component() {
    let k = key(KeyType::Ed25519);
    let anchors = [k.public_key().clone()];
    let policy = Policy::new(&anchors, 1);
    let signed = add_signature(&release(1), &k).unwrap();
    let config = Envelope::parse(&signed).unwrap().integrated_payload(CONFIG_PAYLOAD).unwrap().to_vec();

    // As built: the config comes back, from component 1, ["bad", "config"].
    let m = verify(&signed, &policy).unwrap();
    assert_eq!(m.integrated_payload(CONFIG_PAYLOAD).unwrap(), Some(IntegratedPayload { component: 1, bytes: &config }));
    m.check_integrated_payloads().unwrap();
    assert_eq!(m.integrated_payload("#absent").unwrap(), None);
    assert_eq!(ContainerConfig::from_verified(&m).unwrap().unwrap().name, "bad");

    // Another valid config in place of the signed one. The signatures cover
    // the manifest only, so verify() passes and the envelope hands out the
    // new bytes; the checked accessor refuses them.
    let granted = "name = \"bad\"\nversion = \"1\"\ncapabilities = [\"gantry:kv\"]\n";
    let other = ContainerConfig::from_toml(granted).unwrap().to_cbor();
    let swapped = with_payloads(&signed, &[(CONFIG_PAYLOAD, &other)]);
    let m = verify(&swapped, &policy).unwrap();
    assert_eq!(m.envelope().integrated_payload(CONFIG_PAYLOAD), Some(&other[..]));
    let err = m.integrated_payload(CONFIG_PAYLOAD).unwrap_err();
    assert!(matches!(err, Error::PayloadMismatch { component: 1 }), "{err}");
    assert_eq!(err.code(), "payload-mismatch");
    assert!(matches!(m.check_integrated_payloads(), Err(Error::PayloadMismatch { component: 1 })));
    assert!(matches!(ContainerConfig::from_verified(&m), Err(Error::PayloadMismatch { component: 1 })));

    // Same length, one byte different: the digest catches it.
    let mut flipped = config.clone();
    *flipped.last_mut().unwrap() ^= 0x01;
    let flipped = with_payloads(&signed, &[(CONFIG_PAYLOAD, &flipped)]);
    let m = verify(&flipped, &policy).unwrap();
    assert!(matches!(m.integrated_payload(CONFIG_PAYLOAD), Err(Error::PayloadMismatch { component: 1 })));

    // Left out, while the component still names it.
    let removed = with_payloads(&signed, &[]);
    let m = verify(&removed, &policy).unwrap();
    assert!(matches!(m.integrated_payload(CONFIG_PAYLOAD), Err(Error::PayloadMissing { component: 1 })));
    assert!(matches!(m.check_integrated_payloads(), Err(Error::PayloadMissing { component: 1 })));

    // A payload no component names: no signed digest covers it.
    let extra = with_payloads(&signed, &[("#extra", b"not signed"), (CONFIG_PAYLOAD, &config)]);
    let m = verify(&extra, &policy).unwrap();
    assert!(matches!(m.integrated_payload("#extra"), Err(Error::PayloadUnreferenced)));
    assert!(matches!(m.check_integrated_payloads(), Err(Error::PayloadUnreferenced)));
    assert!(m.integrated_payload(CONFIG_PAYLOAD).unwrap().is_some());
}

#[test]
fn a_container_config_belongs_to_its_own_components() {
    use sha2::Digest as _;
    let k = key(KeyType::Ed25519);
    let anchors = [k.public_key().clone()];
    let unsigned = release(1);
    // Rename the module component ["bad", "module"] to ["bid", "module"] and
    // re-seal the digest, as a signer of another container could.
    let renamed = replace(&unsigned, b"\x43bad\x46module", b"\x43bid\x46module");
    let old = sha2::Sha256::digest(Envelope::parse(&unsigned).unwrap().manifest().wrapped);
    let new = sha2::Sha256::digest(Envelope::parse(&renamed).unwrap().manifest().wrapped);
    let resealed = add_signature(&replace(&renamed, &old, &new), &k).unwrap();
    let m = verify(&resealed, &Policy::new(&anchors, 1)).unwrap();
    // The config itself is intact...
    assert!(m.integrated_payload(CONFIG_PAYLOAD).unwrap().is_some());
    // ...but the release is not one container's.
    let err = ContainerConfig::from_verified(&m).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("[\"bid\", \"module\"] does not belong to container \"bad\""), "{err}");
}
