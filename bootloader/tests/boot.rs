//! The boot path end to end on a simulated device: updates, trials,
//! reverts, recovery, and the attacks DESIGN.md lists for the bootloader.
//! Each attack must leave the previous image booting, byte for byte.

use embassy_boot::BlockingFirmwareState;
use gantry_boot::sim::{Rig, Signer, SimFlash, SweepOptions, firmware, sweep};
use gantry_boot::{
    BootError, BootOutcome, BootRecord, Bootloader, ImageError, LayoutError, Reason, Slot, SwapState, Workspace,
};
use gantry_keys::KeyType;
use gantry_signing::build::FirmwareRelease;
use sha2::{Digest as _, Sha256};

type Device = Rig<4, 1024>;

struct Fixture {
    rig: Device,
    signer: Signer,
    old_fw: Vec<u8>,
    old: Vec<u8>,
}

/// A device running a confirmed factory image with sequence number `seq`.
fn device(seq: u64) -> Fixture {
    let signer = Signer::new(KeyType::Ed25519);
    let rig = Device::new(16, false, vec![signer.public_key()]);
    let old_fw = firmware(9000, 1);
    let old = signer.image(&rig, &old_fw, seq);
    rig.program_active(&old);
    let record = boot(&rig);
    rig.control().unwrap().confirm(&record).unwrap();
    Fixture { rig, signer, old_fw, old }
}

fn boot(rig: &Device) -> BootRecord {
    match rig.boot() {
        Ok(BootOutcome::Boot(r)) => r,
        other => panic!("expected a boot, got {other:?}"),
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl Fixture {
    /// Boots and checks that the factory image, unchanged, is what runs.
    fn assert_old_boots(&self) -> BootRecord {
        let r = boot(&self.rig);
        assert_eq!(r.image_digest, sha(&self.old_fw));
        assert!(!r.trial);
        assert_eq!(self.rig.active(self.old.len()), self.old, "ACTIVE is the old image byte for byte");
        assert_eq!(self.rig.status().unwrap().0, SwapState::Boot);
        r
    }

    /// Writes `image` into DFU and marks it through embassy-boot's own public
    /// state API, as a compromised or careless application could.
    fn mark_through_embassy(&self, image: &[u8]) {
        {
            let mut c = self.rig.control().unwrap();
            c.begin_update().unwrap();
            c.write_update(image).unwrap();
        }
        let mut aligned = [0u8; 4];
        let mut state = BlockingFirmwareState::new(self.rig.partition(self.rig.layout.state), &mut aligned);
        state.mark_updated().unwrap();
    }
}

#[test]
fn factory_image_boots_measured() {
    let f = device(1);
    let r = f.assert_old_boots();
    assert_eq!(r.sequence, 1);
    assert_eq!(r.image_size, 9000);
    assert_eq!(r.slot, Slot::A);
    assert_eq!(r.boot_count, 2);
    assert_eq!(r.security_counter, 1, "confirming the factory image raised the counter");
    assert_eq!(r.last_failure, None);
    let mut buf = [0u8; gantry_boot::record::MAX_RECORD_LEN];
    assert_eq!(BootRecord::decode(r.encode(&mut buf).unwrap()), Ok(r), "the hand-over encoding round-trips");
}

#[test]
fn update_runs_on_trial_until_confirmed() {
    let f = device(1);
    let new_fw = firmware(12000, 2);
    f.rig.stage(&f.signer.image(&f.rig, &new_fw, 2)).unwrap();
    let r = boot(&f.rig);
    assert!(r.trial);
    assert_eq!((r.trial_boots, r.slot, r.image_digest, r.security_counter), (1, Slot::B, sha(&new_fw), 1));
    assert!(f.rig.control().unwrap().begin_update().is_err(), "no new download while an update is on trial");
    f.rig.control().unwrap().confirm(&r).unwrap();
    let r = boot(&f.rig);
    assert!(!r.trial);
    assert_eq!((r.slot, r.security_counter, r.image_digest), (Slot::B, 2, sha(&new_fw)));
    // Confirming again is harmless.
    f.rig.control().unwrap().confirm(&r).unwrap();
    assert_eq!(boot(&f.rig).image_digest, sha(&new_fw));
}

#[test]
fn unconfirmed_update_is_reverted_after_its_trial_boots() {
    let f = device(1);
    f.rig.stage(&f.signer.image(&f.rig, &firmware(12000, 2), 2)).unwrap();
    for n in 1..=f.rig.max_trial_boots {
        let r = boot(&f.rig);
        assert!(r.trial);
        assert_eq!(r.trial_boots, n);
    }
    let r = f.assert_old_boots();
    assert_eq!(r.last_failure, Some(Reason::TrialExpired));
    assert_eq!((r.slot, r.security_counter), (Slot::A, 1), "the counter was not raised by the failed update");
}

/// Every way an update can be bad, with the reason the bootloader must give.
fn bad_updates(f: &Fixture) -> Vec<(&'static str, Vec<u8>, Reason)> {
    let fw = firmware(12000, 3);
    let rig = &f.rig;
    let unsigned = FirmwareRelease { image: &fw, sequence: 5, vendor_id: rig.vendor_id, class_id: rig.class_id }
        .build_unsigned()
        .unwrap();
    let mut tampered = f.signer.image(rig, &fw, 5);
    let n = tampered.len();
    tampered[n - 100] ^= 0x40;
    let stranger = Signer::new(KeyType::P256).image(rig, &fw, 5);
    let other_class = {
        let env = f.signer.envelope(&fw, 5, rig.vendor_id, [0x42; 16]);
        gantry_boot::image::pack(&env, &fw).unwrap()
    };
    let cut_manifest = {
        let env = f.signer.envelope(&fw, 5, rig.vendor_id, rig.class_id);
        gantry_boot::image::pack(&env[..env.len() / 2], &fw).unwrap()
    };
    let too_long = {
        // A correctly signed image whose payload is longer than the slot allows.
        let big = firmware(rig.layout.active.size as usize, 4);
        let env = f.signer.envelope(&big, 5, rig.vendor_id, rig.class_id);
        let mut image = gantry_boot::image::pack(&env, &fw).unwrap();
        image.truncate(rig.layout.active.size as usize);
        image
    };
    vec![
        ("unsigned", gantry_boot::image::pack(&unsigned, &fw).unwrap(), Reason::SignatureInvalid),
        ("tampered payload", tampered, Reason::ImageDigestMismatch),
        ("signed by an unknown key", stranger, Reason::SignatureInvalid),
        ("older, correctly signed (rollback)", f.signer.image(rig, &fw, 1), Reason::Rollback),
        ("for another device class", other_class, Reason::WrongDevice),
        ("manifest cut in half", cut_manifest, Reason::ManifestInvalid),
        ("image larger than the slot", too_long, Reason::ImageTooLarge),
        ("random bytes", firmware(5000, 9), Reason::BadHeader),
    ]
}

#[test]
fn bad_updates_are_refused_before_the_swap() {
    for checked_first in [true, false] {
        let mut f = device(2);
        f.rig.check_update_before_swap = checked_first;
        for (what, image, reason) in bad_updates(&f) {
            f.mark_through_embassy(&image);
            let r = f.assert_old_boots();
            assert_eq!(r.last_failure, Some(reason), "{what} (checked before swap: {checked_first})");
            assert_eq!(r.security_counter, 2, "{what}");
        }
        // The device still takes a good update afterwards.
        let good = firmware(8000, 7);
        f.rig.stage(&f.signer.image(&f.rig, &good, 3)).unwrap();
        let r = boot(&f.rig);
        assert!(r.trial && r.image_digest == sha(&good), "checked before swap: {checked_first}");
        assert_eq!(r.last_failure, None);
    }
}

#[test]
fn gantry_staging_refuses_the_same_way() {
    let f = device(2);
    for (what, image, reason) in bad_updates(&f) {
        f.rig.stage(&image).unwrap();
        assert_eq!(f.assert_old_boots().last_failure, Some(reason), "{what}");
    }
}

#[test]
fn runtime_can_check_an_update_before_asking_for_it() {
    let f = device(2);
    let mut c = f.rig.control().unwrap();
    let (mut env, mut chunk) = (vec![0u8; 8192], vec![0u8; 512]);
    c.begin_update().unwrap();
    c.write_update(&f.signer.image(&f.rig, &firmware(100, 1), 1)).unwrap();
    let err = c.verify_update(&f.rig.config(), &mut env, &mut chunk).unwrap_err();
    assert!(err.to_string().contains("sequence number"), "{err}");
    c.begin_update().unwrap();
    c.write_update(&f.signer.image(&f.rig, &firmware(100, 1), 3)).unwrap();
    assert_eq!(c.verify_update(&f.rig.config(), &mut env, &mut chunk).unwrap().sequence, 3);
}

#[test]
fn corrupted_active_image_enters_recovery_never_boots() {
    let f = device(1);
    let at = f.rig.layout.active.offset as usize + f.old.len() - 1;
    // Flip a bit the NOR way: a stray write can only clear bits.
    f.rig.flash(|flash| {
        use embedded_storage::nor_flash::{NorFlash as _, ReadNorFlash as _};
        let word = at - at % 4;
        let mut w = [0u8; 4];
        flash.read(word as u32, &mut w).unwrap();
        let i = w.iter().position(|&b| b != 0).unwrap();
        w[i] &= w[i] - 1;
        let mut patch = [0xFF; 4];
        patch[i] = w[i];
        flash.write(word as u32, &patch).unwrap();
    });
    match f.rig.boot() {
        Ok(BootOutcome::Recovery(ImageError::DigestMismatch)) | Ok(BootOutcome::Recovery(ImageError::Manifest(_))) => {}
        other => panic!("expected recovery, got {other:?}"),
    }
}

#[test]
fn blank_device_enters_recovery() {
    let signer = Signer::new(KeyType::Ed25519);
    let rig = Device::new(8, false, vec![signer.public_key()]);
    assert!(matches!(rig.boot(), Ok(BootOutcome::Recovery(ImageError::Empty))));
}

#[test]
fn p256_release_keys_work_too() {
    let signer = Signer::new(KeyType::P256);
    let rig = Device::new(8, false, vec![signer.public_key()]);
    let fw = firmware(3000, 5);
    rig.program_active(&signer.image(&rig, &fw, 1));
    assert_eq!(boot(&rig).image_digest, sha(&fw));
}

#[test]
fn layout_and_buffer_rules_fail_clearly() {
    let signer = Signer::new(KeyType::Ed25519);
    let anchors = [signer.public_key()];
    let config = gantry_boot::BootConfig {
        anchors: &anchors,
        threshold: 1,
        vendor_id: [0; 16],
        class_id: [0; 16],
        max_trial_boots: 3,
        check_update_before_swap: true,
    };
    type F = SimFlash<4, 1024>;
    let err = Bootloader::new(config, F::new(8192), F::new(8192), F::new(1024), F::new(2048)).err().unwrap();
    assert!(matches!(err, BootError::Layout(LayoutError::DfuTooSmall { dfu: 8192, needed: 9216 })), "{err}");
    let err = Bootloader::new(config, F::new(8192), F::new(9216), F::new(1024), F::new(1024)).err().unwrap();
    assert!(matches!(err, BootError::Layout(LayoutError::KvTooSmall { .. })), "{err}");
    let err =
        Bootloader::new(config, F::new(512 * 1024), F::new(513 * 1024), F::new(1024), F::new(2048)).err().unwrap();
    assert!(matches!(err, BootError::Layout(LayoutError::StateTooSmall { .. })), "{err}");

    let mut bl = Bootloader::new(config, F::new(8192), F::new(9216), F::new(1024), F::new(2048)).unwrap();
    let (mut page, mut env) = ([0u8; 300], [0u8; 1024]);
    let err = bl.boot(&mut Workspace { page: &mut page, envelope: &mut env }).err().unwrap();
    assert!(matches!(err, BootError::Buffer(_)), "{err}");
}

/// The reduced sweep: every 7th operation of every phase, one seed per
/// torn model, on two flash geometries. The full sweep is
/// `cargo run --release -p gantry-boot --example power-cut-sweep`.
#[test]
fn reduced_power_cut_sweep_has_no_violations() {
    let reports = [
        sweep::<4, 1024>(SweepOptions { active_pages: 4, seeds: 1, stride: 7, write_once: false, min_cuts: 200 }),
        sweep::<8, 2048>(SweepOptions { active_pages: 4, seeds: 1, stride: 7, write_once: true, min_cuts: 200 }),
    ];
    for r in reports.iter().flatten() {
        assert!(r.cuts > 0, "{} / {}: no cut tried", r.phase.name(), r.model.name());
        assert_eq!(r.violations, 0, "{} / {}: {:?}", r.phase.name(), r.model.name(), r.examples);
    }
}
