//! A device in a state directory: install through verification, import
//! check and the store; run from the verified slot and the cached artifact.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Fleet, NOW, geometry};
use gantry_device::clock::SystemClock;
use gantry_device::device::Device;
use gantry_device::sandbox::Outcome;
use gantry_device::update::UpdateEvent;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/misbehave").join(format!("{name}.wasm")))
        .unwrap()
}

fn run(device: &Device, name: &str) -> (Outcome, String) {
    let (runnable, _) = device.store().start().unwrap();
    let r = runnable.iter().find(|r| r.name == name).expect("runnable");
    let module = device.module(r).unwrap();
    let io = device.host_io(r, Arc::new(SystemClock::new())).unwrap();
    let _ = std::fs::remove_file(&io.log);
    let (outcome, _) = device.sandbox().run(&module, &r.release.config, io.clone(), Arc::default()).unwrap();
    (outcome, std::fs::read_to_string(&io.log).unwrap_or_default())
}

#[test]
fn install_run_reopen_and_refuse_ungranted_imports() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let device = Device::init(&state, geometry(), &fleet.identity, &fleet.trust_root, NOW).unwrap();
    assert!(Device::init(&state, geometry(), &fleet.identity, &fleet.trust_root, NOW).is_err(), "init twice");

    // A module importing what its config does not grant: refused, nothing stored.
    let bad = fleet.release_with("name = \"bad\"\nversion = \"1\"\n", &fixture("bad-import"), 1);
    match device.install(&bad, &[&fixture("bad-import")], NOW).unwrap() {
        UpdateEvent::Refused { reason, .. } => {
            assert_eq!(reason.code(), "sandbox");
            assert!(reason.to_string().contains("launch_missiles"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(device.store().table().unwrap().containers.is_empty());

    let hello = "name = \"hello\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\n";
    let env = fleet.release_with(hello, &fixture("hello"), 1);
    assert!(matches!(device.install(&env, &[&fixture("hello")], NOW).unwrap(), UpdateEvent::Switched { .. }));
    assert_eq!(run(&device, "hello"), (Outcome::Exited(0), "hello\n".into()));
    drop(device);

    // Reopened: the artifact comes from the cache; tampered, it is rebuilt
    // from the verified slot instead of being loaded.
    let device = Device::open(&state).unwrap();
    assert_eq!(run(&device, "hello").0, Outcome::Exited(0));
    let cache = std::fs::read_dir(state.join("cache")).unwrap().next().unwrap().unwrap().path();
    let artifact = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&artifact, b"not native code").unwrap();
    assert_eq!(run(&device, "hello"), (Outcome::Exited(0), "hello\n".into()));
    assert_ne!(std::fs::read(&artifact).unwrap(), b"not native code");
}

/// Two store guards in one statement on one thread: with a plain mutex this
/// hung for good (the second `store()` waited for the first, held until the
/// end of the statement).
#[test]
fn two_store_guards_in_one_statement_do_not_deadlock() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = Device::init(&dir.path().join("state"), geometry(), &fleet.identity, &fleet.trust_root, NOW).unwrap();
    let (table, identity) = (device.store().table().unwrap(), device.store().identity().unwrap());
    assert!(table.containers.is_empty());
    assert_eq!(identity, fleet.identity);
    // Other threads still wait their turn.
    let guard = device.store();
    std::thread::scope(|s| {
        let other = s.spawn(|| device.store().table().map(|t| t.containers.len()).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!other.is_finished(), "another thread got the store while this one held it");
        drop(guard);
        assert_eq!(other.join().unwrap(), 0);
    });
}

/// A release whose module was compiled before (another config) reuses the
/// recorded artifact instead of compiling again; one whose module does not
/// fit its config is still refused.
#[test]
fn the_same_module_under_another_config_is_not_compiled_again() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let device = Device::init(&state, geometry(), &fleet.identity, &fleet.trust_root, NOW).unwrap();
    let hello = fixture("hello");
    let first = fleet.release_with("name = \"hello\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\n", &hello, 1);
    assert!(matches!(device.install(&first, &[&hello], NOW).unwrap(), UpdateEvent::Switched { .. }));
    device.store().confirm("hello").unwrap();
    let cache = std::fs::read_dir(state.join("cache")).unwrap().next().unwrap().unwrap().path();
    let artifact = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let compiled = std::fs::metadata(&artifact).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Without wasi:stdout its fd_write still links (the base set): the same
    // module, a new config, no compile.
    let quiet = fleet.release_with("name = \"hello\"\nversion = \"2\"\n", &hello, 2);
    assert!(matches!(device.install(&quiet, &[&hello], NOW).unwrap(), UpdateEvent::Switched { .. }));
    assert_eq!(std::fs::metadata(&artifact).unwrap().modified().unwrap(), compiled, "compiled again");
    assert_eq!(run(&device, "hello"), (Outcome::Exited(0), String::new()));
    device.store().confirm("hello").unwrap();

    // A recorded artifact never skips the check: the same module under a
    // config that does not grant what it imports is refused.
    let counter = fixture("counter");
    let granted = "name = \"counter\"\nversion = \"1\"\ncapabilities = [\"gantry:kv\", \"gantry:log\"]\n";
    let release = fleet.release_with(granted, &counter, 1);
    assert!(matches!(device.install(&release, &[&counter], NOW).unwrap(), UpdateEvent::Switched { .. }));
    device.store().confirm("counter").unwrap();
    let release = fleet.release_with("name = \"counter\"\nversion = \"2\"\n", &counter, 2);
    match device.install(&release, &[&counter], NOW).unwrap() {
        UpdateEvent::Refused { reason, .. } => assert!(reason.to_string().contains("gantry:log"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
