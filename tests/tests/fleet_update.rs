//! A release reaches a fleet of 100 simulated devices through the real
//! server and the real agent; a crashing release is rolled back on every
//! device by itself; a hostile network gets nothing unverified installed.

use std::time::Duration;

use gantry_device::agent::AgentEvent;
use gantry_device::update::UpdateEvent;
use gantry_e2e::fleet::{Body, Fleet, SimDevice, fixture};
use gantry_e2e::proxy::{Fault, HostileProxy};

const APP: &str = "name = \"app\"\nversion = \"VERSION\"\ncapabilities = [\"wasi:stdout\"]\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 1\nbackoff_initial_ms = 20\n";

fn app(version: &str) -> String {
    APP.replace("VERSION", version)
}

/// Runs `rounds` cycles over every device (8 at a time), returning each
/// device's events.
fn round(devices: &mut [SimDevice]) -> Vec<Result<Vec<AgentEvent>, String>> {
    let mut out: Vec<Result<Vec<AgentEvent>, String>> = Vec::new();
    for chunk in devices.chunks_mut(8) {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter_mut()
                .map(|d| s.spawn(move || d.cycle(Duration::from_secs(10)).map_err(|e| e.to_string())))
                .collect();
            handles.into_iter().map(|h| h.join().expect("device thread")).collect()
        });
        out.extend(results);
    }
    out
}

#[test]
fn a_release_reaches_100_devices_and_a_crashing_one_is_rolled_back() {
    let fleet = Fleet::start();
    let mut devices: Vec<SimDevice> = (0..100).map(|n| fleet.device(n, &fleet.url)).collect();

    // v1 to everyone.
    let v1 = fleet.release(&app("1.0"), fixture("hello"), 1);
    for d in &devices {
        fleet.assign(&d.id(), "app", &v1);
    }
    for r in round(&mut devices) {
        let events = r.expect("cycle");
        assert!(
            events.iter().any(|e| matches!(e, AgentEvent::Update(UpdateEvent::Confirmed { sequence: 1, .. }))),
            "{events:?}"
        );
    }
    assert!(devices.iter().all(|d| d.running("app") == Some(1)));

    // Nothing new: every check-in answers 304.
    for r in round(&mut devices) {
        assert_eq!(r.expect("cycle"), vec![AgentEvent::Unchanged]);
    }

    // v2 crashes on start: each device tries it and goes back to v1.
    let v2 = fleet.release(&app("2.0"), fixture("crash"), 2);
    for d in &devices {
        fleet.assign(&d.id(), "app", &v2);
    }
    for r in round(&mut devices) {
        let events = r.expect("cycle");
        assert!(
            events.iter().any(|e| matches!(e, AgentEvent::Update(UpdateEvent::Reverted { from: 2, to: Some(1), .. }))),
            "{events:?}"
        );
    }
    assert!(devices.iter().all(|d| d.running("app") == Some(1)));
    // Nothing is retried: the device told the server, and the check-in
    // answers 304 until an operator assigns something else.
    for r in round(&mut devices) {
        assert_eq!(r.expect("cycle"), vec![AgentEvent::Unchanged]);
    }
    // The server knows from the devices, not from the assignment.
    let view = fleet.device_view(&devices[0].id());
    let inventory = view["inventory"].as_array().expect("inventory");
    assert_eq!(inventory.len(), 1, "{view:#}");
    assert_eq!(inventory[0]["manifest_digest"], v1.digest.as_str());
    assert_eq!(inventory[0]["state"], "reverted");
    let (status, reports) = fleet.call("GET", &format!("/api/v1/devices/{}/reports", devices[0].id()), Body::None);
    assert_eq!(status, 200);
    let text = reports.to_string();
    assert!(text.contains("\"reverted\"") && text.contains(&v2.digest), "{reports:#}");
}

#[test]
fn a_hostile_network_installs_nothing_unverified_and_the_devices_recover() {
    let fleet = Fleet::start();
    let upstream = fleet.url.trim_start_matches("http://").parse().expect("addr");
    let faults = [
        Fault::Drop(300),
        Fault::Corrupt(97),
        Fault::Stall(200),
        Fault::Endless,
        Fault::Trickle(Duration::from_millis(20)),
        Fault::None,
        Fault::Drop(2000),
        Fault::Corrupt(501),
    ];
    let proxy = HostileProxy::start(upstream, Box::new(move |n| faults[(n as usize) % faults.len()])).expect("proxy");
    let mut devices: Vec<SimDevice> = (0..12).map(|n| fleet.device(n, &proxy.url())).collect();
    let v1 = fleet.release(&app("1.0"), fixture("hello"), 1);
    for d in &devices {
        fleet.assign(&d.id(), "app", &v1);
    }
    let mut failures = 0;
    for _ in 0..4 {
        for r in round(&mut devices) {
            match r {
                Ok(events) => assert!(
                    !events.iter().any(
                        |e| matches!(e, AgentEvent::Update(UpdateEvent::Switched { sequence, .. }) if *sequence != 1)
                    ),
                    "{events:?}"
                ),
                Err(_) => failures += 1,
            }
        }
        // Whatever happened, each device runs nothing or the verified v1.
        for d in &devices {
            assert!(matches!(d.running("app"), None | Some(1)));
        }
    }
    assert!(failures > 0, "the proxy attacked nothing");
    assert!(proxy.connections() > 12);

    // The network heals: every device converges on v1.
    proxy.set_chooser(Box::new(|_| Fault::None));
    for _ in 0..3 {
        let _ = round(&mut devices);
    }
    for d in &devices {
        assert_eq!(d.running("app"), Some(1), "device {}", d.id());
    }
}
