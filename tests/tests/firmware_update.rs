//! Firmware over the air through the real server (issue 12): a fleet pulls
//! a firmware release, restarts into it on trial and confirms it; a
//! release under which the runtime does not come up is reverted on every
//! device by the bootloader and reported; older firmware is refused, and
//! foreign firmware is neither assigned nor taken; a root rotation reaches
//! the bootloader and firmware signed by the old release key is then
//! refused.

use std::time::Duration;

use gantry_device::agent::AgentEvent;
use gantry_device::firmware::{Firmware, FirmwareOutcome};
use gantry_e2e::fleet::{Body, CLASS, Fleet, SimDevice};
use gantry_e2e::proxy::{Chooser, Fault, HostileProxy};
use serde_json::json;
use sha2::{Digest as _, Sha256};

const PROBATION: Duration = Duration::from_millis(300);

fn image(seed: u8) -> Vec<u8> {
    (0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed).collect()
}

/// One agent cycle; if it requested firmware, the restart into it.
fn cycle_and_restart(d: &mut SimDevice, healthy: bool) -> (Vec<AgentEvent>, Vec<Firmware>, Vec<FirmwareOutcome>) {
    let events = d.cycle(Duration::from_secs(10)).expect("cycle");
    let requested = events.iter().any(|e| matches!(e, AgentEvent::FirmwareRequested { .. }));
    let (booted, outcomes) = if requested { d.power_on(PROBATION, healthy) } else { (Vec::new(), Vec::new()) };
    (events, booted, outcomes)
}

fn running(d: &SimDevice) -> Option<u64> {
    d.device.firmware().record().map(|r| r.sequence)
}

fn skipped(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Skipped { stream, reason } if stream == "firmware" => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// What the server last heard about `device`'s firmware.
fn reported(fleet: &Fleet, device: &str) -> Option<(String, String)> {
    let view = fleet.device_view(device);
    view["installed"].as_array()?.iter().find(|i| i["stream"] == "firmware").map(|i| {
        (
            i["manifest_digest"].as_str().unwrap_or_default().to_owned(),
            i["state"].as_str().unwrap_or_default().to_owned(),
        )
    })
}

#[test]
fn a_fleet_takes_firmware_reverts_a_bad_one_and_refuses_old_foreign_and_rotated_out_keys() {
    let mut fleet = Fleet::start();
    let mut devices: Vec<SimDevice> = (0..4).map(|n| fleet.device(n, &fleet.url)).collect();
    for d in &mut devices {
        let (booted, _) = d.power_on(PROBATION, true);
        assert_eq!(booted, [Firmware::Absent], "a new device runs no firmware");
    }

    // Firmware 1 everywhere: pulled, restarted into on trial, confirmed, reported.
    let v1 = fleet.firmware(image(1), 1, CLASS);
    for d in &devices {
        fleet.assign(&d.id(), "firmware", &v1);
    }
    for d in &mut devices {
        let (events, booted, outcomes) = cycle_and_restart(d, true);
        assert!(events.contains(&AgentEvent::FirmwareRequested { sequence: 1 }), "{events:?}");
        assert!(matches!(&booted[..], [Firmware::Running(r)] if r.trial && r.sequence == 1), "{booted:?}");
        assert!(matches!(&outcomes[..], [FirmwareOutcome::Confirmed { sequence: 1, .. }]), "{outcomes:?}");
        assert_eq!(running(d), Some(1));
        assert_eq!(reported(&fleet, &d.id()), Some((v1.digest.clone(), "installed".into())));
    }
    // After the restart the device checks in afresh, finds it runs what is
    // assigned, and from then on hears nothing new.
    for d in &mut devices {
        let events = d.cycle(Duration::from_secs(10)).expect("cycle");
        assert!(
            events.iter().all(|e| matches!(e, AgentEvent::Ticket { .. } | AgentEvent::LoggedIn { .. })),
            "{events:?}"
        );
        assert_eq!(d.cycle(Duration::from_secs(10)).expect("cycle"), vec![AgentEvent::Unchanged]);
        // Its check-in carried what the bootloader measured.
        let view = fleet.device_view(&d.id());
        let firmware = view["inventory"].as_array().and_then(|i| i.iter().find(|i| i["stream"] == "firmware"));
        let boot = &firmware.expect("a firmware entry")["boot"];
        let record = *d.device.firmware().record().expect("firmware runs");
        assert_eq!(boot["image_digest"], hex::encode(Sha256::digest(image(1))), "{view}");
        assert_eq!((boot["security_counter"].as_u64(), boot["trial_boots"].as_u64()), (Some(1), Some(0)), "{view}");
        assert_eq!(boot["boot_count"].as_u64(), Some(u64::from(record.boot_count)), "{view}");
    }

    // Firmware 2, under which the runtime does not come up: the trial
    // ends unconfirmed, the bootloader reverts at the next boot, and the
    // server hears why. It is not tried again.
    let v2 = fleet.firmware(image(2), 2, CLASS);
    for d in &devices {
        fleet.assign(&d.id(), "firmware", &v2);
    }
    for d in &mut devices {
        let (_, booted, outcomes) = cycle_and_restart(d, false);
        assert_eq!(booted.len(), 2, "the trial boot and the revert: {booted:?}");
        assert!(matches!(&booted[1], Firmware::Running(r) if !r.trial && r.sequence == 1), "{booted:?}");
        assert!(
            matches!(&outcomes[..], [FirmwareOutcome::Reverted { sequence: 2, reason, .. }] if reason.contains("trial")),
            "{outcomes:?}"
        );
        assert_eq!(reported(&fleet, &d.id()).map(|r| r.1), Some("reverted".into()));
        let (events, booted, _) = cycle_and_restart(d, true);
        assert!(booted.is_empty(), "not tried again");
        assert_eq!(skipped(&events), ["this release was reverted on this device"]);
        assert_eq!(running(d), Some(1));
    }

    // Foreign firmware (another board): the server does not assign it to a
    // device that reported another class at check-in, and the device would
    // refuse it all the same.
    let d = &mut devices[0];
    let foreign = fleet.firmware(image(3), 3, "another-board");
    let (status, body) = fleet.call(
        "PUT",
        &format!("/api/v1/devices/{}/assignments/firmware", d.id()),
        Body::Json(json!({ "manifest_digest": foreign.digest })),
    );
    assert_eq!((status, body["error"].as_str()), (422, Some("wrong-class")), "{body}");
    let now = gantry_device::supervisor::unix_now();
    let refused = d.device.store().stage_firmware(&foreign.envelope, now).expect_err("another board's firmware");
    assert!(refused.to_string().contains("class id"), "{refused}");
    let (events, booted, _) = cycle_and_restart(d, true);
    assert!(booted.is_empty(), "{events:?}");
    assert_eq!(running(d), Some(1));

    // The keys rotate: with the next assignment the device takes the new
    // root (its bootloader first), still boots firmware 1, and takes
    // firmware the new release key signed; what the old key signed is
    // refused from then on.
    let old_key_fw = fleet.firmware(image(4), 4, CLASS);
    fleet.rotate_keys();
    let d = &mut devices[1];
    let new_key_fw = fleet.firmware(image(5), 5, CLASS);
    fleet.assign(&d.id(), "firmware", &new_key_fw);
    let (events, booted, outcomes) = cycle_and_restart(d, true);
    assert!(events.iter().any(|e| matches!(e, AgentEvent::TrustRoot { accepted: Some(2), .. })), "{events:?}");
    assert_eq!(d.device.store().boot_keys().unwrap().unwrap().version, 2, "the bootloader was re-keyed");
    assert!(matches!(&booted[..], [Firmware::Running(r)] if r.trial && r.sequence == 5), "{booted:?}");
    assert!(matches!(&outcomes[..], [FirmwareOutcome::Confirmed { sequence: 5, .. }]), "{outcomes:?}");
    let now = gantry_device::supervisor::unix_now();
    let refused = d.device.store().stage_firmware(&old_key_fw.envelope, now).expect_err("old release key");
    assert!(refused.to_string().contains("trusted key"), "{refused}");

    // An older release is refused as a rollback, with a report.
    fleet.assign(&d.id(), "firmware", &v1);
    let (events, booted, _) = cycle_and_restart(d, true);
    assert!(booted.is_empty(), "{events:?}");
    assert!(skipped(&events).first().is_some_and(|r| r.contains("rollback refused")), "{events:?}");
    assert_eq!(running(d), Some(5));
}

/// A staged rollout of firmware halts by itself when the first stage's
/// devices revert it, exactly as a container rollout does; the rest of
/// the fleet never tries it.
#[test]
fn a_firmware_rollout_halts_itself_when_its_first_stage_reverts() {
    let fleet = Fleet::start();
    let mut devices: Vec<SimDevice> = (0..20).map(|n| fleet.device(n, &fleet.url)).collect();
    let v1 = fleet.firmware(image(1), 1, CLASS);
    for d in &mut devices {
        fleet.assign(&d.id(), "firmware", &v1);
        let (_, _, outcomes) = cycle_and_restart(d, true);
        assert!(matches!(&outcomes[..], [FirmwareOutcome::Confirmed { sequence: 1, .. }]), "{outcomes:?}");
    }

    let v2 = fleet.firmware(image(2), 2, CLASS);
    let (status, body) = fleet.call(
        "POST",
        "/api/v1/rollouts",
        Body::Json(json!({
            "manifest_digest": v2.digest, "group": "lab", "stages": [10, 50, 100],
            "success_threshold": 100, "error_threshold": 10,
        })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("rollout id").to_owned();
    let mut tried = 0;
    for _ in 0..3 {
        for d in &mut devices {
            let (_, booted, outcomes) = cycle_and_restart(d, false);
            tried += usize::from(!booted.is_empty());
            if !booted.is_empty() {
                assert!(matches!(&outcomes[..], [FirmwareOutcome::Reverted { sequence: 2, .. }]), "{outcomes:?}");
            }
        }
    }
    let (status, r) = fleet.call("GET", &format!("/api/v1/rollouts/{id}"), Body::None);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["state"], "halted", "{r:#}");
    assert!((1..=2).contains(&tried), "{tried} devices tried the bad firmware; the first stage is 10 % of 20");
    assert!(devices.iter().all(|d| running(d) == Some(1)), "every device runs firmware 1");
}

/// A firmware download cut mid-way resumes with a Range request at the
/// next cycle, from the bytes already in DFU, and the release still goes
/// through: pulled, restarted into, confirmed.
#[test]
fn a_cut_firmware_download_resumes_where_it_stopped() {
    let fleet = Fleet::start();
    let upstream = fleet.url.trim_start_matches("http://").parse().expect("addr");
    let big: Vec<u8> = (0..12_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let image_path = format!("/blobs/sha256/{}", hex::encode(Sha256::digest(&big)));
    let mut cut = false;
    let chooser: Chooser = Box::new(move |_, line| {
        if line.contains(&image_path) && !std::mem::replace(&mut cut, true) { Fault::Drop(7_000) } else { Fault::None }
    });
    let proxy = HostileProxy::start(upstream, chooser).expect("proxy");
    let mut d = fleet.device(0, &proxy.url());
    d.power_on(PROBATION, true);
    let v1 = fleet.firmware(big.clone(), 1, CLASS);
    fleet.assign(&d.id(), "firmware", &v1);

    // The cut cycle fails (or skips the assignment): nothing is requested.
    let first = d.cycle(Duration::from_secs(10));
    assert!(!first.iter().flatten().any(|e| matches!(e, AgentEvent::FirmwareRequested { .. })), "{first:?}");
    assert_eq!(proxy.ranged_requests(), 0);
    let (events, booted, outcomes) = cycle_and_restart(&mut d, true);
    assert!(events.contains(&AgentEvent::FirmwareRequested { sequence: 1 }), "{events:?}");
    assert_eq!(proxy.ranged_requests(), 1, "the second try asked for the rest only");
    assert!(matches!(&booted[..], [Firmware::Running(r)] if r.trial && r.sequence == 1), "{booted:?}");
    assert!(matches!(&outcomes[..], [FirmwareOutcome::Confirmed { sequence: 1, .. }]), "{outcomes:?}");
}
