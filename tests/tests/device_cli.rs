//! The `gantry-device` binary against the real server: `identity` for
//! pre-authorization, then `run --server` pulls, installs and confirms a
//! release by itself, and the server sees it in the inventory.

use std::path::PathBuf;
use std::process::Command;

use gantry_e2e::bins::workspace_bin;
use gantry_e2e::fleet::{Body, Fleet, fixture};
use serde_json::{Value, json};

/// The `gantry-device` binary of this workspace.
fn gantry_device() -> PathBuf {
    workspace_bin("gantry-device", "gantry-device")
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
