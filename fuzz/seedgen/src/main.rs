//! Writes seeds for the `cose_key`, `trust_root`, `boot_slot` and
//! `boot_record` fuzz targets into `<corpus>/<target>/`. Deterministic: the
//! keys are the SUIT draft's example ES256 key and the RFC 8032 TEST 1 key.
//!
//! Every slot image seed is run through the same check as the `boot_slot`
//! target (`common.rs`) and must give the outcome its name promises, so the
//! fuzzer starts from images that verify all the way to the digest check.

#[path = "../../common.rs"]
mod common;

use std::path::{Path, PathBuf};

use gantry_boot::image::pack;
use gantry_boot::record::MAX_RECORD_LEN;
use gantry_boot::{BootRecord, Reason, Slot};
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{COSE_KEY_MAX_LEN, FileKeySource, KeySource, SigningKey, encode_cose_key, read_private_key_pem};
use gantry_signing::build::{FirmwareRelease, add_signature};

const RFC8032_TEST1_SECRET: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5,
    0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let corpus = PathBuf::from(args.next().expect("usage: seedgen <corpus-dir> <suit-es256-private.pem>"));
    let pem = std::fs::read_to_string(args.next().expect("missing PEM path")).unwrap();

    let p256 = FileKeySource::from_key("suit-example".into(), read_private_key_pem(&pem, "SUIT example key").unwrap());
    let ed = FileKeySource::from_key(
        "rfc8032-test1".into(),
        SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&RFC8032_TEST1_SECRET)),
    );

    let keys_dir = corpus.join("cose_key");
    for (name, src) in [("p256", &p256), ("ed25519", &ed)] {
        let mut buf = [0u8; COSE_KEY_MAX_LEN];
        let n = encode_cose_key(src.public_key(), &mut buf);
        write(&keys_dir, &format!("{name}-with-kid.cbor"), &buf[..n]);
        write(&keys_dir, &format!("{name}-to_cose_key.cbor"), &src.public_key().to_cose_key());
    }

    let tr_dir = corpus.join("trust_root");
    let (pk, ek) = (p256.public_key().clone(), ed.public_key().clone());
    let variants: [(&str, u64, u32, &[&FileKeySource]); 4] = [
        ("both-signed-th2", 1, 2, &[&p256, &ed]),
        ("p256-signed-th1", 2, 1, &[&p256]),
        ("unsigned-th1", 3, 1, &[]),
        ("ed-signed-th2", 4, 2, &[&ed]),
    ];
    for (name, version, threshold, signers) in variants {
        let root = TrustRoot::new(
            version,
            2_000_000_000,
            &[
                (Role::Root, vec![pk.clone(), ek.clone()], threshold),
                (Role::Release, vec![pk.clone()], 1),
                (Role::Server, vec![ek.clone()], 1),
            ],
        )
        .unwrap();
        write(&tr_dir, &format!("{name}.payload.cbor"), &root.encode());
        let mut doc = SignedTrustRoot::new(root).unwrap();
        for s in signers {
            doc.sign_with(*s as &dyn KeySource).unwrap();
        }
        write(&tr_dir, &format!("{name}.cose"), &doc.to_bytes());
    }

    boot_slot_seeds(&corpus.join("boot_slot"), &ed);
    boot_record_seeds(&corpus.join("boot_record"));
    println!("wrote seeds under {}", corpus.display());
}

/// `len` bytes of deterministic pseudo-firmware.
fn firmware(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

/// A slot image of `firmware` for the target's vendor id and `class_id`,
/// signed by `signer` if any.
fn slot_image(firmware: &[u8], sequence: u64, class_id: [u8; 16], signer: Option<&FileKeySource>) -> Vec<u8> {
    let release = FirmwareRelease { image: firmware, sequence, vendor_id: common::BOOT_VENDOR_ID, class_id };
    let mut envelope = release.build_unsigned().unwrap();
    if let Some(s) = signer {
        envelope = add_signature(&envelope, s).unwrap();
    }
    pack(&envelope, firmware).unwrap()
}

/// Slot images: three that boot (a 1-byte image, one that spans two hashing
/// chunks, one of 4 KiB), then one refusal per stage of the check.
fn boot_slot_seeds(dir: &Path, ed: &FileKeySource) {
    let anchors = [ed.public_key().clone()];
    let (seq, class) = (common::BOOT_MIN_SEQUENCE, common::BOOT_CLASS_ID);
    let mut flipped = slot_image(&firmware(300, 4), seq, class, Some(ed));
    *flipped.last_mut().unwrap() ^= 1;
    let garbage: Vec<u8> = firmware(512, 0x5A);
    let seeds: [(&str, Vec<u8>, Option<Reason>); 9] = [
        ("ok-1-byte", slot_image(&firmware(1, 1), seq, class, Some(ed)), None),
        ("ok-300-bytes", slot_image(&firmware(300, 2), seq + 1, class, Some(ed)), None),
        ("ok-4096-bytes", slot_image(&firmware(4096, 3), u64::MAX, class, Some(ed)), None),
        ("image-flipped", flipped, Some(Reason::ImageDigestMismatch)),
        ("rollback", slot_image(&firmware(64, 5), seq - 1, class, Some(ed)), Some(Reason::Rollback)),
        ("other-class", slot_image(&firmware(64, 6), seq, [0x42; 16], Some(ed)), Some(Reason::WrongDevice)),
        ("unsigned", slot_image(&firmware(64, 7), seq, class, None), Some(Reason::SignatureInvalid)),
        ("garbage", garbage, Some(Reason::BadHeader)),
        ("empty", Vec::new(), Some(Reason::Empty)),
    ];
    for (name, image, expected) in seeds {
        let mut flash = common::boot_flash(&image).expect("seeds fit the fuzzed flash");
        let outcome = common::verify_boot_slot(&mut flash, &anchors).map_err(|e| e.reason());
        match (expected, outcome) {
            (None, Ok(m)) => assert!(m.image_size > 0, "{name}"),
            (Some(want), Err(got)) => assert_eq!(want, got, "{name}"),
            (want, got) => panic!("slot seed {name}: expected {want:?}, the check gave {got:?}"),
        }
        write(dir, &format!("{name}.slot"), &image);
    }
}

/// Boot records as the bootloader hands them over: a first boot, an update
/// on trial, one with every number at its widest, and a refused update for
/// each reason (the decoder matches the reason's code string, which
/// mutation alone rarely spells).
fn boot_record_seeds(dir: &Path) {
    let first = BootRecord {
        manifest_digest: [0x11; 32],
        image_digest: [0x22; 32],
        sequence: 2,
        image_size: 4096,
        boot_count: 1,
        slot: Slot::A,
        trial: false,
        trial_boots: 0,
        security_counter: 2,
        last_failure: None,
    };
    let trial = BootRecord { sequence: 3, boot_count: 2, slot: Slot::B, trial: true, trial_boots: 1, ..first };
    let widest = BootRecord {
        sequence: u64::MAX,
        image_size: u32::MAX,
        boot_count: u32::MAX,
        trial_boots: u16::MAX,
        security_counter: u64::MAX,
        ..trial
    };
    let refused = (1..=u8::MAX)
        .filter_map(Reason::from_u8)
        .map(|r| (format!("refused-{}", r.code()), BootRecord { boot_count: 5, last_failure: Some(r), ..first }));
    let named = [("first-boot", first), ("trial", trial), ("widest", widest)].map(|(n, r)| (n.to_string(), r));
    for (name, record) in named.into_iter().chain(refused) {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let bytes = record.encode(&mut buf).unwrap();
        assert_eq!(BootRecord::decode(bytes), Ok(record), "{name}");
        write(dir, &format!("{name}.cbor"), bytes);
    }
}
