//! The container store on a simulated flash: installs, refusals, reverts,
//! and a power-cut sweep over install, switch, probation and revert.

mod common;

use common::Store;
use common::{Fleet, NOW, Release, geometry};
use gantry_boot::Slot;
use gantry_boot::sim::{Cut, CutModel};
use gantry_device::store::{HostFlash, Stage, Staging};
use gantry_device::table::Phase;
use gantry_device::update::UpdateEvent;
use gantry_keys::trust::TrustError;
use gantry_keys::{FileKeySource, KeyType, SigningKey};
use gantry_signing::build::add_signature;
use gantry_signing::config::ContainerConfig;

fn install(store: &Store, r: &Release) -> UpdateEvent {
    store.install(&r.0, &[&r.1, &r.2], NOW).unwrap()
}

/// What `start` would run for `name`: its sequence number, with the module
/// read back and checked.
fn running(store: &Store, name: &str) -> Option<u64> {
    let (runnable, _) = store.start().unwrap();
    let r = runnable.into_iter().find(|r| r.name == name)?;
    let module = store.read_payload(&r, r.release.module()).unwrap();
    assert_eq!(module.len() as u64, r.release.module().len);
    Some(r.release.sequence)
}

#[test]
fn install_update_confirm_and_revert() {
    let fleet = Fleet::new();
    let store = fleet.device();
    let v1 = fleet.release("app", "1.0", 1, 10_000);
    assert!(matches!(install(&store, &v1), UpdateEvent::Switched { sequence: 1, slot: Slot::A, .. }));
    assert_eq!(store.confirm("app").unwrap(), Some(UpdateEvent::Confirmed { name: "app".into(), sequence: 1 }));
    assert_eq!(running(&store, "app"), Some(1));

    let v2 = fleet.release("app", "2.0", 2, 12_000);
    assert!(matches!(install(&store, &v2), UpdateEvent::Switched { sequence: 2, slot: Slot::B, .. }));
    assert_eq!(running(&store, "app"), Some(2));
    let event = store.revert("app", "crashed on start").unwrap().unwrap();
    assert_eq!(
        event,
        UpdateEvent::Reverted { name: "app".into(), from: 2, to: Some(1), reason: "crashed on start".into() }
    );
    assert_eq!(running(&store, "app"), Some(1));
    let t = store.table().unwrap();
    assert!(matches!(t.get("app").unwrap().phase, Phase::Reverted { .. }));

    // A second container gets the other pair; a third does not fit.
    assert!(matches!(install(&store, &fleet.release("ml", "1", 1, 500)), UpdateEvent::Switched { .. }));
    assert!(matches!(install(&store, &fleet.release("third", "1", 1, 500)), UpdateEvent::Refused { .. }));
    // A release larger than a slot is refused before anything is written.
    let table = store.table().unwrap();
    match install(&store, &fleet.release("app", "3.0", 3, 70 * 1024)) {
        UpdateEvent::Refused { reason, .. } => assert_eq!(reason.code(), "too-large", "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.table().unwrap(), table);
}

/// Issue 11, finding 1, at the store: a revert reason of any length is
/// stored within the bound its reader checks, and the next release installs.
#[test]
fn a_revert_reason_of_any_length_keeps_the_table_readable() {
    let fleet = Fleet::new();
    let store = fleet.device();
    install(&store, &fleet.release("app", "1.0", 1, 1000));
    store.confirm("app").unwrap();
    install(&store, &fleet.release("app", "2.0", 2, 1000));
    let reason = format!("trap: {}", "wasm backtrace frame 0x1f2e ".repeat(400));
    let Some(UpdateEvent::Reverted { reason: reported, .. }) = store.revert("app", &reason).unwrap() else { panic!() };
    let table = store.table().unwrap();
    let Phase::Reverted { reason: stored } = &table.get("app").unwrap().phase else { panic!("{table:?}") };
    assert_eq!(stored.as_str(), reported);
    assert!(reported.len() <= gantry_device::table::MAX_REASON && reported.starts_with("trap: wasm"));
    assert_eq!(running(&store, "app"), Some(1));
    assert!(matches!(
        install(&store, &fleet.release("app", "3.0", 3, 1000)),
        UpdateEvent::Switched { sequence: 3, .. }
    ));
}

#[test]
fn bad_releases_are_refused_and_write_nothing() {
    let fleet = Fleet::new();
    let store = fleet.device();
    let v2 = fleet.release("app", "2.0", 2, 4000);
    install(&store, &v2);
    store.confirm("app").unwrap();
    let snapshot = store.with_flash(|f| f.contents().to_vec());

    let (env, mut module, blob) = fleet.release("app", "3.0", 3, 4000);
    module[100] ^= 1;
    let older = fleet.release("app", "1.0", 1, 4000);
    let same = fleet.release("app", "2.0b", 2, 4000);
    let other_class = fleet.release_for("app", "3.0", 3, 4000, [0x55; 16]);
    let stranger = {
        let r = fleet.release("app", "3.0", 3, 4000);
        let key = FileKeySource::from_key("s".into(), SigningKey::generate(KeyType::Ed25519));
        let unsigned = gantry_signing::build::ContainerRelease {
            config: &ContainerConfig::from_toml("name = \"app\"\nversion = \"3\"\n").unwrap(),
            module: &r.1,
            blobs: &[("model.bin".to_string(), &r.2[..])],
            sequence: 3,
            vendor_id: fleet.identity.vendor_id,
            class_id: fleet.identity.class_id,
        }
        .build_unsigned()
        .unwrap();
        (add_signature(&unsigned, &key).unwrap(), r.1, r.2)
    };
    let cases: [(&str, Release, &str); 5] = [
        ("tampered module", (env, module, blob), "does not match its signed digest"),
        ("lower sequence", older, "rollback"),
        ("same sequence", same, "rollback"),
        ("other device class", other_class, "class"),
        ("unknown signer", stranger, "trusted key"),
    ];
    for (what, r, reason) in cases {
        match store.install(&r.0, &[&r.1, &r.2], NOW).unwrap() {
            UpdateEvent::Refused { reason: got, .. } => assert!(got.to_string().contains(reason), "{what}: {got}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(store.with_flash(|f| f.contents().to_vec()) == snapshot, "{what}: nothing written");
    }
    assert_eq!(running(&store, "app"), Some(2));
}

#[test]
fn unprovisioned_or_expired_trust_is_refused() {
    let fleet = Fleet::new();
    let store = Store::open(
        HostFlash::new(gantry_device::layout::DeviceLayout::new(geometry()).unwrap().size() as usize),
        geometry(),
    )
    .unwrap();
    let r = fleet.release("app", "1", 1, 100);
    assert!(store.install(&r.0, &[&r.1, &r.2], NOW).unwrap_err().to_string().contains("init"));
    assert!(store.provision(&fleet.identity, &fleet.trust_root, NOW + 7200).is_err(), "expired root refused");
    store.provision(&fleet.identity, &fleet.trust_root, NOW).unwrap();
    assert!(store.install(&r.0, &[&r.1, &r.2], NOW + 7200).unwrap_err().to_string().contains("expired"));
}

/// Issue 11, finding 3: an expired trust root refuses new installs (a
/// freeze attack looks like this) but never stops what the device verified
/// before; a successor root arrives, and from then on only releases signed
/// by its keys install, while what the old keys signed keeps running.
#[test]
fn an_expired_root_stops_installs_not_containers_and_its_successor_takes_over() {
    let fleet = Fleet::new();
    let store = fleet.device();
    install(&store, &fleet.release("app", "1.0", 1, 3000));
    store.confirm("app").unwrap();
    let expired = NOW + 7200;

    // Expired: what runs still starts; a new release is refused, typed.
    assert_eq!(running(&store, "app"), Some(1));
    let v2 = fleet.release("app", "2.0", 2, 3000);
    let err = store.install(&v2.0, &[&v2.1, &v2.2], expired).unwrap_err();
    assert!(matches!(err, gantry_device::store::Error::Trust(TrustError::Expired { version: 1, .. })), "{err}");
    assert!(store.server_keys(expired).is_err(), "no tickets under an expired root either");

    // The successor, signed by the old and the new root keys.
    let next = fleet.rotated(2, NOW + 100_000);
    assert_eq!(
        store.rotate_trust_root(&[fleet.trust_root.clone(), next.trust_root.clone()], expired, None).unwrap(),
        Some(2)
    );
    assert_eq!(store.trust_root().unwrap().root().version, 2);
    assert_eq!(
        store.rotate_trust_root(std::slice::from_ref(&next.trust_root), expired, None).unwrap(),
        None,
        "nothing newer"
    );
    assert_eq!(running(&store, "app"), Some(1), "what the old keys signed still runs");
    match store.install(&v2.0, &[&v2.1, &v2.2], expired).unwrap() {
        UpdateEvent::Refused { reason, .. } => assert!(reason.to_string().contains("trusted key"), "{reason}"),
        other => panic!("old release key still accepted: {other:?}"),
    }
    let v2 = next.release("app", "2.0", 2, 3000);
    assert!(matches!(store.install(&v2.0, &[&v2.1, &v2.2], expired).unwrap(), UpdateEvent::Switched { .. }));
    assert_eq!(running(&store, "app"), Some(2));

    // A successor signed by its own new key alone, or by the held root's key
    // alone, or one that skips a version the device never saw (signed by
    // keys it does not hold): refused, nothing written.
    let own_only = next.rotated_signed(3, NOW + 100_000, false, true);
    let old_only = next.rotated_signed(3, NOW + 100_000, true, false);
    let skipped = fleet.rotated(3, NOW + 100_000);
    let chains = [own_only.trust_root, old_only.trust_root, skipped.trust_root, b"junk".to_vec()];
    for chain in chains.map(|c| vec![c]) {
        assert!(store.rotate_trust_root(&chain, expired, None).is_err());
        assert_eq!(store.trust_root().unwrap().root().version, 2);
    }
}

/// One step of the update life cycle, run against a store.
type Step = fn(&Store, &Fleet) -> Result<(), String>;

/// The sweep: for each step, cut the power at every flash operation (three
/// models), reopen the store on the same flash (the reboot), and check that
/// the table decodes and the container runs exactly the old or the new
/// verified version.
fn sweep(name: &str, setup: Step, step: Step, allowed: &[u64], seeds: u64, stride: u64) -> (u64, u64) {
    let fleet = Fleet::new();
    let store = fleet.device();
    setup(&store, &fleet).unwrap();
    let start = store.with_flash(|f| f.contents().to_vec());
    store.with_flash(|f| f.reset_ops());
    step(&store, &fleet).unwrap();
    let ops = store.with_flash(|f| f.ops());
    let mut flash = store.into_flash();
    let (mut cuts, mut violations) = (0, 0);
    for model in CutModel::ALL {
        let seeds = if model == CutModel::Clean { 1 } else { seeds };
        for seed in 0..seeds {
            for at in (1..=ops).step_by(stride as usize) {
                cuts += 1;
                flash.power_on();
                flash.restore(&start).unwrap();
                flash.arm(Cut { at, model, seed: seed << 32 | at });
                let store = Store::open(flash, geometry()).unwrap();
                let result = step(&store, &fleet);
                let fired = store.with_flash(|f| f.is_off());
                store.with_flash(|f| f.power_on());
                let verdict = match (result, fired) {
                    (Err(e), false) => Err(format!("failed without a cut: {e}")),
                    _ => check(&store, allowed),
                };
                if let Err(v) = verdict {
                    violations += 1;
                    if violations <= 3 {
                        eprintln!("{name} / {}: cut at {at} seed {seed}: {v}", model.name());
                    }
                }
                flash = store.into_flash();
            }
        }
    }
    println!("{name:<26} ops {ops:>6}  cuts {cuts:>7}  violations {violations}");
    (cuts, violations)
}

fn check(store: &Store, allowed: &[u64]) -> Result<(), String> {
    store.trust_root().map_err(|e| format!("trust root: {e}"))?;
    let table = store.table().map_err(|e| format!("table: {e}"))?;
    let (runnable, _) = store.start().map_err(|e| format!("start: {e}"))?;
    let Some(r) = runnable.iter().find(|r| r.name == "app") else {
        // 0 in `allowed`: not installed at all is fine (a cut first install).
        return if allowed.contains(&0) { Ok(()) } else { Err("app does not run".into()) };
    };
    if !allowed.contains(&r.release.sequence) {
        return Err(format!("runs sequence {}, expected one of {allowed:?}", r.release.sequence));
    }
    let module = store.read_payload(r, r.release.module()).map_err(|e| format!("module: {e}"))?;
    let expected: Vec<u8> = (0..module.len()).map(|i| (i as u64 * 31 + r.release.sequence) as u8).collect();
    if module != expected {
        return Err("module bytes are a mix".into());
    }
    if table.get("app").is_some_and(|c| c.running().map(|i| i.sequence) != Some(r.release.sequence)) {
        // start() may have fallen back; the table read before it must still name a verified version.
        if !allowed.contains(&table.get("app").and_then(|c| c.running()).map_or(0, |i| i.sequence)) {
            return Err("the table names a version outside the allowed ones".into());
        }
    }
    Ok(())
}

fn v1(s: &Store, f: &Fleet) -> Result<(), String> {
    let r = f.release("app", "1.0", 1, 9000);
    s.install(&r.0, &[&r.1, &r.2], NOW).map_err(|e| e.to_string())?;
    s.confirm("app").map(|_| ()).map_err(|e| e.to_string())
}

fn install_v2(s: &Store, f: &Fleet) -> Result<(), String> {
    let r = f.release("app", "2.0", 2, 11000);
    match s.install(&r.0, &[&r.1, &r.2], NOW).map_err(|e| e.to_string())? {
        UpdateEvent::Switched { .. } => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn probation_restarts(s: &Store, f: &Fleet, n: u8) -> Result<(), String> {
    v1(s, f).and_then(|_| install_v2(s, f))?;
    for _ in 0..n {
        s.start().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `cargo test` cuts at every 3rd operation with 2 seeds per torn model
/// ([`common::knob`] widens it).
#[test]
fn power_cut_sweep_install_switch_probation_revert() {
    let seeds = common::knob("GANTRY_SWEEP_SEEDS", 2);
    let stride = common::knob("GANTRY_SWEEP_STRIDE", 3);
    let mut total = (0, 0);
    let runs: [(&str, Step, Step, &[u64]); 7] = [
        ("first install", |_, _| Ok(()), v1, &[0, 1]),
        ("install + switch", v1, install_v2, &[1, 2]),
        (
            "confirm",
            |s, f| v1(s, f).and_then(|_| install_v2(s, f)),
            |s, _| s.confirm("app").map(|_| ()).map_err(|e| e.to_string()),
            &[2],
        ),
        (
            "revert",
            |s, f| v1(s, f).and_then(|_| install_v2(s, f)),
            |s, _| s.revert("app", "health").map(|_| ()).map_err(|e| e.to_string()),
            &[1, 2],
        ),
        (
            "runtime start (probation)",
            |s, f| v1(s, f).and_then(|_| install_v2(s, f)),
            |s, _| s.start().map(|_| ()).map_err(|e| e.to_string()),
            &[1, 2],
        ),
        (
            "probation used up: revert",
            |s, f| probation_restarts(s, f, gantry_device::update::MAX_PROBATION_RESTARTS),
            |s, _| s.start().map(|_| ()).map_err(|e| e.to_string()),
            &[1, 2],
        ),
        (
            "trust root rotation",
            v1,
            |s, f| {
                let next = f.rotated(2, NOW + 100_000).trust_root;
                s.rotate_trust_root(&[next], NOW, None).map(|_| ()).map_err(|e| e.to_string())
            },
            &[1],
        ),
    ];
    for (name, setup, step, allowed) in runs {
        let (c, v) = sweep(name, setup, step, allowed, seeds, stride);
        total.0 += c;
        total.1 += v;
    }
    assert!(total.0 > 1000, "{} cuts", total.0);
    assert_eq!(total.1, 0, "{} violations in {} cuts", total.1, total.0);
}

/// A store with 2 MiB slots, for releases large enough to record progress.
fn large_device(fleet: &Fleet) -> Store {
    fleet.device_of(gantry_device::layout::Geometry { slot_size: 2 << 20, ..geometry() })
}

/// Writes a release's payloads from where the staging asks for them.
fn feed(store: &Store, staging: &mut Staging, r: &Release, mut budget: usize) -> usize {
    let mut sent = 0;
    while let Some((i, at)) = staging.position() {
        let payload = if i == 0 { &r.1 } else { &r.2 };
        let n = (payload.len() - at as usize).min(4096).min(budget);
        if n == 0 {
            break;
        }
        store.stage_write(staging, &payload[at as usize..at as usize + n]).unwrap();
        sent += n;
        budget -= n;
    }
    sent
}

fn staging(store: &Store, r: &Release) -> Box<Staging> {
    match store.stage(&r.0, NOW).unwrap() {
        Stage::Writing(s) => s,
        Stage::Refused(e) => panic!("{e:?}"),
    }
}

#[test]
fn a_streamed_install_resumes_from_flash_after_a_restart() {
    let fleet = Fleet::new();
    let store = large_device(&fleet);
    let r = fleet.release("app", "1.0", 1, 1_500_000);
    let mut s = staging(&store, &r);
    assert_eq!(s.position(), Some((0, 0)));
    assert_eq!(feed(&store, &mut s, &r, 1_000_000), 1_000_000);
    // The device stops: what is on flash stays, the RAM state is gone.
    drop(s);
    let store =
        Store::open(store.into_flash(), gantry_device::layout::Geometry { slot_size: 2 << 20, ..geometry() }).unwrap();
    let mut s = staging(&store, &r);
    let (i, at) = s.position().unwrap();
    assert_eq!(i, 0);
    assert!(at > 500_000 && at <= 1_000_000, "resumed at {at}: at most a progress interval and a page sent again");
    let rest = feed(&store, &mut s, &r, usize::MAX);
    assert_eq!(rest, r.1.len() + r.2.len() - at as usize);
    let staged = store.finish(s, NOW).unwrap();
    assert!(matches!(store.commit(staged).unwrap(), UpdateEvent::Switched { sequence: 1, .. }));
    assert_eq!(running(&store, "app"), Some(1));
    // Done: the next install of another release starts afresh.
    let r2 = fleet.release("app", "2.0", 2, 1_500_000);
    store.confirm("app").unwrap();
    assert_eq!(staging(&store, &r2).position(), Some((0, 0)));
}

#[test]
fn another_release_never_resumes_on_bytes_written_for_the_first() {
    let fleet = Fleet::new();
    let store = large_device(&fleet);
    let r1 = fleet.release("app", "1.0", 1, 1_500_000);
    let mut s = staging(&store, &r1);
    feed(&store, &mut s, &r1, 1_000_000);
    drop(s);
    // Same container, another release (another envelope): from the start.
    let r2 = fleet.release("app", "2.0", 2, 1_500_000);
    let mut s = staging(&store, &r2);
    assert_eq!(s.position(), Some((0, 0)));
    feed(&store, &mut s, &r2, usize::MAX);
    let staged = store.finish(s, NOW).unwrap();
    store.commit(staged).unwrap();
    assert_eq!(running(&store, "app"), Some(2));
}

#[test]
fn a_payload_that_does_not_hash_is_refused_when_its_last_byte_arrives_and_the_next_try_starts_afresh() {
    let fleet = Fleet::new();
    let store = large_device(&fleet);
    let r = fleet.release("app", "1.0", 1, 600_000);
    let mut bad = r.clone();
    bad.1[599_999] ^= 1;
    let mut s = staging(&store, &r);
    store.stage_write(&mut s, &bad.1[..599_999]).unwrap();
    let e = store.stage_write(&mut s, &bad.1[599_999..]).unwrap_err();
    assert!(e.to_string().contains("component 0"), "{e}");
    drop(s);
    let mut s = staging(&store, &r);
    assert_eq!(s.position(), Some((0, 0)), "bytes known bad are not resumed");
    feed(&store, &mut s, &r, usize::MAX);
    store.commit(store.finish(s, NOW).unwrap()).unwrap();
    assert_eq!(running(&store, "app"), Some(1));
    // Bytes past the last payload are refused, not written.
    let r2 = fleet.release("app", "2.0", 2, 600_000);
    store.confirm("app").unwrap();
    let mut s = staging(&store, &r2);
    feed(&store, &mut s, &r2, usize::MAX);
    assert!(store.stage_write(&mut s, b"more").is_err());
}

/// Power cuts all through a streamed install of a release large enough to
/// record its progress; after each, the device runs what it ran, and the
/// install, tried again, resumes and completes.
#[test]
fn power_cut_sweep_streamed_install_resumes() {
    let fleet = Fleet::new();
    let g = gantry_device::layout::Geometry { slot_size: 2 << 20, ..geometry() };
    let store = large_device(&fleet);
    v1(&store, &fleet).unwrap();
    let r = fleet.release("app", "2.0", 2, 1_200_000);
    let start = store.with_flash(|f| f.contents().to_vec());
    store.with_flash(|f| f.reset_ops());
    install(&store, &r);
    let ops = store.with_flash(|f| f.ops());
    let mut flash = store.into_flash();
    let (mut cuts, mut violations, mut resumed) = (0, 0, 0);
    let points = common::knob("GANTRY_SWEEP_POINTS", 16);
    for model in CutModel::ALL {
        for k in 1..=points {
            let at = ops * k / (points + 1);
            cuts += 1;
            flash.power_on();
            flash.restore(&start).unwrap();
            flash.arm(Cut { at, model, seed: at });
            let store = Store::open(flash, g).unwrap();
            let _ = store.install(&r.0, &[&r.1, &r.2], NOW);
            let fired = store.with_flash(|f| f.is_off());
            store.with_flash(|f| f.power_on());
            let store = Store::open(store.into_flash(), g).unwrap();
            let verdict = check(&store, &[1, 2]).and_then(|()| {
                if !fired {
                    return Ok(());
                }
                // Tried again: it resumes where it can and completes.
                let mut s = match store.stage(&r.0, NOW).map_err(|e| e.to_string())? {
                    Stage::Writing(s) => s,
                    Stage::Refused(e) => return Err(format!("refused after the cut: {e:?}")),
                };
                if s.position().is_some_and(|(i, at)| i > 0 || at > 0) {
                    resumed += 1;
                }
                feed(&store, &mut s, &r, usize::MAX);
                let staged = store.finish(s, NOW).map_err(|e| e.to_string())?;
                store.commit(staged).map_err(|e| e.to_string())?;
                check(&store, &[2])
            });
            if let Err(v) = verdict {
                violations += 1;
                if violations <= 3 {
                    eprintln!("{}: cut at {at}: {v}", model.name());
                }
            }
            flash = store.into_flash();
        }
    }
    println!("streamed install   ops {ops:>6}  cuts {cuts:>7}  violations {violations}  resumed {resumed}");
    assert_eq!(violations, 0);
    assert!(resumed > cuts / 3, "only {resumed} of {cuts} cuts resumed");
}

#[test]
fn a_first_install_under_way_is_not_a_container_that_fails_to_start() {
    let fleet = Fleet::new();
    let store = large_device(&fleet);
    let r = fleet.release("app", "1.0", 1, 600_000);
    let mut s = staging(&store, &r);
    feed(&store, &mut s, &r, 300_000);
    drop(s);
    // The download stopped half-way: nothing runs, nothing is reverted or
    // disabled, and the install goes on later.
    let (runnable, events) = store.start().unwrap();
    assert!(runnable.is_empty() && events.is_empty(), "{events:?}");
    assert!(store.runnable("app").unwrap().is_none());
    let c = store.table().unwrap().get("app").cloned().unwrap();
    assert!(c.enabled && c.phase == Phase::Confirmed, "{c:?}");
    let mut s = staging(&store, &r);
    assert!(s.position().unwrap().1 > 0, "resumed");
    feed(&store, &mut s, &r, usize::MAX);
    store.commit(store.finish(s, NOW).unwrap()).unwrap();
    assert_eq!(running(&store, "app"), Some(1));
}

#[test]
fn a_checkpoint_keeps_what_a_stopped_download_brought() {
    let fleet = Fleet::new();
    let store = large_device(&fleet);
    let r = fleet.release("app", "1.0", 1, 30_000);
    let mut s = staging(&store, &r);
    feed(&store, &mut s, &r, 20_001);
    // Less than a chunk: nothing on flash yet; the checkpoint puts every
    // whole word there and records it.
    store.checkpoint(&mut s).unwrap();
    drop(s);
    let mut s = staging(&store, &r);
    let (i, at) = s.position().unwrap();
    assert_eq!(i, 0);
    assert!(at > 20_001 - 4096 && at <= 20_000, "resumed at {at}: the page holding the point is sent again");
    feed(&store, &mut s, &r, usize::MAX);
    store.commit(store.finish(s, NOW).unwrap()).unwrap();
    assert_eq!(running(&store, "app"), Some(1));
}
