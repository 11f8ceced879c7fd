//! `gantry-sign` as a release pipeline uses it: real files, real exit codes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn gantry_sign(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry-sign")).current_dir(dir).args(args).output().expect("run gantry-sign")
}

/// Runs and asserts the exit code; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    expect(dir, args, 0)
}

fn expect(dir: &Path, args: &[&str], code: i32) -> String {
    let out = gantry_sign(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "gantry-sign {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&expect(dir, &all, code)).unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // A valid module (gantry-sign checks it against the config): a custom
    // section named "pretend modu", 23 bytes in all.
    std::fs::write(dir.path().join("app.wasm"), b"\0asm\x01\0\0\0\x00\x0d\x0cpretend modu").unwrap();
    std::fs::write(dir.path().join("model.bin"), vec![3u8; 5000]).unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "name = \"app\"\nversion = \"2.0.0\"\ncapabilities = [\"wasi:stdout\", \"gantry:sensor\"]\n[limits]\nmemory = \"8 MiB\"\n",
    )
    .unwrap();
    dir
}

const CONTAINER: &[&str] = &[
    "container",
    "--module",
    "app.wasm",
    "--config",
    "app.toml",
    "--blob",
    "model=model.bin",
    "--vendor",
    "example.com",
    "--class",
    "gw",
];

#[test]
fn release_pipeline_end_to_end() {
    let dir = setup();
    let d = dir.path();
    let k1 = json(d, &["keygen", "--alg", "ed25519", "--out", "a"], 0);
    let k2 = json(d, &["keygen", "--alg", "p256", "--out", "b", "--cose"], 0);
    assert_eq!(std::fs::metadata(d.join("a.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(d.join("b.cose").exists());
    // Never overwrite a key.
    expect(d, &["keygen", "--alg", "ed25519", "--out", "a"], 2);

    let mut args = CONTAINER.to_vec();
    args.extend(["--sequence", "7", "--key", "a.key", "--out", "app.suit"]);
    let report = json(d, &args, 0);
    assert_eq!(report["components"].as_array().unwrap().len(), 3);
    assert_eq!(report["container"]["name"], "app");
    assert_eq!(report["signatures"][0]["key_id"], k1["key_id"]);
    assert!(report["problems"].as_array().unwrap().is_empty());

    // One signature is not enough for two-of-two; add the second.
    let v = json(d, &["verify", "--key", "a.pub", "--key", "b.pub", "--threshold", "2", "app.suit"], 1);
    assert_eq!(v["code"], "threshold-not-met");
    ok(d, &["sign", "--key", "b.key", "--in", "app.suit", "--out", "app.suit"]);
    let v = json(d, &["verify", "--key", "a.pub", "--key", "b.cose", "--threshold", "2", "app.suit"], 0);
    assert_eq!(v["valid"], true);
    assert_eq!(v["sequence_number"], 7);
    assert_eq!(v["signers"].as_array().unwrap().len(), 2);
    assert_eq!(v["signers"][1], k2["key_id"]);
    // Signing twice with the same key is refused.
    expect(d, &["sign", "--key", "b.key", "--in", "app.suit", "--out", "again.suit"], 2);

    let i = json(d, &["inspect", "app.suit"], 0);
    assert_eq!(i["sequence_number"], 7);
    assert_eq!(i["signatures"].as_array().unwrap().len(), 2);
    let text = ok(d, &["inspect", "app.suit"]);
    assert!(text.contains("[\"app\", \"blob\", \"model\"]"), "{text}");
}

#[test]
fn refusals_have_exit_code_one_and_a_reason() {
    let dir = setup();
    let d = dir.path();
    ok(d, &["keygen", "--alg", "p256", "--out", "k"]);
    ok(d, &["keygen", "--alg", "p256", "--out", "other"]);
    let mut args = CONTAINER.to_vec();
    args.extend(["--sequence", "3", "--key", "k.key", "--out", "app.suit"]);
    ok(d, &args);

    assert_eq!(json(d, &["verify", "--key", "other.pub", "app.suit"], 1)["code"], "unknown-signer");
    assert_eq!(
        json(d, &["verify", "--key", "k.pub", "--min-sequence", "4", "app.suit"], 1)["code"],
        "sequence-too-low"
    );
    assert_eq!(
        json(d, &["verify", "--key", "k.pub", "--vendor", "example.org", "app.suit"], 1)["code"],
        "wrong-vendor"
    );
    assert_eq!(
        json(d, &["verify", "--key", "k.pub", "--vendor", "example.com", "--class", "cam", "app.suit"], 1)["code"],
        "wrong-class"
    );
    ok(d, &["verify", "--key", "k.pub", "--min-sequence", "3", "--vendor", "example.com", "--class", "gw", "app.suit"]);

    let bytes = std::fs::read(d.join("app.suit")).unwrap();
    // The manifest's sequence number (key 2 in the manifest map) changed.
    let mut t = bytes.clone();
    let pos = t.windows(4).position(|w| w == [0xa6, 0x01, 0x01, 0x02]).unwrap();
    t[pos + 4] = 0x09;
    std::fs::write(d.join("tampered.suit"), &t).unwrap();
    let out = gantry_sign(d, &["verify", "--key", "k.pub", "tampered.suit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest mismatch"));
    // The signature's last byte changed.
    let mut t = bytes.clone();
    let sig_end = t.windows(2).position(|w| w == [0x03, 0x59]).unwrap();
    t[sig_end - 1] ^= 0x40;
    std::fs::write(d.join("badsig.suit"), &t).unwrap();
    assert_eq!(json(d, &["verify", "--key", "k.pub", "badsig.suit"], 1)["code"], "signature-invalid");
    // The integrated config changed (its last byte): the signatures cover the
    // manifest only, so it is the config's signed digest that refuses it.
    let mut t = bytes.clone();
    *t.last_mut().unwrap() ^= 0x01;
    std::fs::write(d.join("config.suit"), &t).unwrap();
    let v = json(d, &["verify", "--key", "k.pub", "config.suit"], 1);
    assert_eq!(v["code"], "payload-mismatch");
    assert_eq!(v["error"], "integrated payload of component 1 does not match the digest and size signed for it");
    // Not CBOR at all.
    std::fs::write(d.join("junk.suit"), b"hello").unwrap();
    assert_eq!(json(d, &["verify", "--key", "k.pub", "junk.suit"], 1)["code"], "malformed");

    // Usage and I/O errors are 2.
    expect(d, &["verify", "--key", "missing.pub", "app.suit"], 2);
    expect(d, &["verify", "app.suit"], 2);
    expect(d, &["verify", "--key", "k.pub", "--threshold", "2", "app.suit"], 2);
    std::fs::set_permissions(d.join("k.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = gantry_sign(d, &["sign", "--key", "k.key", "--in", "app.suit", "--out", "x.suit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    // A bad config names the problem.
    std::fs::write(d.join("bad.toml"), "name = \"App\"\nversion = \"1\"\n").unwrap();
    let out = gantry_sign(
        d,
        &[
            "container",
            "--module",
            "app.wasm",
            "--config",
            "bad.toml",
            "--vendor",
            "v",
            "--class",
            "c",
            "--sequence",
            "1",
            "--out",
            "o.suit",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name \"App\""));
}

#[test]
fn trust_root_lifecycle_and_rotation() {
    let dir = setup();
    let d = dir.path();
    for k in ["r1", "r2", "r3", "rel", "srv", "rel2", "n1", "n2"] {
        ok(d, &["keygen", "--alg", if k.starts_with('r') { "ed25519" } else { "p256" }, "--out", k]);
    }
    ok(
        d,
        &[
            "trust",
            "create",
            "--root",
            "r1.pub",
            "--root",
            "r2.pub",
            "--root",
            "r3.pub",
            "--root-threshold",
            "2",
            "--release",
            "rel.pub",
            "--server",
            "srv.pub",
            "--expires-in",
            "30d",
            "--out",
            "root.cbor",
        ],
    );
    let v = json(d, &["trust", "verify", "root.cbor"], 1);
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "trust-root-under-signed");
    assert_eq!(v["error"], "trust root version 1 is signed by 0 of its own root keys, but needs 2");
    ok(d, &["trust", "sign", "--key", "r1.key", "--in", "root.cbor", "--out", "root.cbor"]);
    expect(d, &["trust", "verify", "root.cbor"], 1);
    ok(d, &["trust", "sign", "--key", "r3.key", "--in", "root.cbor", "--out", "root.cbor"]);
    ok(d, &["trust", "verify", "root.cbor"]);
    // Expired when checked a year from now.
    expect(d, &["trust", "verify", "--at", "2099-01-01T00:00:00Z", "root.cbor"], 1);
    let shown = json(d, &["trust", "show", "root.cbor"], 0);
    assert_eq!(shown["roles"]["root"]["threshold"], 2);
    assert_eq!(shown["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(json(d, &["inspect", "root.cbor"], 0)["version"], 1);

    let mut args = CONTAINER.to_vec();
    args.extend(["--sequence", "1", "--key", "rel.key", "--out", "v1.suit"]);
    ok(d, &args);
    ok(d, &["verify", "--trust", "root.cbor", "v1.suit"]);

    // Rotate: new root keys and a new release key.
    ok(
        d,
        &[
            "trust",
            "rotate",
            "--previous",
            "root.cbor",
            "--root",
            "n1.pub",
            "--root",
            "n2.pub",
            "--root-threshold",
            "2",
            "--release",
            "rel2.pub",
            "--out",
            "root2.cbor",
        ],
    );
    ok(d, &["trust", "sign", "--key", "n1.key", "--key", "n2.key", "--in", "root2.cbor", "--out", "root2.cbor"]);
    // Its own keys are not enough: the old root keys must approve.
    let v = json(d, &["trust", "verify", "--previous", "root.cbor", "root2.cbor"], 1);
    assert_eq!(v["code"], "trust-root-under-signed");
    assert_eq!(v["error"], "trust root version 2 is signed by 0 of the previous root keys, but needs 2", "{v}");
    ok(d, &["trust", "sign", "--key", "r2.key", "--key", "r3.key", "--in", "root2.cbor", "--out", "root2.cbor"]);
    ok(d, &["trust", "verify", "--previous", "root.cbor", "root2.cbor"]);

    let mut args = CONTAINER.to_vec();
    args.extend(["--sequence", "2", "--key", "rel2.key", "--out", "v2.suit"]);
    ok(d, &args);
    ok(d, &["verify", "--trust", "root.cbor", "--trust-update", "root2.cbor", "v2.suit"]);
    // The retired release key no longer counts; the old root does not know the new one.
    assert_eq!(
        json(d, &["verify", "--trust", "root.cbor", "--trust-update", "root2.cbor", "v1.suit"], 1)["code"],
        "unknown-signer"
    );
    expect(d, &["verify", "--trust", "root.cbor", "v2.suit"], 1);
}

/// Keys r1, r2 and rel; `root.cbor` needing both root keys, signed by `signers`.
fn root_signed_by(d: &Path, signers: &[&str]) {
    for k in ["r1", "r2", "rel"] {
        ok(d, &["keygen", "--alg", "ed25519", "--out", k]);
    }
    ok(
        d,
        &[
            "trust",
            "create",
            "--root",
            "r1.pub",
            "--root",
            "r2.pub",
            "--root-threshold",
            "2",
            "--release",
            "rel.pub",
            "--server",
            "rel.pub",
            "--expires",
            "2030-01-01T00:00:00Z",
            "--out",
            "root.cbor",
        ],
    );
    for s in signers {
        ok(d, &["trust", "sign", "--key", &format!("{s}.key"), "--in", "root.cbor", "--out", "root.cbor"]);
    }
    let mut args = CONTAINER.to_vec();
    args.extend(["--sequence", "1", "--key", "rel.key", "--out", "app.suit"]);
    ok(d, &args);
}

#[test]
fn verify_json_answers_when_the_trust_root_is_refused() {
    let dir = setup();
    let d = dir.path();
    root_signed_by(d, &["r1"]);
    let v = json(d, &["verify", "--trust", "root.cbor", "--at", "2029-01-01T00:00:00Z", "app.suit"], 1);
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "trust-root-under-signed");
    assert_eq!(v["error"], "trust root version 1 is signed by 1 of its own root keys, but needs 2");

    ok(d, &["trust", "sign", "--key", "r2.key", "--in", "root.cbor", "--out", "root.cbor"]);
    let v = json(d, &["verify", "--trust", "root.cbor", "--at", "2029-01-01T00:00:00Z", "app.suit"], 0);
    assert_eq!(v["valid"], true);
    let v = json(d, &["verify", "--trust", "root.cbor", "--at", "2031-01-01T00:00:00Z", "app.suit"], 1);
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "trust-root-expired");
    // Seconds for scripts, RFC 3339 for people.
    assert_eq!(v["expires"], 1_893_456_000);
    assert_eq!(v["checked_at"], 1_924_992_000);
    assert_eq!(
        v["error"],
        "trust root version 1 expired at 2030-01-01T00:00:00Z (checked at 2031-01-01T00:00:00Z); a newer root is needed"
    );
    let trust = json(d, &["trust", "verify", "--at", "2031-01-01T00:00:00Z", "root.cbor"], 1);
    assert_eq!(trust["code"], "trust-root-expired");
    assert_eq!(trust["expires"], json(d, &["trust", "show", "root.cbor"], 0)["expires"]);

    std::fs::write(d.join("junk.cbor"), b"\xd8\x62junk").unwrap();
    let v = json(d, &["verify", "--trust", "junk.cbor", "app.suit"], 1);
    assert_eq!(v["code"], "trust-root-malformed");
    assert_eq!(json(d, &["trust", "verify", "junk.cbor"], 1)["code"], "trust-root-malformed");
    // Usage and I/O errors still print no JSON.
    assert_eq!(expect(d, &["--json", "verify", "--trust", "missing.cbor", "app.suit"], 2), "");
}

#[test]
fn trust_root_expiry_reads_as_rfc3339() {
    let dir = setup();
    let d = dir.path();
    root_signed_by(d, &["r1", "r2"]);
    let out = gantry_sign(d, &["trust", "verify", "--at", "2031-01-01T00:00:00Z", "root.cbor"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expired at 2030-01-01T00:00:00Z (checked at 2031-01-01T00:00:00Z)"), "{stderr}");
    assert!(!stderr.contains("1893456000"), "{stderr}");
    let out = gantry_sign(d, &["verify", "--trust", "root.cbor", "--at", "2031-01-01T00:00:00Z", "app.suit"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired at 2030-01-01T00:00:00Z"));
    assert!(ok(d, &["trust", "show", "root.cbor"]).contains("expires 2030-01-01T00:00:00Z"));
    assert!(
        ok(d, &["trust", "verify", "--at", "2029-01-01T00:00:00Z", "root.cbor"])
            .contains("expires 2030-01-01T00:00:00Z")
    );
}

#[test]
fn at_needs_trust_and_is_refused_with_key() {
    let dir = setup();
    let d = dir.path();
    root_signed_by(d, &["r1", "r2"]);
    // --at alone does not stand in for --key or --trust.
    let out = gantry_sign(d, &["verify", "--at", "2029-01-01T00:00:00Z", "app.suit"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("required arguments were not provided") && stderr.contains("--trust"), "{stderr}");
    // Keys given with --key do not expire: --at with them is a mistake, not ignored.
    let out = gantry_sign(d, &["verify", "--key", "rel.pub", "--at", "2029-01-01T00:00:00Z", "app.suit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    // --threshold and --trust-update do not stand in either.
    expect(d, &["verify", "--threshold", "1", "app.suit"], 2);
    expect(d, &["verify", "--trust-update", "root.cbor", "app.suit"], 2);
    ok(d, &["verify", "--trust", "root.cbor", "--at", "2029-01-01T00:00:00Z", "app.suit"]);
    ok(d, &["verify", "--key", "rel.pub", "app.suit"]);
}

#[test]
fn a_reader_that_closes_early_is_not_a_crash() {
    let dir = setup();
    let d = dir.path();
    ok(d, &["keygen", "--alg", "ed25519", "--out", "k"]);
    ok(d, &["keygen", "--alg", "ed25519", "--out", "other"]);
    let mut args = CONTAINER.to_vec();
    args.extend(["--sequence", "1", "--key", "k.key", "--out", "app.suit"]);
    ok(d, &args);
    // Exit codes are the command's own: the refusal is still 1.
    for (args, code) in [
        (&["--json", "inspect", "app.suit"][..], 0),
        (&["inspect", "app.suit"][..], 0),
        (&["--json", "verify", "--key", "k.pub", "app.suit"][..], 0),
        (&["--json", "verify", "--key", "other.pub", "app.suit"][..], 1),
        (&["trust", "--help"][..], 0),
    ] {
        // A pipe whose reader is gone before the first write: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_gantry-sign"))
            .current_dir(d)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

/// Issue 12: firmware releases through the same flow as containers.
#[test]
fn firmware_release_builds_signs_verifies_and_inspects() {
    let dir = setup();
    let d = dir.path();
    json(d, &["keygen", "--alg", "ed25519", "--out", "rel"], 0);
    std::fs::write(d.join("fw.bin"), vec![7u8; 20_000]).unwrap();
    let args = ["firmware", "--image", "fw.bin", "--sequence", "3", "--vendor", "example.com", "--class", "gw"];
    let mut signed = args.to_vec();
    signed.extend(["--key", "rel.key", "--out", "fw.suit"]);
    let report = json(d, &signed, 0);
    let components = report["components"].as_array().unwrap();
    assert_eq!(components.len(), 1, "{report}");
    assert_eq!(components[0]["id"], "[\"firmware\"]", "{report}");
    assert_eq!(components[0]["size"], 20_000, "{report}");
    let v = json(d, &["verify", "--key", "rel.pub", "--min-sequence", "3", "fw.suit"], 0);
    assert_eq!(v["sequence_number"], 3);
    json(d, &["verify", "--key", "rel.pub", "--min-sequence", "4", "fw.suit"], 1);
    // The same inputs give the same bytes.
    let mut again = args.to_vec();
    again.extend(["--key", "rel.key", "--out", "fw2.suit"]);
    json(d, &again, 0);
    assert_eq!(std::fs::read(d.join("fw.suit")).unwrap(), std::fs::read(d.join("fw2.suit")).unwrap());
    // An empty image is refused.
    std::fs::write(d.join("empty.bin"), b"").unwrap();
    let empty = [
        "firmware",
        "--image",
        "empty.bin",
        "--sequence",
        "1",
        "--vendor",
        "example.com",
        "--class",
        "gw",
        "--out",
        "x.suit",
    ];
    expect(d, &empty, 2);
}
