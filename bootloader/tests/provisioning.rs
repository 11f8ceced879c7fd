//! Keys the field can change (issue 12): the bootloader verifies with the
//! keys and identity provisioned into its own map, rotates them only to a
//! valid successor trust root, keeps the firmware that ran at the rotation
//! bootable, and falls forward to a verified image in DFU when ACTIVE does
//! not verify.

use gantry_boot::sim::{Rig, Signer, firmware};
use gantry_boot::{BootKeys, BootOutcome, BootRecord, ControlError, ImageError, Kv, Reason, SwapState};
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use sha2::{Digest as _, Sha256};

type Device = Rig<4, 1024>;

const NOW: u64 = 1_800_000_000;

fn source() -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(KeyType::Ed25519))
}

/// A trust root of `version` whose `root` role is `root` (2 of them) and
/// whose release key is `release`, signed by `signers`.
fn trust_root(version: u64, root: &[FileKeySource], release: &Signer, signers: &[&FileKeySource]) -> SignedTrustRoot {
    let content = TrustRoot::new(
        version,
        NOW + 3600,
        &[
            (Role::Root, root.iter().map(|s| s.public_key().clone()).collect(), 2),
            (Role::Release, vec![release.public_key()], 1),
            (Role::Server, vec![source().public_key().clone()], 1),
        ],
    )
    .unwrap();
    let mut doc = SignedTrustRoot::new(content).unwrap();
    for s in signers {
        doc.sign_with(*s).unwrap();
    }
    doc
}

struct Fleet {
    root: Vec<FileKeySource>,
    release: Signer,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet { root: vec![source(), source()], release: Signer::new(KeyType::Ed25519) }
    }

    fn v1(&self) -> SignedTrustRoot {
        trust_root(1, &self.root, &self.release, &[&self.root[0], &self.root[1]])
    }
}

/// A device provisioned with `fleet`'s root v1 and running a confirmed
/// factory image of sequence 1.
fn provisioned(fleet: &Fleet) -> (Device, BootRecord) {
    // Anchors given to the rig are not what the provisioned boot uses.
    let rig = Device::new(16, false, vec![Signer::new(KeyType::Ed25519).public_key()]);
    let v1 = fleet.v1().verify_self_signed(NOW).unwrap();
    let keys = BootKeys::from_trust_root(v1.root(), rig.vendor_id, rig.class_id).unwrap();
    rig.control().unwrap().provision(&keys).unwrap();
    rig.program_active(&fleet.release.image(&rig, &firmware(5000, 1), 1));
    let record = boot(&rig);
    rig.control().unwrap().confirm(&record).unwrap();
    (rig, record)
}

fn boot(rig: &Device) -> BootRecord {
    match rig.boot_provisioned() {
        Ok(BootOutcome::Boot(r)) => r,
        other => panic!("expected a boot, got {other:?}"),
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[test]
fn an_unprovisioned_or_garbled_keys_record_boots_nothing() {
    let fleet = Fleet::new();
    let rig = Device::new(16, false, vec![fleet.release.public_key()]);
    rig.program_active(&fleet.release.image(&rig, &firmware(5000, 1), 1));
    // The compiled-in anchors would boot it; the provisioned bootloader has none.
    assert!(matches!(rig.boot(), Ok(BootOutcome::Boot(_))));
    assert!(matches!(rig.boot_provisioned(), Ok(BootOutcome::Recovery(ImageError::Unprovisioned))));
    assert_eq!(ImageError::Unprovisioned.reason(), Reason::Unprovisioned);

    Kv::<_, 64>::new(rig.partition(rig.layout.boot_kv)).unwrap().put(1, b"not a keys record").unwrap();
    assert!(matches!(rig.boot_provisioned(), Ok(BootOutcome::Recovery(ImageError::Unprovisioned))));
    assert!(rig.control().unwrap().keys().is_err(), "a garbled record is an error, not a blank");
}

#[test]
fn provisioned_keys_verify_firmware_and_are_provisioned_once() {
    let fleet = Fleet::new();
    let (rig, record) = provisioned(&fleet);
    assert_eq!(record.image_digest, sha(&firmware(5000, 1)));
    assert_eq!(boot(&rig).sequence, 1);

    // Firmware signed by anyone else is refused before the swap.
    let stranger = Signer::new(KeyType::Ed25519);
    rig.stage(&stranger.image(&rig, &firmware(5000, 2), 2)).unwrap();
    assert_eq!(boot(&rig).sequence, 1);
    assert_eq!(rig.status().unwrap().1.last_failure, Some(Reason::SignatureInvalid));

    // Provisioning again: the same keys are a no-op, other keys refused.
    let held = rig.control().unwrap().keys().unwrap().unwrap();
    rig.control().unwrap().provision(&held).unwrap();
    let other = Fleet::new().v1().verify_self_signed(NOW).unwrap();
    let other = BootKeys::from_trust_root(other.root(), rig.vendor_id, rig.class_id).unwrap();
    assert!(matches!(rig.control().unwrap().provision(&other), Err(ControlError::BadState(_))));
    assert_eq!(rig.control().unwrap().keys().unwrap().unwrap(), held);
}

#[test]
fn a_successor_root_rekeys_the_bootloader_and_the_running_firmware_still_boots() {
    let fleet = Fleet::new();
    let (rig, record) = provisioned(&fleet);
    let new_root = vec![source(), source()];
    let new_release = Signer::new(KeyType::Ed25519);
    let all: Vec<&FileKeySource> = fleet.root.iter().chain(&new_root).collect();
    let v2 = trust_root(2, &new_root, &new_release, &all);

    // Refused: signed by its own root keys only (a thief of the new keys),
    // by the old ones only, and not newer.
    let own_only = trust_root(2, &new_root, &new_release, &[&new_root[0], &new_root[1]]);
    let old_only = trust_root(2, &new_root, &new_release, &[&fleet.root[0], &fleet.root[1]]);
    let mut c = rig.control().unwrap();
    for forged in [own_only, old_only] {
        assert!(matches!(c.rotate_trust_root(&[forged], NOW, Some(&record)), Err(ControlError::Trust(_))));
    }
    assert_eq!(c.rotate_trust_root(&[fleet.v1()], NOW, Some(&record)).unwrap(), None);
    assert!(
        matches!(
            c.rotate_trust_root(std::slice::from_ref(&v2), NOW + 7200, Some(&record)),
            Err(ControlError::Trust(_))
        ),
        "expired"
    );
    assert_eq!(c.keys().unwrap().unwrap().version, 1, "nothing refused was written");

    assert_eq!(c.rotate_trust_root(&[fleet.v1(), v2.clone()], NOW, Some(&record)).unwrap(), Some(2));
    // The factory image, signed by the retired release key, still boots.
    assert_eq!(boot(&rig).manifest_digest, record.manifest_digest);

    // Firmware signed by the old release key is now refused; the new key's is taken.
    rig.stage(&fleet.release.image(&rig, &firmware(5000, 3), 2)).unwrap();
    assert_eq!(boot(&rig).manifest_digest, record.manifest_digest);
    assert_eq!(rig.status().unwrap().1.last_failure, Some(Reason::SignatureInvalid));
    rig.stage(&new_release.image(&rig, &firmware(5000, 4), 2)).unwrap();
    let trial = boot(&rig);
    assert!(trial.trial);
    assert_eq!(trial.image_digest, sha(&firmware(5000, 4)));

    // Its trial runs out: the revert lands on the factory image, which
    // still boots under its retired key.
    for _ in 0..rig.max_trial_boots {
        let _ = boot(&rig);
    }
    let back = boot(&rig);
    assert!(!back.trial);
    assert_eq!(back.manifest_digest, record.manifest_digest);
    assert_eq!(back.last_failure, Some(Reason::TrialExpired));

    // A second rotation keeps the same image bootable under the key that signed it.
    let v3_root = vec![source(), source()];
    let v3 = trust_root(
        3,
        &v3_root,
        &Signer::new(KeyType::Ed25519),
        &[&new_root[0], &new_root[1], &v3_root[0], &v3_root[1]],
    );
    assert_eq!(rig.control().unwrap().rotate_trust_root(&[v2, v3], NOW, Some(&back)).unwrap(), Some(3));
    assert_eq!(boot(&rig).manifest_digest, record.manifest_digest);
}

#[test]
fn a_corrupt_active_falls_forward_to_a_verified_update_in_dfu_never_to_an_unverified_one() {
    let fleet = Fleet::new();
    let (rig, _) = provisioned(&fleet);
    let update = fleet.release.image(&rig, &firmware(5000, 7), 2);
    // Written into DFU but not requested (a download the runtime had not
    // finished acting on), then ACTIVE is damaged.
    let mut c = rig.control().unwrap();
    c.begin_update().unwrap();
    c.write_update(&update).unwrap();
    let corrupt = || {
        let at = rig.layout.active.offset + 4096;
        rig.flash(|f| {
            use embedded_storage::nor_flash::NorFlash as _;
            f.write(at, &[0; 4]).unwrap();
        })
    };
    corrupt();
    let record = boot(&rig);
    assert!(record.trial, "the fallen-forward image is on trial");
    assert_eq!(record.image_digest, sha(&firmware(5000, 7)));
    assert_eq!(record.last_failure, Some(Reason::ImageDigestMismatch), "why it fell forward");
    rig.control().unwrap().confirm(&record).unwrap();
    assert_eq!(rig.status().unwrap().0, SwapState::Boot);
    assert_eq!(boot(&rig).sequence, 2);

    // DFU now holds the old image, below the counter: ACTIVE damaged
    // again, nothing verifiable is left and the device stays in recovery.
    corrupt();
    assert!(matches!(rig.boot_provisioned(), Ok(BootOutcome::Recovery(_))));
    assert!(matches!(rig.boot_provisioned(), Ok(BootOutcome::Recovery(_))), "and stays there");
}
