//! The sandbox against misbehaving containers (fixtures/misbehave): each is
//! contained, reported for what it did, and never stops the runtime or the
//! containers running beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gantry_device::sandbox::{Artifact, HostIo, Outcome, Sandbox, SandboxError};
use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/misbehave").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config(name: &str, extra: &str) -> ContainerConfig {
    ContainerConfig::from_toml(&format!("name = \"{name}\"\nversion = \"1\"\n{extra}")).unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(&dir.path().join("cache")).unwrap();
        Env { dir, sandbox }
    }

    fn io(&self, name: &str) -> HostIo {
        let base: PathBuf = self.dir.path().join(name);
        std::fs::create_dir_all(&base).unwrap();
        HostIo::under(&base)
    }

    fn install(&self, wasm: &[u8], config: &ContainerConfig) -> Result<(wasmtime::Module, Artifact), SandboxError> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let artifact = self.sandbox.install(&digest, wasm, config)?;
        Ok((self.sandbox.load(&digest, &artifact, config)?, artifact))
    }

    fn run(&self, wasm: &[u8], config: &ContainerConfig) -> (Outcome, String) {
        let (module, _) = self.install(wasm, config).unwrap();
        let io = self.io(&config.name);
        let (outcome, _) = self.sandbox.run(&module, config, io.clone(), Arc::default()).unwrap();
        (outcome, std::fs::read_to_string(&io.log).unwrap_or_default())
    }
}

#[test]
fn hello_runs_and_its_stdout_is_the_log() {
    let env = Env::new();
    let (outcome, log) = env.run(&fixture("hello"), &config("hello", "capabilities = [\"wasi:stdout\"]\n"));
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(log, "hello\n");
    // Without the capability the output goes nowhere.
    let (outcome, log) = env.run(&fixture("hello"), &config("quiet", ""));
    assert_eq!((outcome, log.as_str()), (Outcome::Exited(0), ""));
}

#[test]
fn memory_past_the_limit_is_stopped() {
    let env = Env::new();
    let (outcome, _) = env.run(&fixture("memory-hog"), &config("hog", "[limits]\nmemory = \"4 MiB\"\n"));
    assert_eq!(outcome, Outcome::MemoryLimit);
}

#[test]
fn an_endless_loop_is_stopped_at_its_deadline() {
    let env = Env::new();
    let started = Instant::now();
    let (outcome, _) = env.run(&fixture("spin"), &config("spin", "[limits]\ndeadline_ms = 200\n"));
    let took = started.elapsed();
    assert_eq!(outcome, Outcome::Deadline);
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
}

#[test]
fn a_trap_is_reported() {
    let env = Env::new();
    let (outcome, _) = env.run(&fixture("crash"), &config("crash", ""));
    assert!(matches!(&outcome, Outcome::Trapped(t) if t.contains("unreachable")), "{outcome:?}");
    assert!(outcome.is_failure());
}

#[test]
fn ungranted_imports_are_refused_at_install() {
    let env = Env::new();
    for (wasm, config, what) in [
        (fixture("bad-import"), config("bad", ""), "gantry.launch_missiles"),
        (fixture("undeclared-socket"), config("sock", ""), "sock_accept"),
        (fixture("counter"), config("counter", ""), "\"gantry:log\""),
        (fixture("hello"), config("x", "").clone(), ""),
    ] {
        match env.install(&wasm, &config) {
            Err(SandboxError::Import(e)) => assert!(e.to_string().contains(what), "{e}"),
            Ok(_) if what.is_empty() => {}
            other => panic!("{what}: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn gantry_log_and_health_export() {
    let env = Env::new();
    let (outcome, log) = env.run(&fixture("counter"), &config("counter", "capabilities = [\"gantry:log\"]\n"));
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(log, "counter: 1\ncounter: 2\ncounter: 3\n");

    let health = config("health", "[health]\nkind = \"export\"\nfunction = \"gantry_health\"\n");
    let (module, _) = env.install(&fixture("health"), &health).unwrap();
    let (outcome, running) = env.sandbox.run(&module, &health, env.io("health"), Arc::default()).unwrap();
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(running.unwrap().health("gantry_health", Duration::from_millis(100)), Ok(true));
}

#[test]
fn a_tampered_artifact_is_not_loaded() {
    let env = Env::new();
    let wasm = fixture("hello");
    let config = config("hello", "capabilities = [\"wasi:stdout\"]\n");
    let (_, artifact) = env.install(&wasm, &config).unwrap();
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let path = std::fs::read_dir(env.dir.path().join("cache")).unwrap().next().unwrap().unwrap().path();
    let file = std::fs::read_dir(&path).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = env.sandbox.load(&digest, &artifact, &config).unwrap_err();
    assert!(err.to_string().contains("not the one compiled"), "{err}");
    assert!(env.sandbox.install(&[0; 32], &wasm, &config).is_err(), "a module must match its signed digest");
}

#[test]
fn misbehaving_containers_leave_the_others_running() {
    let env = Arc::new(Env::new());
    let stop = Arc::new(AtomicBool::new(false));
    let spin = {
        let (env, stop) = (env.clone(), stop.clone());
        std::thread::spawn(move || {
            let config = config("spin", "");
            let (module, _) = env.install(&fixture("spin"), &config).unwrap();
            env.sandbox.run(&module, &config, env.io("spin"), stop).unwrap().0
        })
    };
    for name in ["crash", "memory-hog"] {
        let extra = "[limits]\nmemory = \"2 MiB\"\n";
        let (outcome, _) = env.run(&fixture(name), &config(name, extra));
        assert!(outcome.is_failure());
    }
    let (outcome, log) = env.run(&fixture("hello"), &config("hello", "capabilities = [\"wasi:stdout\"]\n"));
    assert_eq!((outcome, log.as_str()), (Outcome::Exited(0), "hello\n"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(spin.join().unwrap(), Outcome::Stopped);
}
