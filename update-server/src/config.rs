//! Configuration: built-in defaults, then a TOML file, then `GANTRY_*`
//! environment variables, then command-line flags (later wins). Every key
//! and variable is listed in docs/operations.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        error: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{path}: {error}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        error: Box<toml::de::Error>,
    },
    /// An environment variable has an invalid value.
    #[error("environment variable {name}: {reason}")]
    Env {
        /// Variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// A duration written as humantime (`"90s"`, `"5m"`, `"1h 30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Span).map_err(serde::de::Error::custom)
    }
}

impl Span {
    /// Whole seconds.
    pub fn secs(self) -> u64 {
        self.0.as_secs()
    }
}

/// A database URL. Its `Debug` and `Display` hide the password, so the
/// configuration can be printed and logged; [`DatabaseUrl::expose`] gives
/// the URL to connect with.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(url)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

/// `url` with the password of its user part (`scheme://user:PASSWORD@host`)
/// and the value of any `password=` / `sslpassword=` query parameter
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?', '#']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") => {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

/// A rate: `per_minute` requests on average, up to `burst` at once
/// (a token bucket). `per_minute = 0` turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per minute; 0: no limit.
    pub per_minute: u32,
    /// Requests allowed at once before the sustained rate applies (at least 1).
    pub burst: u32,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite database, blobs, server key and bootstrap token
    /// live by default.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://<data_dir>/gantry.db`.
    pub database_url: Option<DatabaseUrl>,
    /// The server's online ticket-signing key (PKCS#8 PEM, mode 0600);
    /// default `<data_dir>/server-key.pem`, generated on first start.
    pub server_key: Option<PathBuf>,
    /// Key type generated on first start: `ed25519` or `p256`.
    pub server_key_type: String,
    /// The server secret (32 random bytes, hex; 0600), the key the
    /// device-token HMAC key is derived from; default
    /// `<data_dir>/server-secret`, generated on first start. Every node of
    /// one fleet needs the same file.
    pub secret_file: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Blob storage.
    pub blobs: BlobConfig,
    /// Device protocol timing.
    pub devices: DeviceConfig,
    /// Request limits.
    pub limits: Limits,
    /// TLS; plain HTTP unless both files are set.
    pub tls: TlsConfig,
    /// Per-source and per-device request rates.
    pub rate_limits: RateLimits,
    /// What is kept of device reports.
    pub reports: ReportConfig,
    /// Bounds on enrollment tokens.
    pub enrollment: EnrollmentConfig,
    /// Rollout timing.
    pub rollouts: RolloutConfig,
    /// Who may read `/metrics`.
    pub metrics: MetricsConfig,
}

/// Request rates; beyond one, the answer is `429` with `Retry-After`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Where the client address comes from behind a reverse proxy or load
    /// balancer: the name of a header it sets (e.g. `x-forwarded-for`; the
    /// last address in it is used). Empty: the TCP peer. Set it only when
    /// every request comes through such a proxy, or clients choose their
    /// own address.
    pub source_header: String,
    /// Device challenges, logins and enrollments from one source address
    /// (IPv6: one /64).
    pub device_auth_per_source: Rate,
    /// Operator API requests from one source address.
    pub operator_per_source: Rate,
    /// Check-ins of one device.
    pub checkins_per_device: Rate,
    /// Reports of one device.
    pub reports_per_device: Rate,
}

/// What is kept of device reports.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Newest reports kept per device; older ones are deleted as new ones
    /// arrive.
    pub max_per_device: u32,
    /// Reports older than this are deleted (hourly).
    pub max_age: Span,
    /// Streams a device may report on (rows of its confirmed state); a
    /// report on one more is refused.
    pub max_streams_per_device: u32,
}

/// Bounds on what an enrollment token may grant.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// Most devices one token may enroll.
    pub max_uses: u32,
    /// Longest lifetime of a token.
    pub max_lifetime: Span,
}

/// Rollout timing.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// A device of a rollout whose last report is `downloading`,
    /// `downloaded` or `installing` and that has reported nothing for this
    /// long counts as failed (`stuck`) for the error threshold.
    pub stuck_after: Span,
}

/// Who may read `/metrics`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` on this address only (and no longer on the API's).
    pub listen: Option<SocketAddr>,
    /// Require an API token (any role) to read `/metrics`.
    pub require_token: bool,
}

/// TLS certificate and key (PEM). Both, or neither.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// Private key of the leaf certificate.
    pub key: Option<PathBuf>,
}

/// Where blobs are kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// `local` (a directory) or `s3` (needs the `s3` build feature).
    pub backend: String,
    /// Directory for `local`; default `<data_dir>/blobs`.
    pub dir: Option<PathBuf>,
    /// S3 bucket.
    pub bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible stores (MinIO, Ceph, R2...).
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (test setups only).
    pub allow_http: bool,
}

/// Device protocol timing.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Time between check-ins the server asks for.
    pub poll_interval: Span,
    /// Up to this much is added at random to each poll interval, so a
    /// fleet that rebooted together does not poll together.
    pub poll_jitter: Span,
    /// Lifetime of a device bearer token.
    pub token_ttl: Span,
    /// Lifetime of a deployment ticket.
    pub ticket_ttl: Span,
    /// Lifetime of a login challenge.
    pub challenge_ttl: Span,
    /// If set, login proofs whose device clock is further off are refused.
    pub max_clock_skew: Option<Span>,
    /// How often last-seen times are written to the database.
    pub last_seen_flush: Span,
    /// How often this node polls the database for desired-state changes
    /// made by other nodes.
    pub cache_refresh: Span,
}

/// Bounds on what one request may cost.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Time to answer one API request (blob bodies stream after it).
    pub request_timeout: Span,
    /// Time to receive one blob upload.
    pub upload_timeout: Span,
    /// Time a client has to send a request's headers (or finish the TLS
    /// handshake); also how long an idle keep-alive connection stays open.
    pub header_timeout: Span,
    /// Most connections served at once; beyond it, new ones wait to be
    /// accepted.
    pub max_connections: usize,
    /// Largest JSON body.
    pub max_json_bytes: usize,
    /// Largest release envelope or trust root.
    pub max_envelope_bytes: usize,
    /// Largest blob.
    pub max_blob_bytes: u64,
    /// After SIGTERM, how long requests in flight (downloads included) may
    /// take to finish; then their connections are cut.
    pub shutdown_grace: Span,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("gantry-data"),
            database_url: None,
            server_key: None,
            server_key_type: "ed25519".into(),
            secret_file: None,
            log_format: LogFormat::Text,
            blobs: BlobConfig::default(),
            devices: DeviceConfig::default(),
            limits: Limits::default(),
            tls: TlsConfig::default(),
            rate_limits: RateLimits::default(),
            reports: ReportConfig::default(),
            enrollment: EnrollmentConfig::default(),
            rollouts: RolloutConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            source_header: String::new(),
            // A site behind one NAT logs its devices in from one address:
            // ten a second sustained, 300 at once.
            device_auth_per_source: Rate { per_minute: 600, burst: 300 },
            operator_per_source: Rate { per_minute: 1200, burst: 600 },
            // A device polls every few minutes; this leaves room for retries.
            checkins_per_device: Rate { per_minute: 60, burst: 20 },
            // Progress and results of a few updates at once.
            reports_per_device: Rate { per_minute: 120, burst: 60 },
        }
    }
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            max_per_device: 1000,
            max_age: Span(Duration::from_secs(90 * 24 * 3600)),
            max_streams_per_device: gantry_protocol::MAX_INVENTORY as u32,
        }
    }
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        EnrollmentConfig { max_uses: 10_000, max_lifetime: Span(Duration::from_secs(30 * 24 * 3600)) }
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig { stuck_after: Span(Duration::from_secs(3600)) }
    }
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig { backend: "local".into(), dir: None, bucket: None, endpoint: None, region: None, allow_http: false }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let s = |secs| Span(Duration::from_secs(secs));
        DeviceConfig {
            poll_interval: s(300),
            poll_jitter: s(60),
            token_ttl: s(900),
            ticket_ttl: s(3600),
            challenge_ttl: s(60),
            max_clock_skew: None,
            last_seen_flush: s(10),
            cache_refresh: s(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Span(Duration::from_secs(30)),
            upload_timeout: Span(Duration::from_secs(600)),
            header_timeout: Span(Duration::from_secs(10)),
            max_connections: 10_000,
            max_json_bytes: 64 * 1024,
            max_envelope_bytes: 1024 * 1024,
            max_blob_bytes: 1 << 30,
            shutdown_grace: Span(Duration::from_secs(30)),
        }
    }
}

impl Config {
    /// Defaults, overlaid with `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| ConfigError::Read { path: path.display().to_string(), error })?;
                toml::from_str(&text)
                    .map_err(|error| ConfigError::Parse { path: path.display().to_string(), error: Box::new(error) })?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies the `GANTRY_*` variables `get` returns.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("GANTRY_LISTEN") {
            self.listen =
                v.parse().map_err(|e| ConfigError::Env { name: "GANTRY_LISTEN", reason: format!("{v:?}: {e}") })?;
        }
        if let Some(v) = get("GANTRY_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("GANTRY_DATABASE_URL") {
            self.database_url = Some(v.into());
        }
        if let Some(v) = get("GANTRY_SERVER_KEY") {
            self.server_key = Some(v.into());
        }
        if let Some(v) = get("GANTRY_SECRET_FILE") {
            self.secret_file = Some(v.into());
        }
        if let Some(v) = get("GANTRY_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError::Env { name: "GANTRY_LOG_FORMAT", reason: "use text or json".into() }),
            };
        }
        if let Some(v) = get("GANTRY_BLOBS_BACKEND") {
            self.blobs.backend = v;
        }
        if let Some(v) = get("GANTRY_BLOBS_DIR") {
            self.blobs.dir = Some(v.into());
        }
        if let Some(v) = get("GANTRY_S3_BUCKET") {
            self.blobs.bucket = Some(v);
        }
        if let Some(v) = get("GANTRY_S3_ENDPOINT") {
            self.blobs.endpoint = Some(v);
        }
        if let Some(v) = get("GANTRY_S3_REGION") {
            self.blobs.region = Some(v);
        }
        if let Some(v) = get("GANTRY_TLS_CERT") {
            self.tls.cert = Some(v.into());
        }
        if let Some(v) = get("GANTRY_TLS_KEY") {
            self.tls.key = Some(v.into());
        }
        if let Some(v) = get("GANTRY_POLL_INTERVAL") {
            self.devices.poll_interval = Span(
                humantime::parse_duration(&v)
                    .map_err(|e| ConfigError::Env { name: "GANTRY_POLL_INTERVAL", reason: e.to_string() })?,
            );
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl(format!("sqlite://{}", self.data_dir.join("gantry.db").display())))
    }

    /// The server secret's file in effect.
    pub fn secret_path(&self) -> PathBuf {
        self.secret_file.clone().unwrap_or_else(|| self.data_dir.join("server-secret"))
    }

    /// The server key path in effect.
    pub fn server_key_path(&self) -> PathBuf {
        self.server_key.clone().unwrap_or_else(|| self.data_dir.join("server-key.pem"))
    }

    /// The local blob directory in effect.
    pub fn blob_dir(&self) -> PathBuf {
        self.blobs.dir.clone().unwrap_or_else(|| self.data_dir.join("blobs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let c: Config = toml::from_str(
            "listen = \"0.0.0.0:9000\"\n[devices]\npoll_interval = \"2m\"\n[limits]\nmax_blob_bytes = 1024\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.devices.poll_interval.secs(), 120);
        assert_eq!(c.devices.poll_jitter.secs(), 60);
        assert_eq!(c.limits.max_blob_bytes, 1024);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err(), "unknown keys are refused");
        let mut c = Config::default();
        c.apply_env(|n| (n == "GANTRY_DATA_DIR").then(|| "/srv/gantry".to_owned())).unwrap();
        assert_eq!(c.database_url().expose(), "sqlite:///srv/gantry/gantry.db");
        assert_eq!(c.server_key_path(), PathBuf::from("/srv/gantry/server-key.pem"));
        assert!(c.apply_env(|n| (n == "GANTRY_LISTEN").then(|| "nope".to_owned())).is_err());
    }

    #[test]
    fn passwords_are_never_printed() {
        let url = "postgres://gantry:s3cr%40t@db.internal:5432/gantry?sslmode=require&password=other";
        let mut c = Config::default();
        c.apply_env(|n| (n == "GANTRY_DATABASE_URL").then(|| url.to_owned())).unwrap();
        let printed = format!("{c:?} {c:#?} {}", c.database_url());
        assert!(!printed.contains("s3cr") && !printed.contains("other"), "{printed}");
        assert!(printed.contains("postgres://gantry:***@db.internal:5432/gantry?sslmode=require&password=***"));
        assert_eq!(c.database_url().expose(), url);
        // No password, nothing to hide; an `@` in the path is not a user part.
        assert_eq!(redact_url("postgres://gantry@db/gantry"), "postgres://gantry@db/gantry");
        assert_eq!(redact_url("sqlite:///srv/a:b@c/gantry.db"), "sqlite:///srv/a:b@c/gantry.db");
        assert_eq!(redact_url("postgres://u:p@h/d"), "postgres://u:***@h/d");
    }
}
