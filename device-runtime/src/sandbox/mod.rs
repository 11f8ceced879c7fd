//! The Wasm sandbox: wasmtime 48 with Cranelift, containers compiled at
//! install and cached, bound to the engine profile and the signed module
//! digest; memory, CPU-time and stack limits; WASI preview 1 and Gantry's
//! host API only as far as the signed config grants.
//!
//! **Engine profile.** A precompiled artifact loads only into an engine
//! with the same compilation settings. [`PROFILE`] names those settings
//! and is part of every cache path; changing any setting means a new
//! profile name, and old artifacts are simply not found.
//!
//! **Artifacts are native code.** Loading one is `unsafe` in wasmtime for a
//! reason: a tampered file runs with the runtime's privileges. The runtime
//! compiles only modules whose signed digest it verified, records each
//! artifact's SHA-256 in the device's own store, and loads an artifact only
//! if its bytes hash to that recorded value ([`Sandbox::load`]).

pub mod caps;
mod host;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};
use wasmtime::{Config, Engine, Module, OptLevel};

pub use caps::{ImportRefused, check_imports};
pub use host::HostIo;
pub use run::{Outcome, Running};

/// The compilation settings every artifact is bound to.
pub const PROFILE: &str = "wasmtime-48.0.8.x86_64.cranelift-speed.epoch.v1";

/// Engine profiles: what compiled code can be interrupted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Epoch checks at function entries and loop headers: deadlines, stop
    /// and CPU shares work. The runtime's profile.
    Epoch,
    /// No interruption checks: a container cannot be stopped while it
    /// computes. For measuring what the checks cost, not for running
    /// untrusted code.
    Uninterruptible,
}

impl Profile {
    /// The name artifacts are cached under.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Epoch => PROFILE,
            Profile::Uninterruptible => "wasmtime-48.0.8.x86_64.cranelift-speed.uninterruptible.v1",
        }
    }
}
/// Epoch tick: CPU deadlines are enforced to this granularity.
pub const TICK: Duration = Duration::from_millis(5);
/// Stack ceilings are rounded up to a multiple of this (one engine each).
const STACK_STEP: u64 = 64 * 1024;

/// Sandbox errors.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The module imports something its config does not grant.
    #[error("refused at install: {0}")]
    Import(#[from] ImportRefused),
    /// The module is not valid Wasm or does not compile.
    #[error("the module does not compile: {0}")]
    Compile(String),
    /// The cached artifact is missing or is not the one recorded.
    #[error("cached artifact: {0}")]
    Artifact(String),
    /// File system.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The engine could not be set up.
    #[error("engine: {0}")]
    Engine(String),
}

/// A compiled module in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// SHA-256 of the artifact file, to be kept in trusted storage.
    pub sha256: [u8; 32],
}

/// Engines (one per stack ceiling), the artifact cache and the epoch clock.
pub struct Sandbox {
    profile: Profile,
    engines: Arc<Mutex<BTreeMap<u64, Engine>>>,
    cache: PathBuf,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Sandbox {
    /// A sandbox caching artifacts under `cache_dir/<PROFILE>/`.
    pub fn new(cache_dir: &Path) -> Result<Sandbox, SandboxError> {
        Self::with_profile(cache_dir, Profile::Epoch)
    }

    /// A sandbox with another engine profile (benchmarks).
    pub fn with_profile(cache_dir: &Path, profile: Profile) -> Result<Sandbox, SandboxError> {
        let cache = cache_dir.join(profile.name());
        std::fs::create_dir_all(&cache)?;
        let engines: Arc<Mutex<BTreeMap<u64, Engine>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engines, stop) = (engines.clone(), stop.clone());
            std::thread::Builder::new().name("gantry-epoch".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    if let Ok(engines) = engines.lock() {
                        engines.values().for_each(Engine::increment_epoch);
                    }
                }
            })?
        };
        Ok(Sandbox { profile, engines, cache, stop, ticker: Some(ticker) })
    }

    /// The engine for a stack ceiling of `stack_bytes`.
    fn engine(&self, stack_bytes: u64) -> Result<Engine, SandboxError> {
        let stack = stack_bytes.div_ceil(STACK_STEP).max(1) * STACK_STEP;
        let mut engines = self.engines.lock().map_err(|_| SandboxError::Engine("engine table poisoned".into()))?;
        if let Some(e) = engines.get(&stack) {
            return Ok(e.clone());
        }
        let mut c = Config::new();
        c.cranelift_opt_level(OptLevel::Speed)
            .epoch_interruption(self.profile == Profile::Epoch)
            .max_wasm_stack(stack as usize)
            .parallel_compilation(false);
        let engine = Engine::new(&c).map_err(|e| SandboxError::Engine(e.to_string()))?;
        engines.insert(stack, engine.clone());
        Ok(engine)
    }

    fn artifact_path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        let hex: String = module_sha256.iter().map(|b| format!("{b:02x}")).collect();
        self.cache.join(format!("{hex}.cwasm"))
    }

    /// Install-time work: check the module's imports against `config`,
    /// compile it, and write the artifact to the cache. `wasm` must already
    /// be verified against the signed `module_sha256`.
    pub fn install(
        &self,
        module_sha256: &[u8; 32],
        wasm: &[u8],
        config: &ContainerConfig,
    ) -> Result<Artifact, SandboxError> {
        if Sha256::digest(wasm)[..] != module_sha256[..] {
            return Err(SandboxError::Artifact("the module does not match its signed digest".into()));
        }
        let engine = self.engine(config.limits.stack_bytes)?;
        let module = Module::new(&engine, wasm).map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        check_imports(module.imports().map(|i| (i.module(), i.name(), i.ty().func().is_some())), config)?;
        let bytes = module.serialize().map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        let path = self.artifact_path(module_sha256);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(Artifact { sha256: Sha256::digest(&bytes).into() })
    }

    /// Loads the cached artifact of `module_sha256`, only if its bytes hash
    /// to `artifact`, the value recorded at install.
    pub fn load(
        &self,
        module_sha256: &[u8; 32],
        artifact: &Artifact,
        config: &ContainerConfig,
    ) -> Result<Module, SandboxError> {
        let path = self.artifact_path(module_sha256);
        let bytes = std::fs::read(&path).map_err(|e| SandboxError::Artifact(format!("{}: {e}", path.display())))?;
        if Sha256::digest(&bytes)[..] != artifact.sha256[..] {
            return Err(SandboxError::Artifact("the artifact is not the one compiled at install".into()));
        }
        let engine = self.engine(config.limits.stack_bytes)?;
        // SAFETY: `Module::deserialize` maps the bytes as native code. These
        // bytes are exactly what this runtime's `Module::serialize` produced
        // at install from a module verified against its signed digest: their
        // SHA-256 equals the value recorded in the device store at that time,
        // checked just above, and the cache path is bound to PROFILE, so the
        // engine settings match (wasmtime re-checks them and refuses
        // otherwise).
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(&engine, &bytes) };
        module.map_err(|e| SandboxError::Artifact(format!("{e:#}")))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}
