//! The server at fleet size, on loopback: registers `--devices N`
//! (default 1,000,000) devices, runs `gantry-server serve` as a separate
//! process on that database, and measures what the design's performance
//! targets name: check-ins per second over keep-alive with the whole fleet
//! registered, the server's memory, and blob download throughput against a
//! plain static file server serving the same file. Every phase is bounded in
//! time and a watchdog ends the run (and the server) after `--max-seconds`.
//!
//! ```text
//!  seed      Store::insert_devices in batches of 5,000 (the rows enrollment writes)
//!  serve     target/release/gantry-server serve --listen 127.0.0.1:0  (child process)
//!  login     --logins devices, spread over the fleet: challenge, sign, login
//!  warm      every device's first check-in (cache load, inventory write, signed ticket)
//!  poll      --clients keep-alive connections, --seconds: unchanged check-ins (304),
//!            each to a device picked at random among the warmed ones
//!  blob      GET /blobs/sha256/<hex> of a --blob-mib MiB blob, against
//!            python3 -m http.server (and nginx if installed) serving the same file
//! ```
//!
//! Shortcuts, none of which changes what the server does per request:
//! devices draw their keys from a pool of 4,096 (a stored key has the same
//! size either way, and the server decodes each device's key on its own);
//! the check-in phases present tokens minted with the server's own token key
//! (read from the database, through `DeviceAuth::token`, exactly what
//! `/device/login` returns), because a million logins would measure
//! Ed25519, not check-ins; and the load generator speaks just enough
//! HTTP/1.1 to keep its share of the two cores small.
//!
//! ```sh
//! cargo build --release -p gantry-server --bin gantry-server --example fleet_load
//! target/release/examples/fleet_load                      # SQLite
//! target/release/examples/fleet_load --postgres postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! With `--postgres ADMIN_URL` it creates a scratch database beside the one
//! named (and drops it at the end).

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use gantry_server::auth::device::DeviceAuth;
use gantry_server::store::{NewDevice, Store};
use gantry_signing::device_auth::LoginProof;
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const KEY_POOL: usize = 4096;
const SEED_BATCH: usize = 5000;

struct Args {
    devices: usize,
    logins: usize,
    warm: usize,
    clients: usize,
    seconds: u64,
    warm_seconds: u64,
    blob_mib: usize,
    blob_rounds: usize,
    postgres: Option<String>,
    server_bin: PathBuf,
    max_seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned();
    let num = |name: &str, default: u64| -> anyhow::Result<u64> {
        get(name).map_or(Ok(default), |v| v.replace('_', "").parse().with_context(|| format!("{name} {v}")))
    };
    let devices = num("--devices", 1_000_000)? as usize;
    let exe = std::env::current_exe()?;
    // target/release/examples/fleet_load -> target/release/gantry-server
    let default_bin = exe.parent().and_then(Path::parent).map(|d| d.join("gantry-server")).unwrap_or_default();
    Ok(Args {
        devices,
        logins: num("--logins", 20_000)?.min(devices as u64) as usize,
        warm: num("--warm", devices as u64)?.min(devices as u64) as usize,
        clients: num("--clients", 64)? as usize,
        seconds: num("--seconds", 20)?,
        warm_seconds: num("--warm-seconds", 600)?,
        blob_mib: num("--blob-mib", 64)? as usize,
        blob_rounds: num("--blob-rounds", 5)? as usize,
        postgres: get("--postgres"),
        server_bin: get("--server-bin").map_or(default_bin, PathBuf::from),
        max_seconds: num("--max-seconds", 1800)?,
    })
}

fn device_id(i: usize) -> String {
    format!("fleet-{i:07}")
}

/// A child process killed when dropped, so no server outlives the run.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One keep-alive HTTP/1.1 connection: requests are written whole, answers
/// read up to their Content-Length.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(16 * 1024), chunk: vec![0; 256 * 1024] })
    }

    /// Sends `request` and reads the answer; the body is kept only if
    /// `keep_body`, else counted and dropped (large downloads).
    async fn exchange(&mut self, request: &[u8], keep_body: bool) -> anyhow::Result<(Answer, u64)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut self.chunk).await?;
            ensure!(n > 0, "connection closed before the answer's head");
            self.buf.extend_from_slice(&self.chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("status line")?;
        let length: u64 = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked answer");
        let mut body = self.buf[head_end..].to_vec();
        let mut got = body.len() as u64;
        if !keep_body {
            body.clear();
        }
        while got < length {
            let n = self.stream.read(&mut self.chunk).await?;
            ensure!(n > 0, "connection closed after {got} of {length} body bytes");
            got += n as u64;
            if keep_body {
                body.extend_from_slice(&self.chunk[..n]);
            }
        }
        Ok((Answer { status, head, body }, got))
    }
}

fn post(path: &str, bearer: Option<&str>, extra: &str, body: &str) -> Vec<u8> {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn json(a: &Answer) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&a.body)
        .with_context(|| format!("answer {}: {}", a.status, String::from_utf8_lossy(&a.body)))
}

/// A small xorshift, so picking a device costs nothing.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1e6
}

async fn seed(url: &str, args: &Args, keys: &[(Vec<u8>, String)]) -> anyhow::Result<()> {
    let store = Store::open(url).await?;
    let t0 = Instant::now();
    let groups = vec!["fleet".to_owned()];
    let no_tags: Vec<String> = Vec::new();
    // SQLite has one writer: one batch at a time. PostgreSQL takes several.
    let parallel = if url.starts_with("sqlite:") { 1 } else { 4 };
    let mut next = 0usize;
    let mut inserted = 0u64;
    while next < args.devices {
        let mut batches = Vec::new();
        for _ in 0..parallel {
            let end = (next + SEED_BATCH).min(args.devices);
            if next < end {
                batches.push((next, (next..end).map(device_id).collect::<Vec<_>>()));
            }
            next = end;
        }
        let runs = batches.iter().map(|(first, ids)| {
            let devices: Vec<NewDevice<'_>> = ids
                .iter()
                .enumerate()
                .map(|(k, id)| {
                    let (cose, key_id) = &keys[(first + k) % keys.len()];
                    NewDevice {
                        id,
                        public_key: cose,
                        key_id,
                        enrolled_by: "fleet-load",
                        groups: &groups,
                        tags: &no_tags,
                    }
                })
                .collect();
            let store = store.clone();
            async move { store.insert_devices(&devices).await }
        });
        for n in futures_util::future::join_all(runs).await {
            inserted += n?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("seed: {inserted} devices registered in {secs:.1} s ({:.0}/s)", inserted as f64 / secs);
    store.close().await;
    Ok(())
}

fn start_server(args: &Args, data: &Path, url: &str) -> anyhow::Result<(Guard, String)> {
    ensure!(
        args.server_bin.exists(),
        "{} not found: cargo build --release -p gantry-server --bin gantry-server (or --server-bin PATH)",
        args.server_bin.display()
    );
    // One loopback address stands for the whole fleet: the per-source
    // limits off. The per-device ones stay on (their cost is measured; the
    // poll phase picks devices at random, so none reaches its limit).
    let config = data.with_extension("toml");
    std::fs::write(
        &config,
        "[rate_limits]\ndevice_auth_per_source = { per_minute = 0, burst = 1 }\n\
         operator_per_source = { per_minute = 0, burst = 1 }\n",
    )?;
    let mut child = Command::new(&args.server_bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--database-url", url])
        .arg("--config")
        .arg(&config)
        .env("GANTRY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.server_bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let guard = Guard(child);
    // A thread reads what it prints (all of it, so it never blocks on a
    // full pipe) and passes on the address it listens on.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("gantry-server listening on http://") {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).context("gantry-server did not start listening within 60 s")?;
    Ok((guard, addr))
}

async fn logins(addr: &str, args: &Args, pool: &[FileKeySource]) -> anyhow::Result<()> {
    if args.logins == 0 {
        return Ok(());
    }
    let stride = args.devices / args.logins;
    let t0 = Instant::now();
    let per_client = args.logins.div_ceil(args.clients.min(args.logins));
    let tasks = (0..args.logins).step_by(per_client).map(|first| async move {
        let mut conn = Conn::open(addr).await?;
        for k in first..(first + per_client).min(args.logins) {
            let i = k * stride;
            let id = device_id(i);
            let body = serde_json::json!({ "device_id": id }).to_string();
            let (c, _) = conn.exchange(&post("/api/v1/device/challenge", None, "", &body), true).await?;
            let challenge = B64.decode(json(&c)?["challenge"].as_str().unwrap_or_default())?;
            let proof = LoginProof { device_id: id.clone(), challenge: challenge.clone(), timestamp: 0 }
                .sign(&pool[i % pool.len()])?;
            let body =
                serde_json::json!({ "device_id": id, "challenge": B64.encode(&challenge), "proof": B64.encode(proof) })
                    .to_string();
            let (l, _) = conn.exchange(&post("/api/v1/device/login", None, "", &body), true).await?;
            ensure!(l.status == 200 && json(&l)?["token"].is_string(), "login {id}: {}", l.status);
        }
        anyhow::Ok(())
    });
    for r in futures_util::future::join_all(tasks).await {
        r?;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "login: {} devices (every {stride}th) logged in in {secs:.1} s ({:.0}/s)",
        args.logins,
        args.logins as f64 / secs
    );
    Ok(())
}

const CHECKIN_BODY: &str = r#"{"nonce":"AgICAgICAgICAgICAgICAg==","inventory":[]}"#;

/// Every device's first check-in; returns (devices warmed, the ETag they got).
async fn warm(addr: &str, args: &Args, auth: &DeviceAuth, expires: u64) -> anyhow::Result<(usize, String)> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.warm_seconds);
    let clients = args.clients.min(args.warm).max(1);
    let tasks = (0..clients).map(|c| async move {
        let mut conn = Conn::open(addr).await?;
        let (mut done, mut etag) = (0usize, String::new());
        let mut i = c;
        while i < args.warm && Instant::now() < deadline {
            let token = auth.token(&device_id(i), expires);
            let (a, _) = conn.exchange(&post("/api/v1/device/checkin", Some(&token), "", CHECKIN_BODY), true).await?;
            ensure!(
                a.status == 200,
                "first check-in of {}: {} {}",
                device_id(i),
                a.status,
                String::from_utf8_lossy(&a.body)
            );
            if etag.is_empty() {
                etag = json(&a)?["etag"].as_str().unwrap_or_default().to_owned();
            }
            done += 1;
            i += clients;
        }
        anyhow::Ok((done, etag))
    });
    let (mut warmed, mut etag) = (0, String::new());
    for r in futures_util::future::join_all(tasks).await {
        let (n, e) = r?;
        warmed += n;
        if etag.is_empty() {
            etag = e;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "warm: {warmed} first check-ins (cache load + inventory write + signed ticket) in {secs:.1} s ({:.0}/s){}",
        warmed as f64 / secs,
        if warmed < args.warm { " -- stopped at --warm-seconds" } else { "" }
    );
    Ok((warmed, etag))
}

struct PollResult {
    ok: u64,
    errors: u64,
    latencies_ns: Vec<u32>,
}

/// Unchanged check-ins (304) from random warmed devices, for `args.seconds`.
async fn poll(
    addr: &str,
    args: &Args,
    auth: &DeviceAuth,
    expires: u64,
    warmed: usize,
    etag: &str,
) -> anyhow::Result<(PollResult, f64)> {
    let if_none_match = format!("If-None-Match: {etag}\r\n");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.seconds);
    let tasks = (0..args.clients).map(|c| {
        let if_none_match = if_none_match.clone();
        async move {
            let mut conn = Conn::open(addr).await?;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
            let mut r = PollResult { ok: 0, errors: 0, latencies_ns: Vec::with_capacity(1 << 16) };
            while Instant::now() < deadline {
                let token = auth.token(&device_id(rng.below(warmed)), expires);
                let request = post("/api/v1/device/checkin", Some(&token), &if_none_match, CHECKIN_BODY);
                let sent = Instant::now();
                let (a, _) = conn.exchange(&request, false).await?;
                r.latencies_ns.push(sent.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                if a.status == 304 {
                    r.ok += 1;
                } else {
                    r.errors += 1;
                }
            }
            anyhow::Ok(r)
        }
    });
    let mut total = PollResult { ok: 0, errors: 0, latencies_ns: Vec::new() };
    for r in futures_util::future::join_all(tasks).await {
        let r = r?;
        total.ok += r.ok;
        total.errors += r.errors;
        total.latencies_ns.extend(r.latencies_ns);
    }
    Ok((total, t0.elapsed().as_secs_f64()))
}

/// A static file server for the same blob directory, and its address.
fn static_servers(blob_dir: &Path, scratch: &Path) -> anyhow::Result<Vec<(&'static str, Guard, String)>> {
    let free_port = || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let mut out = Vec::new();
    let port = free_port()?;
    let python = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(blob_dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(child) = python {
        out.push(("python3 -m http.server", Guard(child), format!("127.0.0.1:{port}")));
    }
    if Command::new("nginx").arg("-v").stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        let port = free_port()?;
        let s = scratch.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; error_log stderr error; pid {s}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {s}/nb; proxy_temp_path {s}/np;\n\
             fastcgi_temp_path {s}/nf; uwsgi_temp_path {s}/nu; scgi_temp_path {s}/ns;\n\
             server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
            blob_dir.display()
        );
        let conf_path = scratch.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx").arg("-c").arg(&conf_path).stdout(Stdio::null()).spawn()?;
        out.push(("nginx (sendfile, 1 worker)", Guard(child), format!("127.0.0.1:{port}")));
    }
    // Wait until each one answers.
    for (_, _, addr) in &out {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            ensure!(t0.elapsed() < Duration::from_secs(10), "static server at {addr} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(out)
}

/// Best and median MB/s of `rounds` full downloads of `path`, each on a new
/// connection.
async fn download(addr: &str, path: &str, size: u64, rounds: usize) -> anyhow::Result<(f64, f64)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes();
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let mut conn = Conn::open(addr).await?;
        let t0 = Instant::now();
        let (a, got) = conn.exchange(&request, false).await?;
        let secs = t0.elapsed().as_secs_f64();
        ensure!(a.status == 200 && got == size, "GET {addr}{path}: {} ({got} bytes)\n{}", a.status, a.head);
        rates.push(size as f64 / secs / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates[rates.len() - 1], rates[rates.len() / 2]))
}

async fn blobs(addr: &str, args: &Args, data: &Path, scratch: &Path) -> anyhow::Result<()> {
    if args.blob_mib == 0 {
        return Ok(());
    }
    let size = args.blob_mib * 1024 * 1024;
    // Incompressible and cheap: SHA-256 in counter mode.
    let mut blob = Vec::with_capacity(size);
    let mut counter = 0u64;
    while blob.len() < size {
        blob.extend_from_slice(&Sha256::digest(counter.to_le_bytes()));
        counter += 1;
    }
    blob.truncate(size);
    let hex = hex::encode(Sha256::digest(&blob));
    let admin = std::fs::read_to_string(data.join("admin-token"))?.trim().to_owned();
    let r = reqwest::Client::new()
        .put(format!("http://{addr}/api/v1/blobs/sha256/{hex}"))
        .bearer_auth(admin)
        .body(blob)
        .send()
        .await?;
    ensure!(r.status().is_success(), "blob upload: {}", r.status());
    let blob_dir = data.join("blobs");
    ensure!(blob_dir.join("sha256").join(&hex).exists(), "the blob is not where the static servers look");
    let others = static_servers(&blob_dir, scratch)?;
    let path = format!("/blobs/sha256/{hex}");
    let other_path = format!("/sha256/{hex}");
    let size = size as u64;
    // Alternate, so both see the same page cache and the same neighbours.
    let mut gantry = (0f64, Vec::new());
    let mut theirs = vec![(0f64, Vec::new()); others.len()];
    for _ in 0..args.blob_rounds {
        let (best, _) = download(addr, &path, size, 1).await?;
        gantry.0 = gantry.0.max(best);
        gantry.1.push(best);
        for (k, (_, _, other)) in others.iter().enumerate() {
            let (best, _) = download(other, &other_path, size, 1).await?;
            theirs[k].0 = theirs[k].0.max(best);
            theirs[k].1.push(best);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let g_median = median(&mut gantry.1);
    println!(
        "blob: {} MiB, {} rounds, one connection each: gantry-server median {g_median:.0} MB/s (best {:.0})",
        args.blob_mib, args.blob_rounds, gantry.0
    );
    for (k, (name, _, _)) in others.iter().enumerate() {
        let m = median(&mut theirs[k].1);
        println!(
            "blob: {name} median {m:.0} MB/s (best {:.0}); gantry-server / {name} = {:.2}",
            theirs[k].0,
            g_median / m
        );
    }
    Ok(())
}

/// Prints the server's own counters on cache size and database writes;
/// returns the number of devices cached.
async fn print_metrics(addr: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await?.text().await?;
    let mut cached = 0;
    for line in text.lines().filter(|l| {
        ["gantry_cached_devices", "gantry_last_seen_flushed_total", "gantry_inventory_writes_total"]
            .iter()
            .any(|m| l.starts_with(m))
    }) {
        println!("metrics: {line}");
        if let Some(n) = line.strip_prefix("gantry_cached_devices ") {
            cached = n.trim().parse()?;
        }
    }
    Ok(cached)
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let mut scratch_db = None;
    let url = match &args.postgres {
        None => format!("sqlite://{}/gantry.db", data.display()),
        Some(admin) => {
            ensure!(admin.contains("127.0.0.1") || admin.contains("localhost"), "loopback databases only");
            let name = format!("gantry_fleet_load_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(admin).await?;
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
            conn.close().await?;
            scratch_db = Some(name.clone());
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            format!("{base}/{name}")
        }
    };
    println!("database: {url}");
    let result = measure(args, &data, dir.path(), &url).await;
    if let (Some(name), Some(admin)) = (scratch_db, &args.postgres) {
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
        conn.close().await?;
    }
    result
}

async fn measure(args: &Args, data: &Path, scratch: &Path, url: &str) -> anyhow::Result<()> {
    let pool: Vec<FileKeySource> = (0..KEY_POOL.min(args.devices.max(1)))
        .map(|k| FileKeySource::from_key(format!("key-{k}").into(), SigningKey::generate(KeyType::Ed25519)))
        .collect();
    let keys: Vec<(Vec<u8>, String)> =
        pool.iter().map(|k| (k.public_key().to_cose_key(), k.public_key().key_id().to_string())).collect();
    seed(url, args, &keys).await?;
    // The key devices' tokens are made with: the server secret, created
    // here first so that the server adopts it (the same call it makes at
    // start).
    std::fs::create_dir_all(data)?;
    let token_key = gantry_server::secrets::device_token_key(&gantry_server::secrets::load_or_create_secret(
        &data.join("server-secret"),
    )?);
    let t0 = Instant::now();
    let (mut server, addr) = start_server(args, data, url)?;
    let pid = server.0.id();
    let (idle_rss, _) = memory_kib(pid);
    println!(
        "serve: gantry-server (pid {pid}) listening on {addr} after {:.2} s; VmRSS {:.1} MiB",
        t0.elapsed().as_secs_f64(),
        mib(idle_rss)
    );
    let auth = DeviceAuth::new(token_key);
    let expires = gantry_server::store::now() as u64 + 3600;
    logins(&addr, args, &pool).await?;
    let (warmed, etag) = warm(&addr, args, &auth, expires).await?;
    ensure!(warmed > 0 && !etag.is_empty(), "no device checked in");
    let (rss, hwm) = memory_kib(pid);
    let cached = print_metrics(&addr).await?.max(1);
    println!(
        "memory: {cached} devices cached: VmRSS {:.1} MiB, VmHWM {:.1} MiB; {:.0} bytes per cached device over the idle server",
        mib(rss),
        mib(hwm),
        (rss.saturating_sub(idle_rss) * 1024) as f64 / cached as f64
    );

    let (mut r, secs) = poll(&addr, args, &auth, expires, warmed, etag.as_str()).await?;
    r.latencies_ns.sort_unstable();
    println!(
        "poll: {} check-ins answered 304 in {secs:.1} s by {} keep-alive connections, devices drawn at random from {warmed}: \
         {:.0}/s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} errors)",
        r.ok,
        args.clients,
        r.ok as f64 / secs,
        percentile(&r.latencies_ns, 0.50),
        percentile(&r.latencies_ns, 0.99),
        percentile(&r.latencies_ns, 1.0),
        r.errors
    );
    let (rss, hwm) = memory_kib(pid);
    println!("memory: after polling: VmRSS {:.1} MiB, VmHWM {:.1} MiB", mib(rss), mib(hwm));
    print_metrics(&addr).await?;

    blobs(&addr, args, data, scratch).await?;
    let (_, hwm) = memory_kib(pid);
    println!("memory: server VmHWM at the end {:.1} MiB", mib(hwm));

    // SIGTERM, then the guard's SIGKILL if it does not stop in time.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let t0 = Instant::now();
    while server.0.try_wait()?.is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("gantry-server did not stop within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("stop: gantry-server exited in {:.2} s (last-seen flushed)", t0.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    // One thread for the load generator, so the server has the other core.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let max = Duration::from_secs(args.max_seconds);
    rt.block_on(async {
        match tokio::time::timeout(max, run(&args)).await {
            Ok(r) => r,
            Err(_) => bail!("stopped by the --max-seconds watchdog after {} s", args.max_seconds),
        }
    })
}
