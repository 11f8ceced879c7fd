//! Writes seeds for the `cose_key`, `trust_root`, `boot_slot`,
//! `boot_record`, `slot_table` and `container_slot` fuzz targets into
//! `<corpus>/<target>/`. Deterministic: the keys are the SUIT draft's
//! example ES256 key and the RFC 8032 TEST 1 key.
//!
//! Every slot image seed is run through the same check as the `boot_slot`
//! or `container_slot` target (`common.rs`) and must give the outcome its
//! name promises, so the fuzzer starts from images that verify all the way
//! to the digest checks.

#[path = "../../common.rs"]
mod common;

use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::ReadNorFlash as _;
use gantry_boot::image::{CONTAINER_MAGIC, pack, pack_with_magic};
use gantry_boot::record::MAX_RECORD_LEN;
use gantry_boot::keys::MAX_KEYS_RECORD;
use gantry_boot::{BootKeys, BootRecord, ImageError, Reason, Retired, RoleKeys, Slot};
use gantry_device::bundle::{BundleError, write_slot};
use gantry_device::table::{Container, Installed, MAX_NAME, MAX_REASON, MAX_VERSION, Phase, Record, RevertReason, SlotTable, encode_legacy};
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{COSE_KEY_MAX_LEN, FileKeySource, KeySource, SigningKey, encode_cose_key, read_private_key_pem};
use gantry_signing::build::{ContainerRelease, FirmwareRelease, add_signature};
use gantry_signing::config::ContainerConfig;

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
    boot_keys_seeds(&corpus.join("boot_keys"), &pk, &ek);

    boot_slot_seeds(&corpus.join("boot_slot"), &ed);
    boot_record_seeds(&corpus.join("boot_record"));
    slot_table_seeds(&corpus.join("slot_table"));
    container_slot_seeds(&corpus.join("container_slot"), &ed);
    ticket_seeds(&corpus.join("ticket"), &ed);
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
/// Keys records: one key per role, two roles of both key types, and one
/// that keeps a retired release role.
fn boot_keys_seeds(dir: &Path, p256: &gantry_keys::PublicKey, ed: &gantry_keys::PublicKey) {
    let role = |keys: &[gantry_keys::PublicKey], threshold| RoleKeys::new(keys, threshold).unwrap();
    let single = BootKeys {
        version: 1,
        vendor_id: [0x11; 16],
        class_id: [0x22; 16],
        release: role(std::slice::from_ref(ed), 1),
        root: role(std::slice::from_ref(p256), 1),
        retired: None,
    };
    let both = BootKeys { version: u64::MAX, release: role(&[p256.clone(), ed.clone()], 2), ..single.clone() };
    let retired = BootKeys {
        version: 2,
        retired: Some(Retired { release: role(std::slice::from_ref(p256), 1), manifest_digest: [0x33; 32] }),
        ..single.clone()
    };
    for (name, keys) in [("single", single), ("both-th2", both), ("retired", retired)] {
        let mut buf = [0u8; MAX_KEYS_RECORD];
        let n = keys.encode(&mut buf).unwrap();
        assert_eq!(BootKeys::decode(&buf[..n]), Ok(keys), "{name}");
        write(dir, &format!("{name}.cbor"), &buf[..n]);
    }
}

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

/// Slot-table records as the device map holds them (a free pair, a
/// confirmed container, one on probation after an update, one reverted, one
/// with every string at its longest and every number at its widest), each
/// of which must round-trip as the `slot_table` target asserts, and whole
/// legacy tables as earlier firmware wrote them.
fn slot_table_seeds(dir: &Path) {
    let installed = |seq: u64, version: &str| Installed {
        manifest_digest: [seq as u8; 32],
        sequence: seq,
        version: version.to_string(),
    };
    let sensor = Container {
        name: "sensor".into(),
        pair: 0,
        active: Slot::A,
        phase: Phase::Confirmed,
        slots: [Some(installed(2, "1.0.0")), None],
        counter: 2,
        enabled: true,
    };
    let ml = Container {
        name: "ml-model".into(),
        pair: 1,
        active: Slot::B,
        phase: Phase::Probation { restarts: 2 },
        slots: [Some(installed(3, "0.9.1")), Some(installed(4, "1.0.0-rc1"))],
        counter: 3,
        enabled: true,
    };
    let reverted = Container {
        name: "logger".into(),
        pair: 7,
        active: Slot::A,
        phase: Phase::Reverted { reason: RevertReason::new("health check failed 3 times during probation") },
        slots: [Some(installed(5, "2.1")), Some(installed(6, "2.2"))],
        counter: 5,
        enabled: false,
    };
    // The two-byte 'é' makes the decoder's length check count bytes, not
    // characters.
    let widest = Container {
        name: "n".repeat(MAX_NAME),
        pair: u8::MAX,
        active: Slot::B,
        phase: Phase::Reverted { reason: RevertReason::new(&"é".repeat(MAX_REASON / 2)) },
        slots: [
            Some(Installed { manifest_digest: [0xFF; 32], sequence: u64::MAX, version: "v".repeat(MAX_VERSION) }),
            Some(installed(u64::MAX - 1, "é")),
        ],
        counter: u64::MAX,
        enabled: true,
    };
    let long_probation = Container {
        name: format!("{}-2", "p".repeat(61)),
        pair: 254,
        phase: Phase::Probation { restarts: u8::MAX },
        ..sensor.clone()
    };
    let records = [
        ("free", None),
        ("confirmed", Some(sensor.clone())),
        ("probation", Some(ml.clone())),
        ("reverted", Some(reverted.clone())),
        ("max-lengths", Some(widest.clone())),
        ("long-probation", Some(long_probation.clone())),
    ];
    for (name, container) in records {
        let record = Record { generation: 7, container };
        let bytes = record.encode().unwrap();
        assert_eq!(Record::decode(&bytes), Ok(record), "{name}");
        write(dir, &format!("record-{name}.cbor"), &bytes);
    }
    let tables = [("empty", vec![]), ("two-containers", vec![sensor, ml]), ("max-lengths", vec![widest, long_probation])];
    for (name, containers) in tables {
        let table = SlotTable { containers };
        let bytes = encode_legacy(&table);
        assert_eq!(SlotTable::decode_legacy(&bytes), Ok(table), "{name}");
        write(dir, &format!("legacy-{name}.cbor"), &bytes);
    }
}

/// A container release's config, small module and one blob, signed (or
/// not) for the fuzz device identity.
struct ContainerSeed<'a> {
    toml: &'a str,
    blob: Vec<u8>,
    sequence: u64,
}

/// The smallest valid Wasm module: the runtime compiles it only after the
/// slot check, so its contents matter to the seed only as bytes to hash.
const EMPTY_WASM_MODULE: &[u8] = b"\0asm\x01\0\0\0";

const FULL_CONFIG: &str = r#"
name = "fuzz-sensor"
version = "1.4.2"
args = ["--rate", "10"]
capabilities = ["wasi:stdout", "wasi:args", "wasi:env"]
[env]
LOG_LEVEL = "info"
[limits]
memory = "1 MiB"
cpu_percent = 25
deadline_ms = 2000
log = "64 KiB"
data = "256 KiB"
[health]
kind = "export"
function = "health"
[restart]
policy = "always"
"#;

const MINIMAL_CONFIG: &str = "name = \"f\"\nversion = \"1\"\n";

impl ContainerSeed<'_> {
    /// The signed envelope and the slot image `write_slot` leaves in a
    /// flash of the target's geometry, dumped up to its last written word.
    /// The dump must equal `pack_with_magic` of the same release, so the
    /// seed is the layout the device writes and the documented one.
    fn slot_image(&self, signer: &FileKeySource) -> Vec<u8> {
        let config = ContainerConfig::from_toml(self.toml).unwrap();
        let blobs = [("model.bin".to_string(), self.blob.as_slice())];
        let release = ContainerRelease {
            config: &config,
            module: EMPTY_WASM_MODULE,
            blobs: &blobs,
            sequence: self.sequence,
            vendor_id: common::BOOT_VENDOR_ID,
            class_id: common::BOOT_CLASS_ID,
        };
        let envelope = add_signature(&release.build_unsigned().unwrap(), signer).unwrap();
        let mut packed =
            pack_with_magic(&CONTAINER_MAGIC, &envelope, &[EMPTY_WASM_MODULE, &self.blob].concat()).unwrap();
        packed.resize(packed.len().next_multiple_of(4), 0xFF);

        let mut flash = common::ContainerFlash::new(common::CONTAINER_FLASH_SIZE);
        write_slot(&mut flash, &envelope, &[EMPTY_WASM_MODULE, &self.blob]).unwrap();
        let mut dumped = vec![0u8; packed.len()];
        flash.read(0, &mut dumped).unwrap();
        assert!(dumped == packed, "write_slot and pack_with_magic lay out the slot differently");
        dumped
    }
}

/// Container slot images: three that verify (full and minimal configs, a
/// blob that spans two 64 KiB hashing chunks), then one refusal per stage:
/// a firmware image (wrong magic), rollback, a payload byte flipped,
/// garbage and an erased slot.
fn container_slot_seeds(dir: &Path, ed: &FileKeySource) {
    let trust = common::container_trust();
    let seq = common::CONTAINER_MIN_SEQUENCE;
    let small = ContainerSeed { toml: FULL_CONFIG, blob: firmware(300, 8), sequence: seq }.slot_image(ed);
    // The blob's first byte: the module before it is left intact, so the
    // refusal is the blob's (component 2; the config is component 1).
    let mut tampered = small.clone();
    let payload_offset = u32::from_le_bytes(small[8..12].try_into().unwrap()) as usize;
    tampered[payload_offset + EMPTY_WASM_MODULE.len()] ^= 1;
    type Refusal = fn(&BundleError) -> bool;
    let seeds: [(&str, Vec<u8>, Option<Refusal>); 8] = [
        ("ok-full-config", small, None),
        (
            "ok-max-sequence",
            ContainerSeed { toml: MINIMAL_CONFIG, blob: firmware(4096, 9), sequence: u64::MAX }.slot_image(ed),
            None,
        ),
        (
            "ok-two-chunks",
            ContainerSeed { toml: MINIMAL_CONFIG, blob: firmware(70_000, 10), sequence: seq + 1 }.slot_image(ed),
            None,
        ),
        ("payload-flipped", tampered, Some(|e| matches!(e, BundleError::PayloadMismatch { component: 2 }))),
        (
            "rollback",
            ContainerSeed { toml: FULL_CONFIG, blob: firmware(64, 11), sequence: seq - 1 }.slot_image(ed),
            Some(|e| matches!(e, BundleError::Manifest(gantry_signing::Error::SequenceTooLow { .. }))),
        ),
        (
            "firmware-image",
            slot_image(&firmware(64, 12), seq, common::BOOT_CLASS_ID, Some(ed)),
            Some(|e| matches!(e, BundleError::Slot(ImageError::BadHeader(_)))),
        ),
        ("garbage", firmware(512, 0x5B), Some(|e| matches!(e, BundleError::Slot(ImageError::BadHeader(_))))),
        ("empty", Vec::new(), Some(|e| matches!(e, BundleError::Slot(ImageError::Empty)))),
    ];
    for (name, image, refusal) in seeds {
        let mut flash = common::container_flash(&image).expect("seeds fit the fuzzed flash");
        match (refusal, common::verify_container_slot(&mut flash, &trust)) {
            (None, Ok(r)) => assert!(r.payloads.len() == 2 && r.sequence >= seq, "{name}: {r:?}"),
            (Some(refused), Err(e)) if refused(&e) => {}
            (_, got) => panic!("container seed {name}: the check gave {got:?}"),
        }
        write(dir, &format!("{name}.slot"), &image);
    }
}

/// Tickets and login proofs for the `ticket` target, signed with the RFC
/// 8032 key for the device and nonce the target expects: valid ones, and
/// one refusal per check after the signature.
fn ticket_seeds(dir: &Path, ed: &FileKeySource) {
    use gantry_signing::device_auth::LoginProof;
    use gantry_signing::ticket::{Ticket, TicketAssignment};
    const NOW: u64 = 1_700_000_000;
    let assignment = |stream: &str, n: u8| TicketAssignment {
        stream: stream.into(),
        manifest_digest: [n; 32],
        sequence: n.into(),
        envelope_sha256: [n ^ 0xff; 32],
    };
    let ticket = Ticket {
        device_id: "fuzz-device".into(),
        nonce: vec![0x5a; 16],
        issued_at: NOW - 10,
        expires_at: NOW + 3600,
        assignments: vec![assignment("firmware", 1), assignment("sensor-filter", 2), assignment("a", 3)],
    };
    let seeds = [
        ("ok-three", ticket.clone()),
        ("ok-empty", Ticket { assignments: vec![], ..ticket.clone() }),
        ("other-device", Ticket { device_id: "other".into(), ..ticket.clone() }),
        ("other-nonce", Ticket { nonce: vec![0x5b; 32], ..ticket.clone() }),
        ("expired", Ticket { issued_at: NOW - 7200, expires_at: NOW - 3600, ..ticket.clone() }),
        ("stale", Ticket { issued_at: NOW - 200_000, expires_at: NOW + 10, ..ticket.clone() }),
    ];
    for (name, t) in seeds {
        write(dir, &format!("{name}.ticket"), &t.sign(ed).expect("seed ticket signs"));
    }
    for (name, challenge, ts) in
        [("ok", [0x5a; 16], 0), ("skewed", [0x5a; 16], NOW + 1000), ("other-challenge", [1; 16], NOW)]
    {
        let proof = LoginProof { device_id: "fuzz-device".into(), challenge: challenge.to_vec(), timestamp: ts };
        write(dir, &format!("{name}.login"), &proof.sign(ed).expect("seed proof signs"));
    }
}
