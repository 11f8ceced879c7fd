//! The power-cut sweep: for each phase of an update, cut the power at every
//! flash operation under each cut model, reboot, let the device settle as
//! its runtime would, and check the invariants:
//!
//! 1. every boot completes (no persistent error, no recovery, no reboot loop);
//! 2. what runs is verified and exactly the old or the new slot image, byte
//!    for byte, and never a tampered one;
//! 3. the anti-rollback counter never decreases, and a confirmed update
//!    stays confirmed;
//! 4. the boot state map always loads and no journal entry outlives a boot;
//! 5. a reverted update says why (`last_failure`), however the revert was cut.

use gantry_keys::KeyType;
use sha2::{Digest as _, Sha256};

use super::flash::{Cut, CutModel};
use super::rig::{Rig, Signer, firmware};
use crate::{BootOutcome, BootRecord};

/// One phase of the update life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Writing the update into DFU and requesting it.
    Download,
    /// The boot that swaps the update in.
    Swap,
    /// The runtime confirming the update (trial ends, counter raised).
    Confirm,
    /// The boot that reverts an update whose trial boots ran out.
    Revert,
    /// The boot that swaps in an update which then fails verification and is
    /// reverted at once (pre-swap check off, so the swap really happens).
    RejectAfterSwap,
    /// Confirming the factory image: only the anti-rollback counter changes.
    CounterUpdate,
    /// An ordinary boot (verification and the boot-count write).
    Boot,
}

impl Phase {
    /// All phases in sweep order.
    pub const ALL: [Phase; 7] = [
        Phase::Download,
        Phase::Swap,
        Phase::Confirm,
        Phase::Revert,
        Phase::RejectAfterSwap,
        Phase::CounterUpdate,
        Phase::Boot,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Download => "download+mark-updated",
            Phase::Swap => "swap",
            Phase::Confirm => "confirm",
            Phase::Revert => "revert (trial expired)",
            Phase::RejectAfterSwap => "revert (fails verification)",
            Phase::CounterUpdate => "counter update",
            Phase::Boot => "plain boot",
        }
    }
}

/// How thorough a sweep is.
#[derive(Clone, Copy, Debug)]
pub struct SweepOptions {
    /// Pages in the ACTIVE slot.
    pub active_pages: u32,
    /// Seeds per torn model (the clean model needs one).
    pub seeds: u64,
    /// Cut at every `stride`-th operation (1: every one).
    pub stride: u64,
    /// Flash with write-once words.
    pub write_once: bool,
    /// Raise the seeds of a torn model until a phase gets at least this many
    /// cuts, so short phases (a confirm is a few dozen operations) are cut
    /// as often as long ones.
    pub min_cuts: u64,
}

/// The result for one phase and cut model.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// The cut model.
    pub model: CutModel,
    /// Flash operations the phase takes without a cut.
    pub ops: u64,
    /// Cuts tried.
    pub cuts: u64,
    /// Cuts after which an invariant broke.
    pub violations: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

struct Images {
    old: Vec<u8>,
    new: Vec<u8>,
    tampered: Vec<u8>,
    old_digest: [u8; 32],
    new_digest: [u8; 32],
    tampered_digest: [u8; 32],
}

/// Where a phase starts, what it does and what it must end in.
struct Scenario {
    phase: Phase,
    start: Vec<u8>,
    /// Images the device may settle on.
    allowed: &'static [Which],
    /// Whether the runtime confirms a trial image (it is healthy).
    confirms: bool,
    check_update_before_swap: bool,
    record: Option<BootRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Old,
    New,
}

/// Runs the sweep and returns one report per phase and model.
pub fn sweep<const W: usize, const E: usize>(opts: SweepOptions) -> Vec<PhaseReport> {
    let signer = Signer::new(KeyType::Ed25519);
    let mut rig = Rig::<W, E>::new(opts.active_pages, opts.write_once, vec![signer.public_key()]);
    let room = rig.layout.active.size as usize;
    let old_fw = firmware(room * 5 / 8, 1);
    let new_fw = firmware(room * 6 / 8, 2);
    let mut tampered = signer.image(&rig, &new_fw, 2);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let images = Images {
        old: signer.image(&rig, &old_fw, 1),
        new: signer.image(&rig, &new_fw, 2),
        tampered,
        old_digest: Sha256::digest(&old_fw).into(),
        new_digest: Sha256::digest(&new_fw).into(),
        tampered_digest: Sha256::digest(&new_fw[..new_fw.len() - 1]).into(),
    };

    let scenarios = scenarios(&mut rig, &images);
    let mut reports = Vec::new();
    for sc in &scenarios {
        rig.check_update_before_swap = sc.check_update_before_swap;
        let ops = dry_run(&rig, sc, &images);
        for model in CutModel::ALL {
            let stride = opts.stride.max(1);
            let points = ops.div_ceil(stride).max(1);
            let seeds = if model == CutModel::Clean { 1 } else { opts.seeds.max(opts.min_cuts.div_ceil(points)) };
            let mut report = PhaseReport { phase: sc.phase, model, ops, cuts: 0, violations: 0, examples: Vec::new() };
            for seed in 0..seeds {
                // Every stride-th operation, and always the last one.
                let points =
                    (1..=ops).step_by(stride as usize).chain((ops > 0 && (ops - 1) % stride != 0).then_some(ops));
                for at in points {
                    report.cuts += 1;
                    if let Err(v) = cut_and_settle(&rig, sc, &images, Cut { at, model, seed: seed << 32 | at }) {
                        report.violations += 1;
                        if report.examples.len() < 3 {
                            report.examples.push(format!("cut at op {at}, seed {seed}: {v}"));
                        }
                    }
                }
            }
            reports.push(report);
        }
    }
    rig.check_update_before_swap = true;
    reports
}

fn restore<const W: usize, const E: usize>(rig: &Rig<W, E>, snapshot: &[u8]) {
    rig.flash(|f| {
        f.power_on();
        f.restore(snapshot).expect("snapshot fits");
        f.reset_ops();
    });
}

fn snapshot<const W: usize, const E: usize>(rig: &Rig<W, E>) -> Vec<u8> {
    rig.flash(|f| f.contents().to_vec())
}

fn booted<const W: usize, const E: usize>(rig: &Rig<W, E>) -> BootRecord {
    match rig.boot() {
        Ok(BootOutcome::Boot(r)) => r,
        other => panic!("set-up boot failed: {other:?}"),
    }
}

fn scenarios<const W: usize, const E: usize>(rig: &mut Rig<W, E>, img: &Images) -> Vec<Scenario> {
    const BOTH: &[Which] = &[Which::Old, Which::New];
    const OLD: &[Which] = &[Which::Old];
    const NEW: &[Which] = &[Which::New];
    let sc = |phase, start, allowed, confirms, record| Scenario {
        phase,
        start,
        allowed,
        confirms,
        check_update_before_swap: true,
        record,
    };
    rig.program_active(&img.old);
    let factory = snapshot(rig);
    let factory_record = booted(rig);
    let factory_booted = snapshot(rig);
    rig.control().and_then(|mut c| c.confirm(&factory_record)).expect("confirm factory image");
    let confirmed = snapshot(rig);
    rig.stage(&img.new).expect("stage update");
    let requested = snapshot(rig);
    let trial_record = booted(rig);
    assert!(trial_record.trial, "the update boots on trial");
    let on_trial = snapshot(rig);
    for _ in 1..rig.max_trial_boots {
        booted(rig);
    }
    let trial_spent = snapshot(rig);
    restore(rig, &confirmed);
    rig.stage(&img.tampered).expect("stage tampered update");
    let tampered_requested = snapshot(rig);
    drop(factory);

    vec![
        sc(Phase::Download, confirmed.clone(), BOTH, true, None),
        sc(Phase::Swap, requested, NEW, true, None),
        sc(Phase::Confirm, on_trial, NEW, true, Some(trial_record)),
        sc(Phase::Revert, trial_spent, OLD, false, None),
        Scenario {
            check_update_before_swap: false,
            ..sc(Phase::RejectAfterSwap, tampered_requested, OLD, false, None)
        },
        sc(Phase::CounterUpdate, factory_booted, OLD, true, Some(factory_record)),
        sc(Phase::Boot, confirmed, OLD, true, None),
    ]
}

/// What the phase does; `Err` carries the failure text.
fn run_phase<const W: usize, const E: usize>(rig: &Rig<W, E>, sc: &Scenario, img: &Images) -> Result<(), String> {
    match sc.phase {
        Phase::Download => rig.stage(&img.new).map_err(|e| e.to_string()),
        Phase::Confirm | Phase::CounterUpdate => {
            let record = sc.record.as_ref().ok_or("no record")?;
            rig.control().and_then(|mut c| c.confirm(record)).map_err(|e| e.to_string())
        }
        Phase::Swap | Phase::Revert | Phase::RejectAfterSwap | Phase::Boot => match rig.boot() {
            Ok(BootOutcome::Boot(_)) => Ok(()),
            Ok(BootOutcome::Recovery(e)) => Err(format!("recovery: {e}")),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Runs the phase without a cut and counts its flash operations.
fn dry_run<const W: usize, const E: usize>(rig: &Rig<W, E>, sc: &Scenario, img: &Images) -> u64 {
    restore(rig, &sc.start);
    if let Err(e) = run_phase(rig, sc, img) {
        panic!("phase {} fails without a power cut: {e}", sc.phase.name());
    }
    rig.flash(|f| f.ops())
}

fn cut_and_settle<const W: usize, const E: usize>(
    rig: &Rig<W, E>,
    sc: &Scenario,
    img: &Images,
    cut: Cut,
) -> Result<(), String> {
    restore(rig, &sc.start);
    let counter_before = rig.status().map_err(|e| format!("status before: {e}"))?.1.security_counter;
    rig.flash(|f| f.arm(cut));
    let result = run_phase(rig, sc, img);
    let fired = rig.flash(|f| f.is_off());
    if let Err(e) = &result
        && !fired
    {
        return Err(format!("the phase failed without a power cut: {e}"));
    }
    rig.flash(|f| f.power_on());
    settle(rig, sc, img, counter_before)
}

/// Boots as the device would until it settles, checking every boot.
fn settle<const W: usize, const E: usize>(
    rig: &Rig<W, E>,
    sc: &Scenario,
    img: &Images,
    floor: u64,
) -> Result<(), String> {
    let mut floor = floor;
    let mut previous: Option<Which> = None;
    for i in 0..(rig.max_trial_boots as usize + 4) {
        let record = match rig.boot() {
            Ok(BootOutcome::Boot(r)) => r,
            Ok(BootOutcome::Recovery(e)) => return Err(format!("boot {i} entered recovery: {e}")),
            Err(e) => return Err(format!("boot {i} failed: {e}")),
        };
        if record.image_digest == img.tampered_digest {
            return Err(format!("boot {i} handed over the tampered image"));
        }
        let which = if record.image_digest == img.old_digest && rig.active(img.old.len()) == img.old {
            Which::Old
        } else if record.image_digest == img.new_digest && rig.active(img.new.len()) == img.new {
            Which::New
        } else {
            return Err(format!("boot {i} runs neither the old nor the new image exactly"));
        };
        let (_, st) = rig.status().map_err(|e| format!("boot state after boot {i}: {e}"))?;
        if st.security_counter < floor {
            return Err(format!("anti-rollback counter fell from {floor} to {}", st.security_counter));
        }
        if st.pending_magic.is_some() {
            return Err(format!("journal entry left after boot {i}"));
        }
        if st.security_counter >= 2 && which == Which::Old {
            return Err("a confirmed update was lost".into());
        }
        floor = st.security_counter;
        if record.trial {
            if sc.confirms {
                rig.control().and_then(|mut c| c.confirm(&record)).map_err(|e| format!("confirm: {e}"))?;
            }
            previous = None;
            continue;
        }
        if previous == Some(which) {
            let reverted = matches!(sc.phase, Phase::Revert | Phase::RejectAfterSwap);
            return if !sc.allowed.contains(&which) {
                Err(format!("settled on the {which:?} image, expected one of {:?}", sc.allowed))
            } else if reverted && record.last_failure.is_none() {
                Err("reverted, and the boot record does not say why".into())
            } else {
                Ok(())
            };
        }
        previous = Some(which);
    }
    Err("the device did not settle (reboot loop)".into())
}
