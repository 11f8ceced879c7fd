//! The `gantry-device` binary against the real server: `identity` for
//! pre-authorization, then `run --server` pulls, installs and confirms a
//! release by itself, and the server sees it in the inventory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use gantry_e2e::fleet::{Body, Fleet, fixture};
use serde_json::{Value, json};

/// The `gantry-device` binary of this workspace. `cargo test --workspace`
/// has built it next to this test; when it is missing or older than the
/// sources it is built from (`cargo test -p gantry-e2e` after a change), it
/// is built here, so a stale binary is never tested.
fn gantry_device() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target dir").join("gantry-device");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest =
        ["device-runtime", "signing", "keys", "bootloader"].iter().filter_map(|c| newest_file(&root.join(c))).max();
    if built.is_none() || newest > built {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "gantry-device", "--bin", "gantry-device"])
            .current_dir(&root)
            .status()
            .expect("running cargo");
        assert!(status.success(), "building gantry-device");
    }
    bin
}

/// The newest modification time of a source file under `dir`.
fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "fixtures" {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                newest = newest.max(entry.metadata().and_then(|m| m.modified()).ok());
            }
        }
    }
    newest
}

#[test]
fn run_with_server_pulls_installs_and_confirms_by_itself() {
    let fleet = Fleet::start();
    let bin = gantry_device();
    let state = fleet.dir.path().join("cli-device");
    let root = fleet.dir.path().join("root.cbor");
    std::fs::write(&root, &fleet.trust_root).expect("trust root file");
    let cli = |args: &[&str]| Command::new(&bin).arg("--state").arg(&state).args(args).output().expect("gantry-device");

    let o = cli(&["init", "--trust", root.to_str().expect("path"), "--slot-mib", "1", "--max-containers", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["identity", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let identity: Value = serde_json::from_slice(&o.stdout).expect("identity JSON");
    let id = identity["device_id"].as_str().expect("device_id").to_owned();
    let (status, body) = fleet.call(
        "POST",
        "/api/v1/devices",
        Body::Json(json!({ "device_id": id, "public_key": identity["public_key"], "groups": ["lab"] })),
    );
    assert_eq!(status, 201, "{body}");
    let release = fleet.release(
        "name = \"app\"\nversion = \"1.0\"\ncapabilities = [\"wasi:stdout\"]\n[restart]\npolicy = \"never\"\n",
        fixture("hello"),
        1,
    );
    fleet.assign(&id, "app", &release);

    let o = cli(&["run", "--server", &fleet.url, "--seconds", "6", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("\"event\":\"confirmed\""), "{out}");
    // Every line is a JSON object; the agent's say what they are by name.
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let agent: Vec<&str> = lines.iter().filter_map(|l| l["agent"].as_str()).collect();
    assert!(agent.starts_with(&["logged-in", "ticket"]), "{agent:?}");
    assert!(lines.iter().any(|l| l["agent"] == "update" && l["update"]["event"] == "switched"), "{out}");
    let o = cli(&["logs", "app"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");

    let view = fleet.device_view(&id);
    assert_eq!(view["inventory"][0]["manifest_digest"], release.digest.as_str(), "{view:#}");
    let (_, reports) = fleet.call("GET", &format!("/api/v1/devices/{id}/reports"), Body::None);
    assert!(reports.to_string().contains("\"installed\""), "{reports:#}");
}
