//! The container config: what a container is, what it may use and how it is
//! kept alive. Release engineers write it as TOML; it travels as canonical
//! CBOR inside the signed envelope (integrated payload `#config`), so its
//! permissions are signed with the module they govern.
//!
//! ```toml
//! name = "sensor-filter"
//! version = "1.4.2"
//! entry = "_start"
//! args = ["--rate", "10"]
//! capabilities = ["wasi:clocks", "wasi:stdout", "gantry:sensor"]
//! success_codes = [0]      # exit codes that mean success (a SAT solver: [10, 20])
//! stdin = "input"          # a blob of the release read as stdin (default: empty)
//! seed = "initial-data"    # a blob tree the data directory starts from
//!
//! [[mounts]]               # directories the guest sees (preopens)
//! path = "/share"          # where, in the guest
//! source = "blob:stdlib"   # "data", "data/SUBDIR" or "blob:NAME" (a tree)
//! mode = "ro"              # "ro" (default) or "rw" (data only)
//!
//! [env]
//! LOG_LEVEL = "info"
//!
//! [limits]
//! memory = "16 MiB"
//! stack = "512 KiB"
//! cpu_percent = 25
//! deadline_ms = 2000
//! log = "256 KiB"          # the log on disk, both generations together
//! data = "4 MiB"           # what /data may hold
//!
//! [health]
//! kind = "export"          # or "heartbeat"
//! function = "gantry_health"
//! interval_ms = 5000
//! timeout_ms = 100
//! failure_threshold = 3
//! probation_ms = 60000
//!
//! [restart]
//! policy = "on-failure"    # "never", "on-failure", "always"
//! max_restarts = 5
//! backoff_initial_ms = 500
//! backoff_max_ms = 30000
//! ```

use std::collections::BTreeMap;

use minicbor::Encoder;
use serde::Deserialize;

use crate::Error;
use crate::VerifiedManifest;
use crate::build::CONFIG_PAYLOAD;
use crate::cbor::{KeyOrder, Reader};

/// Largest encoded config accepted.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Every capability a config may grant. A config naming anything else is
/// refused here, so a typo never silently drops a permission or grants a new
/// one. This crate does not look inside the module: refusing, at install, a
/// module that imports a capability its config does not grant is the device
/// runtime's job and is not implemented yet.
pub const CAPABILITIES: &[&str] = &[
    "wasi:args",
    "wasi:env",
    "wasi:clocks",
    "wasi:random",
    "wasi:stdout",
    "wasi:stderr",
    "wasi:data-dir",
    "gantry:log",
    "gantry:kv",
    "gantry:sensor",
];

/// A validated container config.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerConfig {
    /// Container id: `[a-z0-9][a-z0-9-]*`, at most 63 characters; names the
    /// container's update stream (sequence numbers are per container).
    pub name: String,
    /// Version shown to operators.
    pub version: String,
    /// Exported function to run (`_start` for a WASI command).
    pub entry: String,
    /// Resource limits.
    pub limits: Limits,
    /// Granted capabilities, sorted, from [`CAPABILITIES`].
    pub capabilities: Vec<String>,
    /// Environment variables (needs `wasi:env`).
    pub env: BTreeMap<String, String>,
    /// Arguments (needs `wasi:args`).
    pub args: Vec<String>,
    /// Health check, if any.
    pub health: Option<Health>,
    /// Restart policy.
    pub restart: Restart,
    /// Exit codes that mean the container succeeded, sorted, without
    /// duplicates, 1 to [`MAX_SUCCESS_CODES`] of them; `[0]` unless the
    /// config says otherwise. Some programs answer through their exit code
    /// (a SAT solver exits 10 for sat and 20 for unsat); any other exit is a
    /// failure for the restart policy and the probation.
    pub success_codes: Vec<i32>,
    /// Directories preopened for the guest, in the order given, besides
    /// `/data` when `wasi:data-dir` is granted; at most [`MAX_MOUNTS`],
    /// each at its own guest path.
    pub mounts: Vec<Mount>,
    /// A blob of the release whose bytes are the guest's stdin (empty
    /// otherwise).
    pub stdin: Option<String>,
    /// A blob tree the private data directory is created from when it does
    /// not exist (the first start, or after `remove`).
    pub seed: Option<String>,
}

/// Most mounts one config may declare.
pub const MAX_MOUNTS: usize = 16;

/// Longest guest path of a mount, and longest data subdirectory, in bytes.
pub const MAX_GUEST_PATH: usize = 255;

/// Longest blob name, in bytes (the release builder refuses longer ones).
pub const MAX_BLOB_NAME: usize = 63;

/// A directory the guest sees at `path` (a WASI preopen).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// Absolute, normalized guest path (`/`, `/share`, ...).
    pub path: String,
    /// What it shows.
    pub source: MountSource,
    /// Whether the guest may change it (only a data directory may be).
    pub writable: bool,
}

/// What a mount shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MountSource {
    /// The container's private data directory (`None`), or a directory
    /// under it (relative, normalized; created at start). Bounded by
    /// `limits.data`, like `/data`.
    Data(Option<String>),
    /// A blob of the release holding a directory tree
    /// ([`crate::tree`]), verified from flash; always read-only.
    Blob(String),
}

/// Whether `name` is a valid blob name: 1 to [`MAX_BLOB_NAME`] of `a-z`,
/// `0-9`, `.`, `_` and `-`.
pub fn is_blob_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BLOB_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Whether `path` is a normalized relative path: components separated by
/// single `/`, none empty, `.` or `..`, no control character, at most
/// [`MAX_GUEST_PATH`] bytes.
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_GUEST_PATH
        && !path.chars().any(char::is_control)
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Mount {
    fn check(&self) -> Result<(), Error> {
        let p = &self.path;
        let path_ok = p == "/" || (p.len() <= MAX_GUEST_PATH && p.strip_prefix('/').is_some_and(is_relative_path));
        if !path_ok {
            return Err(cfg_err(format!(
                "mount path {p:?}: use an absolute path like \"/share\" (at most {MAX_GUEST_PATH} bytes, no \".\", \"..\", \"//\" or trailing \"/\")"
            )));
        }
        match &self.source {
            MountSource::Data(Some(sub)) if !is_relative_path(sub) => {
                Err(cfg_err(format!("mount {p:?}: data subdirectory {sub:?} is not a plain relative path")))
            }
            MountSource::Blob(b) if !is_blob_name(b) => Err(cfg_err(format!("mount {p:?}: {b:?} is not a blob name"))),
            MountSource::Blob(_) if self.writable => {
                Err(cfg_err(format!("mount {p:?}: a blob is read-only; use mode = \"ro\"")))
            }
            _ => Ok(()),
        }
    }

    /// The blob this mount shows, if it shows one.
    pub fn blob(&self) -> Option<&str> {
        match &self.source {
            MountSource::Blob(b) => Some(b),
            MountSource::Data(_) => None,
        }
    }
}

/// Most exit codes a config may declare successful.
pub const MAX_SUCCESS_CODES: usize = 16;

/// Longest container name, in bytes (the device's slot table stores it
/// under the same bound).
pub const MAX_NAME: usize = 63;

/// Longest version string, in bytes (the device's slot table stores it
/// under the same bound).
pub const MAX_VERSION: usize = 64;

/// Resource limits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Linear memory ceiling in bytes.
    pub memory_bytes: u64,
    /// Share of one CPU the container may use, 1..=100.
    pub cpu_percent: u8,
    /// Wasm stack ceiling in bytes.
    pub stack_bytes: u64,
    /// Longest one invocation of the entry point may run, if bounded.
    pub deadline_ms: Option<u64>,
    /// Bytes the container's log may take on disk, its current and its
    /// previous generation together (each gets half).
    pub log_bytes: u64,
    /// Bytes its `/data` directory may take (every file and directory
    /// counted in whole 4 KiB blocks, at least one).
    pub data_bytes: u64,
}

/// `limits.log` when the config does not say.
pub const DEFAULT_LOG_BYTES: u64 = 1 << 20;
/// `limits.log` bounds: two generations of at least one 4 KiB
/// `gantry.log` line each, and at most 1 GiB.
pub const LOG_BYTES: core::ops::RangeInclusive<u64> = (8 << 10)..=(1 << 30);
/// `limits.data` when the config does not say.
pub const DEFAULT_DATA_BYTES: u64 = 4 << 20;
/// `limits.data` bounds: one 4 KiB block to 64 GiB.
pub const DATA_BYTES: core::ops::RangeInclusive<u64> = (4 << 10)..=(64 << 30);

/// How the runtime decides a container is healthy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Export call or heartbeat.
    pub kind: HealthKind,
    /// Interval between checks.
    pub interval_ms: u64,
    /// How long one check may take.
    pub timeout_ms: u64,
    /// Consecutive failures that make the container unhealthy.
    pub failure_threshold: u32,
    /// How long a new version must stay healthy before it is confirmed.
    pub probation_ms: u64,
}

/// The kind of health check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HealthKind {
    /// Call this exported function; it returns 0 when healthy.
    Export(String),
    /// The container calls the host's heartbeat at least once per interval.
    Heartbeat,
}

/// What to do when the container exits or traps.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Restarts allowed before giving up (crash loop).
    pub max_restarts: u32,
    /// First back-off delay.
    pub backoff_initial_ms: u64,
    /// Back-off ceiling (doubling from the initial delay).
    pub backoff_max_ms: u64,
}

/// When to restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RestartPolicy {
    /// Never.
    Never,
    /// After a trap or a non-zero exit.
    OnFailure,
    /// After any exit.
    Always,
}

// ---- TOML side -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlConfig {
    name: String,
    version: String,
    #[serde(default = "default_entry")]
    entry: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    limits: TomlLimits,
    health: Option<TomlHealth>,
    #[serde(default)]
    restart: TomlRestart,
    #[serde(default = "default_success_codes")]
    success_codes: Vec<i32>,
    #[serde(default)]
    mounts: Vec<TomlMount>,
    stdin: Option<String>,
    seed: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlMount {
    path: String,
    source: String,
    mode: Option<String>,
}

impl TomlMount {
    fn parse(self) -> Result<Mount, Error> {
        let source = match self.source.as_str() {
            "data" => MountSource::Data(None),
            s => match (s.strip_prefix("data/"), s.strip_prefix("blob:")) {
                (Some(sub), _) => MountSource::Data(Some(sub.to_owned())),
                (_, Some(blob)) => MountSource::Blob(blob.to_owned()),
                _ => {
                    return Err(cfg_err(format!(
                        "mount {:?}: source {s:?}: use \"data\", \"data/SUBDIR\" or \"blob:NAME\"",
                        self.path
                    )));
                }
            },
        };
        let writable = match self.mode.as_deref().unwrap_or("ro") {
            "ro" => false,
            "rw" => true,
            m => return Err(cfg_err(format!("mount {:?}: mode {m:?}: use \"ro\" or \"rw\"", self.path))),
        };
        Ok(Mount { path: self.path, source, writable })
    }
}

fn default_success_codes() -> Vec<i32> {
    vec![0]
}

fn default_entry() -> String {
    "_start".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlLimits {
    memory: Option<Size>,
    stack: Option<Size>,
    cpu_percent: Option<u8>,
    deadline_ms: Option<u64>,
    log: Option<Size>,
    data: Option<Size>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlHealth {
    kind: String,
    function: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    failure_threshold: Option<u32>,
    probation_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlRestart {
    policy: Option<String>,
    max_restarts: Option<u32>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

fn parse_size(s: &Size, what: &str) -> Result<u64, Error> {
    match s {
        Size::Bytes(b) => Ok(*b),
        Size::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: u64 = num.parse().map_err(|_| cfg_err(format!("{what}: {t:?} is not a size like \"16 MiB\"")))?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                u => return Err(cfg_err(format!("{what}: unknown unit {u:?} (use B, KiB, MiB or GiB)"))),
            };
            num.checked_mul(mult).ok_or_else(|| cfg_err(format!("{what}: too large")))
        }
    }
}

impl ContainerConfig {
    /// Parses and validates the TOML form.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let t: TomlConfig = toml::from_str(text).map_err(|e| cfg_err(e.to_string()))?;
        let health = match t.health {
            None => None,
            Some(h) => Some(Health {
                kind: match (h.kind.as_str(), h.function) {
                    ("export", f) => HealthKind::Export(f.unwrap_or_else(|| "gantry_health".into())),
                    ("heartbeat", None) => HealthKind::Heartbeat,
                    ("heartbeat", Some(_)) => return Err(cfg_err("health: a heartbeat check takes no function")),
                    (k, _) => return Err(cfg_err(format!("health.kind {k:?}: use \"export\" or \"heartbeat\""))),
                },
                interval_ms: h.interval_ms.unwrap_or(5_000),
                timeout_ms: h.timeout_ms.unwrap_or(100),
                failure_threshold: h.failure_threshold.unwrap_or(3),
                probation_ms: h.probation_ms.unwrap_or(60_000),
            }),
        };
        let policy = match t.restart.policy.as_deref().unwrap_or("on-failure") {
            "never" => RestartPolicy::Never,
            "on-failure" => RestartPolicy::OnFailure,
            "always" => RestartPolicy::Always,
            p => return Err(cfg_err(format!("restart.policy {p:?}: use \"never\", \"on-failure\" or \"always\""))),
        };
        let mut capabilities = t.capabilities;
        capabilities.sort();
        let mut success_codes = t.success_codes;
        success_codes.sort_unstable();
        let config = ContainerConfig {
            name: t.name,
            version: t.version,
            entry: t.entry,
            limits: Limits {
                memory_bytes: t.limits.memory.as_ref().map_or(Ok(16 << 20), |s| parse_size(s, "limits.memory"))?,
                stack_bytes: t.limits.stack.as_ref().map_or(Ok(512 << 10), |s| parse_size(s, "limits.stack"))?,
                cpu_percent: t.limits.cpu_percent.unwrap_or(100),
                deadline_ms: t.limits.deadline_ms,
                log_bytes: t.limits.log.as_ref().map_or(Ok(DEFAULT_LOG_BYTES), |s| parse_size(s, "limits.log"))?,
                data_bytes: t.limits.data.as_ref().map_or(Ok(DEFAULT_DATA_BYTES), |s| parse_size(s, "limits.data"))?,
            },
            capabilities,
            env: t.env,
            args: t.args,
            health,
            restart: Restart {
                policy,
                max_restarts: t.restart.max_restarts.unwrap_or(5),
                backoff_initial_ms: t.restart.backoff_initial_ms.unwrap_or(500),
                backoff_max_ms: t.restart.backoff_max_ms.unwrap_or(30_000),
            },
            success_codes,
            mounts: t.mounts.into_iter().map(TomlMount::parse).collect::<Result<_, _>>()?,
            stdin: t.stdin,
            seed: t.seed,
        };
        config.validate()?;
        Ok(config)
    }

    /// Whether exit code `code` means success (`success_codes`).
    pub fn is_success(&self, code: i32) -> bool {
        self.success_codes.binary_search(&code).is_ok()
    }

    /// Checks every rule the TOML and CBOR forms share.
    pub fn validate(&self) -> Result<(), Error> {
        let n = &self.name;
        let name_ok = !n.is_empty()
            && n.len() <= MAX_NAME
            && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-');
        if !name_ok {
            return Err(cfg_err(format!("name {n:?}: use 1-{MAX_NAME} of a-z, 0-9 and '-', not starting with '-'")));
        }
        if self.version.is_empty() || self.version.len() > MAX_VERSION {
            return Err(cfg_err(format!("version must be 1-{MAX_VERSION} bytes")));
        }
        if self.entry.is_empty() || self.entry.len() > 128 {
            return Err(cfg_err("entry must be 1-128 characters"));
        }
        let l = &self.limits;
        if l.memory_bytes < 64 << 10 || l.memory_bytes > 4 << 30 {
            return Err(cfg_err("limits.memory must be between 64 KiB and 4 GiB"));
        }
        if l.stack_bytes < 16 << 10 || l.stack_bytes > 64 << 20 {
            return Err(cfg_err("limits.stack must be between 16 KiB and 64 MiB"));
        }
        if !(1..=100).contains(&l.cpu_percent) {
            return Err(cfg_err("limits.cpu_percent must be 1-100"));
        }
        if l.deadline_ms == Some(0) {
            return Err(cfg_err("limits.deadline_ms must be positive"));
        }
        if !LOG_BYTES.contains(&l.log_bytes) {
            return Err(cfg_err("limits.log must be between 8 KiB and 1 GiB"));
        }
        if !DATA_BYTES.contains(&l.data_bytes) {
            return Err(cfg_err("limits.data must be between 4 KiB and 64 GiB"));
        }
        for w in self.capabilities.windows(2) {
            if w[0] >= w[1] {
                return Err(cfg_err(format!("capability {:?} listed twice or out of order", w[1])));
            }
        }
        if let Some(c) = self.capabilities.iter().find(|c| !CAPABILITIES.contains(&c.as_str())) {
            return Err(cfg_err(format!("unknown capability {c:?}; known: {}", CAPABILITIES.join(", "))));
        }
        let has = |c: &str| self.capabilities.iter().any(|x| x == c);
        if !self.env.is_empty() && !has("wasi:env") {
            return Err(cfg_err("env is set but capability \"wasi:env\" is not granted"));
        }
        if !self.args.is_empty() && !has("wasi:args") {
            return Err(cfg_err("args are set but capability \"wasi:args\" is not granted"));
        }
        if self.env.len() > 64 || self.args.len() > 64 {
            return Err(cfg_err("at most 64 env entries and 64 args"));
        }
        if let Some(h) = &self.health {
            if h.interval_ms == 0 || h.timeout_ms == 0 || h.failure_threshold == 0 {
                return Err(cfg_err("health: interval_ms, timeout_ms and failure_threshold must be positive"));
            }
            if let HealthKind::Export(f) = &h.kind
                && (f.is_empty() || f.len() > 128)
            {
                return Err(cfg_err("health.function must be 1-128 characters"));
            }
        }
        let r = &self.restart;
        if r.backoff_initial_ms == 0 || r.backoff_max_ms < r.backoff_initial_ms {
            return Err(cfg_err("restart: need 0 < backoff_initial_ms <= backoff_max_ms"));
        }
        let codes = &self.success_codes;
        if codes.is_empty() || codes.len() > MAX_SUCCESS_CODES {
            return Err(cfg_err(format!("success_codes: list 1 to {MAX_SUCCESS_CODES} exit codes")));
        }
        if let Some(w) = codes.windows(2).find(|w| w[0] >= w[1]) {
            return Err(cfg_err(format!("success_codes: {} listed twice or out of order", w[1])));
        }
        if self.mounts.len() > MAX_MOUNTS {
            return Err(cfg_err(format!("at most {MAX_MOUNTS} mounts")));
        }
        let mut paths = std::collections::BTreeSet::new();
        if has("wasi:data-dir") {
            paths.insert("/data");
        }
        for m in &self.mounts {
            m.check()?;
            if !paths.insert(&m.path) {
                let also = if m.path == "/data" { " (\"wasi:data-dir\" mounts the data directory there)" } else { "" };
                return Err(cfg_err(format!("mount path {:?} is used twice{also}", m.path)));
            }
        }
        for (what, blob) in [("stdin", &self.stdin), ("seed", &self.seed)] {
            if let Some(b) = blob.as_deref().filter(|b| !is_blob_name(b)) {
                return Err(cfg_err(format!("{what}: {b:?} is not a blob name")));
            }
        }
        Ok(())
    }

    /// Every blob the config refers to (mounts, stdin, seed): the release
    /// must carry each of them.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.mounts.iter().filter_map(Mount::blob).chain(self.stdin.as_deref()).chain(self.seed.as_deref())
    }

    /// Whether the private data directory is preopened somewhere writable:
    /// then `limits.data` must be enforced on writes.
    pub fn writes_data(&self) -> bool {
        self.capabilities.iter().any(|c| c == "wasi:data-dir")
            || self.mounts.iter().any(|m| m.writable && matches!(m.source, MountSource::Data(_)))
    }

    /// The canonical CBOR form (see `docs/formats.md` for the CDDL).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut e = Encoder::new(gantry_keys::cbor_vec::VecWriter::default());
        // Writing into a Vec cannot fail.
        let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            // `success_codes` is written only when it is not the default
            // `[0]`, so configs from before it existed keep their bytes
            // (and their signed digests).
            let codes = self.success_codes != [0];
            let optional = u64::from(!self.env.is_empty())
                + u64::from(!self.args.is_empty())
                + u64::from(self.health.is_some())
                + u64::from(codes)
                + u64::from(!self.mounts.is_empty())
                + u64::from(self.stdin.is_some())
                + u64::from(self.seed.is_some());
            e.map(6 + optional)?;
            e.u8(1)?.str(&self.name)?;
            e.u8(2)?.str(&self.version)?;
            e.u8(3)?.str(&self.entry)?;
            let l = &self.limits;
            // Quotas, like success codes, are written only when they are
            // not the default: configs from before they existed keep their
            // bytes, and one config has one encoding.
            let log = (l.log_bytes != DEFAULT_LOG_BYTES).then_some(l.log_bytes);
            let data = (l.data_bytes != DEFAULT_DATA_BYTES).then_some(l.data_bytes);
            let members = [l.deadline_ms, log, data].iter().filter(|m| m.is_some()).count() as u64;
            e.u8(4)?.map(3 + members)?;
            e.u8(1)?.u64(l.memory_bytes)?.u8(2)?.u8(l.cpu_percent)?.u8(3)?.u64(l.stack_bytes)?;
            for (key, value) in [(4, l.deadline_ms), (5, log), (6, data)] {
                if let Some(v) = value {
                    e.u8(key)?.u64(v)?;
                }
            }
            e.u8(5)?.array(self.capabilities.len() as u64)?;
            for c in &self.capabilities {
                e.str(c)?;
            }
            if !self.env.is_empty() {
                // Deterministic order: shorter keys first, then bytewise.
                let mut env: Vec<_> = self.env.iter().collect();
                env.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
                e.u8(6)?.map(env.len() as u64)?;
                for (k, v) in env {
                    e.str(k)?.str(v)?;
                }
            }
            if !self.args.is_empty() {
                e.u8(7)?.array(self.args.len() as u64)?;
                for a in &self.args {
                    e.str(a)?;
                }
            }
            if let Some(h) = &self.health {
                let export = matches!(h.kind, HealthKind::Export(_));
                e.u8(8)?.map(5 + u64::from(export))?;
                e.u8(1)?.u8(u8::from(!export))?;
                if let HealthKind::Export(f) = &h.kind {
                    e.u8(2)?.str(f)?;
                }
                e.u8(3)?.u64(h.interval_ms)?.u8(4)?.u64(h.timeout_ms)?;
                e.u8(5)?.u32(h.failure_threshold)?.u8(6)?.u64(h.probation_ms)?;
            }
            let r = &self.restart;
            let policy = match r.policy {
                RestartPolicy::Never => 0,
                RestartPolicy::OnFailure => 1,
                RestartPolicy::Always => 2,
            };
            e.u8(9)?.map(4)?.u8(1)?.u8(policy)?.u8(2)?.u32(r.max_restarts)?;
            e.u8(3)?.u64(r.backoff_initial_ms)?.u8(4)?.u64(r.backoff_max_ms)?;
            if codes {
                e.u8(10)?.array(self.success_codes.len() as u64)?;
                for &code in &self.success_codes {
                    e.i32(code)?;
                }
            }
            // Mounts, stdin and seed, like every member added after the
            // first release, are written only when set.
            if !self.mounts.is_empty() {
                e.u8(11)?.array(self.mounts.len() as u64)?;
                for m in &self.mounts {
                    let (kind, arg) = match &m.source {
                        MountSource::Data(sub) => (0u8, sub.as_deref().unwrap_or("")),
                        MountSource::Blob(b) => (1, b.as_str()),
                    };
                    e.array(4)?.str(&m.path)?.u8(kind)?.str(arg)?.bool(m.writable)?;
                }
            }
            if let Some(b) = &self.stdin {
                e.u8(12)?.str(b)?;
            }
            if let Some(b) = &self.seed {
                e.u8(13)?.str(b)?;
            }
            Ok(())
        })();
        e.into_writer().0
    }

    /// The config a verified container release carries, or `None` if it
    /// carries none: the integrated payload `#config`, checked against the
    /// digest and size signed for its component
    /// ([`VerifiedManifest::integrated_payload`]), parsed with
    /// [`from_cbor`](Self::from_cbor), and refused unless that component is
    /// `[name, "config"]` and every component is named after the container
    /// (the layout [`crate::build`] produces), so one container's release
    /// cannot carry another's config or payloads.
    pub fn from_verified(manifest: &VerifiedManifest<'_>) -> Result<Option<Self>, Error> {
        let Some(payload) = manifest.integrated_payload(CONFIG_PAYLOAD)? else { return Ok(None) };
        let config = Self::from_cbor(payload.bytes)?;
        let name = config.name.as_bytes();
        let m = manifest.manifest();
        if let Some(other) = m.components().find(|id| id.segments().next() != Some(name)) {
            return Err(cfg_err(format!("component {other} does not belong to container {:?}", config.name)));
        }
        match m.component(payload.component) {
            Some(id) if id.segments().eq([name, b"config"]) => Ok(Some(config)),
            id => Err(cfg_err(format!(
                "{CONFIG_PAYLOAD} belongs to component {}, not [{:?}, \"config\"]",
                id.map_or_else(|| payload.component.to_string(), |id| id.to_string()),
                config.name
            ))),
        }
    }

    /// Parses the canonical CBOR form strictly and validates it. Only the
    /// exact deterministic encoding is accepted.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_CONFIG_LEN {
            return Err(Error::LimitExceeded { what: "config size", limit: MAX_CONFIG_LEN });
        }
        let mut r = Reader::new(bytes);
        let mut c = ContainerConfig {
            name: String::new(),
            version: String::new(),
            entry: String::new(),
            limits: Limits {
                memory_bytes: 0,
                cpu_percent: 0,
                stack_bytes: 0,
                deadline_ms: None,
                log_bytes: DEFAULT_LOG_BYTES,
                data_bytes: DEFAULT_DATA_BYTES,
            },
            capabilities: Vec::new(),
            env: BTreeMap::new(),
            args: Vec::new(),
            health: None,
            restart: Restart {
                policy: RestartPolicy::Never,
                max_restarts: 0,
                backoff_initial_ms: 0,
                backoff_max_ms: 0,
            },
            success_codes: vec![0],
            mounts: Vec::new(),
            stdin: None,
            seed: None,
        };
        let mut seen = 0u16;
        let mut order = KeyOrder::new();
        for _ in 0..r.map("config map")? {
            let key = r.int_key(&mut order)?;
            match key {
                1 => c.name = r.str("name")?.to_owned(),
                2 => c.version = r.str("version")?.to_owned(),
                3 => c.entry = r.str("entry")?.to_owned(),
                4 => {
                    let mut o = KeyOrder::new();
                    for _ in 0..r.map("limits")? {
                        match r.int_key(&mut o)? {
                            1 => c.limits.memory_bytes = r.u64("memory")?,
                            2 => {
                                c.limits.cpu_percent =
                                    u8::try_from(r.u64("cpu")?).map_err(|_| Error::Invalid("cpu_percent"))?
                            }
                            3 => c.limits.stack_bytes = r.u64("stack")?,
                            4 => c.limits.deadline_ms = Some(r.u64("deadline")?),
                            5 => c.limits.log_bytes = r.u64("log")?,
                            6 => c.limits.data_bytes = r.u64("data")?,
                            _ => return Err(Error::Invalid("unknown limits member")),
                        }
                    }
                }
                5 => {
                    for _ in 0..r.array("capabilities")? {
                        c.capabilities.push(r.str("capability")?.to_owned());
                    }
                }
                6 => {
                    let mut o = KeyOrder::new();
                    for _ in 0..r.map("env")? {
                        let crate::cbor::Key::Text(k) = r.any_key(&mut o)? else {
                            return Err(Error::Invalid("env key must be text"));
                        };
                        c.env.insert(k.to_owned(), r.str("env value")?.to_owned());
                    }
                }
                7 => {
                    for _ in 0..r.array("args")? {
                        c.args.push(r.str("arg")?.to_owned());
                    }
                }
                8 => c.health = Some(read_health(&mut r)?),
                9 => c.restart = read_restart(&mut r)?,
                10 => {
                    c.success_codes.clear();
                    for _ in 0..r.array("success codes")? {
                        let code = r.i64("success code")?;
                        c.success_codes.push(i32::try_from(code).map_err(|_| Error::Invalid("success code"))?);
                    }
                }
                11 => {
                    for _ in 0..r.array("mounts")? {
                        if r.array("mount")? != 4 {
                            return Err(Error::Invalid("mount"));
                        }
                        let path = r.str("mount path")?.to_owned();
                        let (kind, arg) = (r.u64("mount source")?, r.str("mount source")?.to_owned());
                        let source = match kind {
                            0 if arg.is_empty() => MountSource::Data(None),
                            0 => MountSource::Data(Some(arg)),
                            1 => MountSource::Blob(arg),
                            _ => return Err(Error::Invalid("mount source")),
                        };
                        c.mounts.push(Mount { path, source, writable: r.bool("mount mode")? });
                    }
                }
                12 => c.stdin = Some(r.str("stdin")?.to_owned()),
                13 => c.seed = Some(r.str("seed")?.to_owned()),
                _ => return Err(Error::Invalid("unknown config member")),
            }
            seen |= 1 << key;
        }
        r.finish("config")?;
        let required = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 9);
        if seen & required != required {
            return Err(Error::Missing("required config member"));
        }
        c.validate()?;
        if c.to_cbor() != bytes {
            return Err(Error::NonCanonical { what: "config is not in its canonical encoding", offset: 0 });
        }
        Ok(c)
    }
}

fn read_health(r: &mut Reader<'_>) -> Result<Health, Error> {
    let mut o = KeyOrder::new();
    let (mut kind, mut function) = (None, None);
    let mut h =
        Health { kind: HealthKind::Heartbeat, interval_ms: 0, timeout_ms: 0, failure_threshold: 0, probation_ms: 0 };
    for _ in 0..r.map("health")? {
        match r.int_key(&mut o)? {
            1 => kind = Some(r.u64("health kind")?),
            2 => function = Some(r.str("health function")?.to_owned()),
            3 => h.interval_ms = r.u64("interval")?,
            4 => h.timeout_ms = r.u64("timeout")?,
            5 => {
                h.failure_threshold =
                    u32::try_from(r.u64("failures")?).map_err(|_| Error::Invalid("failure_threshold"))?
            }
            6 => h.probation_ms = r.u64("probation")?,
            _ => return Err(Error::Invalid("unknown health member")),
        }
    }
    h.kind = match (kind, function) {
        (Some(0), Some(f)) => HealthKind::Export(f),
        (Some(1), None) => HealthKind::Heartbeat,
        _ => return Err(Error::Invalid("health kind")),
    };
    Ok(h)
}

fn read_restart(r: &mut Reader<'_>) -> Result<Restart, Error> {
    let mut o = KeyOrder::new();
    let mut x = Restart { policy: RestartPolicy::Never, max_restarts: 0, backoff_initial_ms: 0, backoff_max_ms: 0 };
    for _ in 0..r.map("restart")? {
        match r.int_key(&mut o)? {
            1 => {
                x.policy = match r.u64("restart policy")? {
                    0 => RestartPolicy::Never,
                    1 => RestartPolicy::OnFailure,
                    2 => RestartPolicy::Always,
                    _ => return Err(Error::Invalid("restart policy")),
                }
            }
            2 => x.max_restarts = u32::try_from(r.u64("max restarts")?).map_err(|_| Error::Invalid("max_restarts"))?,
            3 => x.backoff_initial_ms = r.u64("backoff")?,
            4 => x.backoff_max_ms = r.u64("backoff max")?,
            _ => return Err(Error::Invalid("unknown restart member")),
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "sensor-filter"
version = "1.4.2"
args = ["--rate", "10"]
capabilities = ["wasi:stdout", "wasi:args", "wasi:env", "gantry:sensor"]
[env]
LOG_LEVEL = "info"
A = "b"
[limits]
memory = "16 MiB"
stack = 65536
cpu_percent = 25
deadline_ms = 2000
[health]
kind = "export"
function = "health"
[restart]
policy = "always"
"#;

    #[test]
    fn toml_to_cbor_and_back() {
        let c = ContainerConfig::from_toml(FULL).unwrap();
        assert_eq!(c.limits.memory_bytes, 16 << 20);
        assert_eq!(c.capabilities[0], "gantry:sensor");
        let bytes = c.to_cbor();
        assert_eq!(ContainerConfig::from_cbor(&bytes).unwrap(), c);
        let minimal = ContainerConfig::from_toml("name = \"a\"\nversion = \"1\"\n").unwrap();
        assert_eq!(ContainerConfig::from_cbor(&minimal.to_cbor()).unwrap(), minimal);
    }

    #[test]
    fn refuses_mistakes() {
        for (bad, why) in [
            ("name = \"A\"\nversion = \"1\"", "name"),
            ("name = \"a\"\nversion = \"1\"\ncapabilities = [\"wasi:network\"]", "unknown capability"),
            ("name = \"a\"\nversion = \"1\"\nargs = [\"x\"]", "wasi:args"),
            ("name = \"a\"\nversion = \"1\"\n[limits]\nmemory = \"1 TB\"", "unit"),
            ("name = \"a\"\nversion = \"1\"\ncolour = 1", "unknown field"),
            ("name = \"a\"\nversion = \"1\"\n[limits]\ncpu_percent = 0", "cpu_percent"),
        ] {
            let err = ContainerConfig::from_toml(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn success_codes_default_to_zero_and_keep_old_encodings() {
        let minimal = ContainerConfig::from_toml("name = \"a\"\nversion = \"1\"\n").unwrap();
        assert_eq!(minimal.success_codes, [0]);
        assert!(minimal.is_success(0) && !minimal.is_success(1));
        // A config that names the default encodes exactly like one that
        // does not: configs signed before the field existed keep their digest.
        let explicit = ContainerConfig::from_toml("name = \"a\"\nversion = \"1\"\nsuccess_codes = [0]\n").unwrap();
        assert_eq!(explicit.to_cbor(), minimal.to_cbor());
        assert!(!minimal.to_cbor().windows(2).any(|w| w == [0x0a, 0x81]), "no member 10 for the default");

        let solver = "name = \"sat\"\nversion = \"1\"\nsuccess_codes = [20, -1, 10]\n";
        let c = ContainerConfig::from_toml(solver).unwrap();
        assert_eq!(c.success_codes, [-1, 10, 20], "sorted on read");
        assert!(c.is_success(10) && c.is_success(20) && c.is_success(-1) && !c.is_success(0));
        let bytes = c.to_cbor();
        assert!(bytes.ends_with(&[0x0a, 0x83, 0x20, 0x0a, 0x14]), "10 => [-1, 10, 20]");
        assert_eq!(ContainerConfig::from_cbor(&bytes).unwrap(), c);

        // Member 10 holding the default is not canonical: it would give one
        // config two encodings.
        let mut zero = minimal.to_cbor();
        zero[0] += 1;
        zero.extend([0x0a, 0x81, 0x00]);
        assert!(ContainerConfig::from_cbor(&zero).is_err());
        // Out of order or repeated codes in CBOR, and values beyond i32.
        for tail in [&[0x0a, 0x82, 0x14, 0x0a][..], &[0x0a, 0x82, 0x0a, 0x0a], &[0x0a, 0x81, 0x1a, 0x80, 0, 0, 0]] {
            let mut bad = minimal.to_cbor();
            bad[0] += 1;
            bad.extend(tail);
            assert!(ContainerConfig::from_cbor(&bad).is_err(), "{tail:02x?}");
        }
        for (bad, why) in [
            ("success_codes = []", "success_codes"),
            ("success_codes = [10, 10]", "twice"),
            ("success_codes = [3000000000]", ""),
            ("success_codes = [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]", "success_codes"),
        ] {
            let err = ContainerConfig::from_toml(&format!("name = \"a\"\nversion = \"1\"\n{bad}\n")).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn quotas_default_keep_old_encodings_and_are_bounded() {
        let minimal = ContainerConfig::from_toml("name = \"a\"\nversion = \"1\"\n").unwrap();
        assert_eq!((minimal.limits.log_bytes, minimal.limits.data_bytes), (DEFAULT_LOG_BYTES, DEFAULT_DATA_BYTES));
        // The defaults, named or not, encode as absent: a config signed
        // before quotas existed decodes to them and keeps its digest.
        let named =
            ContainerConfig::from_toml("name = \"a\"\nversion = \"1\"\n[limits]\nlog = \"1 MiB\"\ndata = \"4 MiB\"\n");
        assert_eq!(named.unwrap().to_cbor(), minimal.to_cbor());

        let at = |log: &str, data: &str| {
            ContainerConfig::from_toml(&format!(
                "name = \"a\"\nversion = \"1\"\n[limits]\nlog = {log}\ndata = {data}\n"
            ))
        };
        for (log, data) in [("\"8 KiB\"", "\"4 KiB\""), ("\"1 GiB\"", "\"64 GiB\""), ("\"512 KiB\"", "\"256 KiB\"")] {
            let Ok(c) = at(log, data) else { panic!("{log} {data} must be accepted") };
            let bytes = c.to_cbor();
            assert_eq!(ContainerConfig::from_cbor(&bytes).unwrap(), c, "{log} {data}");
        }
        for (log, data, why) in [
            ("\"8191\"", "\"4 MiB\"", "limits.log"),
            ("\"1025 MiB\"", "\"4 MiB\"", "limits.log"),
            ("\"1 MiB\"", "4095", "limits.data"),
            ("\"1 MiB\"", "\"65 GiB\"", "limits.data"),
            ("\"1 MB\"", "\"4 MiB\"", "unit"),
        ] {
            let err = at(log, data).unwrap_err().to_string();
            assert!(err.contains(why), "{log} {data}: {err}");
        }

        // In CBOR: 5 => log, 6 => data, in key order after 4.
        let c = at("\"8 KiB\"", "\"4 KiB\"").unwrap();
        let bytes = c.to_cbor();
        let limits = [0x04, 0xa5, 0x01, 0x1a, 0x01, 0, 0, 0, 0x02, 0x18, 0x64, 0x03, 0x1a, 0, 0x08, 0, 0];
        assert!(bytes.windows(limits.len()).any(|w| w == limits), "{bytes:02x?}");
        assert!(bytes.windows(6).any(|w| w == [0x05, 0x19, 0x20, 0x00, 0x06, 0x19]), "5 => 8192, 6 => 4096");
        // A decoded value out of bounds, or an explicit default, is refused.
        for (from, to) in [
            (&[0x05, 0x19, 0x20, 0x00][..], &[0x05, 0x19, 0x1f, 0xff][..]),
            (&[0x06, 0x19, 0x10, 0x00], &[0x06, 0x19, 0x0f, 0xff]),
        ] {
            let pos = bytes.windows(from.len()).position(|w| w == from).unwrap();
            let mut bad = bytes.clone();
            bad.splice(pos..pos + from.len(), to.iter().copied());
            assert!(ContainerConfig::from_cbor(&bad).is_err(), "{to:02x?}");
        }
        let mut explicit = minimal.to_cbor();
        let pos = explicit.windows(2).position(|w| w == [0x04, 0xa3]).unwrap();
        explicit[pos + 1] = 0xa4;
        let end = pos + 2 + [0x01, 0x1a, 0x01, 0, 0, 0, 0x02, 0x18, 0x64, 0x03, 0x1a, 0, 0x08, 0, 0].len();
        explicit.splice(end..end, [0x05, 0x1a, 0, 0x10, 0, 0]);
        assert!(ContainerConfig::from_cbor(&explicit).is_err(), "5 => the default is not canonical");
    }

    #[test]
    fn mounts_stdin_and_seed_round_trip_and_refuse_mistakes() {
        let base = "name = \"py\"\nversion = \"1\"\n";
        let text = format!(
            "{base}stdin = \"input\"\nseed = \"initial\"\n\
             [[mounts]]\npath = \"/usr/local/lib/python3.11\"\nsource = \"blob:stdlib\"\n\
             [[mounts]]\npath = \"/\"\nsource = \"data\"\nmode = \"rw\"\n\
             [[mounts]]\npath = \"/out\"\nsource = \"data/out/today\"\nmode = \"ro\"\n"
        );
        let c = ContainerConfig::from_toml(&text).unwrap();
        assert_eq!(c.mounts[0].source, MountSource::Blob("stdlib".into()));
        assert!(!c.mounts[0].writable && c.mounts[1].writable && !c.mounts[2].writable);
        assert_eq!(c.mounts[2].source, MountSource::Data(Some("out/today".into())));
        assert_eq!(c.blobs().collect::<Vec<_>>(), ["stdlib", "input", "initial"]);
        assert!(c.writes_data());
        let bytes = c.to_cbor();
        assert_eq!(ContainerConfig::from_cbor(&bytes).unwrap(), c);
        for cut in 0..bytes.len() {
            assert!(ContainerConfig::from_cbor(&bytes[..cut]).is_err());
        }
        // Without them, a config encodes as before they existed.
        let plain = ContainerConfig::from_toml(base).unwrap();
        assert!(plain.mounts.is_empty() && plain.stdin.is_none() && !plain.writes_data());
        assert!(!plain.to_cbor().windows(2).any(|w| w[0] == 0x0b || w[0] == 0x0c || w[0] == 0x0d));

        let mount = |path: &str, source: &str, mode: &str| {
            format!("{base}[[mounts]]\npath = {path:?}\nsource = {source:?}\nmode = {mode:?}\n")
        };
        for (bad, why) in [
            (mount("share", "data", "ro"), "absolute path"),
            (mount("/share/", "data", "ro"), "absolute path"),
            (mount("/a//b", "data", "ro"), "absolute path"),
            (mount("/a/../b", "data", "ro"), "absolute path"),
            (mount("/a/./b", "data", "ro"), "absolute path"),
            (mount(&format!("/{}", "x".repeat(255)), "data", "ro"), "absolute path"),
            (mount("/x", "data/../etc", "rw"), "plain relative path"),
            (mount("/x", "data/", "rw"), "plain relative path"),
            (mount("/x", "/etc", "ro"), "use \"data\""),
            (mount("/x", "blob:Bad", "ro"), "not a blob name"),
            (mount("/x", "blob:lib", "rw"), "read-only"),
            (mount("/x", "data", "rwx"), "mode"),
            (format!("{}[[mounts]]\npath = \"/x\"\nsource = \"data\"\n", mount("/x", "data", "ro")), "used twice"),
            (format!("{base}stdin = \"../x\"\n"), "stdin"),
            (format!("{base}seed = \"\"\n"), "seed"),
            (format!("{base}[[mounts]]\npath = \"/x\"\n"), "source"),
        ] {
            let err = ContainerConfig::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let clash = "name = \"a\"\nversion = \"1\"\ncapabilities = [\"wasi:data-dir\"]\n\
                     [[mounts]]\npath = \"/data\"\nsource = \"data\"\n";
        assert!(ContainerConfig::from_toml(clash).unwrap_err().to_string().contains("wasi:data-dir"));
        let many: String =
            (0..=MAX_MOUNTS).map(|i| format!("[[mounts]]\npath = \"/m{i}\"\nsource = \"data\"\n")).collect();
        assert!(ContainerConfig::from_toml(&format!("{base}{many}")).unwrap_err().to_string().contains("at most"));

        // In CBOR: an unknown mount kind, a blob mount marked writable.
        let one = ContainerConfig::from_toml(&mount("/x", "blob:lib", "ro")).unwrap().to_cbor();
        let pos = one.windows(3).position(|w| w == [0x0b, 0x81, 0x84]).unwrap();
        let kind = pos + 3 + 3; // array(4), "/x" (3 bytes), then the kind
        let mut bad = one.clone();
        bad[kind] = 2;
        assert!(ContainerConfig::from_cbor(&bad).is_err(), "kind 2");
        let mut bad = one.clone();
        *bad.last_mut().unwrap() = 0xf5;
        assert!(ContainerConfig::from_cbor(&bad).is_err(), "a writable blob");
    }

    #[test]
    fn cbor_must_be_canonical_and_complete() {
        let c = ContainerConfig::from_toml(FULL).unwrap();
        let bytes = c.to_cbor();
        for cut in 0..bytes.len() {
            assert!(ContainerConfig::from_cbor(&bytes[..cut]).is_err());
        }
        // Same content, limits memory encoded as an 8-byte integer.
        let mut long = bytes.clone();
        let pos = long.windows(2).position(|w| w == [0x01, 0x1a]).unwrap();
        long.splice(pos + 1..pos + 6, [0x1b, 0, 0, 0, 0, 0x01, 0, 0, 0]);
        assert!(ContainerConfig::from_cbor(&long).is_err());
    }
}
