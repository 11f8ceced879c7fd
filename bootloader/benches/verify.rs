//! How long the bootloader takes to verify a slot image in place, against
//! the crypto that verification is made of (figures in docs/benchmarks.md,
//! section "Bootloader").
//!
//! ```text
//! cargo bench -p gantry-boot --bench verify
//! ```
//!
//! For a 256 KiB and a 1 MiB firmware, signed with Ed25519 and with P-256
//! and packed into a slot image at offset 0 of a simulated flash with 4 KiB
//! pages and 4-byte words:
//!
//! - `verify_slot/<alg>-chunk<n>/<size>`: [`gantry_boot::verify_slot`] as
//!   the boot path runs it on ACTIVE: header, envelope copy, signature and
//!   policy (`gantry_signing::verify`), the manifest's validate section, and
//!   SHA-256 of the image read back from flash through an `n`-byte buffer
//!   (256 B is the page buffer `Rig::boot` hands the bootloader; 4096 B is
//!   one page).
//! - `sha256/sha2/<size>`: sha2's SHA-256 of the same firmware bytes, in
//!   memory, in one call.
//! - `signature/<alg>`: `PublicKey::verify` alone, on the Sig_structure and
//!   signature of that image's envelope (rebuilt here, checked before timing).
//!
//! The bare alternative is `sha256 + signature`: what any verified boot has
//! to compute at the least. The summary prints `verify_slot / (sha256 +
//! signature)` from criterion's estimates, and the same ratio measured in
//! alternating batches, because criterion times the two sides seconds apart
//! and this shared machine drifts (see the notes in docs/benchmarks.md).
//!
//! Knobs: `GANTRY_BENCH_PAIRS` (pairs per case, default 200),
//! `GANTRY_BENCH_PAIRED=0` (skip them). Under `--test` (`cargo test
//! --benches`) everything runs once.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use embedded_storage::nor_flash::{NorFlash as _, ReadNorFlash as _};
use gantry_boot::image::{MAX_ENVELOPE, pack};
use gantry_boot::sim::{Signer, SimFlash, firmware};
use gantry_boot::{BootConfig, verify_slot};
use gantry_keys::{Algorithm, KeyType, PublicKey};
use gantry_signing::build::{class_id_from_model, vendor_id_from_domain};
use sha2::{Digest as _, Sha256};

#[path = "../../signing/benches/support/sig_structure.rs"]
mod sig_structure;
use sig_structure::sig_structure_of;

type Flash = SimFlash<4, 4096>;

const SIZES: [(&str, usize); 2] = [("256KiB", 256 << 10), ("1MiB", 1 << 20)];
const KEYS: [(&str, KeyType); 2] = [("Ed25519", KeyType::Ed25519), ("P-256", KeyType::P256)];
const CHUNKS: [usize; 2] = [256, 4096];

/// A release key: signs the images, and is the one provisioned anchor.
struct Key {
    name: &'static str,
    signer: Signer,
    anchors: [PublicKey; 1],
}

/// A signed slot image in flash, and the bare crypto's inputs for it.
struct Slot {
    size: &'static str,
    /// Index into `Setup::keys`.
    key: usize,
    /// Index into `Setup::firmware`.
    firmware: usize,
    flash: Flash,
    alg: Algorithm,
    sig_structure: Vec<u8>,
    signature: Vec<u8>,
}

struct Setup {
    vendor_id: [u8; 16],
    class_id: [u8; 16],
    keys: Vec<Key>,
    /// (size name, firmware bytes).
    firmware: Vec<(&'static str, Vec<u8>)>,
    slots: Vec<Slot>,
}

impl Setup {
    fn new() -> Setup {
        let vendor_id = vendor_id_from_domain("example.com");
        let class_id = class_id_from_model(&vendor_id, "bench-board");
        let keys: Vec<Key> = KEYS
            .iter()
            .map(|&(name, key_type)| {
                let signer = Signer::new(key_type);
                let anchors = [signer.public_key()];
                Key { name, signer, anchors }
            })
            .collect();
        let firmware: Vec<_> = SIZES.iter().map(|&(name, len)| (name, firmware(len, 7))).collect();
        let mut slots = vec![];
        for (f, (size, fw)) in firmware.iter().enumerate() {
            for (k, key) in keys.iter().enumerate() {
                let envelope = key.signer.envelope(fw, 1, vendor_id, class_id);
                let mut image = pack(&envelope, fw).expect("the envelope fits a slot image");
                image.resize(image.len().next_multiple_of(4), 0xFF);
                let mut flash = Flash::new(image.len().next_multiple_of(4096));
                flash.write(0, &image).expect("programming the slot");
                let (alg, sig_structure, signature) = sig_structure_of(&envelope);
                slots.push(Slot { size, key: k, firmware: f, flash, alg, sig_structure, signature });
            }
        }
        let mut setup = Setup { vendor_id, class_id, keys, firmware, slots };
        // Both sides must succeed before either is timed.
        let mut envelope = vec![0u8; MAX_ENVELOPE];
        for i in 0..setup.slots.len() {
            for chunk in CHUNKS {
                let m = setup.verify(i, &mut envelope, &mut vec![0u8; chunk]);
                let slot = &setup.slots[i];
                let fw = &setup.firmware[slot.firmware].1;
                assert_eq!(m, <[u8; 32]>::from(Sha256::digest(fw)), "verify_slot measured the firmware");
            }
            let slot = &setup.slots[i];
            setup.keys[slot.key].anchors[0]
                .verify(slot.alg, &slot.sig_structure, &slot.signature)
                .expect("the rebuilt Sig_structure verifies with the bare crypto");
        }
        setup
    }

    /// verify_slot on slot `i`, as the boot path runs it on ACTIVE; returns the image digest.
    fn verify(&mut self, i: usize, envelope: &mut [u8], chunk: &mut [u8]) -> [u8; 32] {
        let slot = &mut self.slots[i];
        let config = BootConfig {
            anchors: &self.keys[slot.key].anchors,
            threshold: 1,
            vendor_id: self.vendor_id,
            class_id: self.class_id,
            max_trial_boots: 3,
            check_update_before_swap: true,
        };
        let limit = slot.flash.capacity();
        let m = verify_slot(&mut slot.flash, black_box(limit), &config, 0, envelope, chunk)
            .expect("the slot image verifies");
        m.image_digest
    }

    /// The bare crypto for slot `i`: SHA-256 of its firmware and its signature check.
    fn bare(&self, i: usize) -> [u8; 32] {
        let slot = &self.slots[i];
        let digest = Sha256::digest(black_box(&self.firmware[slot.firmware].1));
        self.keys[slot.key].anchors[0]
            .verify(black_box(slot.alg), black_box(&slot.sig_structure), black_box(&slot.signature))
            .expect("the signature verifies");
        digest.into()
    }

    fn key_name(&self, i: usize) -> &'static str {
        self.keys[self.slots[i].key].name
    }
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

fn bench_verify(c: &mut Criterion) {
    let mut setup = Setup::new();
    let mut envelope = vec![0u8; MAX_ENVELOPE];

    let mut g = c.benchmark_group("signature");
    for k in 0..setup.keys.len() {
        let i = setup.slots.iter().position(|s| s.key == k).expect("a slot per key");
        let slot = &setup.slots[i];
        let key = &setup.keys[k].anchors[0];
        g.bench_function(setup.keys[k].name, |b| {
            b.iter(|| {
                key.verify(black_box(slot.alg), black_box(&slot.sig_structure), black_box(&slot.signature))
                    .expect("the signature verifies")
            })
        });
    }
    g.finish();

    for (size, len) in SIZES {
        let mut g = c.benchmark_group("sha256");
        g.throughput(Throughput::Bytes(len as u64));
        let f = setup.firmware.iter().position(|(s, _)| *s == size).expect("firmware of each size");
        let fw = &setup.firmware[f].1;
        g.bench_function(BenchmarkId::new("sha2", size), |b| b.iter(|| Sha256::digest(black_box(fw))));
        g.finish();

        let mut g = c.benchmark_group("verify_slot");
        g.throughput(Throughput::Bytes(len as u64));
        for i in 0..setup.slots.len() {
            if setup.slots[i].size != size {
                continue;
            }
            for n in CHUNKS {
                let mut chunk = vec![0u8; n];
                let id = BenchmarkId::new(format!("{}-chunk{n}", setup.key_name(i)), size);
                g.bench_function(id, |b| b.iter(|| setup.verify(i, &mut envelope, &mut chunk)));
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_verify
}

/// What the interleaved measurement found for one case.
struct Paired {
    case: String,
    batch: usize,
    pairs: usize,
    /// Median per-operation times, ns.
    bare_ns: f64,
    verify_ns: f64,
    /// Quartiles (25 %, 50 %, 75 %) of the per-pair ratio verify_slot / bare.
    ratio: [f64; 3],
}

/// verify_slot / (sha256 + signature), timed in alternating batches of
/// about 10 ms, so that drift of the machine hits both sides of each pair
/// alike. The order inside a pair alternates.
fn paired(setup: &mut Setup, i: usize, chunk_len: usize, pairs: usize) -> Paired {
    let mut envelope = vec![0u8; MAX_ENVELOPE];
    let mut chunk = vec![0u8; chunk_len];
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(100) {
        black_box(setup.bare(i));
        n += 1;
    }
    let batch = ((10e-3 / (t.elapsed().as_secs_f64() / n as f64)) as usize).max(1);
    let mut time = |verify: bool| {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(if verify { setup.verify(i, &mut envelope, &mut chunk) } else { setup.bare(i) });
        }
        t.elapsed().as_secs_f64() * 1e9 / batch as f64
    };
    let (mut ratios, mut bares, mut verifies) = (vec![], vec![], vec![]);
    for p in 0..pairs {
        let (b, v) = if p % 2 == 0 {
            let b = time(false);
            (b, time(true))
        } else {
            let v = time(true);
            (time(false), v)
        };
        ratios.push(v / b);
        bares.push(b);
        verifies.push(v);
    }
    let slot = &setup.slots[i];
    Paired {
        case: format!("{} {}-chunk{chunk_len}", slot.size, setup.key_name(i)),
        batch,
        pairs,
        bare_ns: quantile(&mut bares, 0.5),
        verify_ns: quantile(&mut verifies, 0.5),
        ratio: [quantile(&mut ratios, 0.25), quantile(&mut ratios, 0.5), quantile(&mut ratios, 0.75)],
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
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
    let exe = std::env::current_exe().expect("the benchmark's own path");
    exe.ancestors().nth(3).map(|t| t.join("criterion")).unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// (point, lower, upper) of the typical time in ns from an estimates file
/// this run wrote: criterion's slope estimate if it made one, else the mean.
/// Read by hand (the file is criterion's flat JSON) to need no JSON crate.
fn estimate(id: &str, since: SystemTime) -> Option<(f64, f64, f64)> {
    let path = criterion_dir().join(id).join("new/estimates.json");
    if path.metadata().ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let section = |key: &str| {
        let at = text.find(&format!("\"{key}\":{{"))?;
        let rest = &text[at..];
        let end = rest.find("\"standard_error\"")?;
        Some(&rest[..end])
    };
    let body = section("slope").or_else(|| section("mean"))?;
    let number = |key: &str| -> Option<f64> {
        let at = body.find(&format!("\"{key}\":"))? + key.len() + 3;
        let digits: String = body[at..].chars().take_while(|c| !matches!(c, ',' | '}')).collect();
        digits.trim().parse().ok()
    };
    Some((number("point_estimate")?, number("lower_bound")?, number("upper_bound")?))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
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
    println!("summary (criterion typical time [95% CI]; bare = sha256 + signature):");
    println!(
        "  {:<7} {:<8} {:>6} {:>30} {:>30} {:>12} {:>12} {:>7}",
        "size", "alg", "chunk", "verify_slot", "sha256", "signature", "bare", "ratio"
    );
    let cell = |e: Option<(f64, f64, f64)>| match e {
        Some((p, lo, hi)) => format!("{} [{}, {}]", fmt_ns(p), fmt_ns(lo), fmt_ns(hi)),
        None => "not run".into(),
    };
    for (size, _) in SIZES {
        let sha = estimate(&format!("sha256/sha2/{size}"), since);
        for (alg, _) in KEYS {
            let sig = estimate(&format!("signature/{alg}"), since);
            for n in CHUNKS {
                let v = estimate(&format!("verify_slot/{alg}-chunk{n}/{size}"), since);
                let (bare, ratio) = match (v, sha, sig) {
                    (Some((v, ..)), Some((h, ..)), Some((s, ..))) => (fmt_ns(h + s), format!("{:.3}", v / (h + s))),
                    _ => ("-".into(), "-".into()),
                };
                let sig_cell = sig.map_or_else(|| "not run".into(), |(s, ..)| fmt_ns(s));
                println!(
                    "  {size:<7} {alg:<8} {n:>6} {:>30} {:>30} {sig_cell:>12} {bare:>12} {ratio:>7}",
                    cell(v),
                    cell(sha)
                );
            }
        }
    }
    if !paired.is_empty() {
        println!();
        println!("paired (alternating ~10 ms batches; per-op medians; quartiles of verify_slot / bare over pairs):");
        println!(
            "  {:<26} {:>6} {:>6} {:>12} {:>12} {:>24}",
            "case", "batch", "pairs", "bare", "verify_slot", "ratio p25 / p50 / p75"
        );
        for p in paired {
            println!(
                "  {:<26} {:>6} {:>6} {:>12} {:>12} {:>24}",
                p.case,
                p.batch,
                p.pairs,
                fmt_ns(p.bare_ns),
                fmt_ns(p.verify_ns),
                format!("{:.3} / {:.3} / {:.3}", p.ratio[0], p.ratio[1], p.ratio[2]),
            );
        }
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

    let mut results = vec![];
    if std::env::var("GANTRY_BENCH_PAIRED").as_deref() != Ok("0") {
        let pairs = if test_mode {
            3
        } else {
            std::env::var("GANTRY_BENCH_PAIRS").ok().and_then(|v| v.parse().ok()).unwrap_or(200usize).max(10)
        };
        let mut setup = Setup::new();
        for i in 0..setup.slots.len() {
            for n in CHUNKS {
                results.push(paired(&mut setup, i, n, pairs));
            }
        }
    }
    if !test_mode {
        summary(start, &load_at_start, &results);
    }
}
