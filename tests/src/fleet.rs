//! A fleet for end-to-end tests: the real update server on a loopback port
//! (in this process, on its own tokio runtime), a release pipeline with
//! real keys, and simulated devices — each its own state directory and
//! flash image, running the real agent and supervisor.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gantry_device::agent::{Agent, AgentConfig, AgentEvent, Caps, Schedule};
use gantry_device::device::Device;
use gantry_device::firmware::{Firmware, FirmwareOutcome, Probation, ProbationStep, TrialEvent};
use gantry_device::layout::Geometry;
use gantry_device::store::Identity;
use gantry_device::supervisor::{self, Report};
use gantry_device::update::UpdateEvent;
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{FileKeySource, KeySource, KeyType, SigningKey};
use gantry_signing::build::{
    ContainerRelease, FirmwareRelease, add_signature, class_id_from_model, vendor_id_from_domain,
};
use gantry_signing::config::ContainerConfig;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Device class every test device and release uses.
pub const VENDOR: &str = "example.com";
/// Model name of the class.
pub const CLASS: &str = "gateway";

/// A WASI fixture of the device runtime.
pub fn fixture(name: &str) -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-runtime/fixtures/misbehave").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mem_key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("mem".into(), SigningKey::generate(t))
}

/// The server and the offline keys around it.
pub struct Fleet {
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<gantry_server::Running>,
    config: gantry_server::Config,
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// The bootstrap admin token.
    pub admin: String,
    /// The signed trust root devices are provisioned with.
    pub trust_root: Vec<u8>,
    root_key: FileKeySource,
    release_key: Arc<FileKeySource>,
    http: ureq::Agent,
    /// Holds the server's data and the devices' state.
    pub dir: tempfile::TempDir,
}

/// A signed release, as the pipeline produced it.
pub struct Release {
    /// The envelope.
    pub envelope: Vec<u8>,
    /// The module.
    pub module: Vec<u8>,
    /// SUIT digest of its manifest, hex.
    pub digest: String,
}

impl Fleet {
    /// Starts a server on SQLite in a temporary directory and installs a
    /// trust root (a root key, a release key and the server's online key).
    pub fn start() -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        // A fixed port, so devices find the server again after a restart.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut config = gantry_server::Config {
            listen: ([127, 0, 0, 1], port).into(),
            data_dir: dir.path().join("server"),
            ..gantry_server::Config::default()
        };
        config.devices.poll_jitter = gantry_server::config::Span(Duration::ZERO);
        // The whole fleet logs in from one loopback address, again after
        // every server restart: a larger site than the default is sized
        // for. What the limits do is tested in the server's own tests.
        config.rate_limits.device_auth_per_source = gantry_server::config::Rate { per_minute: 60_000, burst: 5_000 };
        let (runtime, server) = serve(&config).expect("server starts");
        let url = format!("http://{}", server.addr);
        let admin = server.admin_token.clone().expect("first start makes an admin token");
        let (root_key, release_key) = (mem_key(KeyType::Ed25519), Arc::new(mem_key(KeyType::P256)));
        let root = TrustRoot::new(
            1,
            u64::MAX / 2,
            &[
                (Role::Root, vec![root_key.public_key().clone()], 1),
                (Role::Server, vec![server.state.server_key.public_key().clone()], 1),
                (Role::Release, vec![release_key.public_key().clone()], 1),
            ],
        )
        .expect("trust root");
        let mut doc = SignedTrustRoot::new(root).expect("trust root");
        doc.sign_with(&root_key).expect("sign trust root");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let fleet = Fleet {
            runtime: Some(runtime),
            server: Some(server),
            config,
            url,
            admin,
            trust_root: doc.to_bytes(),
            root_key,
            release_key,
            http,
            dir,
        };
        let (status, body) = fleet.call("PUT", "/api/v1/trust-root", Body::Bytes(fleet.trust_root.clone()));
        assert_eq!(status, 200, "{body}");
        fleet
    }

    /// Rotates the root and release keys: the next trust root (version + 1,
    /// the server's key kept) is signed by the old and the new root keys and
    /// installed through the operator API; releases are signed with the new
    /// release key from then on.
    pub fn rotate_keys(&mut self) {
        let version = SignedTrustRoot::from_bytes(&self.trust_root).expect("trust root").unverified_content().version;
        let (root_key, release_key) = (mem_key(KeyType::P256), Arc::new(mem_key(KeyType::Ed25519)));
        let root = TrustRoot::new(
            version + 1,
            u64::MAX / 2,
            &[
                (Role::Root, vec![root_key.public_key().clone()], 1),
                (Role::Server, vec![self.server_key().public_key().clone()], 1),
                (Role::Release, vec![release_key.public_key().clone()], 1),
            ],
        )
        .expect("trust root");
        let mut doc = SignedTrustRoot::new(root).expect("trust root");
        doc.sign_with(&self.root_key).expect("sign with the old root key");
        doc.sign_with(&root_key).expect("sign with the new root key");
        let (status, body) = self.call("PUT", "/api/v1/trust-root", Body::Bytes(doc.to_bytes()));
        assert_eq!(status, 200, "{body}");
        (self.trust_root, self.root_key, self.release_key) = (doc.to_bytes(), root_key, release_key);
    }

    /// Kills the server (its runtime is torn down: no graceful shutdown,
    /// nothing flushed) and starts it again on the same data and port.
    pub fn kill_and_restart(&mut self) {
        self.server = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        // The port is free again once the listener task is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match serve(&self.config) {
                Ok((rt, server)) => {
                    self.runtime = Some(rt);
                    self.server = Some(server);
                    return;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("the server does not start again: {e}"),
            }
        }
    }

    /// An operator API call with the admin token: (status, JSON or text).
    pub fn call(&self, method: &str, path: &str, body: Body) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.admin);
        let r = match (method, body) {
            ("GET", _) => self.http.get(&url).header("authorization", &auth).call(),
            ("PUT", Body::Bytes(b)) => self.http.put(&url).header("authorization", &auth).send(&b[..]),
            ("PUT", Body::Json(j)) => self.http.put(&url).header("authorization", &auth).send_json(&j),
            ("POST", Body::Bytes(b)) => self.http.post(&url).header("authorization", &auth).send(&b[..]),
            ("POST", Body::Json(j)) => self.http.post(&url).header("authorization", &auth).send_json(&j),
            (m, _) => panic!("method {m}"),
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Signs a container release of `module` and uploads it (blob, then envelope).
    pub fn release(&self, config_toml: &str, module: Vec<u8>, sequence: u64) -> Release {
        let envelope = sign_release(config_toml, &module, sequence, self.release_key.as_ref());
        let hex = hex::encode(Sha256::digest(&module));
        let (status, body) = self.call("PUT", &format!("/api/v1/blobs/sha256/{hex}"), Body::Bytes(module.clone()));
        assert!(status == 200 || status == 201, "{status} {body}");
        let (status, body) = self.call("POST", "/api/v1/releases", Body::Bytes(envelope.clone()));
        assert_eq!(status, 201, "{body}");
        let digest = body["manifest_digest"].as_str().expect("manifest_digest").to_owned();
        Release { envelope, module, digest }
    }

    /// Signs a firmware release of `image` for `class` (the fleet's own,
    /// or another) and uploads it (blob, then envelope).
    pub fn firmware(&self, image: Vec<u8>, sequence: u64, class: &str) -> Release {
        let vendor_id = vendor_id_from_domain(VENDOR);
        let unsigned =
            FirmwareRelease { image: &image, sequence, vendor_id, class_id: class_id_from_model(&vendor_id, class) }
                .build_unsigned()
                .expect("firmware release");
        let envelope = add_signature(&unsigned, self.release_key.as_ref()).expect("sign");
        let hex = hex::encode(Sha256::digest(&image));
        let (status, body) = self.call("PUT", &format!("/api/v1/blobs/sha256/{hex}"), Body::Bytes(image.clone()));
        assert!(status == 200 || status == 201, "{status} {body}");
        let (status, body) = self.call("POST", "/api/v1/releases", Body::Bytes(envelope.clone()));
        assert_eq!(status, 201, "{body}");
        let digest = body["manifest_digest"].as_str().expect("manifest_digest").to_owned();
        Release { envelope, module: image, digest }
    }

    /// The server's online (ticket) key, as an attacker who stole it would
    /// hold it.
    pub fn server_key(&self) -> Arc<dyn KeySource> {
        self.server.as_ref().expect("the server runs").state.server_key.clone()
    }

    /// The offline release key (the trust root's release role).
    pub fn release_key(&self) -> Arc<dyn KeySource> {
        self.release_key.clone()
    }

    /// Tells `device` to run `release` on `stream`.
    pub fn assign(&self, device: &str, stream: &str, release: &Release) {
        let (status, body) = self.call(
            "PUT",
            &format!("/api/v1/devices/{device}/assignments/{stream}"),
            Body::Json(json!({ "manifest_digest": release.digest })),
        );
        assert_eq!(status, 204, "{body}");
    }

    /// A new device, provisioned and pre-authorized.
    pub fn device(&self, n: usize, server_url: &str) -> SimDevice {
        let state = self.dir.path().join(format!("device-{n:04}"));
        let vendor_id = vendor_id_from_domain(VENDOR);
        let mut device_id = [0u8; 16];
        device_id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        device_id[8..].copy_from_slice(&Sha256::digest(state.to_string_lossy().as_bytes())[..8]);
        let identity = Identity { device_id, vendor_id, class_id: class_id_from_model(&vendor_id, CLASS) };
        let geometry = Geometry { firmware_pages: 4, device_kv_pages: 4, max_containers: 2, slot_size: 512 * 1024 };
        let device =
            Device::init(&state, geometry, &identity, &self.trust_root, supervisor::unix_now()).expect("device init");
        let config = AgentConfig {
            server: server_url.to_owned(),
            enrollment_token: None,
            schedule: Schedule::default(),
            caps: Caps { base_time: Duration::from_secs(3), min_rate: 64 * 1024, stall: Duration::from_secs(1) },
            call_timeout: Duration::from_secs(3),
        };
        let agent = Agent::new(config, &device, &state).expect("agent");
        let (status, body) = self.call(
            "POST",
            "/api/v1/devices",
            Body::Json(json!({ "device_id": agent.id(), "public_key": agent.public_key_pem(), "groups": ["lab"] })),
        );
        assert_eq!(status, 201, "{body}");
        SimDevice { state, device, agent }
    }

    /// What the server records for `device`.
    pub fn device_view(&self, device: &str) -> Value {
        let (status, body) = self.call("GET", &format!("/api/v1/devices/{device}"), Body::None);
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let (Some(s), Some(rt)) = (self.server.take(), self.runtime.as_ref()) {
            let _ = rt.block_on(s.stop());
        }
    }
}

/// Starts a server on its own runtime.
fn serve(config: &gantry_server::Config) -> Result<(tokio::runtime::Runtime, gantry_server::Running), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let server =
        runtime.block_on(gantry_server::start(config.clone(), std::future::pending())).map_err(|e| e.to_string())?;
    Ok((runtime, server))
}

/// A request body.
pub enum Body {
    /// None.
    None,
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// JSON.
    Json(Value),
}

/// One simulated device.
pub struct SimDevice {
    /// Its state directory.
    pub state: PathBuf,
    /// The device (flash, store, sandbox).
    pub device: Device,
    /// Its agent.
    pub agent: Agent,
}

impl SimDevice {
    /// One agent cycle; every container it switched is then run by the
    /// supervisor until its probation ends (confirm or revert, at most
    /// `probation_cap`), and the outcome reported.
    pub fn cycle(&mut self, probation_cap: Duration) -> Result<Vec<AgentEvent>, gantry_device::agent::AgentError> {
        let mut events = Vec::new();
        let cycle = self.agent.cycle(&self.device, &mut |e| events.push(e))?;
        if !cycle.switched.is_empty() {
            for e in self.supervise(probation_cap) {
                self.agent.report_event(&self.device, &e);
                events.push(AgentEvent::Update(e));
            }
        }
        Ok(events)
    }

    /// A power-on, as `gantry-device run` does it: the boot decision, the
    /// outcome of a firmware update requested before it reported, and,
    /// for firmware on trial, the trial: the supervisor runs until every
    /// enabled container started (confirmed) or one fails or `probation`
    /// passes (then the device restarts unconfirmed, and the bootloader
    /// reverts). `healthy: false` stands for a runtime that does not come
    /// up under the new firmware: the trial ends unconfirmed. Returns what
    /// each boot found and the firmware outcomes reported.
    pub fn power_on(&mut self, probation: Duration, healthy: bool) -> (Vec<Firmware>, Vec<FirmwareOutcome>) {
        let (mut booted, mut outcomes) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let started = Instant::now();
            let power_on = self.device.power_on(0, probation.as_millis() as u64).expect("power-on");
            booted.push(power_on.firmware);
            outcomes.extend(power_on.outcome);
            let Some(mut trial) = power_on.probation else { break };
            let step = if healthy {
                self.firmware_trial(&mut trial, started)
            } else {
                ProbationStep::Failed("unhealthy".into())
            };
            match step {
                ProbationStep::Confirmed(o) => {
                    outcomes.extend(o);
                    break;
                }
                _ => continue,
            }
        }
        for o in &outcomes {
            self.agent.report_firmware(&self.device, o);
        }
        (booted, outcomes)
    }

    /// Runs the supervisor through a firmware trial, as `gantry-device run`
    /// does, until it is confirmed or fails.
    fn firmware_trial(&self, trial: &mut Probation, started: Instant) -> ProbationStep {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            let stop2 = stop.clone();
            s.spawn(move || supervisor::run(&self.device, &stop2, &tx));
            let step = loop {
                let report = rx.recv_timeout(Duration::from_millis(20)).ok();
                let event = report.as_ref().and_then(TrialEvent::from_report);
                let now = started.elapsed().as_millis() as u64;
                match self.device.step_probation(trial, event.as_ref(), now).expect("confirm") {
                    ProbationStep::Pending => {}
                    done => break done,
                }
            };
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            step
        })
    }

    /// Runs the supervisor until every probation ended or `cap` passed;
    /// returns the confirms and reverts it reported.
    fn supervise(&self, cap: Duration) -> Vec<UpdateEvent> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            let stop2 = stop.clone();
            s.spawn(move || supervisor::run(&self.device, &stop2, &tx));
            let until = Instant::now() + cap;
            while Instant::now() < until && !self.on_probation().is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        rx.try_iter()
            .filter_map(|r| match r {
                Report::Update(e @ (UpdateEvent::Confirmed { .. } | UpdateEvent::Reverted { .. })) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn on_probation(&self) -> Vec<String> {
        self.device
            .store()
            .table()
            .map(|t| {
                t.containers
                    .iter()
                    .filter(|c| matches!(c.phase, gantry_device::table::Phase::Probation { .. }))
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The verified version `name` runs (sequence), checked from flash.
    pub fn running(&self, name: &str) -> Option<u64> {
        let store = self.device.store();
        let r = store.runnable(name).expect("the active slot verifies")?;
        Some(r.release.sequence)
    }

    /// Version of the trust root the device holds.
    pub fn trust_root_version(&self) -> u64 {
        self.device.store().trust_root().expect("the trust root verifies").root().version
    }

    /// The device's id on the server.
    pub fn id(&self) -> String {
        self.agent.id().to_owned()
    }
}

/// The envelope of a container release of `module` for this fleet's
/// vendor and class, signed by `key` (trusted or not: attacks use it too).
pub fn sign_release(config_toml: &str, module: &[u8], sequence: u64, key: &dyn KeySource) -> Vec<u8> {
    let config = ContainerConfig::from_toml(config_toml).expect("config");
    let vendor = vendor_id_from_domain(VENDOR);
    let unsigned = ContainerRelease {
        config: &config,
        module,
        blobs: &[],
        sequence,
        vendor_id: vendor,
        class_id: class_id_from_model(&vendor, CLASS),
    }
    .build_unsigned()
    .expect("release");
    add_signature(&unsigned, key).expect("sign")
}
