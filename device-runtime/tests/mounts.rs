//! Mounts (issue 13): blob trees unpacked from the verified slot and
//! checked at every start, the data directory and its subdirectories,
//! seeds and stdin, and what a release or a container cannot do with them.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Fleet, NOW, geometry};
use gantry_device::clock::SystemClock;
use gantry_device::device::Device;
use gantry_device::sandbox::{Outcome, Stdio};
use gantry_device::update::{Refusal, UpdateEvent};
use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};

/// Prints `greeting.txt` from the first preopen (fd 3), then copies stdin
/// to stdout.
const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "greeting.txt")
  (func $copy (param $fd i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (if (call $read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)) (then (call $exit (i32.const 3))))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 12) (i32.const 0)
                    (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $exit (i32.const 2))))
    (call $copy (i32.load (i32.const 12)))
    (call $copy (i32.const 0))))"#;

const CONFIG: &str = "name = \"cat\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\nstdin = \"input\"\n\
                      [[mounts]]\npath = \"/lib\"\nsource = \"blob:lib\"\n[restart]\npolicy = \"never\"\n";

struct Env {
    fleet: Fleet,
    _dir: tempfile::TempDir,
    state: PathBuf,
    device: Device,
}

impl Env {
    fn new() -> Env {
        let fleet = Fleet::new();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let device = Device::init(&state, geometry(), &fleet.identity, &fleet.trust_root, NOW).unwrap();
        Env { fleet, _dir: dir, state, device }
    }

    fn install(&self, toml: &str, blobs: &[(&str, &[u8])]) -> UpdateEvent {
        let config = ContainerConfig::from_toml(toml).unwrap();
        let wasm = wat::parse_str(CAT).unwrap();
        let named: Vec<(String, &[u8])> = blobs.iter().map(|(n, b)| (n.to_string(), *b)).collect();
        let envelope = self.fleet.release_with_blobs(&config, &wasm, &named, 1);
        let payloads: Vec<&[u8]> = std::iter::once(&wasm[..]).chain(blobs.iter().map(|(_, b)| *b)).collect();
        self.device.install(&envelope, &payloads, NOW).unwrap()
    }

    fn run(&self, name: &str) -> (Outcome, String) {
        let r = self.device.store().runnable(name).unwrap().expect("runnable");
        let log = self.state.join("containers").join(name).join("log");
        let _ = std::fs::remove_file(&log);
        let outcome = self.device.run_once(&r, Stdio::Log, Arc::default()).unwrap();
        (outcome, std::fs::read_to_string(&log).unwrap_or_default())
    }
}

/// The canonical archive of a tree holding `files`.
fn tree(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut out = Vec::new();
    gantry_signing::tree::archive(dir.path(), &mut out).unwrap();
    out
}

fn writable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_blob_tree_is_unpacked_at_install_and_checked_at_every_start() {
    let env = Env::new();
    let lib = tree(&[("greeting.txt", "hello from a tree\n"), ("sub/other.txt", "x")]);
    let event = env.install(CONFIG, &[("lib", &lib), ("input", b"and from stdin\n")]);
    assert!(matches!(event, UpdateEvent::Switched { .. }), "{event:?}");
    let sha = hex::encode(Sha256::digest(&lib));
    let unpacked = env.state.join("blobs").join(&sha);
    let greeting = unpacked.join("greeting.txt");
    assert_eq!(std::fs::read_to_string(&greeting).unwrap(), "hello from a tree\n", "unpacked at install");
    assert_eq!(std::fs::metadata(&greeting).unwrap().permissions().mode() & 0o222, 0, "read-only");

    let expected = (Outcome::Exited(0), "hello from a tree\nand from stdin\n".to_owned());
    assert_eq!(env.run("cat"), expected);

    // Changed, added, removed on disk: found at the next start, and the
    // tree unpacked again from the verified slot.
    writable(&unpacked);
    writable(&greeting);
    std::fs::write(&greeting, "tampered\n").unwrap();
    assert_eq!(env.run("cat"), expected);
    writable(&unpacked);
    std::fs::write(unpacked.join("extra"), "planted").unwrap();
    assert_eq!(env.run("cat"), expected);
    assert!(!unpacked.join("extra").exists());
    writable(&unpacked);
    writable(&unpacked.join("sub"));
    std::fs::remove_file(unpacked.join("sub/other.txt")).unwrap();
    assert_eq!(env.run("cat"), expected);
    assert!(unpacked.join("sub/other.txt").exists());

    // Trees no running release mounts are collected before a start; the
    // running one's stays.
    let stale = env.state.join("blobs").join("0".repeat(64));
    std::fs::create_dir_all(stale.join("left")).unwrap();
    std::fs::write(env.state.join("blobs").join(format!("{sha}.tmp")), "a cut unpack").unwrap();
    let (running, _) = env.device.store().start().unwrap();
    assert_eq!(env.device.collect_blob_trees(&running).unwrap(), 2);
    assert!(!stale.exists() && unpacked.join("greeting.txt").exists());
    assert_eq!(env.device.collect_blob_trees(&[]).unwrap(), 1, "nothing runs: nothing kept");
    assert_eq!(env.run("cat"), expected, "unpacked again from flash");
}

#[test]
fn a_tree_that_is_not_canonical_or_a_missing_blob_is_refused_with_nothing_switched() {
    let env = Env::new();
    // The canonical archive of a tree with an mtime set in its header (and
    // the header's checksum made right): a valid tar, not the canonical one.
    let mut other = tree(&[("greeting.txt", "hi\n")]);
    other[136..147].copy_from_slice(b"14524301000");
    other[148..156].copy_from_slice(b"        ");
    let sum: u32 = other[..512].iter().map(|&b| u32::from(b)).sum();
    other[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    match env.install(CONFIG, &[("lib", &other), ("input", b"")]) {
        UpdateEvent::Refused { reason: Refusal::Sandbox(why), .. } => {
            assert!(why.contains("not a blob tree"), "{why}")
        }
        e => panic!("{e:?}"),
    }
    assert!(env.device.store().table().unwrap().get("cat").is_none());
    assert!(!env.state.join("blobs").join(hex::encode(Sha256::digest(&other))).exists());

    // Not an archive at all, a path given twice, a file before its
    // directory: the archive's fault, refused (not taken for a full disk).
    let lib = tree(&[("greeting.txt", "hi\n")]);
    let twice = [&lib[..1024], &lib[..]].concat();
    let orphan = tree(&[("d/x", "hi\n")])[512..].to_vec();
    for (bad, what) in [(&b"not a tar archive, just text"[..], "garbage"), (&twice, "twice"), (&orphan, "orphan")] {
        match env.install(CONFIG, &[("lib", bad), ("input", b"")]) {
            UpdateEvent::Refused { reason: Refusal::Sandbox(why), .. } => {
                assert!(why.contains("not a blob tree"), "{why}")
            }
            e => panic!("{what}: {e:?}"),
        }
        assert!(env.device.store().table().unwrap().get("cat").is_none(), "{what}");
    }

    // The config names `input`, the release does not carry it.
    let lib = tree(&[("greeting.txt", "hi\n")]);
    match env.install(CONFIG, &[("lib", &lib)]) {
        UpdateEvent::Refused { reason: Refusal::Unverified(why), .. } => {
            assert!(why.contains("names blob \"input\""), "{why}")
        }
        e => panic!("{e:?}"),
    }
    assert!(env.device.store().table().unwrap().get("cat").is_none());
}

#[test]
fn the_seed_fills_the_data_directory_once_and_a_link_never_becomes_a_mount() {
    let env = Env::new();
    let toml = "name = \"seeded\"\nversion = \"1\"\nseed = \"init\"\n\
                [[mounts]]\npath = \"/\"\nsource = \"data\"\nmode = \"rw\"\n\
                [[mounts]]\npath = \"/out\"\nsource = \"data/out/today\"\nmode = \"rw\"\n";
    let init = tree(&[("greeting.txt", "seeded\n")]);
    assert!(matches!(env.install(toml, &[("init", &init)]), UpdateEvent::Switched { .. }));
    let r = env.device.store().runnable("seeded").unwrap().unwrap();
    let clock = Arc::new(SystemClock::new());
    let io = env.device.host_io(&r, clock.clone()).unwrap();
    let data = env.state.join("containers/seeded/data");
    assert_eq!(std::fs::read_to_string(data.join("greeting.txt")).unwrap(), "seeded\n");
    assert_eq!(io.mounts[0].host, data);
    assert_eq!(io.mounts[1].host, data.join("out/today"));
    assert!(data.join("out/today").is_dir(), "a data subdirectory is created");
    // The container's own changes stay: the seed applies to a missing
    // data directory only.
    std::fs::write(data.join("greeting.txt"), "changed\n").unwrap();
    env.device.host_io(&r, clock.clone()).unwrap();
    assert_eq!(std::fs::read_to_string(data.join("greeting.txt")).unwrap(), "changed\n");

    // A container that replaced `out` with a link out of its directory.
    std::fs::remove_dir_all(data.join("out")).unwrap();
    std::os::unix::fs::symlink("/etc", data.join("out")).unwrap();
    let err = env.device.host_io(&r, clock.clone()).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    std::fs::remove_file(data.join("out")).unwrap();
    std::fs::write(data.join("out"), "a file").unwrap();
    assert!(env.device.host_io(&r, clock.clone()).is_err());

    // Removed: the next start seeds again.
    std::fs::remove_dir_all(&data).unwrap();
    env.device.host_io(&r, clock).unwrap();
    assert_eq!(std::fs::read_to_string(data.join("greeting.txt")).unwrap(), "seeded\n");
}

#[test]
fn one_process_runs_the_containers_of_a_device() {
    let env = Env::new();
    let held = env.device.runner_lock().unwrap().expect("free");
    assert!(env.device.runner_lock().unwrap().is_none(), "a second runner while the first holds it");
    let other = Device::open(&env.state).unwrap();
    assert!(other.runner_lock().unwrap().is_none(), "another opener of the same state");
    drop(held);
    assert!(other.runner_lock().unwrap().is_some(), "released when the holder drops it");
}
