//! The device runtime against native, in one run (docs/benchmarks.md):
//!
//! ```text
//! cargo bench -p gantry-device --bench runtime [-- --quick | --memory | --install]
//! ```
//!
//! - compute: nbody, fannkuch, spectral-norm, binary-trees from the same C
//!   (fixtures/bench), native vs Wasm with CPU limits on (epoch profile, the
//!   runtime's) and off (uninterruptible profile); best of 5 rounds, each
//!   round running native, off and on in turn; outputs must match; geomean
//!   of the ratios;
//! - cold start of a cached container: instantiate + run `hello` from a
//!   loaded module, and load the artifact + instantiate + run, alternately
//!   (median of each);
//! - memory per idle container and runtime idle RSS: `gantry-device run`
//!   itself, with 0, 2 and 16 installed, confirmed `health` containers whose
//!   entry returned and which each wait in their supervisor for the next
//!   health check (a live instance, its store and its thread); RSS, PSS and
//!   threads from `/proc/<pid>/smaps_rollup` and `status`, and the resident
//!   linear memory from `smaps` (read-write mappings followed by a ≥ 1 GiB
//!   reservation), which the per-container figure leaves out; median of 5
//!   processes per row, rows interleaved;
//! - install time of a 1 MiB module (compile, import check, cache), best
//!   and median of 3;
//! - install RAM: peak RSS over idle of a process installing a container of
//!   a small module and a 1, 8 or 32 MiB blob, streamed into the slot or
//!   read whole first; median of 3 processes per cell.
//!
//! `--quick` skips compute and shortens the rest; `--memory` and
//! `--install` run one section. `GANTRY_BENCH_KEEP=DIR` works in DIR and
//! leaves the device states there. Native binaries come from
//! `fixtures/build.sh` (clang-19); without them the compute part is skipped
//! with the reason printed.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_device::device::Device;
use gantry_device::layout::Geometry;
use gantry_device::sandbox::{HostIo, Outcome, Profile, Sandbox};
use gantry_device::store::{Identity, Stage};
use gantry_keys::FileKeySource;
use gantry_signing::build::{ContainerRelease, add_signature, class_id_from_model, vendor_id_from_domain};
use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn config(name: &str, extra: &str) -> ContainerConfig {
    ContainerConfig::from_toml(&format!("name = \"{name}\"\nversion = \"1\"\n{extra}")).expect("bench config")
}

fn io(dir: &Path, name: &str) -> HostIo {
    let base = dir.join(name);
    std::fs::create_dir_all(&base).expect("bench dir");
    HostIo::under(&base)
}

/// A `Key:   123 kB` field of a /proc file, in KiB (0 if absent).
fn proc_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a process holds, from /proc.
#[derive(Clone, Debug, Default)]
struct Memory {
    rss: u64,
    pss: u64,
    anon: u64,
    /// Resident pages of Wasm linear memories.
    linear: u64,
    threads: u64,
    /// Resident KiB by what is mapped: the binary, each library, heap,
    /// stacks, other anonymous memory.
    by_mapping: Vec<(String, u64)>,
}

fn memory(pid: u32) -> Memory {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok());
    Memory {
        rss: proc_kib(&rollup, "Rss"),
        pss: proc_kib(&rollup, "Pss"),
        anon: proc_kib(&rollup, "Anonymous"),
        linear: linear_memory_kib(&smaps),
        threads: threads.unwrap_or(0),
        by_mapping: rss_by_mapping(&smaps),
    }
}

/// Resident KiB per mapped object (file name, `[heap]`, `[stack]`,
/// `anonymous`), largest first.
fn rss_by_mapping(smaps: &str) -> Vec<(String, u64)> {
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) && fields.len() >= 5 {
            current = match fields.get(5) {
                Some(path) => path.rsplit('/').next().unwrap_or(path).to_string(),
                None => "anonymous".into(),
            };
        } else if let Some(kib) = line.strip_prefix("Rss:") {
            *by.entry(current.clone()).or_default() += kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    let mut v: Vec<_> = by.into_iter().filter(|(_, k)| *k > 0).collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.1));
    v
}

/// Resident KiB of linear memories in an `smaps` listing. wasmtime
/// reserves each linear memory as one large mapping and makes its first
/// pages, the accessible ones, read-write: a linear memory is a read-write
/// mapping followed directly by an inaccessible one of at least 1 GiB.
/// (One that merely follows a reservation is something else, such as a
/// malloc arena placed after it.)
fn linear_memory_kib(smaps: &str) -> u64 {
    // (start, end, readable-writable, rss KiB) per mapping.
    let mut maps: Vec<(u64, u64, bool, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
            && perms.len() == 4
        {
            maps.push((a, b, perms.starts_with("rw"), 0));
        } else if let Some(kib) = line.strip_prefix("Rss:")
            && let Some(last) = maps.last_mut()
        {
            last.3 = kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    let reserved = |m: &(u64, u64, bool, u64)| !m.2 && m.1 - m.0 >= 1 << 30 && m.3 == 0;
    let mut kib = 0;
    for (i, m) in maps.iter().enumerate() {
        let reservation_follows = maps.get(i + 1).is_some_and(|n| n.0 == m.1 && reserved(n));
        if m.2 && reservation_follows {
            kib += m.3;
        }
    }
    kib
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One compute benchmark: (name, argument).
const COMPUTE: [(&str, &str); 4] =
    [("nbody", "5000000"), ("fannkuch", "10"), ("spectral-norm", "2000"), ("binary-trees", "16")];

/// One native run: wall time and stdout.
fn native(name: &str, arg: &str) -> Option<(Duration, String)> {
    let bin = fixtures().join("target/native").join(name);
    let t = Instant::now();
    let o = Command::new(&bin).arg(arg).output().ok()?;
    let d = t.elapsed();
    o.status.success().then(|| (d, String::from_utf8_lossy(&o.stdout).into_owned()))
}

/// A compute program installed and loaded in `sandbox`.
fn prepare(sandbox: &Sandbox, name: &str, arg: &str) -> (wasmtime::Module, ContainerConfig) {
    let wasm = std::fs::read(fixtures().join("bench").join(format!("{name}.wasm"))).expect("bench wasm");
    let c = config(
        name,
        &format!(
            "args = [\"{arg}\"]\ncapabilities = [\"wasi:args\", \"wasi:stdout\"]\n[limits]\nmemory = \"256 MiB\"\n"
        ),
    );
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let artifact = sandbox.install(&digest, &wasm, &c).expect("install bench");
    (sandbox.load(&digest, &artifact, &c).expect("load bench"), c)
}

/// One Wasm run: wall time (instantiate to exit) and stdout.
fn wasm(sandbox: &Sandbox, dir: &Path, module: &wasmtime::Module, c: &ContainerConfig) -> (Duration, String) {
    let io = io(dir, &c.name);
    let _ = std::fs::remove_file(&io.log);
    let t = Instant::now();
    let (outcome, _) = sandbox.run(module, c, io.clone(), Arc::default()).expect("run bench");
    let took = t.elapsed();
    assert_eq!(outcome, Outcome::Exited(0), "{}", c.name);
    (took, std::fs::read_to_string(&io.log).unwrap_or_default())
}

fn compute(dir: &Path, rounds: usize) {
    println!("\n## compute: native vs wasm (best of {rounds} interleaved rounds, seconds; ratio to native)");
    if !fixtures().join("target/native/nbody").exists() {
        let built = Command::new(fixtures().join("build.sh")).output();
        if !built.as_ref().is_ok_and(|o| o.status.success()) {
            println!("skipped: no native builds and fixtures/build.sh failed (needs clang-19, wasi-libc)");
            return;
        }
    }
    let on = Sandbox::with_profile(&dir.join("cache"), Profile::Epoch).expect("sandbox");
    let off = Sandbox::with_profile(&dir.join("cache"), Profile::Uninterruptible).expect("sandbox");
    println!("| program | arg | native | wasm, limits off | ratio | wasm, limits on | ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let (mut g_off, mut g_on) = (0.0f64, 0.0f64);
    for (name, arg) in COMPUTE {
        let (m_off, c_off) = prepare(&off, name, arg);
        let (m_on, c_on) = prepare(&on, name, arg);
        let mut best = [Duration::MAX; 3];
        // Native, limits off, limits on, then again: drift on a shared
        // machine hits the three alike.
        for _ in 0..rounds {
            let Some((n, n_out)) = native(name, arg) else {
                println!("skipped {name}: native binary did not run");
                return;
            };
            let (w_off, out_off) = wasm(&off, dir, &m_off, &c_off);
            let (w_on, out_on) = wasm(&on, dir, &m_on, &c_on);
            assert_eq!(out_off, n_out, "{name}: wasm output differs from native");
            assert_eq!(out_on, n_out, "{name}: wasm output differs from native");
            for (b, t) in best.iter_mut().zip([n, w_off, w_on]) {
                *b = (*b).min(t);
            }
        }
        let [n, w_off, w_on] = best.map(|d| d.as_secs_f64());
        let (r_off, r_on) = (w_off / n, w_on / n);
        g_off += r_off.ln();
        g_on += r_on.ln();
        println!("| {name} | {arg} | {n:.3} | {w_off:.3} | {r_off:.2}× | {w_on:.3} | {r_on:.2}× |");
    }
    let k = COMPUTE.len() as f64;
    println!("| **geomean** | | | | **{:.2}×** | | **{:.2}×** |", (g_off / k).exp(), (g_on / k).exp());
}

fn cold_start(dir: &Path, n: usize) {
    println!("\n## cold start of a cached container (`hello`, median of {n})");
    let sandbox = Sandbox::new(&dir.join("cache")).expect("sandbox");
    let wasm = std::fs::read(fixtures().join("misbehave/hello.wasm")).expect("hello");
    let c = config("hello", "");
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let artifact = sandbox.install(&digest, &wasm, &c).expect("install");
    let module = sandbox.load(&digest, &artifact, &c).expect("load");
    let io = io(dir, "hello");
    let mut loaded = Vec::new();
    let mut from_cache = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let (o, _) = sandbox.run(&module, &c, io.clone(), Arc::default()).expect("run");
        loaded.push(t.elapsed());
        assert_eq!(o, Outcome::Exited(0));
        let t = Instant::now();
        let m = sandbox.load(&digest, &artifact, &c).expect("load");
        let (o, _) = sandbox.run(&m, &c, io.clone(), Arc::default()).expect("run");
        from_cache.push(t.elapsed());
        assert_eq!(o, Outcome::Exited(0));
    }
    println!("| | median |\n|---|---:|");
    println!("| instantiate + run, module loaded | {:.1} µs |", median(loaded).as_secs_f64() * 1e6);
    println!("| load artifact (hash-checked) + instantiate + run | {:.1} µs |", median(from_cache).as_secs_f64() * 1e6);
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

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A device state directory with `n` installed `health` containers, each
/// waiting 30 s between health checks, so once its entry has returned it
/// sits idle in its supervisor with a live instance.
fn idle_device(dir: &Path, n: u8) -> PathBuf {
    let state = dir.join(format!("idle-{n}"));
    let (key, root) = fleet();
    let vendor_id = vendor_id_from_domain("example.com");
    let identity = Identity { device_id: [1; 16], vendor_id, class_id: class_id_from_model(&vendor_id, "gateway") };
    let geometry = Geometry { max_containers: n.max(1), slot_size: 64 << 10, ..Geometry::default() };
    let device = Device::init(&state, geometry, &identity, &root, now()).expect("init");
    let wasm = std::fs::read(fixtures().join("misbehave/health.wasm")).expect("health");
    for i in 0..n {
        let config = config(&format!("idle-{i}"), "[health]\nkind = \"export\"\ninterval_ms = 30000\n");
        let release = ContainerRelease {
            config: &config,
            module: &wasm,
            blobs: &[],
            sequence: 1,
            vendor_id,
            class_id: identity.class_id,
        };
        let envelope = add_signature(&release.build_unsigned().expect("release"), &key).expect("sign");
        device.install(&envelope, &[&wasm], now()).expect("install");
        // Confirmed, as a container that has served its probation: every
        // `run` during a probation counts as a runtime restart, and a few
        // of those would revert it.
        device.store().confirm(&config.name).expect("confirm");
    }
    state
}

/// `gantry-device run` on `state` once its `n` containers have started and
/// their entry points returned, settled for a second.
fn run_memory(bin: &Path, state: &Path, n: u8) -> Option<Memory> {
    let mut child = Command::new(bin)
        .arg("--state")
        .arg(state)
        .args(["run", "--seconds", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run");
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut returned = 0;
    while returned < n {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => returned += u8::from(line.ends_with("ended: Exited(0)")),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let m = memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (returned == n).then_some(m)
}

fn idle_memory(dir: &Path, runs: usize) {
    println!("\n## `gantry-device run`, idle: 0, 2 and 16 `health` containers parked in their supervisor");
    println!("(median of {runs} processes per row; KiB; linear = resident Wasm linear memory)\n");
    let counts = [0u8, 2, 16];
    let states: Vec<PathBuf> = counts.iter().map(|&n| idle_device(dir, n)).collect();
    let mut samples: Vec<Vec<Memory>> = vec![Vec::new(); counts.len()];
    // Interleaved, so drift on the machine hits every row alike.
    for _ in 0..runs {
        for (i, (&n, state)) in counts.iter().zip(&states).enumerate() {
            match run_memory(Path::new(env!("CARGO_BIN_EXE_gantry-device")), state, n) {
                Some(m) => samples[i].push(m),
                None => println!("run with {n} containers did not settle in 30 s"),
            }
        }
    }
    for (&n, v) in counts.iter().zip(&samples) {
        if let Some(m) = v.first() {
            let top: Vec<String> = m.by_mapping.iter().take(6).map(|(name, k)| format!("{name} {k}")).collect();
            println!("resident KiB by mapping, {n} containers: {}", top.join(", "));
        }
    }
    let med = |v: &[Memory], f: fn(&Memory) -> u64| {
        let mut x: Vec<u64> = v.iter().map(f).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    println!("| containers | threads | RSS | PSS | anonymous | linear |\n|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (&n, v) in counts.iter().zip(&samples) {
        let row =
            [med(v, |m| m.threads), med(v, |m| m.rss), med(v, |m| m.pss), med(v, |m| m.anon), med(v, |m| m.linear)];
        println!("| {n} | {} | {} | {} | {} | {} |", row[0], row[1], row[2], row[3], row[4]);
        rows.push(row);
    }
    // Per container beyond its linear memory: `from` to `to` containers.
    let per = |from: usize, to: usize, col: usize| {
        let (a, b) = (&rows[from], &rows[to]);
        let grew = b[col] as f64 - a[col] as f64 - (b[4] as f64 - a[4] as f64);
        grew / (counts[to] - counts[from]) as f64
    };
    println!(
        "\nper idle container, beyond its linear memory: {:.1} KiB RSS, {:.1} KiB PSS (2 -> 16 containers); \
         {:.1} KiB RSS counting the first container's one-time cost (0 -> 16)",
        per(1, 2, 1),
        per(1, 2, 2),
        per(0, 2, 1)
    );
    println!(
        "runtime idle RSS: {:.2} MiB ({:.2} MB) with 2 containers, {:.2} MiB with none",
        rows[1][1] as f64 / 1024.0,
        rows[1][1] as f64 * 1024.0 / 1e6,
        rows[0][1] as f64 / 1024.0
    );
}

/// Idle RSS with no containers of this bench's `gantry-device` against the
/// builds named in `GANTRY_BENCH_DEVICE_BINS` (colon-separated paths, e.g.
/// the static `device` profile build), alternating processes.
fn idle_rss_by_build(dir: &Path, runs: usize) {
    let Ok(extra) = std::env::var("GANTRY_BENCH_DEVICE_BINS") else {
        println!("\n(idle RSS by build skipped: set GANTRY_BENCH_DEVICE_BINS to compare other builds)");
        return;
    };
    let mut bins = vec![PathBuf::from(env!("CARGO_BIN_EXE_gantry-device"))];
    bins.extend(extra.split(':').filter(|p| !p.is_empty()).map(PathBuf::from));
    let state = idle_device(&dir.join("by-build"), 0);
    let mut samples: Vec<Vec<Memory>> = vec![Vec::new(); bins.len()];
    for _ in 0..runs {
        for (bin, v) in bins.iter().zip(&mut samples) {
            v.extend(run_memory(bin, &state, 0));
        }
    }
    println!("\n## Idle RSS by build, no containers (median of {runs} alternating processes; KiB)\n");
    println!("| build | RSS | PSS | anonymous | RSS / this bench's build |\n|---|---:|---:|---:|---:|");
    let median = |v: &[Memory], f: fn(&Memory) -> u64| {
        let mut x: Vec<u64> = v.iter().map(f).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    let base = median(&samples[0], |m| m.rss).max(1) as f64;
    for (bin, v) in bins.iter().zip(&samples) {
        let rss = median(v, |m| m.rss);
        println!(
            "| {} | {rss} | {} | {} | {:.2}× |",
            bin.display(),
            median(v, |m| m.pss),
            median(v, |m| m.anon),
            rss as f64 / base
        );
        if let Some(m) = v.first() {
            let top: Vec<String> = m.by_mapping.iter().take(6).map(|(name, k)| format!("{name} {k}")).collect();
            println!("|   resident KiB by mapping: {} | | | | |", top.join(", "));
        }
    }
}

/// A valid module of about `size` bytes: many small functions.
fn big_module(size: usize) -> Vec<u8> {
    fn leb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            out.push(if v == 0 { b } else { b | 0x80 });
            if v == 0 {
                break;
            }
        }
    }
    fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend(body);
    }
    // Body: (i32.const k) then 30 × (i32.const j, i32.add), end.
    let mut body = vec![0x00, 0x41, 0x01];
    for j in 0..30u8 {
        body.extend([0x41, j & 0x3f, 0x6a]);
    }
    body.push(0x0b);
    let n = size / (body.len() + 2);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, vec![0x01, 0x60, 0x00, 0x01, 0x7f], &mut m);
    let mut funcs = Vec::new();
    leb(n as u64, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, n));
    section(3, funcs, &mut m);
    let mut code = Vec::new();
    leb(n as u64, &mut code);
    for _ in 0..n {
        leb(body.len() as u64, &mut code);
        code.extend(&body);
    }
    section(10, code, &mut m);
    m
}

fn install_time(dir: &Path, runs: usize) {
    println!("\n## install time of a 1 MiB module (compile + import check + cache write; best and median of {runs})");
    let wasm = big_module(1 << 20);
    let c = config("big", "");
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let mut times = Vec::new();
    for run in 0..runs {
        // A fresh sandbox each time: its engine and cache start empty, as
        // in the `gantry-device install` process.
        let sandbox = Sandbox::new(&dir.join(format!("install-cache-{run}"))).expect("sandbox");
        let t = Instant::now();
        sandbox.install(&digest, &wasm, &c).expect("install 1 MiB");
        times.push(t.elapsed());
    }
    let best = times.iter().min().copied().unwrap_or_default();
    println!(
        "| module | best | median |\n|---:|---:|---:|\n| {:.2} MiB | {:.2} s | {:.2} s |",
        wasm.len() as f64 / (1 << 20) as f64,
        best.as_secs_f64(),
        median(times).as_secs_f64()
    );
}

/// A release of the small `health` module and one `size`-byte blob, as
/// files in `dir`: (envelope, module, blob).
fn blob_release(dir: &Path, size: usize, key: &FileKeySource) -> (PathBuf, PathBuf, PathBuf) {
    let vendor_id = vendor_id_from_domain("example.com");
    let wasm = std::fs::read(fixtures().join("misbehave/health.wasm")).expect("health");
    let blob: Vec<u8> = (0..size).map(|i| (i as u64).wrapping_mul(2654435761) as u8 ^ (i >> 13) as u8).collect();
    let config = config("big", "");
    let blobs = [("data.bin".to_owned(), &blob[..])];
    let release = ContainerRelease {
        config: &config,
        module: &wasm,
        blobs: &blobs,
        sequence: 1,
        vendor_id,
        class_id: class_id_from_model(&vendor_id, "gateway"),
    };
    let envelope = add_signature(&release.build_unsigned().expect("release"), key).expect("sign");
    let files = (dir.join("envelope"), dir.join("module.wasm"), dir.join("data.bin"));
    std::fs::write(&files.0, envelope).expect("write");
    std::fs::write(&files.1, wasm).expect("write");
    std::fs::write(&files.2, blob).expect("write");
    files
}

/// In a child process (`--install-ram-child MODE DIR`): installs the
/// release in DIR into the device in DIR, streamed or read whole first, and
/// prints the peak RSS above what the process held before (KiB).
fn install_ram_child(mode: &str, dir: &Path) {
    let device = Device::open(&dir.join("state")).expect("open");
    // The peak so far is forgotten: VmHWM restarts from the current RSS.
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let status = || std::fs::read_to_string("/proc/self/status").expect("status");
    let before = proc_kib(&status(), "VmRSS");
    let envelope = std::fs::read(dir.join("envelope")).expect("envelope");
    let event = if mode == "whole" {
        let module = std::fs::read(dir.join("module.wasm")).expect("module");
        let blob = std::fs::read(dir.join("data.bin")).expect("blob");
        device.install(&envelope, &[&module, &blob], now()).expect("install")
    } else {
        use std::io::{Read as _, Seek as _};
        let mut staging = match device.stage(&envelope, now()).expect("stage") {
            Stage::Writing(s) => s,
            Stage::Refused(e) => panic!("{e:?}"),
        };
        let mut buf = vec![0u8; 64 * 1024];
        while let Some((i, at)) = staging.position() {
            let mut f = std::fs::File::open(dir.join(["module.wasm", "data.bin"][i])).expect("payload");
            f.seek(std::io::SeekFrom::Start(at)).expect("seek");
            let n = f.read(&mut buf).expect("read");
            device.stage_write(&mut staging, &buf[..n]).expect("write");
        }
        device.finish(staging, now()).expect("finish")
    };
    assert!(matches!(event, gantry_device::update::UpdateEvent::Switched { .. }), "{event:?}");
    println!("{}", proc_kib(&status(), "VmHWM").saturating_sub(before));
}

/// Peak RSS over idle while installing a container of a small module and
/// a blob of 1, 8 and 32 MiB: streamed into the slot (what the agent and
/// `gantry-device install` do) against reading it whole first (what the
/// agent did before), each in a fresh process, median of `runs`.
fn install_ram(dir: &Path, sizes: &[usize], runs: usize) {
    println!("\n## install RAM: peak RSS over idle, KiB (median of {runs} processes per cell)");
    println!("| container | streamed | whole in RAM | streamed ÷ whole |\n|---:|---:|---:|---:|");
    let (key, root) = fleet();
    let vendor_id = vendor_id_from_domain("example.com");
    let identity = Identity { device_id: [2; 16], vendor_id, class_id: class_id_from_model(&vendor_id, "gateway") };
    let exe = std::env::current_exe().expect("exe");
    for &mib in sizes {
        let work = dir.join(format!("install-ram-{mib}"));
        std::fs::create_dir_all(&work).expect("dir");
        blob_release(&work, mib << 20, &key);
        let mut cells = Vec::new();
        for mode in ["streamed", "whole"] {
            let mut kib = Vec::new();
            for _ in 0..runs {
                let state = work.join("state");
                let _ = std::fs::remove_dir_all(&state);
                let geometry = Geometry { max_containers: 1, slot_size: (mib as u32 + 1) << 20, ..Geometry::default() };
                drop(Device::init(&state, geometry, &identity, &root, now()).expect("init"));
                let out = Command::new(&exe).arg("--install-ram-child").arg(mode).arg(&work).output().expect("child");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                kib.push(String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().expect("KiB"));
            }
            kib.sort_unstable();
            cells.push(kib[kib.len() / 2]);
        }
        println!("| {mib} MiB | {} | {} | {:.2} |", cells[0], cells[1], cells[0] as f64 / cells[1].max(1) as f64);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, mode, dir, ..] = args.as_slice()
        && flag == "--install-ram-child"
    {
        return install_ram_child(mode, Path::new(dir));
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let temp = tempfile::tempdir().expect("tempdir");
    // GANTRY_BENCH_KEEP=DIR: work in DIR and leave the device states there
    // (`DIR/idle-N`), to look at a running runtime by hand.
    let dir = std::env::var_os("GANTRY_BENCH_KEEP").map_or_else(|| temp.path().to_owned(), PathBuf::from);
    let dir = dir.as_path();
    println!("# gantry-device runtime benchmark ({} mode)", if quick { "quick" } else { "full" });
    // One section alone: --memory, --install.
    if std::env::args().any(|a| a == "--memory") {
        idle_memory(dir, 1);
        idle_rss_by_build(dir, 5);
        return;
    }
    if std::env::args().any(|a| a == "--install") {
        install_time(dir, 3);
        install_ram(dir, &[1, 8, 32], 3);
        return;
    }
    if !quick {
        compute(dir, 5);
    }
    cold_start(dir, if quick { 50 } else { 1000 });
    idle_memory(dir, if quick { 1 } else { 5 });
    idle_rss_by_build(dir, if quick { 1 } else { 5 });
    install_time(dir, if quick { 1 } else { 3 });
    install_ram(dir, if quick { &[1, 8] } else { &[1, 8, 32] }, if quick { 1 } else { 3 });
}
