//! The `gantry-server` binary: first start with no set-up, graceful exit.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn serve_creates_its_data_dir_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("GANTRY_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("gantry-server listening on http://").expect(&first).to_owned();
    let rest: Vec<String> = lines.by_ref().take(3).map(|l| l.unwrap()).collect();
    assert!(rest[1].starts_with("server key: "), "{rest:?}");
    assert!(rest[2].starts_with("admin API token (shown once"), "{rest:?}");

    // It answers.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Its files, with private modes.
    use std::os::unix::fs::PermissionsExt as _;
    for (file, mode) in [("server-key.pem", 0o600), ("admin-token", 0o600)] {
        let m = std::fs::metadata(data.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{file}");
    }
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(data.join("gantry.db").exists());
    assert!(data.join("blobs").is_dir());

    // SIGTERM: a clean exit.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn help_reads_like_a_manual() {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry-server")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["--listen", "--data", "--database-url", "--config", "gantry-data", "SIGTERM"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
