//! Running one container instance under its limits.
//!
//! - **Memory**: a `StoreLimits` ceiling on linear memory (and one instance,
//!   few tables); growing past it traps, reported as [`Outcome::MemoryLimit`].
//! - **CPU**: the epoch ticks every [`TICK`](super::TICK); at each tick the
//!   instance's callback stops it when the runtime asked it to stop or its
//!   deadline passed ([`Outcome::Deadline`]), and enforces its CPU share:
//!   it reads the CPU time its own thread used since the previous tick and
//!   rests until that is at most `cpu_percent` of the wall time passed.
//!   Time the thread spent descheduled, or blocked in a host call such as
//!   `poll_oneoff`, is not CPU time and is never billed.
//! - **Stack**: the engine's `max_wasm_stack`, one engine per ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_signing::config::ContainerConfig;
use rustix::time::{ClockId, clock_gettime};
use wasmtime::{Instance, Module, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::host::{Host, HostIo, Stdio};
use super::log::LogWriter;
use super::quota::DataQuota;
use super::{Busy, Sandbox, SandboxError};

/// Per-instance state.
pub(crate) struct Ctx {
    pub(crate) wasi: WasiP1Ctx,
    limits: Limits,
    pub(crate) host: Host,
    /// The data directory's quota, when it is mounted writable.
    pub(crate) quota: Option<DataQuota>,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    /// `None` at 100 %: nothing to enforce, no clock to read.
    cpu: Option<CpuShare>,
}

/// A CPU share: the container's thread may use `percent` of the wall time.
/// Accounted per epoch tick from the thread's own CPU clock, so only what
/// the guest (and the host calls it makes) actually computed is billed.
struct CpuShare {
    percent: u32,
    /// Thread CPU time and wall time when the current window began (the
    /// end of the previous tick's rest, or the start of the call).
    cpu: Duration,
    wall: Instant,
}

impl CpuShare {
    fn new(percent: u8) -> Option<CpuShare> {
        (percent < 100).then(|| CpuShare { percent: percent.max(1).into(), cpu: thread_cpu(), wall: Instant::now() })
    }

    /// Starts a new window now.
    fn restart(&mut self) {
        self.cpu = thread_cpu();
        self.wall = Instant::now();
    }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    // CLOCK_THREAD_CPUTIME_ID cannot fail on Linux for the calling thread;
    // rustix returns the value and panics on nothing.
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// How long a thread that used `cpu` of CPU time over `wall` of wall time
/// must rest so that it used at most `percent` % of the wall time. One
/// window at a time: time spent idle earns no credit beyond its window.
fn rest_owed(cpu: Duration, wall: Duration, percent: u32) -> Duration {
    let percent = percent.clamp(1, 100);
    (cpu * 100 / percent).saturating_sub(wall)
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
    /// Its kind, as `status --json` and `run --json` name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Exited(_) => "exited",
            Outcome::Trapped(_) => "trapped",
            Outcome::Deadline => "deadline",
            Outcome::MemoryLimit => "memory-limit",
            Outcome::Stopped => "stopped",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The exit code, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Exited(code) => Some(*code),
            _ => None,
        }
    }

    /// What a trap or a failure to start said.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Trapped(why) | Outcome::Failed(why) => Some(why),
            _ => None,
        }
    }

    /// Whether this counts as a failure for the restart policy and the
    /// probation of a container with `config`: anything but an exit with one
    /// of its `success_codes` (`[0]` unless it says otherwise) or a stop by
    /// the runtime.
    pub fn is_failure(&self, config: &ContainerConfig) -> bool {
        match self {
            Outcome::Exited(code) => !config.is_success(*code),
            Outcome::Stopped => false,
            _ => true,
        }
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
    sandbox: Arc<super::Shared>,
    profile: super::Profile,
}

impl Running {
    /// Calls the export `name() -> i32` with a deadline of `timeout`;
    /// healthy when it returns 0.
    pub fn health(&mut self, name: &str, timeout: Duration) -> Result<bool, Outcome> {
        let f = self
            .instance
            .get_typed_func::<(), i32>(&mut self.store, name)
            .map_err(|e| Outcome::Failed(format!("health export {name:?}: {e}")))?;
        let ctx = self.store.data_mut();
        ctx.deadline = Some(Instant::now() + timeout);
        if let Some(cpu) = ctx.cpu.as_mut() {
            cpu.restart();
        }
        // The epoch thread was started by `Sandbox::run`; only wake it.
        let _busy = (self.profile == super::Profile::Epoch).then(|| super::Busy::enter(&self.sandbox));
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
    ///
    /// Guest code runs on the calling thread, which must have
    /// [`Sandbox::thread_stack`] bytes of stack for `config` (the
    /// supervisor's container threads do).
    pub fn run(
        &self,
        module: &Module,
        config: &ContainerConfig,
        io: HostIo,
        stop: Arc<AtomicBool>,
    ) -> Result<(Outcome, Option<Running>), SandboxError> {
        let engine = module.engine();
        let linker = self.linker(engine, config)?;

        let (wasi, log, quota) = wasi_ctx(config, &io)?;
        let limits = Limits { memory_bytes: config.limits.memory_bytes as usize, hit: false };
        let deadline = config.limits.deadline_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        let ctx = Ctx {
            wasi,
            limits,
            host: Host::new(io, log),
            quota,
            deadline,
            stop,
            cpu: CpuShare::new(config.limits.cpu_percent),
        };
        let _busy: Option<Busy> = self.busy()?;
        let mut store = Store::new(engine, ctx);
        store.limiter(|c| &mut c.limits);
        if self.profile == super::Profile::Epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|mut ctx| on_tick(ctx.data_mut()));
        }

        let instance = match linker.instantiate(&mut store, module) {
            Ok(i) => i,
            // Its initial memory above the limit (a module installed before
            // install checked its declared minimum) is what it is.
            Err(_) if store.data().limits.hit => return Ok((Outcome::MemoryLimit, None)),
            Err(e) => return Ok((Outcome::Failed(format!("{e:#}")), None)),
        };
        let entry = match instance.get_typed_func::<(), ()>(&mut store, &config.entry) {
            Ok(f) => f,
            Err(e) => return Ok((Outcome::Failed(format!("entry point {:?}: {e}", config.entry)), None)),
        };
        if let Some(cpu) = store.data_mut().cpu.as_mut() {
            cpu.restart();
        }
        let result = entry.call(&mut store, ());
        let profile = self.profile;
        Ok(match result {
            Ok(()) => (Outcome::Exited(0), Some(Running { store, instance, sandbox: self.shared.clone(), profile })),
            Err(e) => (classify(e, &store), None),
        })
    }
}

/// Longest single sleep while resting, so a stop or a deadline is seen
/// within this even at a 1 % share.
const REST_SLICE: Duration = Duration::from_millis(20);

fn on_tick(ctx: &mut Ctx) -> wasmtime::Result<UpdateDeadline> {
    check(ctx)?;
    if let Some(cpu) = ctx.cpu.as_ref() {
        let mut owed = rest_owed(thread_cpu().saturating_sub(cpu.cpu), cpu.wall.elapsed(), cpu.percent);
        while !owed.is_zero() {
            let nap = owed.min(REST_SLICE);
            std::thread::sleep(nap);
            owed -= nap;
            check(ctx)?;
        }
    }
    if let Some(cpu) = ctx.cpu.as_mut() {
        cpu.restart();
    }
    Ok(UpdateDeadline::Continue(1))
}

/// Stop requests and the deadline.
fn check(ctx: &Ctx) -> Result<(), Interrupt> {
    if ctx.stop.load(Ordering::Relaxed) {
        return Err(Interrupt::Stopped);
    }
    if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(Interrupt::Deadline);
    }
    Ok(())
}

/// An instance's WASI context, `gantry.log`'s writer and `/data`'s quota.
type Wasi = (WasiP1Ctx, Option<LogWriter>, Option<DataQuota>);

/// The WASI context, the log writer for `gantry.log` (one writer, shared
/// with stdout and stderr, capped at `limits.log`) and the data
/// directory's quota, as far as they are granted.
fn wasi_ctx(config: &ContainerConfig, io: &HostIo) -> Result<Wasi, SandboxError> {
    let has = |cap: &str| config.capabilities.iter().any(|c| c == cap);
    let mut b = WasiCtxBuilder::new();
    let logged = io.stdio == Stdio::Log && (has("wasi:stdout") || has("wasi:stderr"));
    let log = (logged || has("gantry:log"))
        .then(|| LogWriter::open(&io.log, config.limits.log_bytes, io.log_dropped.clone()));
    match (io.stdio, log.as_ref()) {
        (Stdio::Log, Some(log)) => {
            if has("wasi:stdout") {
                b.stdout(log.clone());
            }
            if has("wasi:stderr") {
                b.stderr(log.clone());
            }
        }
        (Stdio::Log, None) => {}
        (Stdio::Inherit, _) => {
            if has("wasi:stdout") {
                b.inherit_stdout();
            }
            if has("wasi:stderr") {
                b.inherit_stderr();
            }
        }
    }
    if let Some(stdin) = &io.stdin {
        b.stdin(MemoryInputPipe::new(stdin.clone()));
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
        b.preopened_dir(&io.data_dir, "/data", FsPerms::ReadWrite)
            .map_err(|e| SandboxError::Engine(format!("data dir: {e}")))?;
    }
    for m in &io.mounts {
        let perms = if m.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        b.preopened_dir(&m.host, &m.guest, perms)
            .map_err(|e| SandboxError::Engine(format!("mount {:?} ({}): {e}", m.guest, m.host.display())))?;
    }
    let quota = match config.writes_data() {
        true => Some(DataQuota::measure(&io.data_dir, config.limits.data_bytes)?),
        false => None,
    };
    let log = log.filter(|_| has("gantry:log"));
    Ok((b.build_p1(), log, quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_bills_cpu_time_not_wall_time() {
        let ms = Duration::from_millis;
        // Computed a whole 5 ms window at 25 %: rests three times as long.
        assert_eq!(rest_owed(ms(5), ms(5), 25), ms(15));
        // Descheduled or blocked for most of the window: already within its share.
        assert_eq!(rest_owed(ms(5), ms(40), 25), Duration::ZERO);
        assert_eq!(rest_owed(ms(1), ms(2), 25), ms(2));
        assert_eq!(rest_owed(ms(5), ms(5), 100), Duration::ZERO);
        assert_eq!(rest_owed(ms(1), ms(1), 1), ms(99));
        assert_eq!(rest_owed(ms(1), ms(1), 0), ms(99), "0 is read as 1 %");
    }
}
