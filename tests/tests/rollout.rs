//! Staged rollouts end to end: a release rolled out in stages reaches 100
//! devices even though the server is killed and restarted mid-rollout; a
//! release whose container fails its health check (its heartbeats stop)
//! trips the error threshold on the first stage, the rollout halts by
//! itself, and every device is back on the old version.

use std::time::Duration;

use gantry_device::agent::AgentEvent;
use gantry_device::update::UpdateEvent;
use gantry_e2e::fleet::{Body, Fleet, SimDevice, fixture};
use serde_json::{Value, json};

const APP: &str = "name = \"app\"\nversion = \"VERSION\"\ncapabilities = [\"wasi:stdout\"]\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 1\nbackoff_initial_ms = 20\n";

fn app(version: &str) -> String {
    APP.replace("VERSION", version)
}

/// One cycle of every device, 8 at a time; the errors.
fn round(devices: &mut [SimDevice]) -> Vec<String> {
    let mut errors = Vec::new();
    for chunk in devices.chunks_mut(8) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter_mut().map(|d| s.spawn(move || d.cycle(Duration::from_secs(10)))).collect();
            for h in handles {
                if let Err(e) = h.join().expect("device thread") {
                    errors.push(e.to_string());
                }
            }
        });
    }
    errors
}

fn rollout(fleet: &Fleet, id: &str) -> Value {
    let (status, body) = fleet.call("GET", &format!("/api/v1/rollouts/{id}"), Body::None);
    assert_eq!(status, 200, "{body}");
    body
}

fn start_rollout(fleet: &Fleet, digest: &str) -> String {
    let (status, body) = fleet.call(
        "POST",
        "/api/v1/rollouts",
        Body::Json(json!({
            "manifest_digest": digest, "group": "lab", "stages": [10, 50, 100],
            "success_threshold": 100, "error_threshold": 10,
        })),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("rollout id").to_owned()
}

fn running(devices: &[SimDevice], sequence: u64) -> usize {
    devices.iter().filter(|d| d.running("app") == Some(sequence)).count()
}

#[test]
fn a_staged_rollout_survives_a_server_kill_and_a_bad_release_halts_itself() {
    let mut fleet = Fleet::start();
    let mut devices: Vec<SimDevice> = (0..100).map(|n| fleet.device(n, &fleet.url)).collect();

    // v1 in stages of 10 %, 50 %, 100 %.
    let v1 = fleet.release(&app("1.0"), fixture("hello"), 1);
    let id = start_rollout(&fleet, &v1.digest);
    assert_eq!(rollout(&fleet, &id)["progress"]["assigned"], 10);
    let errors = round(&mut devices);
    assert!(errors.is_empty(), "{errors:?}");
    let first = running(&devices, 1);
    assert!((10..100).contains(&first), "{first} devices after the first round");

    // Killed mid-rollout: nothing is lost, the rollout goes on.
    fleet.kill_and_restart();
    let mut rounds = 0;
    while rollout(&fleet, &id)["state"] != "completed" {
        rounds += 1;
        assert!(rounds <= 6, "not completed: {:#}", rollout(&fleet, &id));
        let errors = round(&mut devices);
        // Tokens survive a restart only if the server keeps its secret;
        // a device that must log in again does so by itself.
        assert!(errors.iter().all(|e| e.contains("unauthorized")), "{errors:?}");
    }
    assert_eq!(running(&devices, 1), 100);
    assert_eq!(rollout(&fleet, &id)["progress"]["installed"], 100);

    // v2 starts, beats a few times, then hangs: its health check fails,
    // the first stage reverts, the rollout halts.
    let unhealthy = "name = \"app\"\nversion = \"2.0\"\n[health]\nkind = \"heartbeat\"\ninterval_ms = 50\n\
                     failure_threshold = 2\nprobation_ms = 5000\n";
    let v2 = fleet.release(unhealthy, fixture("heartbeat-stops"), 2);
    let id = start_rollout(&fleet, &v2.digest);
    let (mut tried, mut health_failures) = (0, 0);
    for _ in 0..3 {
        for d in &mut devices {
            let events = d.cycle(Duration::from_secs(10)).unwrap_or_default();
            tried += events
                .iter()
                .filter(|e| matches!(e, AgentEvent::Update(UpdateEvent::Switched { sequence: 2, .. })))
                .count();
            health_failures += events
                .iter()
                .filter(|e| {
                    matches!(e, AgentEvent::Update(UpdateEvent::Reverted { from: 2, reason, .. })
                        if reason.contains("health check failed"))
                })
                .count();
        }
    }
    assert_eq!(health_failures, tried, "every device that tried v2 reverted for its failed health check");
    let r = rollout(&fleet, &id);
    assert_eq!(r["state"], "halted", "{r:#}");
    assert!((1..=10).contains(&tried), "{tried} devices tried the bad release; the first stage is 10");
    assert_eq!(running(&devices, 1), 100, "every device is back on (or still on) v1");
}
