//! The device's firmware through gantry-boot on the store's flash (issue
//! 12): provisioned boot keys, a release streamed into DFU and verified
//! from flash, the restart that swaps it in on trial, confirm or revert,
//! refusals, a trust-root rotation that re-keys the bootloader, and
//! recovery that an update restores.

mod common;

use common::{Fleet, NOW, geometry};
use gantry_boot::{Reason, SwapState};
use gantry_device::firmware::Firmware;
use gantry_device::layout::Geometry;
use gantry_device::store::Error;
use gantry_keys::FileKeySource;
use gantry_signing::build::{FirmwareRelease, add_signature};
use sha2::{Digest as _, Sha256};

type Store = common::Store;

fn firmware_geometry() -> Geometry {
    Geometry { firmware_pages: 8, ..geometry() }
}

fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

/// A firmware release of `image` signed by `key` for the fleet's devices.
fn release(fleet: &Fleet, key: &FileKeySource, image: &[u8], sequence: u64) -> Vec<u8> {
    let unsigned =
        FirmwareRelease { image, sequence, vendor_id: fleet.identity.vendor_id, class_id: fleet.identity.class_id }
            .build_unsigned()
            .unwrap();
    add_signature(&unsigned, key).unwrap()
}

/// Streams a release into DFU in uneven chunks and requests it.
fn install(store: &Store, envelope: &[u8], image: &[u8]) -> Result<(), Error> {
    let mut staging = store.stage_firmware(envelope, NOW)?;
    for chunk in image.chunks(777) {
        store.firmware_write(&mut staging, chunk)?;
    }
    store.finish_firmware(staging).map(|_| ())
}

fn boot(store: &Store) -> Firmware {
    Firmware::from_outcome(store.boot().unwrap())
}

fn running(store: &Store) -> gantry_boot::BootRecord {
    match boot(store) {
        Firmware::Running(r) => r,
        other => panic!("expected firmware to run, got {other:?}"),
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[test]
fn a_release_streams_into_dfu_swaps_in_on_trial_and_is_confirmed_or_reverted() {
    let fleet = Fleet::new();
    let store = fleet.device_of(firmware_geometry());
    assert_eq!(boot(&store), Firmware::Absent, "a device without firmware runs on its own");
    assert_eq!(store.boot_keys().unwrap().unwrap().version, 1, "provisioned at init");

    let v1 = image(1, 20_000);
    install(&store, &release(&fleet, &fleet.release, &v1, 1), &v1).unwrap();
    assert_eq!(store.swap_state().unwrap(), SwapState::SwapRequested);
    // The restart: a blank ACTIVE falls forward to the verified image.
    let trial = running(&store);
    assert!(trial.trial);
    assert_eq!(trial.image_digest, sha(&v1));
    store.confirm_firmware(&trial).unwrap();
    let confirmed = running(&store);
    assert!(!confirmed.trial);
    assert_eq!((confirmed.sequence, confirmed.security_counter), (1, 1));

    // A second release that the runtime never confirms: the next restart reverts.
    let v2 = image(2, 30_000);
    install(&store, &release(&fleet, &fleet.release, &v2, 2), &v2).unwrap();
    let trial = running(&store);
    assert_eq!((trial.trial, trial.image_digest), (true, sha(&v2)));
    let reverted = running(&store);
    assert_eq!((reverted.trial, reverted.image_digest), (false, sha(&v1)));
    assert_eq!(reverted.last_failure, Some(Reason::TrialExpired));
    assert_eq!(reverted.security_counter, 1);
}

#[test]
fn refused_firmware_writes_nothing_that_could_boot() {
    let fleet = Fleet::new();
    let store = fleet.device_of(firmware_geometry());
    let v1 = image(1, 10_000);
    install(&store, &release(&fleet, &fleet.release, &v1, 5), &v1).unwrap();
    let record = running(&store);
    store.confirm_firmware(&record).unwrap();

    let refused = |envelope: &[u8], image: &[u8], why: &str| {
        let err = install(&store, envelope, image).unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
        assert_eq!(store.swap_state().unwrap(), SwapState::Boot, "{why}: nothing requested");
        assert_eq!(running(&store).image_digest, sha(&v1), "{why}: the old image runs");
    };
    let v = image(9, 10_000);
    refused(&release(&fleet, &fleet.release, &v, 5), &v, "sequence");
    refused(&release(&fleet, &fleet.release, &v, 4), &v, "sequence");
    let stranger = Fleet::new();
    refused(&release(&fleet, &stranger.release, &v, 6), &v, "sign");
    let (container, _, _) = fleet.release("app", "1", 6, 100);
    refused(&container, &v, "not a firmware release");
    let mut tampered = v.clone();
    tampered[5000] ^= 1;
    refused(&release(&fleet, &fleet.release, &v, 6), &tampered, "does not match");
    let too_big = image(3, 8 * 4096);
    refused(&release(&fleet, &fleet.release, &too_big, 6), &too_big, "does not fit");

    // One update at a time: while one is requested, another is refused.
    install(&store, &release(&fleet, &fleet.release, &v, 6), &v).unwrap();
    let err = store.stage_firmware(&release(&fleet, &fleet.release, &v, 7), NOW).unwrap_err();
    assert!(err.to_string().contains("already requested"), "{err}");
}

#[test]
fn a_rotated_trust_root_rekeys_the_bootloader_and_the_running_firmware_keeps_booting() {
    let fleet = Fleet::new();
    let store = fleet.device_of(firmware_geometry());
    let v1 = image(1, 10_000);
    install(&store, &release(&fleet, &fleet.release, &v1, 1), &v1).unwrap();
    let record = running(&store);
    store.confirm_firmware(&record).unwrap();

    let next = fleet.rotated(2, NOW + 7200);
    // A successor signed by its own keys only is refused by the device and
    // the bootloader alike: nothing moves.
    let forged = fleet.rotated_signed(2, NOW + 7200, false, true);
    assert!(store.rotate_trust_root(std::slice::from_ref(&forged.trust_root), NOW, Some(&record)).is_err());
    assert_eq!(store.boot_keys().unwrap().unwrap().version, 1);

    assert_eq!(store.rotate_trust_root(std::slice::from_ref(&next.trust_root), NOW, Some(&record)).unwrap(), Some(2));
    assert_eq!(store.boot_keys().unwrap().unwrap().version, 2);
    assert_eq!(running(&store).image_digest, sha(&v1), "signed by the retired key, still boots");

    let v2 = image(2, 10_000);
    let err = install(&store, &release(&fleet, &fleet.release, &v2, 2), &v2).unwrap_err();
    assert!(err.to_string().contains("sign"), "the old release key is refused: {err}");
    install(&store, &release(&next, &next.release, &v2, 2), &v2).unwrap();
    let trial = running(&store);
    assert_eq!(trial.image_digest, sha(&v2));
    // No rotation while an update is on trial: a revert would land on an
    // image its retired key might not cover.
    let v3 = fleet.rotated(3, NOW + 7200);
    assert!(store.rotate_trust_root(std::slice::from_ref(&v3.trust_root), NOW, Some(&trial)).is_err());
    store.confirm_firmware(&trial).unwrap();
    assert_eq!(running(&store).sequence, 2);
}

#[test]
fn recovery_is_left_by_streaming_a_verified_image_and_restarting() {
    let fleet = Fleet::new();
    let store = fleet.device_of(firmware_geometry());
    let v1 = image(1, 10_000);
    install(&store, &release(&fleet, &fleet.release, &v1, 1), &v1).unwrap();
    store.confirm_firmware(&running(&store)).unwrap();
    let v2 = image(2, 10_000);
    install(&store, &release(&fleet, &fleet.release, &v2, 2), &v2).unwrap();
    store.confirm_firmware(&running(&store)).unwrap();
    // ACTIVE is damaged; DFU holds v1, below the counter: recovery.
    let active = store.layout().boot.active.offset;
    store.with_flash(|f| {
        use embedded_storage::nor_flash::NorFlash as _;
        f.write(active + 8192, &[0; 4]).unwrap();
    });
    assert!(matches!(boot(&store), Firmware::Recovery(_)), "never a jump to unverified code");

    let v3 = image(3, 10_000);
    install(&store, &release(&fleet, &fleet.release, &v3, 3), &v3).unwrap();
    let record = running(&store);
    assert_eq!((record.image_digest, record.trial), (sha(&v3), true));
    store.confirm_firmware(&record).unwrap();
    assert_eq!(running(&store).sequence, 3);
}
