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

/// Issue 12: firmware staged with `gantry-device firmware` is booted on
/// trial by the next `run`, confirmed once every container started; one
/// under which a container fails restarts the device and is reverted.
#[test]
fn firmware_on_trial_is_confirmed_by_run_and_a_failing_one_reverted() {
    use gantry_signing::build::{FirmwareRelease, add_signature};
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let (state, root) = (dir.path().join("state"), dir.path().join("root.cbor"));
    std::fs::write(&root, &fleet.trust_root).unwrap();
    let o = cli(&state, &["init", "--trust", root.to_str().unwrap(), "--class", "gateway", "--slot-mib", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let firmware = |seq: u64| {
        let image: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seq as u8).collect();
        let id = fleet.identity;
        let unsigned = FirmwareRelease { image: &image, sequence: seq, vendor_id: id.vendor_id, class_id: id.class_id }
            .build_unsigned()
            .unwrap();
        let (env, img) = (dir.path().join(format!("fw{seq}.suit")), dir.path().join(format!("fw{seq}.bin")));
        std::fs::write(&env, add_signature(&unsigned, &fleet.release).unwrap()).unwrap();
        std::fs::write(&img, &image).unwrap();
        (env, img)
    };
    let install = |name: &str, toml: &str, seq: u64| {
        let env = dir.path().join(format!("{name}.suit"));
        std::fs::write(&env, fleet.release_with(toml, &std::fs::read(fixture(name)).unwrap(), seq)).unwrap();
        let o = cli(&state, &["install", env.to_str().unwrap(), "--module", fixture(name).to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    };
    let lines = |o: &Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let run = || cli(&state, &["run", "--seconds", "4", "--firmware-probation", "1", "--json"]);

    install("hello", "name = \"hello\"\nversion = \"1\"\ncapabilities = [\"wasi:stdout\"]\n", 1);
    let (env, img) = firmware(1);
    let o = cli(&state, &["firmware", env.to_str().unwrap(), "--image", img.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run();
    let said = lines(&o);
    assert_eq!(said[0]["state"], "trial", "{}", text(&o));
    assert!(said.iter().any(|l| l["report"] == "firmware-confirmed" && l["sequence"] == 1), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&cli(&state, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["bootloader"]["security_counter"], 1, "{status}");
    assert_eq!(status["bootloader"]["swap_state"], "Boot", "{status}");

    // The same or an older firmware is refused, nothing requested.
    let o = cli(&state, &["firmware", env.to_str().unwrap(), "--image", img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Firmware 2, under which a new container crashes on start: the trial
    // fails, the device restarts, and the bootloader reverts to 1.
    install("crash", "name = \"crash\"\nversion = \"1\"\n[restart]\npolicy = \"never\"\n", 1);
    let (env, img) = firmware(2);
    let o = cli(&state, &["firmware", env.to_str().unwrap(), "--image", img.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run();
    let said = lines(&o);
    assert!(said.iter().any(|l| l["report"] == "firmware-trial-failed" && l["sequence"] == 2), "{}", text(&o));
    let boots: Vec<&serde_json::Value> = said.iter().filter(|l| l["report"] == "firmware").collect();
    assert_eq!(boots.len(), 2, "one restart: {}", text(&o));
    assert_eq!((boots[1]["state"].as_str(), boots[1]["sequence"].as_u64()), (Some("running"), Some(1)));
    assert_eq!(boots[1]["last_failure"], "trial-expired", "{}", text(&o));
}
