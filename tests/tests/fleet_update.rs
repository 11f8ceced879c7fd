//! A release reaches a fleet of 100 simulated devices through the real
//! server and the real agent; a crashing release is rolled back on every
//! device by itself; a hostile network gets nothing unverified installed.

use std::time::Duration;

use gantry_device::agent::AgentEvent;
use gantry_device::update::UpdateEvent;
use gantry_e2e::fleet::{Body, Fleet, SimDevice, fixture, sign_release};
use gantry_e2e::proxy::{Chooser, Fault, HostileProxy};

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

/// `hello` with a 192 KiB custom section: a download big enough to cut,
/// corrupt and resume.
fn big_hello() -> Vec<u8> {
    let mut m = fixture("hello");
    let name = b"pad";
    let payload = 192 * 1024;
    let size = 1 + name.len() + payload;
    m.push(0); // custom section
    let mut v = size;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        m.push(if v == 0 { byte } else { byte | 0x80 });
        if v == 0 {
            break;
        }
    }
    m.push(name.len() as u8);
    m.extend_from_slice(name);
    m.extend((0..payload).map(|i| (i % 251) as u8));
    m
}

/// Devices behind `proxy` try to install `module` for `rounds` rounds
/// under attack; whatever happens, each runs nothing or the verified v1.
/// Then the network heals and each must end up on v1. Returns the errors
/// the attacks caused and how many requests resumed a download.
fn under_attack(chooser: Chooser, rounds: usize) -> (Vec<String>, u64) {
    let fleet = Fleet::start();
    let upstream = fleet.url.trim_start_matches("http://").parse().expect("addr");
    let proxy = HostileProxy::start(upstream, chooser).expect("proxy");
    let mut devices: Vec<SimDevice> = (0..12).map(|n| fleet.device(n, &proxy.url())).collect();
    let v1 = fleet.release(&app("1.0"), big_hello(), 1);
    for d in &devices {
        fleet.assign(&d.id(), "app", &v1);
    }
    let mut errors = Vec::new();
    for _ in 0..rounds {
        for r in round(&mut devices) {
            match r {
                Ok(events) => {
                    assert!(
                        !events.iter().any(
                            |e| matches!(e, AgentEvent::Update(UpdateEvent::Switched { sequence, .. }) if *sequence != 1)
                        ),
                        "{events:?}"
                    );
                    errors.extend(events.into_iter().filter_map(|e| match e {
                        AgentEvent::Skipped { reason, .. } => Some(reason),
                        _ => None,
                    }));
                }
                Err(e) => errors.push(e),
            }
        }
        for d in &devices {
            assert!(matches!(d.running("app"), None | Some(1)), "device {}", d.id());
        }
    }
    assert!(proxy.requests() > 12);

    proxy.set_chooser(Box::new(|_, _| Fault::None));
    for _ in 0..3 {
        for (n, r) in round(&mut devices).into_iter().enumerate() {
            if let Err(e) = r {
                eprintln!("device {n} while the network heals: {e}");
            }
        }
    }
    for d in &devices {
        assert_eq!(d.running("app"), Some(1), "device {}", d.id());
    }
    (errors, proxy.ranged_requests())
}

#[test]
fn attacks_on_every_request_install_nothing_unverified_and_the_devices_recover() {
    let faults = [
        Fault::Drop(300),
        Fault::Corrupt(97),
        Fault::Stall(200),
        Fault::Endless,
        Fault::None,
        Fault::Drop(2000),
        Fault::Corrupt(501),
        Fault::None,
    ];
    let (errors, _) = under_attack(Box::new(move |n, _| faults[(n as usize) % faults.len()]), 4);
    assert!(errors.len() > 5, "the proxy attacked nothing: {errors:?}");
}

#[test]
fn attacks_on_downloads_are_refused_and_a_cut_download_resumes() {
    // Every blob answer is attacked in turn: cut after 64 KiB (the next
    // try resumes with Range), corrupted, followed by endless junk,
    // trickled past its deadline, stalled.
    let faults = [
        Fault::Drop(64 * 1024),
        Fault::Corrupt(4093),
        Fault::Endless,
        Fault::Trickle(Duration::from_millis(2)),
        Fault::Stall(100 * 1024),
    ];
    let mut blob_requests = 0usize;
    let chooser: Chooser = Box::new(move |_, line| {
        if !line.contains("/blobs/") {
            return Fault::None;
        }
        blob_requests += 1;
        faults[blob_requests % faults.len()]
    });
    let (errors, resumed) = under_attack(chooser, 4);
    assert!(resumed > 0, "no download was resumed");
    let seen = |what: &str| errors.iter().any(|e| e.contains(what));
    // Corrupted payload bytes are refused by the slot as the last one
    // arrives (envelopes, fetched whole, by the download itself).
    assert!(seen("does not match its signed digest") || seen("do not match their digest"), "{errors:#?}");
    assert!(seen("more than the"), "endless data: {errors:#?}");
    assert!(seen("not done within") || seen("timeout"), "slow retrieval: {errors:#?}");
}

/// Issue 11, finding 3, end to end: the fleet rotates its release keys and
/// its root. Each device is sent the successor at its next check-in,
/// accepts it from the root it holds, keeps running what the old key
/// signed, installs the next release signed with the new key, and refuses
/// one signed with the old key from then on.
#[test]
fn a_fleet_rotates_its_root_and_release_keys_and_takes_releases_of_the_new_keys_only() {
    let mut fleet = Fleet::start();
    let mut devices: Vec<SimDevice> = (0..10).map(|n| fleet.device(n, &fleet.url)).collect();
    let v1 = fleet.release(&app("1.0"), fixture("hello"), 1);
    for d in &devices {
        fleet.assign(&d.id(), "app", &v1);
    }
    for r in round(&mut devices) {
        let events = r.expect("cycle");
        assert!(events.iter().any(|e| matches!(e, AgentEvent::Update(UpdateEvent::Confirmed { .. }))), "{events:?}");
    }

    let old_key = fleet.release_key();
    fleet.rotate_keys();
    let old_signed = sign_release(&app("2.0"), &fixture("hello"), 2, old_key.as_ref());
    let (status, body) = fleet.call("POST", "/api/v1/releases", Body::Bytes(old_signed.clone()));
    assert_eq!(status, 422, "the server refuses the old key too: {body}");

    let v2 = fleet.release(&app("2.0"), fixture("hello"), 2);
    for d in &devices {
        fleet.assign(&d.id(), "app", &v2);
    }
    for r in round(&mut devices) {
        let events = r.expect("cycle");
        assert!(events.contains(&AgentEvent::TrustRoot { accepted: Some(2), refused: None }), "{events:?}");
        assert!(
            events.iter().any(|e| matches!(e, AgentEvent::Update(UpdateEvent::Confirmed { sequence: 2, .. }))),
            "{events:?}"
        );
    }
    for d in &devices {
        assert_eq!((d.trust_root_version(), d.running("app")), (2, Some(2)));
        let trust = d.device.store().trust(gantry_device::supervisor::unix_now()).expect("trust");
        let refused = gantry_device::bundle::verify_envelope(&old_signed, &trust, 0).expect_err("old key refused");
        assert!(refused.to_string().contains("trusted key"), "{refused}");
    }
    // Nothing new afterwards: the devices hold the newest root, so 304.
    for r in round(&mut devices) {
        assert_eq!(r.expect("cycle"), vec![AgentEvent::Unchanged]);
    }
}
