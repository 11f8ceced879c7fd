//! The official WASI preview-1 test suite (`wasi-testsuite`, its 72
//! precompiled tests in Rust, C and AssemblyScript, beside this repository
//! in `../shared/wasi-testsuite/`) run as Gantry containers, the way a
//! release engineer and a device would: each test signed with
//! `gantry-sign container` under a config that expresses its
//! specification (args, env, and its `root` directory shipped as a blob
//! tree, seeded into the container's data directory and mounted read-write
//! at `/`), installed with `gantry-device install` and run with
//! `gantry-device run --once`, whose exit code, stdout and stderr must be
//! what the specification says; `status --json` must show the exit code.
//!
//! Prints the tally (passed / failed / excluded, with the reason for each
//! exclusion). Without the suite this test prints why it skipped, except
//! under CI (`CI` set), where it fails.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gantry_e2e::bins::workspace_bin;
use serde_json::Value;

/// Tests that cannot pass as Gantry containers, and why. Empty: every test
/// of the suite passes.
const EXCLUDED: &[(&str, &str)] = &[];

fn suite() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/wasi-testsuite/tests");
    if dir.is_dir() {
        return Some(dir);
    }
    let why = format!("{} is missing", dir.display());
    assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "CI is set and the WASI test suite is absent: {why}");
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
    None
}

/// One test: its module and its specification (the legacy form the
/// suite's preview-1 tests use; see its doc/specification.md).
struct Case {
    /// `rust/path_open_preopen`, for the tally.
    id: String,
    wasm: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<PathBuf>,
    exit_code: i32,
    stdout: Option<String>,
    stderr: Option<String>,
}

fn cases(suite: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for lang in ["assemblyscript", "c", "rust"] {
        let dir = suite.join(lang).join("testsuite/wasm32-wasip1");
        let mut wasms: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        wasms.sort();
        for wasm in wasms {
            let spec: Value = match std::fs::read(wasm.with_extension("json")) {
                Ok(bytes) => serde_json::from_slice(&bytes).expect("spec JSON"),
                Err(_) => Value::Null,
            };
            let text = |v: &Value| v.as_str().map(str::to_owned);
            let stem = wasm.file_stem().and_then(|s| s.to_str()).expect("name").to_owned();
            cases.push(Case {
                id: format!("{lang}/{stem}"),
                args: spec["args"].as_array().map_or(vec![], |a| a.iter().filter_map(text).collect()),
                env: spec["env"]
                    .as_object()
                    .map_or(BTreeMap::new(), |m| m.iter().filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect()),
                root: text(&spec["root"]).map(|r| dir.join(r)),
                exit_code: spec["exit_code"].as_i64().map_or(0, |c| c as i32),
                stdout: text(&spec["stdout"]),
                stderr: text(&spec["stderr"]),
                wasm,
            });
        }
    }
    cases
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

impl Case {
    /// The container name: `wt-` and the test's name, lowercase, `-` for
    /// anything else, cut to 63 bytes.
    fn name(&self) -> String {
        let mut name: String = format!("wt-{}", self.id)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        name.truncate(63);
        name
    }

    /// The config its specification asks for.
    fn config(&self) -> String {
        // Every test gets exactly the environment its specification lists
        // (none, by default), and argv.
        let caps = ["wasi:args", "wasi:clocks", "wasi:env", "wasi:random", "wasi:stderr", "wasi:stdout"];
        let mut toml = format!("name = {}\nversion = \"1\"\n", quoted(&self.name()));
        let args: Vec<String> = self.args.iter().map(|a| quoted(a)).collect();
        toml += &format!("args = [{}]\n", args.join(", "));
        let caps: Vec<String> = caps.iter().map(|c| quoted(c)).collect();
        toml += &format!("capabilities = [{}]\n", caps.join(", "));
        if self.root.is_some() {
            toml += "seed = \"root\"\n[[mounts]]\npath = \"/\"\nsource = \"data\"\nmode = \"rw\"\n";
        }
        if !self.env.is_empty() {
            toml += "[env]\n";
            for (k, v) in &self.env {
                toml += &format!("{} = {}\n", quoted(k), quoted(v));
            }
        }
        toml + "[restart]\npolicy = \"never\"\n"
    }
}

struct Tools {
    sign: PathBuf,
    device: PathBuf,
    dir: PathBuf,
    state: PathBuf,
}

impl Tools {
    fn sign(&self, args: &[&str]) -> Output {
        Command::new(&self.sign).args(args).current_dir(&self.dir).output().expect("gantry-sign")
    }

    fn device(&self, args: &[&str]) -> Output {
        Command::new(&self.device).arg("--state").arg(&self.state).args(args).output().expect("gantry-device")
    }
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// Signs, installs and runs one case; `Err` says what did not match.
fn run(t: &Tools, case: &Case) -> Result<(), String> {
    let name = case.name();
    let toml = t.dir.join(format!("{name}.toml"));
    std::fs::write(&toml, case.config()).map_err(|e| e.to_string())?;
    let envelope = t.dir.join(format!("{name}.suit"));
    let wasm = case.wasm.to_str().expect("path");
    let mut sign = vec!["container", "--module", wasm, "--config", toml.to_str().expect("path")];
    let mut install = vec!["install", envelope.to_str().expect("path"), "--module", wasm];
    let blob = case.root.as_ref().map(|r| format!("root={}", r.display()));
    if let Some(blob) = &blob {
        sign.extend(["--blob", blob]);
        install.extend(["--blob", blob]);
    }
    sign.extend(["--vendor", "example.com", "--class", "wasi-lab", "--sequence", "1", "--key", "release.key"]);
    sign.extend(["--out", envelope.to_str().expect("path")]);
    let o = t.sign(&sign);
    if !o.status.success() {
        return Err(format!("gantry-sign container: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let o = t.device(&install);
    if !o.status.success() {
        return Err(format!(
            "gantry-device install: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let o = t.device(&["run", "--once", &name]);
    let result = check(t, case, &name, &o);
    ok(&t.device(&["remove", &name]), "remove");
    result
}

fn check(t: &Tools, case: &Case, name: &str, o: &Output) -> Result<(), String> {
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let code = o.status.code();
    if code != Some(case.exit_code & 0xff) {
        return Err(format!("exit code {code:?}, expected {}; stdout {stdout:?}, stderr {stderr:?}", case.exit_code));
    }
    if let Some(want) = &case.stdout
        && *want != stdout
    {
        return Err(format!("stdout {stdout:?}, expected {want:?}"));
    }
    if let Some(want) = &case.stderr
        && *want != stderr
    {
        return Err(format!("stderr {stderr:?}, expected {want:?}"));
    }
    // `status --json` keeps the exit code as a number.
    let status = t.device(&["status", "--json"]);
    ok(&status, "status");
    let status: Value = serde_json::from_slice(&status.stdout).map_err(|e| e.to_string())?;
    let container = status["containers"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name));
    let last = container.map(|c| c["last_run"].clone()).unwrap_or_default();
    if last["exit_code"].as_i64() != Some(i64::from(case.exit_code)) || last["outcome"] != "exited" {
        return Err(format!("status --json shows {last}"));
    }
    Ok(())
}

#[test]
fn the_wasi_preview1_testsuite_passes_as_gantry_containers() {
    let Some(suite) = suite() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = Tools {
        sign: workspace_bin("gantry-signing", "gantry-sign"),
        device: workspace_bin("gantry-device", "gantry-device"),
        dir: tmp.path().to_owned(),
        state: tmp.path().join("device"),
    };
    for (alg, out) in [("ed25519", "root"), ("p256", "release"), ("p256", "server")] {
        ok(&t.sign(&["keygen", "--alg", alg, "--out", out]), "keygen");
    }
    ok(
        &t.sign(&[
            "trust",
            "create",
            "--root",
            "root.pub",
            "--release",
            "release.pub",
            "--server",
            "server.pub",
            "--out",
            "root.cbor",
        ]),
        "trust create",
    );
    ok(&t.sign(&["trust", "sign", "--key", "root.key", "--in", "root.cbor", "--out", "root.cbor"]), "trust sign");
    let root = t.dir.join("root.cbor");
    let init = ["init", "--trust", root.to_str().expect("path"), "--vendor", "example.com", "--class", "wasi-lab"];
    ok(&t.device(&[&init[..], &["--max-containers", "1", "--slot-mib", "8"]].concat()), "init");

    let cases = cases(&suite);
    let (mut passed, mut failed, mut excluded) = (Vec::new(), Vec::new(), Vec::new());
    for case in &cases {
        if let Some((_, why)) = EXCLUDED.iter().find(|(id, _)| *id == case.id) {
            excluded.push(format!("{}: {why}", case.id));
            continue;
        }
        match run(&t, case) {
            Ok(()) => passed.push(case.id.clone()),
            Err(why) => failed.push(format!("{}: {why}", case.id)),
        }
    }
    let mut out = std::io::stderr();
    let _ = writeln!(
        out,
        "wasi-testsuite (preview 1) as Gantry containers: {} tests, {} passed, {} failed, {} excluded",
        cases.len(),
        passed.len(),
        failed.len(),
        excluded.len()
    );
    for f in failed.iter().chain(&excluded) {
        let _ = writeln!(out, "  {f}");
    }
    assert_eq!(cases.len(), 72, "the suite's preview-1 tests");
    assert!(failed.is_empty(), "{} failed", failed.len());
}
