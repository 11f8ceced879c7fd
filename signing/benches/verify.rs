//! Verification, parsing and digesting speed, against the underlying crypto
//! and against `sha256sum` (DESIGN.md "Performance targets"; figures in
//! docs/benchmarks.md).
//!
//! ```text
//! cargo bench -p gantry-signing --bench verify
//! ```
//!
//! 1. `verify/envelope/<alg>`: `gantry_signing::verify()` of a whole SUIT
//!    envelope with one trusted key, against `verify/raw/<alg>`:
//!    `PublicKey::verify` alone over the *same* Sig_structure bytes and
//!    signature that `verify()` hands to the crypto (rebuilt here from the
//!    envelope and checked once before measuring). `verify/non-crypto/<alg>`:
//!    verify()'s other steps rebuilt from the public API, i.e. what it adds.
//! 2. `parse/envelope+manifest/<example>`: `Envelope::parse` +
//!    `Manifest::parse`, no crypto.
//! 3. `sha256/sha2/1MiB`: SHA-256 of an in-memory buffer; then, outside
//!    criterion, best-of-N timing of SHA-256 over a 256 MiB file, read in
//!    64 KiB blocks, by us (sha2) and by the `sha256sum` binary.
//! 4. Paired ratios: outside criterion, each raw/envelope pair of (1) timed
//!    again in alternating ~2 ms batches, so that slow drift of a shared
//!    machine cancels out of the ratio (criterion measures the two
//!    benchmarks seconds apart).
//!
//! At the end a summary prints criterion's estimates of this run with their
//! ratios, and the paired ratios.
//!
//! Environment knobs: `GANTRY_VECTORS` (vectors directory, default
//! `../../shared/vectors` from this crate), `GANTRY_BENCH_PAIRS` (pairs per
//! algorithm, default 500), `GANTRY_BENCH_PAIRED=0` (skip them),
//! `GANTRY_BENCH_SHA_MIB` (file size, default 256), `GANTRY_BENCH_SHA_RUNS`
//! (default 7, at least 5), `GANTRY_BENCH_SHA_FILE=0` (skip the file
//! comparison). Under `--test` (e.g. `cargo test --benches`) everything runs
//! once, on a 1 MiB file.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use gantry_keys::{Algorithm, PublicKey, read_public_key_pem};
use gantry_signing::{Envelope, Manifest, Policy, verify};
use sha2::{Digest as _, Sha256};

#[path = "support/sig_structure.rs"]
mod sig_structure;
use sig_structure::sig_structure_of;

/// One envelope to verify, with its key and the raw-crypto baseline.
struct VerifyCase {
    name: &'static str,
    envelope: Vec<u8>,
    key: PublicKey,
    alg: Algorithm,
    /// The Sig_structure `verify()` builds for this envelope's signature.
    sig_structure: Vec<u8>,
    signature: Vec<u8>,
}

/// (name, envelope, public key PEM, expected algorithm), relative to the vectors directory.
const VERIFY_CASES: [(&str, &str, &str, Algorithm); 4] = [
    ("ES256", "suit/example0.signed.cbor", "suit/suit-examples-es256-public.pem", Algorithm::Es256),
    ("ESP256", "suit/libcsuit/suit_manifest_exp0.suit", "suit/suit-examples-es256-public.pem", Algorithm::Esp256),
    (
        "Ed25519",
        "suit/derived/example0.ed25519.signed.cbor",
        "suit/derived/rfc8032-test1-ed25519-public.pem",
        Algorithm::Ed25519,
    ),
    (
        "EdDSA",
        "suit/derived/example0.eddsa.signed.cbor",
        "suit/derived/rfc8032-test1-ed25519-public.pem",
        Algorithm::EdDsa,
    ),
];

const PARSE_CASES: [(&str, &str); 3] = [
    ("example0", "suit/example0.signed.cbor"),
    ("example3", "suit/example3.signed.cbor"),
    ("example4", "suit/example4.signed.cbor"),
];

fn vectors_dir() -> PathBuf {
    match std::env::var_os("GANTRY_VECTORS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    }
}

fn read_vector(rel: &str) -> Vec<u8> {
    let path = vectors_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (set GANTRY_VECTORS)", path.display()))
}

fn verify_cases() -> Vec<VerifyCase> {
    VERIFY_CASES
        .iter()
        .map(|&(name, envelope, pem, expected_alg)| {
            let envelope = read_vector(envelope);
            let pem_text = String::from_utf8(read_vector(pem)).expect("PEM is text");
            let key = read_public_key_pem(&pem_text, pem).expect("public key PEM");
            let (alg, sig_structure, signature) = sig_structure_of(&envelope);
            assert_eq!(alg, expected_alg, "{name}: algorithm in the vector");
            // Both paths must succeed before either is timed.
            verify(&envelope, &Policy::new(std::slice::from_ref(&key), 1))
                .unwrap_or_else(|e| panic!("{name}: verify() fails: {e}"));
            key.verify(alg, &sig_structure, &signature)
                .unwrap_or_else(|e| panic!("{name}: raw verify of the rebuilt Sig_structure fails: {e}"));
            VerifyCase { name, envelope, key, alg, sig_structure, signature }
        })
        .collect()
}

/// verify()'s work minus the signature check, rebuilt from the public API:
/// envelope parse, authentication wrapper and COSE_Sign1 parse, the
/// Sig_structure assembled in a stack buffer, SHA-256 of the bstr-wrapped
/// manifest against the signed SUIT_Digest, manifest parse. An estimate of
/// what verify() adds to the crypto (it skips the policy, severable-member
/// and identity checks, which do nothing for these envelopes).
fn non_crypto(envelope: &[u8], protected_len: usize) -> u64 {
    use gantry_signing::cose::{Sign1, TagRule};
    let env = Envelope::parse(envelope).unwrap();
    let mut a = minicbor::Decoder::new(env.authentication_wrapper());
    a.array().unwrap();
    let digest_bstr = a.bytes().unwrap();
    let sig = Sign1::parse(a.bytes().unwrap(), TagRule::Required).unwrap();
    assert!(sig.algorithm_is_protected() && sig.payload().is_none());
    let mut buf = [0u8; 256];
    buf[..12].copy_from_slice(b"\x84\x6aSignature1");
    let n = 12 + 1 + protected_len + 1 + 2 + digest_bstr.len();
    buf[n - digest_bstr.len()..n].copy_from_slice(digest_bstr);
    black_box(&buf[..n]);
    let mut d = minicbor::Decoder::new(digest_bstr);
    d.array().unwrap();
    let digest = gantry_signing::Digest { algorithm: d.i64().unwrap(), bytes: d.bytes().unwrap() };
    assert!(digest.matches(env.manifest().wrapped).unwrap());
    Manifest::parse(env.manifest().content).unwrap().sequence_number()
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

fn bench_verify(c: &mut Criterion) {
    let cases = verify_cases();
    let mut g = c.benchmark_group("verify");
    for case in &cases {
        // Raw, envelope and non-crypto next to each other per algorithm. On a
        // shared VM they still run seconds apart and may see different machine
        // speeds: the paired measurement in main() is the ratio to trust.
        g.bench_function(BenchmarkId::new("raw", case.name), |b| {
            b.iter(|| {
                case.key
                    .verify(black_box(case.alg), black_box(&case.sig_structure), black_box(&case.signature))
                    .unwrap()
            })
        });
        let anchors = std::slice::from_ref(&case.key);
        g.bench_function(BenchmarkId::new("envelope", case.name), |b| {
            b.iter(|| {
                let policy = Policy::new(black_box(anchors), 1);
                let v = verify(black_box(&case.envelope), &policy).unwrap();
                black_box(v.sequence_number())
            })
        });
        let protected_len = case.sig_structure[12] as usize & 0x1f;
        g.bench_function(BenchmarkId::new("non-crypto", case.name), |b| {
            b.iter(|| non_crypto(black_box(&case.envelope), protected_len))
        });
    }
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, file) in PARSE_CASES {
        let bytes = read_vector(file);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("envelope+manifest", name), |b| {
            b.iter(|| {
                let env = Envelope::parse(black_box(&bytes)).unwrap();
                let m = Manifest::parse(env.manifest().content).unwrap();
                black_box(m.sequence_number())
            })
        });
    }
    g.finish();
}

fn bench_sha256(c: &mut Criterion) {
    let buf = pseudo_random(1 << 20, 1);
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(BenchmarkId::new("sha2", "1MiB"), |b| b.iter(|| Sha256::digest(black_box(&buf))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_verify, bench_parse, bench_sha256
}

/// xorshift64* bytes: incompressible, reproducible, fast to make.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

const BLOCK: usize = 64 * 1024;

/// Our streaming digest: a 64 KiB BufReader, hashed straight from its buffer.
fn sha2_file(path: &Path) -> (String, u64) {
    let mut r = BufReader::with_capacity(BLOCK, File::open(path).unwrap());
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let chunk = r.fill_buf().unwrap();
        if chunk.is_empty() {
            break;
        }
        h.update(chunk);
        let len = chunk.len();
        n += len as u64;
        r.consume(len);
    }
    (hex::encode(h.finalize()), n)
}

/// Reading alone, same block size: how much of the time is I/O.
fn read_file(path: &Path) -> u64 {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; BLOCK];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf).unwrap() {
            0 => break,
            k => n += black_box(&buf[..k]).len() as u64,
        }
    }
    n
}

fn sha256sum_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Best and median of `runs` timings.
fn best_median(mut t: Vec<Duration>) -> (Duration, Duration) {
    t.sort();
    (t[0], t[t.len() / 2])
}

fn gib_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / t.as_secs_f64()
}

/// SHA-256 of one file: sha2 in this process vs the `sha256sum` binary,
/// alternating, best of N.
fn sha256_file_comparison(test_mode: bool) {
    let (mib, runs) = if test_mode {
        (1, 1)
    } else {
        (env_usize("GANTRY_BENCH_SHA_MIB", 256).max(1), env_usize("GANTRY_BENCH_SHA_RUNS", 7).max(5))
    };
    let size = (mib as u64) << 20;
    let mut file = tempfile::Builder::new().prefix("gantry-bench-sha256-").tempfile().expect("temp file");
    {
        let chunk = pseudo_random(1 << 20, 2);
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
        for i in 0..mib {
            // Vary each MiB so no two blocks are equal.
            let mut c = chunk.clone();
            c[..8].copy_from_slice(&(i as u64).to_le_bytes());
            w.write_all(&c).unwrap();
        }
        w.flush().unwrap();
    }
    file.as_file().sync_all().unwrap();
    let path = file.path().to_owned();

    // Warm the page cache and check both tools agree before timing.
    let (ours, n) = sha2_file(&path);
    assert_eq!(n, size);
    let theirs = sha256sum_file(&path);
    assert_eq!(ours, theirs, "sha2 and sha256sum disagree");
    read_file(&path);

    let (mut t_ours, mut t_sum, mut t_read) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        assert_eq!(black_box(sha2_file(&path)).0, ours);
        t_ours.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(sha256sum_file(&path), ours);
        t_sum.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(read_file(&path), size);
        t_read.push(t.elapsed());
    }
    let (ours_best, ours_med) = best_median(t_ours);
    let (sum_best, sum_med) = best_median(t_sum);
    let (read_best, read_med) = best_median(t_read);
    println!();
    println!("sha256 file: {mib} MiB, {}-byte reads, best/median of {runs} alternating runs, page cache warm", BLOCK);
    println!("  digest {ours} (sha2 == sha256sum)");
    let line = |what: &str, best: Duration, med: Duration| {
        println!(
            "  {what:<26} best {:>8.3} ms {:>6.3} GiB/s   median {:>8.3} ms {:>6.3} GiB/s",
            best.as_secs_f64() * 1e3,
            gib_s(size, best),
            med.as_secs_f64() * 1e3,
            gib_s(size, med)
        );
    };
    line("gantry (sha2, in-process)", ours_best, ours_med);
    line("sha256sum (coreutils)", sum_best, sum_med);
    line("read only (no hashing)", read_best, read_med);
    println!(
        "  speed ratio gantry/sha256sum: best {:.2}x, median {:.2}x",
        sum_best.as_secs_f64() / ours_best.as_secs_f64(),
        sum_med.as_secs_f64() / ours_med.as_secs_f64()
    );
}

/// What the interleaved measurement found for one algorithm.
struct Paired {
    name: &'static str,
    batch: usize,
    pairs: usize,
    /// Median per-operation times over all batches, ns.
    raw_ns: f64,
    env_ns: f64,
    /// Quartiles (25 %, 50 %, 75 %) of the per-pair ratio envelope/raw.
    ratio: [f64; 3],
    /// Median per-pair difference envelope - raw, per operation, ns.
    overhead_ns: f64,
}

/// The ratio verify(envelope) / raw verify, measured in alternating batches
/// of a couple of milliseconds each, so that slow drift of the machine
/// (shared cores, frequency, other builds) hits both sides alike. Each pair
/// gives one ratio; the order inside a pair alternates.
fn paired(case: &VerifyCase, pairs: usize) -> Paired {
    let anchors = std::slice::from_ref(&case.key);
    let raw = || {
        case.key.verify(black_box(case.alg), black_box(&case.sig_structure), black_box(&case.signature)).unwrap();
    };
    let env = || {
        black_box(verify(black_box(&case.envelope), &Policy::new(black_box(anchors), 1)).unwrap().sequence_number());
    };
    // Calibrate: batches of about 2 ms.
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(100) {
        raw();
        n += 1;
    }
    let batch = ((2e-3 / (t.elapsed().as_secs_f64() / n as f64)) as usize).max(1);
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        t.elapsed().as_secs_f64() * 1e9 / batch as f64
    };
    let (mut ratios, mut diffs, mut raws, mut envs) = (vec![], vec![], vec![], vec![]);
    for i in 0..pairs {
        let (r, e) = if i % 2 == 0 {
            let r = time(&raw);
            (r, time(&env))
        } else {
            let e = time(&env);
            (time(&raw), e)
        };
        ratios.push(e / r);
        diffs.push(e - r);
        raws.push(r);
        envs.push(e);
    }
    let q = |v: &mut Vec<f64>, f: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * f).round() as usize]
    };
    Paired {
        name: case.name,
        batch,
        pairs,
        raw_ns: q(&mut raws, 0.5),
        env_ns: q(&mut envs, 0.5),
        ratio: [q(&mut ratios, 0.25), q(&mut ratios, 0.5), q(&mut ratios, 0.75)],
        overhead_ns: q(&mut diffs, 0.5),
    }
}

/// Where criterion writes this run's estimates (its own lookup order, with
/// the executable's location in place of `cargo metadata`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // target/<profile>/deps/verify-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map(|t| t.join("criterion")).unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// (point, lower, upper) of the typical time in ns, from an estimates file
/// written by this run.
fn estimate(id: &str, since: SystemTime) -> Option<(f64, f64, f64)> {
    let path = criterion_dir().join(id).join("new/estimates.json");
    if path.metadata().ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let e = if v["slope"].is_object() { &v["slope"] } else { &v["mean"] };
    let ci = &e["confidence_interval"];
    Some((e["point_estimate"].as_f64()?, ci["lower_bound"].as_f64()?, ci["upper_bound"].as_f64()?))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn summary(since: SystemTime, load_at_start: &str, paired: &[Paired]) {
    println!();
    println!("load average (1/5/15 min): at start {load_at_start}, at end {}", loadavg());
    println!("summary (criterion typical time, [95% CI]):");
    println!(
        "  {:<8} {:>32} {:>32} {:>8} {:>10} {:>10} {:>12}",
        "alg", "verify(envelope)", "raw PublicKey::verify", "ratio", "overhead", "non-crypto", "(raw+nc)/raw"
    );
    for (name, ..) in VERIFY_CASES {
        let env = estimate(&format!("verify/envelope/{name}"), since);
        let raw = estimate(&format!("verify/raw/{name}"), since);
        let nc = estimate(&format!("verify/non-crypto/{name}"), since);
        let (nc_cell, model) = match (nc, raw) {
            (Some((n, ..)), Some((r, ..))) => (fmt_ns(n), format!("{:.4}", (r + n) / r)),
            (Some((n, ..)), None) => (fmt_ns(n), "-".into()),
            _ => ("-".into(), "-".into()),
        };
        let cell = |e: Option<(f64, f64, f64)>| match e {
            Some((p, lo, hi)) => format!("{} [{}, {}]", fmt_ns(p), fmt_ns(lo), fmt_ns(hi)),
            None => "not run".into(),
        };
        let (ratio, over) = match (env, raw) {
            (Some((e, ..)), Some((r, ..))) => (format!("{:.3}", e / r), fmt_ns(e - r)),
            _ => ("-".into(), "-".into()),
        };
        println!("  {name:<8} {:>32} {:>32} {ratio:>8} {over:>10} {nc_cell:>10} {model:>12}", cell(env), cell(raw));
    }
    if !paired.is_empty() {
        println!();
        println!("paired (alternating ~2 ms batches; per-op medians; ratio quartiles over pairs):");
        println!(
            "  {:<8} {:>7} {:>6} {:>12} {:>12} {:>24} {:>10}",
            "alg", "batch", "pairs", "raw", "envelope", "ratio p25 / p50 / p75", "overhead"
        );
        for p in paired {
            println!(
                "  {:<8} {:>7} {:>6} {:>12} {:>12} {:>24} {:>10}",
                p.name,
                p.batch,
                p.pairs,
                fmt_ns(p.raw_ns),
                fmt_ns(p.env_ns),
                format!("{:.3} / {:.3} / {:.3}", p.ratio[0], p.ratio[1], p.ratio[2]),
                fmt_ns(p.overhead_ns)
            );
        }
        println!();
    }
    for (name, file) in PARSE_CASES {
        if let Some((p, ..)) = estimate(&format!("parse/envelope+manifest/{name}"), since) {
            let len = read_vector(file).len();
            println!("  parse {name} ({len} B): {}", fmt_ns(p));
        }
    }
    if let Some((p, ..)) = estimate("sha256/sha2/1MiB", since) {
        println!("  sha256 1 MiB in memory: {} = {:.3} GiB/s", fmt_ns(p), (1u64 << 20) as f64 / p / 1.073_741_824);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = args.iter().any(|a| a == "--test");
    let list_mode = args.iter().any(|a| a == "--list");
    // Estimate files older than this belong to earlier runs.
    let start = SystemTime::now() - Duration::from_secs(1);
    let load_at_start = loadavg();

    benches();
    Criterion::default().configure_from_args().final_summary();

    if list_mode {
        return;
    }
    let mut paired_results = vec![];
    if std::env::var("GANTRY_BENCH_PAIRED").as_deref() != Ok("0") {
        let pairs = if test_mode { 3 } else { env_usize("GANTRY_BENCH_PAIRS", 500).max(10) };
        for case in verify_cases() {
            paired_results.push(paired(&case, pairs));
        }
    }
    if std::env::var("GANTRY_BENCH_SHA_FILE").as_deref() != Ok("0") {
        sha256_file_comparison(test_mode);
    }
    if !test_mode {
        summary(start, &load_at_start, &paired_results);
    }
}
