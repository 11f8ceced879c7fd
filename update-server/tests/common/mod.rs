//! Test harness: a real server on a loopback port (SQLite in a temporary
//! directory, or a fresh PostgreSQL database), a real HTTP client, and
//! simulated devices and release pipelines built on gantry-signing.
//!
//! PostgreSQL: set `GANTRY_TEST_PG` to an admin URL, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`. Each test creates its own
//! database (`gantry_t_<pid>_<n>`) and drops it afterwards. Without the
//! variable, or without a reachable server, PostgreSQL tests are skipped
//! with a printed reason, except under CI (`CI` set), where that fails.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{FileKeySource, KeySource, KeyType, PublicKey, SigningKey};
use gantry_server::Config;
use gantry_signing::build::{ContainerRelease, add_signature, blob_uri, class_id_from_model, vendor_id_from_domain};
use gantry_signing::config::ContainerConfig;
use gantry_signing::device_auth::LoginProof;
use gantry_signing::ticket::{TicketPolicy, VerifiedTicket, verify_ticket};
use serde_json::{Value, json};
use sqlx::Connection as _;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$body` (an async fn taking a `TestServer`) on SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) = $crate::common::TestServer::start($crate::common::Backend::Sqlite).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = $crate::common::TestServer::start($crate::common::Backend::Postgres).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        }
    };
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL database made for one test.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// A fresh database, or `None` (skip) when PostgreSQL is not
    /// configured or reachable outside CI.
    pub async fn create() -> Option<PgDatabase> {
        let ci = std::env::var_os("CI").is_some();
        let skip = |reason: String| {
            assert!(!ci, "PostgreSQL tests must run under CI: {reason}");
            eprintln!("skipping PostgreSQL test: {reason}");
            None
        };
        let Ok(admin_url) = std::env::var("GANTRY_TEST_PG") else {
            return skip("GANTRY_TEST_PG is not set (e.g. postgres://postgres@127.0.0.1:5432/test)".into());
        };
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => return skip(format!("cannot connect to {admin_url}: {e}")),
        };
        let name = format!("gantry_t_{}_{}", std::process::id(), DB_COUNTER.fetch_add(1, Ordering::Relaxed));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut conn).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin_url);
        let url = format!("{base}/{name}");
        Some(PgDatabase { admin_url, name, url })
    }

    async fn drop_database(&self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
}

/// A running server and what the tests need around it.
pub struct TestServer {
    pub running: Option<gantry_server::Running>,
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
    pub backend: Backend,
    pub release_key: FileKeySource,
    pub root_key: FileKeySource,
}

pub fn key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(t))
}

/// The configuration tests use: a free loopback port, no poll jitter, a
/// last-seen flush long enough that only `stop()` flushes, and per-device
/// check-in limits far above the default (tests poll in tight loops while
/// they wait for something; `error_contract.rs` tests the limits).
pub fn test_config(dir: &std::path::Path, database_url: Option<String>) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        database_url: database_url.map(Into::into),
        ..Config::default()
    };
    c.devices.poll_jitter = gantry_server::config::Span(Duration::ZERO);
    c.devices.last_seen_flush = gantry_server::config::Span(Duration::from_secs(3600));
    c.limits.max_blob_bytes = 64 * 1024;
    c.rate_limits.checkins_per_device = gantry_server::config::Rate { per_minute: 60_000, burst: 1_000 };
    c
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}, true).await
    }

    /// A server whose configuration `tweak` changes, with the test trust
    /// root installed or not.
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
        with_trust_root: bool,
    ) -> Option<TestServer> {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await?),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path(), pg.as_ref().map(|p| p.url.clone()));
        tweak(&mut config);
        let running = gantry_server::start(config, std::future::pending()).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        let admin = running.admin_token.clone().expect("first start creates an admin token");
        let server_key = running.state.server_key.public_key().clone();
        let s = TestServer {
            running: Some(running),
            base,
            admin,
            http: reqwest::Client::new(),
            dir,
            pg,
            backend,
            release_key: key(KeyType::P256),
            root_key: key(KeyType::Ed25519),
        };
        if with_trust_root {
            s.install_trust_root(&server_key).await;
        }
        Some(s)
    }

    /// Installs a trust root: our root key, our release key, the server's key.
    pub async fn install_trust_root(&self, server_key: &PublicKey) {
        let root = TrustRoot::new(
            1,
            u64::MAX / 2,
            &[
                (Role::Root, vec![self.root_key.public_key().clone()], 1),
                (Role::Server, vec![server_key.clone()], 1),
                (Role::Release, vec![self.release_key.public_key().clone()], 1),
            ],
        )
        .unwrap();
        let mut doc = SignedTrustRoot::new(root).unwrap();
        doc.sign_with(&self.root_key).unwrap();
        let r = self.put_bytes("/api/v1/trust-root", &self.admin, doc.to_bytes()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub fn server_key(&self) -> PublicKey {
        self.running.as_ref().unwrap().state.server_key.public_key().clone()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        if let Some(pg) = &self.pg {
            pg.drop_database().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
    }

    pub async fn put_json(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http.put(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
    }

    pub async fn put_bytes(&self, path: &str, token: &str, body: Vec<u8>) -> reqwest::Response {
        self.http.put(self.url(path)).bearer_auth(token).body(body).send().await.unwrap()
    }

    pub async fn post_bytes(&self, path: &str, token: &str, body: Vec<u8>) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(token).body(body).send().await.unwrap()
    }

    /// A new API token with `role`.
    pub async fn token(&self, role: &str) -> String {
        let r = self.post("/api/v1/tokens", &self.admin, json!({"name": role, "role": role})).await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// A device pre-authorized by the admin.
    pub async fn preauthorized_device(&self, id: &str) -> TestDevice {
        let device = TestDevice::new(id);
        let r = self
            .post(
                "/api/v1/devices",
                &self.admin,
                json!({"device_id": id, "public_key": device.key.public_key().to_spki_pem(), "groups": ["lab"]}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        device
    }

    /// Uploads a container release (module blob, then the signed envelope)
    /// signed by `signer`; returns (status, JSON body).
    pub async fn upload_release(&self, release: &TestRelease, signer: &dyn KeySource) -> (u16, Value) {
        let hex = hex::encode(sha256(&release.module));
        let r = self.put_bytes(&format!("/api/v1/blobs/sha256/{hex}"), &self.admin, release.module.clone()).await;
        assert!(r.status() == 201 || r.status() == 200, "{}", r.status());
        let envelope = add_signature(&release.unsigned, signer).unwrap();
        let r = self.post_bytes("/api/v1/releases", &self.admin, envelope).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

/// An unsigned container release and its module.
pub struct TestRelease {
    pub unsigned: Vec<u8>,
    pub module: Vec<u8>,
}

pub fn release(name: &str, sequence: u64) -> TestRelease {
    release_for(name, sequence, "gateway")
}

/// The SUIT class id (hex) of device model `model` of the test vendor.
pub fn class_hex(model: &str) -> String {
    hex::encode(class_id_from_model(&vendor_id_from_domain("example.com"), model))
}

/// The test vendor's SUIT vendor id (hex).
pub fn vendor_hex() -> String {
    hex::encode(vendor_id_from_domain("example.com"))
}

/// A release for devices of model `model`.
pub fn release_for(name: &str, sequence: u64, model: &str) -> TestRelease {
    let config = ContainerConfig::from_toml(&format!("name = \"{name}\"\nversion = \"1.{sequence}\"\n")).unwrap();
    let module = format!("\0asm\x01\0\0\0 module {name} {sequence}").into_bytes();
    let vendor = vendor_id_from_domain("example.com");
    let unsigned = ContainerRelease {
        config: &config,
        module: &module,
        blobs: &[],
        sequence,
        vendor_id: vendor,
        class_id: class_id_from_model(&vendor, model),
    }
    .build_unsigned()
    .unwrap();
    assert!(blob_uri(&sha256(&module)).starts_with("/blobs/sha256/"));
    TestRelease { unsigned, module }
}

/// A simulated device: its key, and the protocol steps.
pub struct TestDevice {
    pub id: String,
    pub key: FileKeySource,
    pub token: Option<String>,
}

impl TestDevice {
    pub fn new(id: &str) -> Self {
        TestDevice { id: id.into(), key: key(KeyType::P256), token: None }
    }

    pub async fn challenge(&self, s: &TestServer) -> Vec<u8> {
        let r =
            s.http.post(s.url("/api/v1/device/challenge")).json(&json!({"device_id": self.id})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        B64.decode(r.json::<Value>().await.unwrap()["challenge"].as_str().unwrap()).unwrap()
    }

    pub fn proof(&self, challenge: &[u8], signer: &dyn KeySource) -> String {
        let p = LoginProof { device_id: self.id.clone(), challenge: challenge.to_vec(), timestamp: 0 };
        B64.encode(p.sign(signer).unwrap())
    }

    /// Logs in; returns the response.
    pub async fn login_with(&self, s: &TestServer, signer: &dyn KeySource) -> reqwest::Response {
        let c = self.challenge(s).await;
        let body = json!({"device_id": self.id, "challenge": B64.encode(&c), "proof": self.proof(&c, signer)});
        s.http.post(s.url("/api/v1/device/login")).json(&body).send().await.unwrap()
    }

    pub async fn login(&mut self, s: &TestServer) {
        let r = self.login_with(s, &self.key).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        self.token = Some(r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned());
    }

    pub fn token(&self) -> &str {
        self.token.as_deref().expect("logged in")
    }

    /// A check-in with `nonce`, `If-None-Match: etag`, and `inventory`.
    pub async fn checkin(
        &self,
        s: &TestServer,
        nonce: &[u8],
        etag: Option<&str>,
        inventory: Value,
    ) -> reqwest::Response {
        let mut req = s
            .http
            .post(s.url("/api/v1/device/checkin"))
            .bearer_auth(self.token())
            .json(&json!({"nonce": B64.encode(nonce), "inventory": inventory}));
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        req.send().await.unwrap()
    }
}

/// Verifies a check-in's ticket as the device would.
pub fn verify<'a>(ticket: &'a [u8], server: &'a [PublicKey], device: &'a str, nonce: &'a [u8]) -> VerifiedTicket<'a> {
    let policy = TicketPolicy {
        server_keys: server,
        server_threshold: 1,
        device_id: device,
        nonce,
        now: Some(gantry_server::store::now() as u64),
        last_issued_at: None,
    };
    verify_ticket(ticket, &policy).expect("ticket verifies")
}
