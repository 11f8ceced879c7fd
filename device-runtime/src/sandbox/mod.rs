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
//!
//! **A full disk.** The cache is an optimization: when an artifact cannot
//! be written (no space left, or any other write error), the install does
//! not fail. The artifact is kept in memory instead, in this sandbox only
//! (at most [`MAX_UNCACHED`] of them, the oldest forgotten first), loaded
//! from there under the same hash check, and the failure is reported
//! ([`Sandbox::cache_faults`]). A later process compiles it again.

mod host;
mod log;
mod quota;
mod run;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};
use wasmtime::{Config, Engine, Linker, Module, ModuleVersionStrategy, OptLevel};

pub use gantry_signing::module::{ModuleRefused, check as check_module, check_imports};
pub use host::{HostIo, HostMount, Stdio};
pub use run::{Outcome, Running};

/// The compilation settings every artifact is bound to. `preserve-all`:
/// built with the vendored Cranelift patch that calls the epoch slow path
/// without clobbering registers (vendor/README.md).
pub const PROFILE: &str = "wasmtime-48.0.8.x86_64.cranelift-speed.epoch.preserve-all.v2";

/// What wasmtime stamps into artifacts and checks on load: the compiler is
/// patched, so its artifacts must never pass for stock 48.0.8 ones.
const MODULE_VERSION: &str = "48.0.8+gantry-preserve-all.1";

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
            Profile::Uninterruptible => "wasmtime-48.0.8.x86_64.cranelift-speed.uninterruptible.v2",
        }
    }
}
/// Epoch tick: CPU deadlines are enforced to this granularity.
pub const TICK: Duration = Duration::from_millis(5);
/// Stack ceilings are rounded up to a multiple of this (one engine each).
const STACK_STEP: u64 = 64 * 1024;
/// Native stack a container thread needs beyond its Wasm stack ceiling:
/// the runtime's own frames, instantiation and host calls made at the
/// deepest Wasm frame.
const HOST_STACK: u64 = 1024 * 1024;

/// Sandbox errors.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The module imports something its config does not grant, or needs
    /// more memory than it allows: found before it is compiled.
    #[error("refused at install: {0}")]
    Module(#[from] ModuleRefused),
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

/// An artifact that could not be written to the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheFault {
    /// The signed digest of the module it was compiled from.
    pub module_sha256: [u8; 32],
    /// Why it was not written.
    pub error: String,
}

/// Most artifacts kept in memory when they could not be cached.
pub const MAX_UNCACHED: usize = 8;

/// Stack of the epoch thread: it sleeps and bumps counters, nothing more.
const TICKER_STACK: usize = 64 * 1024;

/// Engines (one per stack ceiling), linkers, the artifact cache and the
/// epoch clock.
///
/// The epoch thread starts with the first instance and sleeps on a
/// condition variable whenever no instance is executing guest code, so an
/// idle runtime neither keeps its pages warm nor wakes 200 times a second.
pub struct Sandbox {
    profile: Profile,
    cache: PathBuf,
    /// Artifacts the cache could not take, oldest first.
    uncached: Mutex<VecDeque<(CacheFault, Arc<[u8]>)>>,
    shared: Arc<Shared>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the sandbox shares with its epoch thread and its instances.
struct Shared {
    /// Engines that run instances, without a compiler (only cached
    /// artifacts are loaded at run time), ticked by the epoch thread.
    engines: Mutex<BTreeMap<u64, Engine>>,
    /// Engines with Cranelift, for install: built only in a process that
    /// compiles, so a runtime that finds every artifact cached never
    /// touches the compiler's code or tables.
    compilers: Mutex<BTreeMap<u64, Engine>>,
    /// One linker per engine and set of Gantry grants: the WASI and host
    /// functions are defined once, not at every start.
    linkers: Mutex<Linkers>,
    /// Instances executing guest code now; the epoch ticks while > 0.
    busy: Mutex<usize>,
    wake: Condvar,
    quit: AtomicBool,
}

/// Linkers by stack ceiling (their engine) and Gantry grants.
type Linkers = BTreeMap<(u64, host::Grants), Arc<Linker<run::Ctx>>>;

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (tables and a counter, each updated in one step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn tick_while_busy(&self) {
        loop {
            {
                let mut busy = lock(&self.busy);
                while *busy == 0 && !self.quit.load(Ordering::Relaxed) {
                    busy = self.wake.wait(busy).unwrap_or_else(|p| p.into_inner());
                }
            }
            if self.quit.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(TICK);
            lock(&self.engines).values().for_each(Engine::increment_epoch);
        }
    }
}

/// Counts an instance as executing guest code while it lives.
pub(crate) struct Busy(Arc<Shared>);

impl Busy {
    /// Counts one more instance, waking the epoch thread if it was idle.
    fn enter(shared: &Arc<Shared>) -> Busy {
        let mut busy = lock(&shared.busy);
        *busy += 1;
        if *busy == 1 {
            shared.wake.notify_all();
        }
        Busy(shared.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0.busy) -= 1;
    }
}

impl Sandbox {
    /// A sandbox caching artifacts under `cache_dir/<PROFILE>/`.
    pub fn new(cache_dir: &Path) -> Result<Sandbox, SandboxError> {
        Self::with_profile(cache_dir, Profile::Epoch)
    }

    /// A sandbox with another engine profile (benchmarks).
    pub fn with_profile(cache_dir: &Path, profile: Profile) -> Result<Sandbox, SandboxError> {
        let cache = cache_dir.join(profile.name());
        // Not fatal: on a full disk the runtime must still start. An
        // install then reports that its artifact was not cached.
        let _ = std::fs::create_dir_all(&cache);
        let shared = Arc::new(Shared {
            engines: Mutex::default(),
            compilers: Mutex::default(),
            linkers: Mutex::default(),
            busy: Mutex::new(0),
            wake: Condvar::new(),
            quit: AtomicBool::new(false),
        });
        Ok(Sandbox { profile, cache, uncached: Mutex::default(), shared, ticker: Mutex::new(None) })
    }

    /// Counts an instance as executing until the guard drops: starts the
    /// epoch thread the first time, wakes it when it was idle. `None` for
    /// an engine without epoch checks.
    pub(crate) fn busy(&self) -> Result<Option<Busy>, SandboxError> {
        if self.profile != Profile::Epoch {
            return Ok(None);
        }
        {
            let mut ticker = lock(&self.ticker);
            if ticker.is_none() {
                let shared = self.shared.clone();
                let thread = std::thread::Builder::new().name("gantry-epoch".into()).stack_size(TICKER_STACK);
                *ticker = Some(thread.spawn(move || shared.tick_while_busy())?);
            }
        }
        Ok(Some(Busy::enter(&self.shared)))
    }

    /// The linker for `engine` and the Gantry functions `config` grants,
    /// built once per engine of this sandbox and set of grants.
    pub(crate) fn linker(
        &self,
        engine: &Engine,
        config: &ContainerConfig,
    ) -> Result<Arc<Linker<run::Ctx>>, SandboxError> {
        let key = (stack_ceiling(config.limits.stack_bytes), host::Grants::of(config));
        // Only a linker for one of our own engines is kept: a module from
        // another sandbox gets a linker of its own.
        let ours = lock(&self.shared.engines).get(&key.0).is_some_and(|e| Engine::same(e, engine));
        if ours && let Some(l) = lock(&self.shared.linkers).get(&key) {
            return Ok(l.clone());
        }
        let mut linker: Linker<run::Ctx> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c: &mut run::Ctx| &mut c.wasi)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        host::add_to_linker(&mut linker, key.1).map_err(|e| SandboxError::Engine(e.to_string()))?;
        if key.1.data {
            quota::add_to_linker(&mut linker).map_err(|e| SandboxError::Engine(e.to_string()))?;
        }
        let linker = Arc::new(linker);
        if ours {
            lock(&self.shared.linkers).insert(key, linker.clone());
        }
        Ok(linker)
    }

    /// The engine that runs instances with a stack ceiling of
    /// `stack_bytes`: the compiler's settings that artifacts depend on
    /// (epoch checks, module version), and no compiler.
    fn engine(&self, stack_bytes: u64) -> Result<Engine, SandboxError> {
        self.engine_in(&self.shared.engines, stack_bytes, false)
    }

    /// The engine that compiles for [`engine`](Self::engine).
    fn compiler(&self, stack_bytes: u64) -> Result<Engine, SandboxError> {
        self.engine_in(&self.shared.compilers, stack_bytes, true)
    }

    fn engine_in(
        &self,
        table: &Mutex<BTreeMap<u64, Engine>>,
        stack_bytes: u64,
        compiles: bool,
    ) -> Result<Engine, SandboxError> {
        let stack = stack_ceiling(stack_bytes);
        let mut engines = lock(table);
        if let Some(e) = engines.get(&stack) {
            return Ok(e.clone());
        }
        let mut c = Config::new();
        c.enable_compiler(compiles);
        if compiles {
            // Functions compiled on every core: a 1 MiB module installed in
            // 0.5-1.1x the serial time in paired runs on a busy two-core
            // machine (docs/benchmarks.md). rayon's pool is created at the
            // first compile, so only in a process that compiles (an
            // install, or a run rebuilding an artifact).
            c.cranelift_opt_level(OptLevel::Speed).parallel_compilation(true);
        }
        c.epoch_interruption(self.profile == Profile::Epoch)
            .max_wasm_stack(stack as usize)
            // wasmtime refuses a Wasm stack larger than its async stack (the
            // `async` feature is on through wasmtime-wasi) even though no
            // instance runs on a fiber here: without this, any config with
            // `limits.stack` above 2 MiB could not be installed.
            .async_stack_size((stack + HOST_STACK) as usize)
            .module_version(ModuleVersionStrategy::Custom(MODULE_VERSION.into()))
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let engine = Engine::new(&c).map_err(|e| SandboxError::Engine(e.to_string()))?;
        engines.insert(stack, engine.clone());
        Ok(engine)
    }

    fn artifact_path(&self, module_sha256: &[u8; 32]) -> PathBuf {
        let hex: String = module_sha256.iter().map(|b| format!("{b:02x}")).collect();
        self.cache.join(format!("{hex}.cwasm"))
    }

    /// Install-time work: check the module's imports and memory against
    /// `config` (before compiling: a refusal costs no compile), compile
    /// it, and write the artifact to the cache. `wasm` must already be
    /// verified against the signed `module_sha256`.
    pub fn install(
        &self,
        module_sha256: &[u8; 32],
        wasm: &[u8],
        config: &ContainerConfig,
    ) -> Result<Artifact, SandboxError> {
        if Sha256::digest(wasm)[..] != module_sha256[..] {
            return Err(SandboxError::Artifact("the module does not match its signed digest".into()));
        }
        check_module(wasm, config)?;
        let engine = self.compiler(config.limits.stack_bytes)?;
        let module = Module::new(&engine, wasm).map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        let bytes = module.serialize().map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        let artifact = Artifact { sha256: Sha256::digest(&bytes).into() };
        let path = self.artifact_path(module_sha256);
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        let mut uncached = lock(&self.uncached);
        uncached.retain(|(f, _)| f.module_sha256 != *module_sha256);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            if uncached.len() == MAX_UNCACHED {
                uncached.pop_front();
            }
            let fault = CacheFault { module_sha256: *module_sha256, error: format!("{}: {e}", path.display()) };
            uncached.push_back((fault, bytes.into()));
        }
        Ok(artifact)
    }

    /// The artifacts this sandbox compiled but could not cache, and why:
    /// they are kept in memory, and compiled again by the next process.
    pub fn cache_faults(&self) -> Vec<CacheFault> {
        lock(&self.uncached).iter().map(|(f, _)| f.clone()).collect()
    }

    /// The artifact of `module_sha256`: from the cache, or else from memory
    /// if it could not be cached.
    fn artifact_bytes(&self, module_sha256: &[u8; 32]) -> Result<Arc<[u8]>, SandboxError> {
        let path = self.artifact_path(module_sha256);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes.into()),
            Err(e) => lock(&self.uncached)
                .iter()
                .find(|(f, _)| f.module_sha256 == *module_sha256)
                .map(|(_, bytes)| bytes.clone())
                .ok_or_else(|| SandboxError::Artifact(format!("{}: {e}", path.display()))),
        }
    }

    /// Loads the cached artifact of `module_sha256`, only if its bytes hash
    /// to `artifact`, the value recorded at install.
    pub fn load(
        &self,
        module_sha256: &[u8; 32],
        artifact: &Artifact,
        config: &ContainerConfig,
    ) -> Result<Module, SandboxError> {
        let bytes = self.artifact_bytes(module_sha256)?;
        if Sha256::digest(&bytes)[..] != artifact.sha256[..] {
            return Err(SandboxError::Artifact("the artifact is not the one compiled at install".into()));
        }
        let engine = self.engine(config.limits.stack_bytes)?;
        // SAFETY: `Module::deserialize` maps the bytes as native code. These
        // bytes are exactly what this runtime's `Module::serialize` produced
        // at install from a module verified against its signed digest (read
        // back from the cache, or kept in this process's memory when the
        // cache could not take them): their SHA-256 equals the value
        // recorded in the device store at that time, checked just above,
        // and the cache path is bound to PROFILE, so the
        // engine settings match (wasmtime re-checks them and refuses
        // otherwise).
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(&engine, &bytes) };
        module.map_err(|e| SandboxError::Artifact(format!("{e:#}")))
    }
}

impl Sandbox {
    /// Native stack, in bytes, of a thread that runs containers with
    /// `config`: its Wasm stack ceiling and room for the host. Wasm frames
    /// live on the calling thread's stack, and wasmtime stops them at the
    /// ceiling only if the thread has that much: on a smaller thread, deep
    /// recursion hits the guard page and takes the whole process down.
    pub fn thread_stack(config: &ContainerConfig) -> usize {
        (stack_ceiling(config.limits.stack_bytes) + HOST_STACK) as usize
    }
}

/// The engine a stack ceiling uses: rounded up to [`STACK_STEP`].
fn stack_ceiling(stack_bytes: u64) -> u64 {
    stack_bytes.div_ceil(STACK_STEP).max(1) * STACK_STEP
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        {
            // Under the lock: the epoch thread is then either before its
            // check of `quit` or waiting, and cannot miss the wake-up.
            let _busy = lock(&self.shared.busy);
            self.shared.quit.store(true, Ordering::Relaxed);
            self.shared.wake.notify_all();
        }
        if let Some(t) = lock(&self.ticker).take() {
            let _ = t.join();
        }
    }
}
