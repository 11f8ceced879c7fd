//! Keeps the enabled containers running: one thread each, restart policy
//! with doubling back-off, health checks, and the probation of a new
//! version, which ends in a confirm or, by itself, a revert to the previous
//! version. A container that traps, loops or hogs memory only ever affects
//! its own thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use gantry_signing::config::{HealthKind, RestartPolicy};

use crate::clock::{Clock, SystemClock};
use crate::device::{Device, DeviceError};
use crate::sandbox::{Outcome, Sandbox};
use crate::store::Runnable;
use crate::table::Phase;
use crate::update::{Probation, UpdateEvent, Verdict};

/// What the supervisor reports, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A container's entry point started.
    Started {
        /// Container.
        name: String,
        /// Its sequence number.
        sequence: u64,
    },
    /// It ended.
    Ended {
        /// Container.
        name: String,
        /// How.
        outcome: Outcome,
    },
    /// A health check failed.
    Unhealthy {
        /// Container.
        name: String,
    },
    /// The restart policy gave up (crash loop) or does not restart.
    GaveUp {
        /// Container.
        name: String,
        /// Why.
        reason: String,
    },
    /// An update outcome (confirm, revert).
    Update(UpdateEvent),
    /// Log output was lost: it could not be written (a full disk). The
    /// container went on.
    LogDropped {
        /// Container.
        name: String,
        /// Bytes lost during the run that just ended.
        bytes: u64,
    },
    /// The compiled module could not be written to the artifact cache (a
    /// full disk): it runs from memory and is compiled again by the next
    /// process.
    NotCached {
        /// Container.
        name: String,
        /// What failed.
        error: String,
    },
    /// A confirm or revert could not be written; it is tried again.
    StoreFailed {
        /// Container.
        name: String,
        /// What failed.
        error: String,
    },
}

/// Seconds since the Unix epoch (trust roots expire in these).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What can be asked of a running supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// `name` switched to a new version (or was installed): stop its
    /// current run and start its active slot, on probation. The other
    /// containers are not touched.
    Reload(String),
}

/// Runs every enabled container until `stop` is set, sending reports to
/// `tx`, on the real clock.
pub fn run(device: &Device, stop: &Arc<AtomicBool>, tx: &Sender<Report>) -> Result<(), DeviceError> {
    let (_keep, control) = std::sync::mpsc::channel();
    run_controlled(device, Arc::new(SystemClock::new()), stop, tx, control)
}

/// [`run`] on `clock`, obeying `control` meanwhile (the pull agent reloads
/// what it installed).
pub fn run_controlled(
    device: &Device,
    clock: Arc<dyn Clock>,
    stop: &Arc<AtomicBool>,
    tx: &Sender<Report>,
    control: Receiver<Control>,
) -> Result<(), DeviceError> {
    let (runnable, events) = device.store().start()?;
    for e in events {
        let _ = tx.send(Report::Update(e));
    }
    // Before anything runs: trees no running release mounts are deleted (a
    // revert unpacks its own again from flash). Not fatal: a tree left
    // behind only takes space.
    let _ = device.collect_blob_trees(&runnable);
    std::thread::scope(|s| {
        let spawn = |r: Runnable| {
            let flag = Arc::new(AtomicBool::new(false));
            let mine = flag.clone();
            // Sized for the container's Wasm stack ceiling: guest frames
            // live on this thread's stack.
            let stack = Sandbox::thread_stack(&r.release.config);
            let name = r.name.clone();
            let thread = std::thread::Builder::new().name(format!("gantry-{name}")).stack_size(stack);
            let clock = clock.clone();
            match thread.spawn_scoped(s, move || supervise(device, &clock, r, &mine, tx, stack)) {
                Ok(handle) => Some((flag, handle)),
                Err(e) => {
                    let _ =
                        tx.send(Report::GaveUp { name, reason: format!("no thread with {stack} bytes of stack: {e}") });
                    None
                }
            }
        };
        let mut running: BTreeMap<String, _> = runnable
            .into_iter()
            .filter_map(|r| {
                let name = r.name.clone();
                spawn(r).map(|t| (name, t))
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            // A few wake-ups a second: enough to notice `stop`, cheap when idle.
            let Ok(Control::Reload(name)) = control.recv_timeout(Duration::from_millis(250)) else { continue };
            if let Some((flag, thread)) = running.remove(&name) {
                flag.store(true, Ordering::Relaxed);
                let _ = thread.join();
            }
            match device.store().runnable(&name) {
                Ok(Some(r)) => {
                    if let Some(t) = spawn(r) {
                        running.insert(name, t);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = tx.send(Report::GaveUp { name, reason: format!("its active slot does not verify: {e}") });
                }
            }
        }
        for (flag, _) in running.values() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    Ok(())
}

/// Sleeps `ms` on `clock`, waking early when any flag is set; true if one is.
fn nap(clock: &dyn Clock, ms: u64, flags: &[&AtomicBool]) -> bool {
    clock.nap(Duration::from_millis(ms), &|| flags.iter().any(|f| f.load(Ordering::Relaxed)))
}

/// What the heartbeat watcher concluded about one run.
enum Watch {
    /// Nothing: the run ended by itself or the runtime is stopping.
    Quiet,
    /// Heartbeats stopped; the run was stopped.
    Missed,
    /// The probation failed; the run was stopped.
    Revert(String),
}

/// Watches the heartbeats of a running entry point: stops it when
/// `failure_threshold` intervals in a row pass without one, and during a
/// probation confirms it (while it keeps running) or reverts it.
#[allow(clippy::too_many_arguments)]
fn watch_heartbeats(
    device: &Device,
    name: &str,
    health: &gantry_signing::config::Health,
    heartbeat: &std::sync::atomic::AtomicU64,
    clock: &dyn Clock,
    probation: &mut Option<Probation>,
    run_stop: &AtomicBool,
    done: &AtomicBool,
    stop: &AtomicBool,
    tx: &Sender<Report>,
) -> Watch {
    let started = clock.now_ms();
    let interval = health.interval_ms.max(1);
    let mut misses = 0;
    while !nap(clock, interval, &[done, stop]) {
        let now = clock.now_ms();
        let ok = now.saturating_sub(heartbeat.load(Ordering::Relaxed).max(started)) <= interval;
        if !ok {
            let _ = tx.send(Report::Unhealthy { name: name.to_owned() });
        }
        if let Some(p) = probation.as_mut() {
            match p.observe(ok, now) {
                Verdict::Pending => {}
                Verdict::Confirm => match device.store().confirm(name) {
                    Ok(event) => {
                        *probation = None;
                        if let Some(e) = event {
                            let _ = tx.send(Report::Update(e));
                        }
                    }
                    // Kept on probation: the next interval confirms again.
                    Err(e) => {
                        let _ = tx.send(Report::StoreFailed { name: name.to_owned(), error: e.to_string() });
                    }
                },
                Verdict::Revert(reason) => {
                    run_stop.store(true, Ordering::Relaxed);
                    return Watch::Revert(reason);
                }
            }
        }
        misses = if ok { 0 } else { misses + 1 };
        if misses >= health.failure_threshold.max(1) {
            run_stop.store(true, Ordering::Relaxed);
            return Watch::Missed;
        }
    }
    if stop.load(Ordering::Relaxed) {
        run_stop.store(true, Ordering::Relaxed);
    }
    Watch::Quiet
}

/// What a probation verdict led to.
enum Next {
    /// Keep going with the same version.
    Same,
    /// Run this version now (the previous one, after a revert).
    Run(Box<Runnable>),
    /// Nothing left to run (a failed first install is disabled).
    Nothing,
}

/// Supervises one container on the current thread, which has `stack`
/// bytes of stack.
fn supervise(
    device: &Device,
    clock: &Arc<dyn Clock>,
    mut r: Runnable,
    stop: &Arc<AtomicBool>,
    tx: &Sender<Report>,
    stack: usize,
) {
    let send = |rep: Report| {
        let _ = tx.send(rep);
    };
    let on_probation = |name: &str| {
        device.store().table().ok().and_then(|t| t.get(name).map(|c| matches!(c.phase, Phase::Probation { .. })))
    };
    let mut probation =
        on_probation(&r.name).unwrap_or(false).then(|| Probation::start(&r.release.config, clock.now_ms()));
    let mut restarts = 0u32;
    let mut backoff = r.release.config.restart.backoff_initial_ms;
    'versions: while !stop.load(Ordering::Relaxed) {
        let need = Sandbox::thread_stack(&r.release.config);
        if need > stack {
            // A version whose Wasm stack ceiling this thread cannot hold (a
            // revert to a config with a larger one): go on in a thread that
            // can.
            let name = r.name.clone();
            let thread = std::thread::Builder::new().name(format!("gantry-{name}")).stack_size(need);
            let done = std::thread::scope(|s| {
                thread.spawn_scoped(s, || supervise(device, clock, r, stop, tx, need)).map(|t| t.join().is_ok())
            });
            if !matches!(done, Ok(true)) {
                send(Report::GaveUp { name, reason: format!("no thread with {need} bytes of stack") });
            }
            return;
        }
        let config = r.release.config.clone();
        let (module, io) = match (device.module(&r), device.host_io(&r, clock.clone())) {
            (Ok(m), Ok(io)) => (m, io),
            (Err(e), _) | (_, Err(e)) => {
                // A new version that cannot even start (its module or its
                // mounts) is reverted on probation, like one that crashes.
                if probation.is_some() {
                    let verdict = Verdict::Revert(format!("cannot start: {e}"));
                    if let Next::Run(next) = settle(device, &r, &mut probation, verdict, tx) {
                        r = *next;
                        continue 'versions;
                    }
                }
                send(Report::GaveUp { name: r.name.clone(), reason: e.to_string() });
                return;
            }
        };
        let digest = r.release.module().sha256;
        if let Some(f) = device.sandbox().cache_faults().into_iter().find(|f| f.module_sha256 == digest) {
            send(Report::NotCached { name: r.name.clone(), error: f.error });
        }
        let dropped = io.log_dropped.clone();
        send(Report::Started { name: r.name.clone(), sequence: r.release.sequence });
        let heartbeat = config.health.as_ref().filter(|h| matches!(h.kind, HealthKind::Heartbeat));
        let (result, watch) = match heartbeat {
            None => (device.sandbox().run(&module, &config, io, stop.clone()), Watch::Quiet),
            Some(health) => {
                let (run_stop, done) = (Arc::new(AtomicBool::new(false)), AtomicBool::new(false));
                let beats = io.heartbeat.clone();
                std::thread::scope(|s| {
                    let watcher = s.spawn(|| {
                        let (name, probation) = (&r.name, &mut probation);
                        watch_heartbeats(device, name, health, &beats, &**clock, probation, &run_stop, &done, stop, tx)
                    });
                    let result = device.sandbox().run(&module, &config, io, run_stop.clone());
                    done.store(true, Ordering::Relaxed);
                    (result, watcher.join().unwrap_or(Watch::Quiet))
                })
            }
        };
        let (outcome, running) = match result {
            Ok(x) => x,
            Err(e) => (Outcome::Failed(e.to_string()), None),
        };
        // For `status`; a disk too full to keep it loses only that.
        let _ = device.record_run(&r.name, r.release.sequence, &outcome, unix_now());
        send(Report::Ended { name: r.name.clone(), outcome: outcome.clone() });
        let bytes = dropped.swap(0, Ordering::Relaxed);
        if bytes > 0 {
            send(Report::LogDropped { name: r.name.clone(), bytes });
        }
        let mut failed = outcome.is_failure(&config);
        match watch {
            Watch::Quiet => {}
            Watch::Missed => failed = true,
            Watch::Revert(reason) => match settle(device, &r, &mut probation, Verdict::Revert(reason), tx) {
                Next::Run(next) => {
                    r = *next;
                    continue 'versions;
                }
                Next::Same => {}
                Next::Nothing => return,
            },
        }

        // The entry returned: serve health checks while it stays healthy.
        if let (Some(mut running), Some(health)) = (running, config.health.as_ref())
            && let HealthKind::Export(export) = &health.kind
        {
            let mut misses = 0u32;
            while !nap(&**clock, health.interval_ms, &[stop]) {
                let ok = running.health(export, Duration::from_millis(health.timeout_ms)).unwrap_or(false);
                if !ok {
                    send(Report::Unhealthy { name: r.name.clone() });
                }
                if let Some(p) = probation.as_mut() {
                    let verdict = p.observe(ok, clock.now_ms());
                    match settle(device, &r, &mut probation, verdict, tx) {
                        Next::Same => {}
                        Next::Run(next) => {
                            r = *next;
                            continue 'versions;
                        }
                        Next::Nothing => return,
                    }
                }
                misses = if ok { 0 } else { misses + 1 };
                if misses >= health.failure_threshold.max(1) {
                    failed = true;
                    break;
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Some(p) = probation.as_mut() {
            let verdict = if failed {
                p.crashed(&format!("{outcome:?}"))
            } else if config.health.is_none() {
                // Ran to completion without a health check: nothing more to prove.
                p.tick(u64::MAX)
            } else {
                p.tick(clock.now_ms())
            };
            match settle(device, &r, &mut probation, verdict, tx) {
                Next::Same => {}
                Next::Run(next) => {
                    r = *next;
                    restarts = 0;
                    continue;
                }
                Next::Nothing => return,
            }
        }
        let restart = match config.restart.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        if !restart {
            if failed {
                send(Report::GaveUp { name: r.name.clone(), reason: "not restarted (restart policy)".into() });
            }
            return;
        }
        restarts += 1;
        if restarts > config.restart.max_restarts {
            send(Report::GaveUp { name: r.name.clone(), reason: format!("crash loop: {restarts} restarts") });
            return;
        }
        if nap(&**clock, backoff, &[stop]) {
            return;
        }
        backoff = backoff.saturating_mul(2).min(config.restart.backoff_max_ms.max(1));
    }
}

/// Applies a probation verdict: confirm, or revert to what the table then
/// names as active, verified from flash again.
fn settle(
    device: &Device,
    r: &Runnable,
    probation: &mut Option<Probation>,
    verdict: Verdict,
    tx: &Sender<Report>,
) -> Next {
    let result = match verdict {
        Verdict::Pending => return Next::Same,
        Verdict::Confirm => device.store().confirm(&r.name),
        Verdict::Revert(reason) => device.store().revert(&r.name, &reason),
    };
    let event = match result {
        Ok(event) => event,
        // The decision stands but was not written (a flash or map error):
        // the probation is kept, so the next health check, crash or tick
        // reaches it again and the write is retried, never forgotten.
        Err(e) => {
            let _ = tx.send(Report::StoreFailed { name: r.name.clone(), error: e.to_string() });
            return Next::Same;
        }
    };
    *probation = None;
    let reverted = matches!(event, Some(UpdateEvent::Reverted { .. }));
    if let Some(e) = event {
        let _ = tx.send(Report::Update(e));
    }
    if !reverted {
        return Next::Same;
    }
    match device.store().runnable(&r.name) {
        Ok(Some(next)) => Next::Run(Box::new(next)),
        _ => Next::Nothing,
    }
}
