//! Issue 11, finding 2: a container cannot fill the device's storage. Its
//! log and its `/data` stay within their signed quotas while it keeps
//! writing, `remove` deletes its files, and a full file system never blocks
//! installing or reverting.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::{Fleet, NOW, geometry};
use gantry_device::clock::SystemClock;
use gantry_device::device::Device;
use gantry_device::sandbox::{HostIo, Outcome, Sandbox};
use gantry_device::update::UpdateEvent;
use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};

/// Writes a 64-byte line to stdout and a 64-byte line to `gantry.log`,
/// 2000 times (256 KB), then "last\n" to stdout. Traps if a write fails.
const CHATTY: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "gantry" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")
  (data (i32.const 128) "last\n")
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 64))
    (loop $again
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
      (call $log (i32.const 64) (i32.const 63))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 2000))))
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 5))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))))
"#;

/// Opens (creating it) `/data/f`, checks that a 4 KiB write 1 GiB past its
/// end is refused with ENOSPC (exit 121 if not), then writes 4 KiB at a
/// time, at most `MAX` times. Exits with the number of writes that
/// succeeded before one failed with ENOSPC (51), up to 98; 120 on another
/// error, 99 if none was refused.
const FILLER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "f")
  (func (export "_start") (local $fd i32) (local $n i32) (local $err i32)
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 4096))
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 1)
                    (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 12))
      (then (call $exit (i32.const 122))))
    (local.set $fd (i32.load (i32.const 12)))
    (if (i32.ne (call $pwrite (local.get $fd) (i32.const 0) (i32.const 1) (i64.const 0x40000000) (i32.const 8))
                (i32.const 51))
      (then (call $exit (i32.const 121))))
    (loop $again
      (local.set $err (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eq (local.get $err) (i32.const 51))
        (then (call $exit (select (local.get $n) (i32.const 98) (i32.lt_u (local.get $n) (i32.const 98))))))
      (if (local.get $err) (then (call $exit (i32.const 120))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $n) (i32.const MAX))))
    (call $exit (i32.const 99))))
"#;

/// Creates entries in `/data` named "e0", "e1", ...: a file for an even
/// number, a directory for an odd one, 64 at most. Exits with how many were
/// created before one failed with ENOSPC, 120 on another error, 99 if none
/// was refused.
const CREATOR: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "e0")
  (func (export "_start") (local $n i32) (local $err i32)
    (loop $again
      (i32.store8 (i32.const 17) (i32.add (i32.const 48) (local.get $n)))
      (local.set $err
        (if (result i32) (i32.and (local.get $n) (i32.const 1))
          (then (call $mkdir (i32.const 3) (i32.const 16) (i32.const 2)))
          (else (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 2) (i32.const 1)
                            (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 12)))))
      (if (i32.eq (local.get $err) (i32.const 51)) (then (call $exit (local.get $n))))
      (if (local.get $err) (then (call $exit (i32.const 120))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $n) (i32.const 64))))
    (call $exit (i32.const 99))))
"#;

fn filler(max: u32) -> Vec<u8> {
    wat::parse_str(FILLER.replace("MAX", &max.to_string())).unwrap()
}

fn config(toml: &str) -> ContainerConfig {
    ContainerConfig::from_toml(toml).unwrap()
}

/// Compiles `wasm` in `sandbox` and runs it once with its files in `dir`.
fn run(sandbox: &Sandbox, wasm: &[u8], config: &ContainerConfig, dir: &Path) -> Outcome {
    let digest: [u8; 32] = Sha256::digest(wasm).into();
    let artifact = sandbox.install(&digest, wasm, config).unwrap();
    let module = sandbox.load(&digest, &artifact, config).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    sandbox.run(&module, config, HostIo::under(dir), Arc::default()).unwrap().0
}

/// What `/data` takes by the quota's rule: whole 4 KiB blocks, at least
/// one per file or directory.
fn usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() { 4096 + usage(&e.path()) } else { m.len().div_ceil(4096).max(1) * 4096 }
        })
        .sum()
}

#[test]
fn a_chatty_container_keeps_running_within_its_log_quota() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(&dir.path().join("cache")).unwrap();
    let toml = "name = \"chatty\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\", \"gantry:log\"]\n\
                [limits]\nlog = \"16 KiB\"\n";
    let files = dir.path().join("chatty");
    let outcome = run(&sandbox, &wat::parse_str(CHATTY).unwrap(), &config(toml), &files);
    assert_eq!(outcome, Outcome::Exited(0), "every write succeeded as far as the guest knows");
    let (log, previous) = (std::fs::read(files.join("log")).unwrap(), std::fs::read(files.join("log.1")).unwrap());
    assert!(log.len() <= 8192 && previous.len() <= 8192, "{} + {} bytes", log.len(), previous.len());
    assert_eq!(previous.len(), 8192, "the previous generation is full");
    assert!(log.ends_with(b"last\n"), "the newest output is kept");
    let names: Vec<_> = std::fs::read_dir(&files).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "two generations and nothing else: {names:?}");
}

#[test]
fn a_container_writing_to_data_gets_enospc_at_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(&dir.path().join("cache")).unwrap();
    let toml = "name = \"filler\"\nversion = \"1\"\ncapabilities = [\"wasi:data-dir\"]\n[limits]\ndata = \"64 KiB\"\n";
    let files = dir.path().join("filler");
    let data = files.join("data");
    // 16 blocks: the file's first block is reserved when it is created.
    assert_eq!(run(&sandbox, &filler(64), &config(toml), &files), Outcome::Exited(16));
    assert_eq!(std::fs::metadata(data.join("f")).unwrap().len(), 64 << 10);
    assert_eq!(usage(&data), 64 << 10);

    // A directory above its quota (left by a version with a larger one) may
    // be rewritten in place but does not grow.
    std::fs::write(data.join("old"), vec![0; 128 << 10]).unwrap();
    assert_eq!(run(&sandbox, &filler(64), &config(toml), &files), Outcome::Exited(16));
    assert_eq!(usage(&data), 192 << 10);
}

#[test]
fn creating_files_and_directories_in_data_stops_at_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(&dir.path().join("cache")).unwrap();
    let toml = "name = \"creator\"\nversion = \"1\"\ncapabilities = [\"wasi:data-dir\"]\n[limits]\ndata = \"16 KiB\"\n";
    let files = dir.path().join("creator");
    let outcome = run(&sandbox, &wat::parse_str(CREATOR).unwrap(), &config(toml), &files);
    assert_eq!(outcome, Outcome::Exited(4), "one block each: two files and two directories");
    assert_eq!(usage(&files.join("data")), 16 << 10);
    // At the quota, what exists is not created again: `e0` opens with
    // O_CREAT, and `e1` is refused with EEXIST (exit 120), not ENOSPC.
    assert_eq!(run(&sandbox, &wat::parse_str(CREATOR).unwrap(), &config(toml), &files), Outcome::Exited(120));
}

#[test]
fn an_artifact_the_cache_cannot_take_runs_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    // The cache's profile directory is a file: every artifact write fails.
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join(gantry_device::sandbox::PROFILE), b"").unwrap();
    let sandbox = Sandbox::new(&cache).unwrap();
    let toml = "name = \"chatty\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\", \"gantry:log\"]\n";
    let wasm = wat::parse_str(CHATTY).unwrap();
    assert_eq!(run(&sandbox, &wasm, &config(toml), &dir.path().join("chatty")), Outcome::Exited(0));
    let faults = sandbox.cache_faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].module_sha256, <[u8; 32]>::from(Sha256::digest(&wasm)));
}

fn device(fleet: &Fleet, state: &Path) -> Device {
    Device::init(state, geometry(), &fleet.identity, &fleet.trust_root, NOW).unwrap()
}

fn install(device: &Device, fleet: &Fleet, toml: &str, wasm: &[u8], seq: u64) -> UpdateEvent {
    device.install(&fleet.release_with(toml, wasm, seq), &[wasm], NOW).unwrap()
}

/// Runs container `name`'s active slot once.
fn run_installed(device: &Device, name: &str) -> Outcome {
    let r = device.store().runnable(name).unwrap().expect("runnable");
    let module = device.module(&r).unwrap();
    let io = device.host_io(&r, Arc::new(SystemClock::new())).unwrap();
    device.sandbox().run(&module, &r.release.config, io, Arc::default()).unwrap().0
}

#[test]
fn remove_deletes_the_containers_files() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let device = device(&fleet, &dir.path().join("state"));
    let toml = "name = \"filler\"\nversion = \"1\"\ncapabilities = [\"wasi:data-dir\"]\n[limits]\ndata = \"16 KiB\"\n";
    assert!(matches!(install(&device, &fleet, toml, &filler(8), 1), UpdateEvent::Switched { .. }));
    assert_eq!(run_installed(&device, "filler"), Outcome::Exited(4), "4 blocks, the first reserved at creation");
    let files = dir.path().join("state/containers/filler");
    assert!(files.join("data/f").exists());
    assert_eq!(device.remove("filler").unwrap(), UpdateEvent::Removed { name: "filler".into() });
    assert!(!files.exists(), "log, kv and /data are gone with the container");
    assert!(device.remove("filler").is_err(), "removed once");
}

/// Whether every block of the file at `path` is allocated (no holes).
fn allocated(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).unwrap();
    m.blocks() * 512 >= m.len()
}

#[test]
fn the_flash_is_allocated_at_init_and_a_sparse_one_at_open() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let device = device(&fleet, &state);
    let toml = "name = \"filler\"\nversion = \"1\"\ncapabilities = [\"wasi:data-dir\"]\n";
    assert!(matches!(install(&device, &fleet, toml, &filler(1), 1), UpdateEvent::Switched { .. }));
    drop(device);
    let flash = state.join("flash.bin");
    assert!(allocated(&flash), "init allocates the whole flash");

    // A sparse flash as an older version left it: only its written pages.
    let bytes = std::fs::read(&flash).unwrap();
    std::fs::remove_file(&flash).unwrap();
    let file = std::fs::File::create(&flash).unwrap();
    file.set_len(bytes.len() as u64).unwrap();
    for (i, page) in bytes.chunks(4096).enumerate().filter(|(_, p)| p.iter().any(|&b| b != 0)) {
        std::os::unix::fs::FileExt::write_all_at(&file, page, i as u64 * 4096).unwrap();
    }
    drop(file);
    assert!(!allocated(&flash), "the copy is sparse");
    let device = Device::open(&state).unwrap();
    assert!(device.warnings().is_empty(), "{:?}", device.warnings());
    assert!(allocated(&flash), "open allocates a sparse flash");
    assert_eq!(std::fs::read(&flash).unwrap(), bytes, "and keeps what it holds");
    assert_eq!(run_installed(&device, "filler"), Outcome::Exited(99));
}

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a `size`-byte tmpfs, or says why it cannot.
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_never_blocks_an_install_or_a_revert() {
    let disk = match Tmpfs::mount(2 << 20) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipping: a small file system is needed and cannot be mounted here ({why})");
            return;
        }
    };
    let fleet = Fleet::new();
    let state = disk.path().join("state");
    let device = device(&fleet, &state);
    let v1 = "name = \"filler\"\nversion = \"1\"\ncapabilities = [\"wasi:data-dir\"]\n[limits]\ndata = \"64 MiB\"\n";
    assert!(matches!(install(&device, &fleet, v1, &filler(100_000), 1), UpdateEvent::Switched { .. }));
    device.store().confirm("filler").unwrap();

    // Its quota is larger than the disk: it writes until the disk is full.
    let Outcome::Exited(writes) = run_installed(&device, "filler") else { panic!("the container must exit") };
    assert!((1..=98).contains(&writes), "stopped by ENOSPC after {writes} writes");
    let mut rest = std::fs::File::create(disk.path().join("rest")).unwrap();
    while std::io::Write::write_all(&mut rest, &[0; 4096]).is_ok() {}
    drop(rest);

    // The fix installs (its compiled module kept in memory), runs, and is reverted.
    let v2 = v1.replace("version = \"1\"", "version = \"2\"").replace("64 MiB", "8 KiB");
    let event = install(&device, &fleet, &v2, &filler(4), 2);
    assert!(matches!(event, UpdateEvent::Switched { .. }), "{event:?}");
    assert_eq!(device.sandbox().cache_faults().len(), 1, "the artifact was not cached and that is reported");
    assert_eq!(run_installed(&device, "filler"), Outcome::Exited(99), "v2 runs: it rewrites its file in place");
    let reverted = device.store().revert("filler", "test").unwrap();
    assert!(matches!(reverted, Some(UpdateEvent::Reverted { .. })), "{reverted:?}");
    drop(device);

    // Reopened on the full disk, version 1 runs again from its cached artifact.
    let device = Device::open(&state).unwrap();
    assert!(device.warnings().is_empty(), "{:?}", device.warnings());
    assert_eq!(device.store().runnable("filler").unwrap().unwrap().release.sequence, 1);
    assert!(matches!(run_installed(&device, "filler"), Outcome::Exited(_)));
}

/// A container that logs without end, and `gantry-device run` killed with
/// SIGKILL at random moments while it does (mid-write, mid-rotation): after
/// every kill both generations are within their half of `limits.log`, and
/// the device starts again.
#[test]
fn kill_9_while_logging_never_leaves_the_log_above_its_quota() {
    let endless = CHATTY.replace("(i32.lt_u (local.get $i) (i32.const 2000))", "(i32.const 1)");
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let toml = "name = \"chatty\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\", \"gantry:log\"]\n\
                [limits]\nlog = \"16 KiB\"\n";
    let device = device(&fleet, &state);
    let wasm = wat::parse_str(&endless).unwrap();
    assert!(matches!(install(&device, &fleet, toml, &wasm, 1), UpdateEvent::Switched { .. }));
    // Confirmed: every start during a probation counts against it.
    device.store().confirm("chatty").unwrap();
    drop(device);
    let log = state.join("containers/chatty/log");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let previous = log.with_file_name("log.1");
    let mut rotated = false;
    for round in 0..8u64 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gantry-device"))
            .arg("--state")
            .arg(&state)
            .args(["run", "--seconds", "30"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until it logs, then a moment that differs per round.
        let stamp = || [&log, &previous].map(|p| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok())));
        let (started, before) = (Instant::now(), stamp());
        while stamp() == before && started.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 37 % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_ne!(stamp(), before, "round {round}: it never logged");
        assert!(
            size(&log) <= 8 * 1024 && size(&previous) <= 8 * 1024,
            "round {round}: {} + {}",
            size(&log),
            size(&previous)
        );
        rotated |= size(&previous) > 0;
        let names: Vec<_> = std::fs::read_dir(log.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| ["log", "log.1", "kv", "data"].contains(&n.to_str().unwrap())), "{names:?}");
    }
    assert!(rotated, "the log was never rotated: the test proved nothing");
}
