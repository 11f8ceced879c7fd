//! The `gantry-device` command line, end to end on a state directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Fleet;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/misbehave").join(format!("{name}.wasm"))
}

fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry-device")).arg("--state").arg(state).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn init_install_status_run_logs() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let (state, root) = (dir.path().join("state"), dir.path().join("root.cbor"));
    std::fs::write(&root, &fleet.trust_root).unwrap();
    let o = cli(
        &state,
        &[
            "init",
            "--trust",
            root.to_str().unwrap(),
            "--vendor",
            "example.com",
            "--class",
            "gateway",
            "--slot-mib",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let again = cli(&state, &["init", "--trust", root.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));

    let hello = fixture("hello");
    let env = fleet.release_with(
        "name = \"hello\"\nversion = \"1.0\"\ncapabilities = [\"wasi:stdout\"]\n",
        &std::fs::read(&hello).unwrap(),
        1,
    );
    let env_path = dir.path().join("hello.suit");
    std::fs::write(&env_path, &env).unwrap();
    let o = cli(&state, &["install", env_path.to_str().unwrap(), "--module", hello.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let event: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((event["event"].as_str(), event["sequence"].as_u64()), (Some("switched"), Some(1)));

    // Issue 11, finding 5: sizes first. A module of 300 MB is refused from
    // its size, before it is read (it used to be read whole first) ...
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge).unwrap().set_len(300 << 20).unwrap();
    let o = cli(&state, &["install", env_path.to_str().unwrap(), "--module", huge.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("does not match the release: 314572800 bytes, signed"), "{}", text(&o));
    // ... and a release whose signed sizes do not fit a slot is refused
    // before a byte of its payloads is read.
    let big = vec![0u8; 2 << 20];
    let big_env = dir.path().join("big.suit");
    std::fs::write(&big_env, fleet.release_with("name = \"big\"\nversion = \"1\"\n", &big, 1)).unwrap();
    let args = ["install", big_env.to_str().unwrap(), "--module", huge.to_str().unwrap(), "--json"];
    let refused: serde_json::Value = serde_json::from_slice(&cli(&state, &args).stdout).unwrap();
    assert_eq!((refused["event"].as_str(), refused["code"].as_str()), (Some("refused"), Some("too-large")));
    assert!(refused["reason"].as_str().unwrap().contains("does not fit a 1048576-byte slot"), "{refused}");

    // The same module under an envelope for another module: refused, exit 1.
    let o = cli(&state, &["install", env_path.to_str().unwrap(), "--module", fixture("crash").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("does not match"), "{}", text(&o));

    let o = cli(&state, &["run", "--seconds", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["update"]["event"] == "confirmed"), "{lines:?}");

    let o = cli(&state, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["trust_root"]["version"], 1, "{status}");
    assert_eq!(status["trust_root"]["expired"], false, "{status}");
    assert_eq!(status["table_faults"], serde_json::json!([]), "{status}");
    assert_eq!(cli(&state, &["logs", "no-such-container"]).status.code(), Some(2));
    let c = &status["containers"][0];
    assert_eq!(
        (c["name"].as_str(), c["phase"].as_str(), c["counter"].as_u64()),
        (Some("hello"), Some("confirmed"), Some(1))
    );

    let o = cli(&state, &["logs", "hello"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");
    let o = cli(&state, &["stop", "hello"]);
    assert!(o.status.success());
    assert!(state.join("containers/hello/log").exists());
    let o = cli(&state, &["remove", "hello"]);
    assert!(o.status.success());
    assert!(!state.join("containers/hello").exists(), "remove deletes the container's files");
    assert_eq!(cli(&state, &["remove", "hello"]).status.code(), Some(2));
}
