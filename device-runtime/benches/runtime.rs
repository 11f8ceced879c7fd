//! The device runtime against native, in one run (docs/benchmarks.md):
//!
//! ```text
//! cargo bench -p gantry-device --bench runtime [-- --quick]
//! ```
//!
//! - compute: nbody, fannkuch, spectral-norm, binary-trees from the same C
//!   (fixtures/bench), native vs Wasm with CPU limits on (epoch profile, the
//!   runtime's) and off (uninterruptible profile); best of 3; outputs must
//!   match; geomean of the ratios;
//! - cold start of a cached container: load the artifact and run `hello`,
//!   and instantiate + run an already loaded module (median);
//! - memory per idle container: RSS growth per instance of `health` kept
//!   alive, beyond its 64 KiB linear memory;
//! - runtime idle RSS: `gantry-device run` with nothing to run;
//! - install time of a 1 MiB module (compile, import check, cache).
//!
//! Native binaries come from `fixtures/build.sh` (clang-19); without it the
//! compute part is skipped with the reason printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_device::sandbox::{HostIo, Outcome, Profile, Sandbox};
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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One compute benchmark: (name, argument).
const COMPUTE: [(&str, &str); 4] =
    [("nbody", "5000000"), ("fannkuch", "10"), ("spectral-norm", "2000"), ("binary-trees", "16")];

fn native(name: &str, arg: &str) -> Option<(Duration, String)> {
    let bin = fixtures().join("target/native").join(name);
    let mut best = None::<Duration>;
    let mut out = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let o = Command::new(&bin).arg(arg).output().ok()?;
        let d = t.elapsed();
        out = String::from_utf8_lossy(&o.stdout).into_owned();
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    Some((best?, out))
}

fn wasm(sandbox: &Sandbox, dir: &Path, name: &str, arg: &str) -> (Duration, String) {
    let wasm = std::fs::read(fixtures().join("bench").join(format!("{name}.wasm"))).expect("bench wasm");
    let c = config(
        name,
        &format!(
            "args = [\"{arg}\"]\ncapabilities = [\"wasi:args\", \"wasi:stdout\"]\n[limits]\nmemory = \"256 MiB\"\n"
        ),
    );
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let artifact = sandbox.install(&digest, &wasm, &c).expect("install bench");
    let module = sandbox.load(&digest, &artifact, &c).expect("load bench");
    let mut best = Duration::MAX;
    let mut out = String::new();
    for _ in 0..3 {
        let io = io(dir, name);
        let _ = std::fs::remove_file(&io.log);
        let t = Instant::now();
        let (outcome, _) = sandbox.run(&module, &c, io.clone(), Arc::default()).expect("run bench");
        best = best.min(t.elapsed());
        assert_eq!(outcome, Outcome::Exited(0), "{name}");
        out = std::fs::read_to_string(&io.log).unwrap_or_default();
    }
    (best, out)
}

fn compute(dir: &Path) {
    println!("\n## compute: native vs wasm (best of 3, seconds; ratio to native)");
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
        let Some((n, n_out)) = native(name, arg) else {
            println!("skipped {name}: native binary did not run");
            return;
        };
        let (w_off, out_off) = wasm(&off, dir, name, arg);
        let (w_on, out_on) = wasm(&on, dir, name, arg);
        assert_eq!(out_off, n_out, "{name}: wasm output differs from native");
        assert_eq!(out_on, n_out, "{name}: wasm output differs from native");
        let (r_off, r_on) = (w_off.as_secs_f64() / n.as_secs_f64(), w_on.as_secs_f64() / n.as_secs_f64());
        g_off += r_off.ln();
        g_on += r_on.ln();
        println!(
            "| {name} | {arg} | {:.3} | {:.3} | {r_off:.2}× | {:.3} | {r_on:.2}× |",
            n.as_secs_f64(),
            w_off.as_secs_f64(),
            w_on.as_secs_f64()
        );
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

fn idle_memory(dir: &Path, n: usize) {
    println!("\n## memory per idle container ({n} instances of `health`, entry returned, kept alive)");
    let sandbox = Sandbox::new(&dir.join("cache")).expect("sandbox");
    let wasm = std::fs::read(fixtures().join("misbehave/health.wasm")).expect("health");
    let c = config("health", "[health]\nkind = \"export\"\nfunction = \"gantry_health\"\n");
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let artifact = sandbox.install(&digest, &wasm, &c).expect("install");
    let module = sandbox.load(&digest, &artifact, &c).expect("load");
    let io = io(dir, "health");
    let mut keep = Vec::with_capacity(n);
    // Warm up allocators before measuring.
    keep.push(sandbox.run(&module, &c, io.clone(), Arc::default()).expect("run").1);
    let before = rss_kib(std::process::id());
    for _ in 0..n {
        keep.push(sandbox.run(&module, &c, io.clone(), Arc::default()).expect("run").1);
    }
    let after = rss_kib(std::process::id());
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    // `health` never touches its one page of linear memory, so this is the
    // instance's own cost; VmRSS hides what the allocator already had mapped.
    println!("| VmRSS growth per idle instance (linear memory untouched) |\n|---:|\n| {per:.1} KiB |");
    drop(keep);
}

fn runtime_rss(dir: &Path) {
    println!("\n## runtime idle RSS (`gantry-device run`, no containers)");
    let state = dir.join("idle-state");
    let root = dir.join("root.cbor");
    std::fs::write(&root, trust_root()).expect("root");
    let bin = env!("CARGO_BIN_EXE_gantry-device");
    let init = Command::new(bin).args(["--state"]).arg(&state).args(["init", "--trust"]).arg(&root).output();
    if !init.as_ref().is_ok_and(|o| o.status.success()) {
        println!("skipped: init failed: {init:?}");
        return;
    }
    let mut child = Command::new(bin).arg("--state").arg(&state).args(["run", "--seconds", "3"]).spawn().expect("run");
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id());
    let _ = child.wait();
    println!("| VmRSS after 2 s |\n|---:|\n| {:.2} MiB |", rss as f64 / 1024.0);
}

/// A self-signed trust root for the idle runtime (its keys sign nothing else).
fn trust_root() -> Vec<u8> {
    use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
    use gantry_keys::{FileKeySource, KeySource, KeyType, SigningKey};
    let key = FileKeySource::from_key("bench".into(), SigningKey::generate(KeyType::Ed25519));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let roles: Vec<_> =
        [Role::Root, Role::Release, Role::Server].map(|r| (r, vec![key.public_key().clone()], 1)).into();
    let mut root = SignedTrustRoot::new(TrustRoot::new(1, now + 86_400, &roles).expect("root")).expect("root");
    root.sign_with(&key).expect("sign");
    root.to_bytes()
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

fn install_time(dir: &Path) {
    println!("\n## install time of a 1 MiB module (compile + import check + cache write)");
    let sandbox = Sandbox::new(&dir.join("install-cache")).expect("sandbox");
    let wasm = big_module(1 << 20);
    let c = config("big", "");
    let digest: [u8; 32] = Sha256::digest(&wasm).into();
    let t = Instant::now();
    sandbox.install(&digest, &wasm, &c).expect("install 1 MiB");
    println!(
        "| module | install |\n|---:|---:|\n| {:.2} MiB | {:.2} s |",
        wasm.len() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().expect("tempdir");
    println!("# gantry-device runtime benchmark ({} mode)", if quick { "quick" } else { "full" });
    if !quick {
        compute(dir.path());
    }
    cold_start(dir.path(), if quick { 50 } else { 1000 });
    idle_memory(dir.path(), if quick { 50 } else { 500 });
    runtime_rss(dir.path());
    install_time(dir.path());
}
