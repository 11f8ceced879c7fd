//! The device's firmware through gantry-boot on the store's flash (issue
//! 12): provisioned boot keys, a release streamed into DFU and verified
//! from flash, the restart that swaps it in on trial, confirm or revert,
//! refusals, a trust-root rotation that re-keys the bootloader, and
//! recovery that an update restores.

mod common;

use common::{Fleet, NOW, geometry};
use gantry_boot::{Reason, SwapState};
use gantry_device::firmware::{Firmware, Probation, ProbationStep};
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

#[test]
fn a_cut_download_resumes_where_it_stopped_and_a_corrupt_one_starts_afresh() {
    let fleet = Fleet::new();
    let store = fleet.device_of(firmware_geometry());
    let v1 = image(1, 20_000);
    let envelope = release(&fleet, &fleet.release, &v1, 1);
    let mut staging = store.stage_firmware(&envelope, NOW).unwrap();
    assert_eq!(staging.position(), 0);
    store.firmware_write(&mut staging, &v1[..9_999]).unwrap();
    // The connection drops: what came is kept, to the last whole word.
    store.checkpoint_firmware(&mut staging).unwrap();
    drop(staging);
    let mut staging = store.stage_firmware(&envelope, NOW).unwrap();
    let at = staging.position();
    assert!(at > 0 && at <= 9_999, "resumed at {at}");
    store.firmware_write(&mut staging, &v1[at as usize..]).unwrap();
    store.finish_firmware(staging).unwrap();
    assert_eq!(running(&store).image_digest, sha(&v1));

    // Bytes that do not hash to the signed digest: refused, and the next
    // try starts from the beginning, not from a poisoned prefix.
    store.confirm_firmware(&running(&store)).unwrap();
    let v2 = image(2, 20_000);
    let envelope = release(&fleet, &fleet.release, &v2, 2);
    let mut staging = store.stage_firmware(&envelope, NOW).unwrap();
    let mut bad = v2.clone();
    bad[100] ^= 1;
    store.firmware_write(&mut staging, &bad[..12_000]).unwrap();
    store.checkpoint_firmware(&mut staging).unwrap();
    assert!(store.firmware_write(&mut staging, &bad[12_000..]).is_err());
    let staging = store.stage_firmware(&envelope, NOW).unwrap();
    assert_eq!(staging.position(), 0, "a refused image is not resumed");
    // Another release meanwhile: its own download, from the start.
    let v3 = image(3, 20_000);
    let other = release(&fleet, &fleet.release, &v3, 3);
    let mut staging = store.stage_firmware(&other, NOW).unwrap();
    store.firmware_write(&mut staging, &v3[..8_000]).unwrap();
    store.checkpoint_firmware(&mut staging).unwrap();
    assert_eq!(store.stage_firmware(&envelope, NOW).unwrap().position(), 0, "DFU now holds another release");
}

// The power-cut sweep over the firmware path the agent drives: the
// download into DFU and its request (`stage_firmware`, `firmware_write` in
// the chunks a download delivers, `finish_firmware`), the restart that swaps
// it in on trial (`Store::power_on`), the confirm once the probation passes
// (`Probation::step`), the restart that reverts an unconfirmed trial, and the
// restore of a device in recovery. For each, the power is cut at every
// flash operation (three cut models), the device then powers on as often as
// it needs with a healthy runtime, and these must hold:
//
// 1. every power-on works; the device never ends in recovery unless it
//    started there, and runs exactly the old or the new verified image,
//    confirmed;
// 2. the anti-rollback counter never falls and covers what runs;
// 3. nothing stays pending: each requested update has an outcome, and it
//    agrees with what runs (the new image runs ⇔ it is not marked failed);
// 4. a cut costs no release that was never tried: when the cut came before
//    the request, the same release installs and confirms afterwards.

/// Chunks as a download delivers them (the agent's read buffer).
const DOWNLOAD_CHUNK: usize = 8 * 1024;

/// Cuts per phase, model and seed in the reduced sweep `cargo test` runs.
const CUTS_PER_RUN: u64 = 150;

/// One firmware release.
struct Fw {
    envelope: Vec<u8>,
    image: Vec<u8>,
    manifest_digest: [u8; 32],
}

impl Fw {
    fn new(fleet: &Fleet, seed: u8, len: usize, sequence: u64) -> Fw {
        let image = image(seed, len);
        let envelope = release(fleet, &fleet.release, &image, sequence);
        // What the bootloader will measure: a scratch device tells.
        let scratch = fleet.device_of(firmware_geometry());
        let mut staging = scratch.stage_firmware(&envelope, NOW).unwrap();
        scratch.firmware_write(&mut staging, &image).unwrap();
        let manifest_digest = scratch.finish_firmware(staging).unwrap().manifest_digest;
        Fw { envelope, image, manifest_digest }
    }

    /// As the agent's driver does it: from where DFU stands.
    fn download(&self, store: &Store) -> Result<(), Error> {
        let mut staging = store.stage_firmware(&self.envelope, NOW)?;
        for chunk in self.image[staging.position() as usize..].chunks(DOWNLOAD_CHUNK) {
            store.firmware_write(&mut staging, chunk)?;
        }
        store.finish_firmware(staging).map(|_| ())
    }
}

/// Power-ons with a healthy runtime until the device runs confirmed
/// firmware or stays in recovery; what it ends on.
fn settle(store: &Store) -> Result<Firmware, String> {
    for _ in 0..4 {
        let p = store.power_on(0, 0).map_err(|e| format!("power-on: {e}"))?;
        match p.probation {
            Some(mut probation) => match probation.step(store, None, 0).map_err(|e| format!("confirm: {e}"))? {
                ProbationStep::Confirmed(_) => {}
                other => return Err(format!("a healthy probation ended {other:?}")),
            },
            None => return Ok(p.firmware),
        }
    }
    Err("no settled firmware after 4 power-ons".into())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The old or the new image; the new one was not requested before the
    /// step, so it must never be lost.
    OldOrNewRetriable,
    /// The old or the new image; the new one was requested before the step.
    OldOrNew,
    /// The old image, the new one having failed.
    Old,
    /// Recovery, or the new image (a restore from recovery).
    RecoveryOrNew,
}

/// What a phase does, from where its setup left the device.
type PhaseStep = fn(&Store, &[Fw; 3], Option<Probation>) -> Result<(), Error>;

struct Phase {
    name: &'static str,
    /// From a fresh device to where the step starts; the probation of
    /// firmware left on trial, for the step.
    setup: fn(&Store, &[Fw; 3]) -> Option<Probation>,
    step: PhaseStep,
    expect: Expect,
}

fn confirmed(store: &Store, fw: &Fw) {
    fw.download(store).unwrap();
    assert!(matches!(settle(store).unwrap(), Firmware::Running(r) if r.image_digest == sha(&fw.image)));
}

fn on_trial(store: &Store, fws: &[Fw; 3]) -> Option<Probation> {
    confirmed(store, &fws[0]);
    fws[1].download(store).unwrap();
    let p = store.power_on(0, 0).unwrap();
    assert!(p.probation.is_some());
    p.probation
}

fn power_on(store: &Store) -> Result<(), Error> {
    store.power_on(0, 0).map(|_| ())
}

const PHASES: [Phase; 5] = [
    Phase {
        name: "download + request",
        setup: |s, f| {
            confirmed(s, &f[0]);
            None
        },
        step: |s, f, _| f[1].download(s),
        expect: Expect::OldOrNewRetriable,
    },
    Phase {
        name: "restart: swap, trial boot",
        setup: |s, f| {
            confirmed(s, &f[0]);
            f[1].download(s).unwrap();
            None
        },
        step: |s, _, _| power_on(s),
        expect: Expect::OldOrNew,
    },
    Phase {
        name: "confirm",
        setup: on_trial,
        step: |s, _, p| p.expect("on trial").step(s, None, 0).map(|_| ()),
        expect: Expect::OldOrNew,
    },
    Phase { name: "revert (restart unconfirmed)", setup: on_trial, step: |s, _, _| power_on(s), expect: Expect::Old },
    Phase {
        name: "restore from recovery",
        setup: |s, f| {
            confirmed(s, &f[0]);
            confirmed(s, &f[1]);
            // ACTIVE damaged, DFU holds the old release, below the counter.
            let active = s.layout().boot.active.offset;
            s.with_flash(|flash| {
                use embedded_storage::nor_flash::NorFlash as _;
                flash.write(active + 8192, &[0; 4]).unwrap();
            });
            assert!(matches!(settle(s).unwrap(), Firmware::Recovery(_)));
            None
        },
        step: |s, f, _| {
            f[2].download(s)?;
            let mut probation = s.power_on(0, 0)?.probation.expect("on trial");
            probation.step(s, None, 0).map(|_| ())
        },
        expect: Expect::RecoveryOrNew,
    },
];

/// What the device ended on after a cut in `phase`, checked.
fn check_settled(store: &Store, fws: &[Fw; 3], phase: &Phase, counter_before: u64) -> Result<(), String> {
    let settled = settle(store)?;
    let (old, new) = match phase.expect {
        Expect::RecoveryOrNew => (None, &fws[2]),
        _ => (Some(&fws[0]), &fws[1]),
    };
    let record = match settled {
        Firmware::Running(r) => r,
        Firmware::Recovery(_) if phase.expect == Expect::RecoveryOrNew => return Ok(()),
        other => return Err(format!("ended on {other:?}")),
    };
    let runs_new = record.image_digest == sha(&new.image);
    if !runs_new && old.is_none_or(|o| record.image_digest != sha(&o.image)) {
        return Err(format!("runs an image that is neither the old nor the new one (sequence {})", record.sequence));
    }
    if phase.expect == Expect::Old && runs_new {
        return Err("the unconfirmed update still runs".into());
    }
    if record.security_counter < counter_before || record.security_counter < record.sequence {
        return Err(format!(
            "counter {} (was {counter_before}) under sequence {}",
            record.security_counter, record.sequence
        ));
    }
    let outcome = store.settle_firmware(&Firmware::Running(record)).map_err(|e| e.to_string())?;
    if outcome.is_some() {
        return Err(format!("an update still pending after the device settled: {outcome:?}"));
    }
    let failed = store.failed_firmware().map_err(|e| e.to_string())? == Some(new.manifest_digest);
    let requested_before = matches!(phase.expect, Expect::OldOrNew | Expect::Old);
    match (runs_new, failed) {
        (true, true) => return Err("the new image runs, yet it is marked failed".into()),
        (false, false) if requested_before => return Err("the new image does not run, and nothing says why".into()),
        (false, true) if !requested_before => return Err("a cut before the request marked the release failed".into()),
        _ => {}
    }
    if phase.expect == Expect::OldOrNewRetriable && !runs_new {
        new.download(store).map_err(|e| format!("the release cannot be installed again: {e}"))?;
        match settle(store)? {
            Firmware::Running(r) if r.image_digest == sha(&new.image) => {}
            other => return Err(format!("installed again, it ends on {other:?}")),
        }
    }
    Ok(())
}

/// `cargo test` cuts each phase at about [`CUTS_PER_RUN`] evenly spread
/// operations per model and seed (2 seeds per torn model), each seed from
/// another offset; `GANTRY_SWEEP_STRIDE=1` cuts at every operation and
/// `GANTRY_SWEEP_SEEDS` sets the seeds (docs/device-runtime.md has the full
/// sweep's figures).
#[test]
fn power_cut_sweep_over_the_firmware_path() {
    use gantry_boot::sim::{Cut, CutModel};
    let seeds = common::knob("GANTRY_SWEEP_SEEDS", 2);
    let stride_of = |ops: u64| common::knob("GANTRY_SWEEP_STRIDE", (ops / CUTS_PER_RUN).max(1));
    let fleet = Fleet::new();
    let fws = [Fw::new(&fleet, 1, 12_000, 1), Fw::new(&fleet, 2, 14_000, 2), Fw::new(&fleet, 3, 13_000, 3)];
    let (mut total_cuts, mut total_violations) = (0u64, 0u64);
    for phase in &PHASES {
        let store = fleet.device_of(firmware_geometry());
        let probation = (phase.setup)(&store, &fws);
        let counter_before = store.boot_state().unwrap().1.security_counter;
        let start = store.with_flash(|f| f.contents().to_vec());
        store.with_flash(|f| f.reset_ops());
        (phase.step)(&store, &fws, probation.clone()).unwrap();
        let ops = store.with_flash(|f| f.ops());
        check_settled(&store, &fws, phase, counter_before)
            .unwrap_or_else(|v| panic!("{}: without a cut: {v}", phase.name));
        let mut flash = store.into_flash();
        let (mut cuts, mut violations, stride) = (0, 0, stride_of(ops));
        for (m, model) in CutModel::ALL.into_iter().enumerate() {
            for seed in 0..if model == CutModel::Clean { 1 } else { seeds } {
                let first = 1 + (seed * 3 + m as u64) % stride;
                for at in (first..=ops).step_by(stride as usize) {
                    cuts += 1;
                    flash.power_on();
                    flash.restore(&start).unwrap();
                    flash.arm(Cut { at, model, seed: seed << 32 | at });
                    let store = Store::open(flash, firmware_geometry()).unwrap();
                    let result = (phase.step)(&store, &fws, probation.clone());
                    let fired = store.with_flash(|f| f.is_off());
                    store.with_flash(|f| f.power_on());
                    let verdict = match (result, fired) {
                        (Err(e), false) => Err(format!("failed without a cut: {e}")),
                        _ => check_settled(&store, &fws, phase, counter_before),
                    };
                    if let Err(v) = verdict {
                        violations += 1;
                        if violations <= 3 {
                            eprintln!("{} / {}: cut at {at} seed {seed}: {v}", phase.name, model.name());
                        }
                    }
                    flash = store.into_flash();
                }
            }
        }
        println!("{:<28} ops {ops:>5}  stride {stride:>3}  cuts {cuts:>6}  violations {violations}", phase.name);
        total_cuts += cuts;
        total_violations += violations;
    }
    assert!(total_cuts > 500, "{total_cuts} cuts");
    assert_eq!(total_violations, 0, "{total_violations} violations in {total_cuts} cuts");
}
