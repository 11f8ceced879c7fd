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

/// A `gantry-server serve` child on `data` with `config` (TOML), and its
/// address once it listens.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start(data: &std::path::Path, config: &str) -> Result<Server, String> {
        let config_file = data.with_extension("toml");
        std::fs::write(&config_file, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(&config_file)
            .env_remove("GANTRY_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(first)) => {
                let addr = first.strip_prefix("gantry-server listening on http://").expect(&first).to_owned();
                // The rest of stdout is read (and dropped) in the background.
                std::thread::spawn(move || lines.for_each(drop));
                Ok(Server { child, addr })
            }
            _ => {
                let out = child.wait_with_output().unwrap();
                Err(format!("exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr)))
            }
        }
    }

    fn admin(data: &std::path::Path) -> String {
        std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned()
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Waits up to `limit` for the process to exit.
    fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

/// Sends raw bytes on a new connection, leaves it open.
fn raw(addr: &str, head: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut s, head).unwrap();
    s
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_are_private_files_and_an_exposed_one_stops_the_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // A data directory others may list (as with `--data .`).
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = Server::start(&data, "").unwrap();
    for file in ["server-secret", "server-key.pem", "admin-token", "gantry.db"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    s.signal("-TERM");
    assert!(s.exit_within(Duration::from_secs(20)).unwrap().success());
    for f in ["gantry.db-wal", "gantry.db-shm"] {
        if data.join(f).exists() {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
    }
    // The database an operator copies holds no secret: no secrets table.
    let db = format!("sqlite://{}", data.join("gantry.db").display());
    let tables: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(&mut c).await.unwrap()
    });
    assert!(tables.contains(&"devices".to_owned()) && !tables.iter().any(|t| t.contains("secret")), "{tables:?}");

    // Each secret readable by others stops the start, naming the file and
    // the fix; the database is narrowed instead (it holds no secret).
    for file in ["server-secret", "server-key.pem", "admin-token"] {
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Server::start(&data, "").err().expect("refused");
        assert!(e.starts_with("exit Some(1)") && e.contains(file) && e.contains("0644 are too open"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(data.join("gantry.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut s = Server::start(&data, "").unwrap();
    assert_eq!(mode(&data.join("gantry.db")), 0o600);
    s.signal("-TERM");
    assert!(s.exit_within(Duration::from_secs(20)).unwrap().success());
}

#[test]
fn config_never_prints_a_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry-server"))
        .arg("config")
        .env("GANTRY_DATABASE_URL", "postgres://gantry:hunter2@db.internal/gantry?password=hunter3")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("postgres://gantry:***@db.internal/gantry?password=***"), "{text}");
    assert!(!text.contains("hunter"), "{text}");
}

#[test]
fn sigterm_cuts_a_stalled_download_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[limits]\nshutdown_grace = \"1s\"\nmax_blob_bytes = 67108864\n";
    let mut s = Server::start(&data, config).unwrap();
    let admin = Server::admin(&data);
    // A blob far larger than the socket buffers, and a client that asks for
    // it and never reads.
    let blob = vec![0x5au8; 48 << 20];
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&blob));
    let head = format!(
        "PUT /api/v1/blobs/sha256/{hex} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        blob.len()
    );
    let mut up = raw(&s.addr, head.as_bytes());
    std::io::Write::write_all(&mut up, &blob).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut up, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let get = format!("GET /blobs/sha256/{hex} HTTP/1.1\r\nHost: x\r\n\r\n");
    let stalled = raw(&s.addr, get.as_bytes());
    std::thread::sleep(Duration::from_millis(300));

    let t0 = std::time::Instant::now();
    s.signal("-TERM");
    let status = s.exit_within(Duration::from_secs(20)).expect("exits despite the stalled reader");
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    drop(stalled);
}

#[test]
fn an_upload_cut_by_kill_9_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[limits]\nupload_timeout = \"1s\"\nmax_blob_bytes = 67108864\n";
    let mut s = Server::start(&data, config).unwrap();
    let admin = Server::admin(&data);
    let head = format!(
        "PUT /api/v1/blobs/sha256/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Length: {}\r\n\r\n",
        "ab".repeat(32),
        32 << 20
    );
    let mut up = raw(&s.addr, head.as_bytes());
    std::io::Write::write_all(&mut up, &vec![1u8; 16 << 20]).unwrap();
    let staged = || {
        std::fs::read_dir(data.join("blobs/sha256"))
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().contains('#')).count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while staged() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(staged(), 1, "the upload is being staged");
    s.signal("-KILL");
    s.exit_within(Duration::from_secs(10)).unwrap();
    drop(up);
    assert_eq!(staged(), 1, "kill -9 left the partial upload");
    // Older than the upload timeout: no upload in progress is that old.
    std::thread::sleep(Duration::from_millis(1200));
    let mut s = Server::start(&data, config).unwrap();
    assert_eq!(staged(), 0, "removed at start");
    s.signal("-TERM");
    assert!(s.exit_within(Duration::from_secs(20)).unwrap().success());
}
