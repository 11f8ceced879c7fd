//! Running one container instance under its limits.
//!
//! - **Memory**: a `StoreLimits` ceiling on linear memory (and one instance,
//!   few tables); growing past it traps, reported as [`Outcome::MemoryLimit`].
//! - **CPU**: the epoch ticks every [`TICK`](super::TICK); at each tick the
//!   instance's callback stops it when the runtime asked it to stop or its
//!   deadline passed ([`Outcome::Deadline`]), and enforces its CPU share by
//!   sleeping for the rest of its duty cycle.
//! - **Stack**: the engine's `max_wasm_stack`, one engine per ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_signing::config::ContainerConfig;
use wasmtime::{Instance, Linker, Module, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::host::{self, Host, HostIo};
use super::{Sandbox, SandboxError, TICK};

/// Per-instance state.
pub(crate) struct Ctx {
    wasi: WasiP1Ctx,
    limits: Limits,
    pub(crate) host: Host,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    cpu_percent: u8,
}

/// Memory and table ceilings; remembers that a grow was refused, so the
/// trap it causes is reported as what it is.
struct Limits {
    memory_bytes: usize,
    hit: bool,
}

/// Table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!("memory limit of {} bytes reached", self.memory_bytes));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// How a call into a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It returned, or called `proc_exit`, with this code.
    Exited(i32),
    /// It trapped.
    Trapped(String),
    /// It ran past its CPU deadline and was stopped.
    Deadline,
    /// It tried to grow memory past its limit.
    MemoryLimit,
    /// The runtime stopped it.
    Stopped,
    /// It could not be instantiated (a bug or a broken install: imports
    /// were checked at install).
    Failed(String),
}

impl Outcome {
    /// Whether this counts as a failure for the restart policy.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Exited(0) | Outcome::Stopped)
    }
}

/// Why the epoch callback ended a call.
#[derive(Debug)]
enum Interrupt {
    Deadline,
    Stopped,
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupt::Deadline => "CPU deadline exceeded",
            Interrupt::Stopped => "stopped by the runtime",
        })
    }
}

impl std::error::Error for Interrupt {}

/// An instance whose entry point returned: its exports (the health check)
/// can still be called.
pub struct Running {
    store: Store<Ctx>,
    instance: Instance,
}

impl Running {
    /// Calls the export `name() -> i32` with a deadline of `timeout`;
    /// healthy when it returns 0.
    pub fn health(&mut self, name: &str, timeout: Duration) -> Result<bool, Outcome> {
        let f = self
            .instance
            .get_typed_func::<(), i32>(&mut self.store, name)
            .map_err(|e| Outcome::Failed(format!("health export {name:?}: {e}")))?;
        self.store.data_mut().deadline = Some(Instant::now() + timeout);
        match f.call(&mut self.store, ()) {
            Ok(code) => Ok(code == 0),
            Err(e) => Err(classify(e, &self.store)),
        }
    }
}

fn classify(e: wasmtime::Error, store: &Store<Ctx>) -> Outcome {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let Some(i) = e.downcast_ref::<Interrupt>() {
        return match i {
            Interrupt::Deadline => Outcome::Deadline,
            Interrupt::Stopped => Outcome::Stopped,
        };
    }
    if store.data().limits.hit {
        return Outcome::MemoryLimit;
    }
    match e.downcast_ref::<Trap>() {
        Some(t) => Outcome::Trapped(t.to_string()),
        None => Outcome::Trapped(format!("{e:#}")),
    }
}

impl Sandbox {
    /// Instantiates `module` under `config` and runs its entry point. The
    /// instance is returned while it can still be called (the entry
    /// returned normally). `stop` ends it at the next tick.
    pub fn run(
        &self,
        module: &Module,
        config: &ContainerConfig,
        io: HostIo,
        stop: Arc<AtomicBool>,
    ) -> Result<(Outcome, Option<Running>), SandboxError> {
        let engine = module.engine();
        let mut linker: Linker<Ctx> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c: &mut Ctx| &mut c.wasi)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        host::add_to_linker(&mut linker, config).map_err(|e| SandboxError::Engine(e.to_string()))?;

        let wasi = wasi_ctx(config, &io)?;
        let limits = Limits { memory_bytes: config.limits.memory_bytes as usize, hit: false };
        let deadline = config.limits.deadline_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        let ctx = Ctx {
            wasi,
            limits,
            host: Host::new(io),
            deadline,
            stop,
            cpu_percent: config.limits.cpu_percent.clamp(1, 100),
        };
        let mut store = Store::new(engine, ctx);
        store.limiter(|c| &mut c.limits);
        if self.profile == super::Profile::Epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|ctx| on_tick(ctx.data()));
        }

        let instance = match linker.instantiate(&mut store, module) {
            Ok(i) => i,
            Err(e) => return Ok((Outcome::Failed(format!("{e:#}")), None)),
        };
        let entry = match instance.get_typed_func::<(), ()>(&mut store, &config.entry) {
            Ok(f) => f,
            Err(e) => return Ok((Outcome::Failed(format!("entry point {:?}: {e}", config.entry)), None)),
        };
        let result = entry.call(&mut store, ());
        Ok(match result {
            Ok(()) => (Outcome::Exited(0), Some(Running { store, instance })),
            Err(e) => (classify(e, &store), None),
        })
    }
}

fn on_tick(ctx: &Ctx) -> wasmtime::Result<UpdateDeadline> {
    if ctx.stop.load(Ordering::Relaxed) {
        return Err(Interrupt::Stopped.into());
    }
    if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(Interrupt::Deadline.into());
    }
    if ctx.cpu_percent < 100 {
        // Ran one tick; rest for the remainder of the duty cycle.
        let p = ctx.cpu_percent as u32;
        std::thread::sleep(TICK * (100 - p) / p);
    }
    Ok(UpdateDeadline::Continue(1))
}

fn wasi_ctx(config: &ContainerConfig, io: &HostIo) -> Result<WasiP1Ctx, SandboxError> {
    let has = |cap: &str| config.capabilities.iter().any(|c| c == cap);
    let mut b = WasiCtxBuilder::new();
    let log = || std::fs::OpenOptions::new().create(true).append(true).open(&io.log);
    if has("wasi:stdout") {
        b.stdout(OutputFile::new(log()?));
    }
    if has("wasi:stderr") {
        b.stderr(OutputFile::new(log()?));
    }
    if has("wasi:args") {
        let mut args = vec![config.name.clone()];
        args.extend(config.args.iter().cloned());
        b.args(&args);
    }
    if has("wasi:env") {
        for (k, v) in &config.env {
            b.env(k, v);
        }
    }
    if has("wasi:data-dir") {
        std::fs::create_dir_all(&io.data_dir)?;
        b.preopened_dir(&io.data_dir, "/data", wasmtime_wasi::FsPerms::ReadWrite)
            .map_err(|e| SandboxError::Engine(format!("data dir: {e}")))?;
    }
    Ok(b.build_p1())
}
