//! Check-in load on loopback: starts a server (SQLite, or `--database-url`)
//! with `--devices N` pre-authorized devices, logs each in, then has
//! `--clients C` keep-alive clients send unchanged check-ins (answered 304)
//! for `--seconds S`, and prints the rate. Stops by itself.
//!
//! ```sh
//! cargo run --release -p gantry-server --example poll_load -- --devices 1000 --clients 32 --seconds 10
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use gantry_server::Config;
use gantry_signing::device_auth::LoginProof;
use serde_json::{Value, json};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (devices, clients, seconds) = (arg("--devices", 1000), arg("--clients", 32), arg("--seconds", 10));
    let dir = tempfile::tempdir()?;
    let args: Vec<String> = std::env::args().collect();
    let database_url = args.iter().position(|a| a == "--database-url").and_then(|i| args.get(i + 1)).cloned();
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("data"),
        database_url: database_url.map(Into::into),
        ..Config::default()
    };
    let running = gantry_server::start(config, std::future::pending()).await?;
    let base = format!("http://{}", running.addr);
    let admin = running.admin_token.clone().unwrap_or_default();
    let http = reqwest::Client::new();

    // Devices share one key here: enrollment and login cost are not measured.
    let key = FileKeySource::from_key("load".into(), SigningKey::generate(KeyType::Ed25519));
    let pem = key.public_key().to_spki_pem();
    let t0 = Instant::now();
    let mut tokens = Vec::new();
    for i in 0..devices {
        let id = format!("load-{i:07}");
        let r = http
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(&admin)
            .json(&json!({"device_id": id, "public_key": pem}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "enroll {id}: {}", r.status());
        let c: Value = http
            .post(format!("{base}/api/v1/device/challenge"))
            .json(&json!({"device_id": id}))
            .send()
            .await?
            .json()
            .await?;
        let challenge = B64.decode(c["challenge"].as_str().unwrap_or_default())?;
        let proof = LoginProof { device_id: id.clone(), challenge: challenge.clone(), timestamp: 0 }.sign(&key)?;
        let body = json!({"device_id": id, "challenge": B64.encode(&challenge), "proof": B64.encode(proof)});
        let l: Value = http.post(format!("{base}/api/v1/device/login")).json(&body).send().await?.json().await?;
        tokens.push(l["token"].as_str().unwrap_or_default().to_owned());
    }
    println!("{devices} devices enrolled and logged in in {:.1} s", t0.elapsed().as_secs_f64());

    // One check-in each for the ETag (and the inventory, written once).
    let first: Value = http
        .post(format!("{base}/api/v1/device/checkin"))
        .bearer_auth(&tokens[0])
        .json(&json!({"nonce": B64.encode([1u8; 16])}))
        .send()
        .await?
        .json()
        .await?;
    let etag = first["etag"].as_str().unwrap_or_default().to_owned();
    let tokens = Arc::new(tokens);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, tokens, etag, done, errors) =
            (reqwest::Client::new(), base.clone(), tokens.clone(), etag.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c as usize;
            while Instant::now() < deadline {
                let r = http
                    .post(format!("{base}/api/v1/device/checkin"))
                    .bearer_auth(&tokens[i % tokens.len()])
                    .header("If-None-Match", &etag)
                    .json(&json!({"nonce": B64.encode([2u8; 16]), "inventory": []}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 304 => done.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += clients as usize;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "{n} check-ins answered 304 in {seconds} s by {clients} keep-alive clients: {:.0}/s ({} errors)",
        n as f64 / seconds as f64,
        errors.load(Ordering::Relaxed)
    );
    let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("gantry_inventory_writes_total") || l.starts_with("gantry_cached_devices"))
    {
        println!("{line}");
    }
    running.stop().await?;
    Ok(())
}
