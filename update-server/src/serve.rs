//! Starting and stopping a server: the data directory, the database, the
//! blob store, the online key, the bootstrap admin token, the listener and
//! the background tasks (last-seen flush, desired-state generation poll).
//!
//! ```text
//!  <data_dir>/            (0700, created on first start)
//!  ├── gantry.db          SQLite database (default; 0600, -wal/-shm beside it)
//!  ├── blobs/sha256/<hex> content-addressed blobs (default local store)
//!  ├── server-secret      the server secret (0600, generated once; crate::secrets)
//!  ├── server-key.pem     online ticket-signing key (0600, generated once)
//!  └── admin-token        first admin API token (0600, written once)
//! ```
//!
//! Every secret file is checked before anything else happens: one that
//! another user could read stops the start (`crate::secrets`).

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gantry_keys::{FileKeySource, KeyError, KeyId, KeySource as _, KeyType, SigningKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{AppState, Shared, router};
use crate::api_tokens::bootstrap_admin;
use crate::auth::device::DeviceAuth;
use crate::blobs::{BlobError, BlobStore};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::secrets::{SecretError, check_private};
use crate::store::{Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or directory could not be used.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store could not be opened.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The server key could not be read or created.
    #[error("server key: {0}")]
    Key(#[from] KeyError),
    /// The configuration asks for something this build cannot do.
    #[error("configuration: {0}")]
    Config(String),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A secret file is readable by others, or cannot be used.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |error| StartError::Io { path: path.display().to_string(), error }
}

/// A server that is listening.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address `/metrics` is served on, when it has one of its own.
    pub metrics_addr: Option<SocketAddr>,
    /// `https` with TLS configured, else `http`.
    pub scheme: &'static str,
    /// The admin token created on this start (first start only).
    pub admin_token: Option<String>,
    /// Where that token was also written.
    pub admin_token_file: PathBuf,
    /// The online key's id (to add to the trust root's `server` role).
    pub server_key_id: KeyId,
    /// The online key's file.
    pub server_key_file: PathBuf,
    /// The shared state (for tests and embedding).
    pub state: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes requests in flight, flushes last-seen
    /// times and closes the database.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops (after [`Running::stop`] or a signal
    /// handled by the `shutdown` future given to [`start`]).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Opens or creates everything under the configured data directory, binds
/// the listener and serves until [`Running::stop`] or `shutdown` resolves.
pub async fn start(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let data = config.data_dir.clone();
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&data).map_err(io(&data))?;
    let key_file = config.server_key_path();
    let admin_token_file = data.join("admin-token");
    check_private(&key_file)?;
    check_private(&admin_token_file)?;
    if let Some(tls_key) = &config.tls.key {
        crate::secrets::check_not_public(tls_key)?;
    }
    let secret = crate::secrets::load_or_create_secret(&config.secret_path())?;
    let url = config.database_url();
    if url.expose().starts_with("sqlite:")
        && let Some(file) = crate::secrets::sqlite_file(url.expose())
    {
        crate::secrets::prepare_sqlite_file(&file)?;
    }
    let store = Store::open(url.expose()).await?;
    let blobs = open_blobs(&config)?;
    blobs.remove_stale_uploads(config.limits.upload_timeout.0).await;
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err(StartError::Config("tls.cert and tls.key go together".into())),
    };
    let server_key = load_or_create_key(&key_file, &config.server_key_type)?;
    let server_key_id = server_key.key_id();
    let admin_token = bootstrap_admin(&store).await.map_err(|e| StartError::Config(e.message))?;
    if let Some(token) = &admin_token {
        crate::secrets::write_secret_file(&admin_token_file, token)?;
    }
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|error| StartError::Io { path: format!("listen address {addr}"), error })
    };
    let listener = bind(config.listen).await?;
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let addr = listener.local_addr().map_err(io(Path::new("listener")))?;
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(io(Path::new("metrics listener")))?),
        None => None,
    };
    let state: Shared = Arc::new(AppState {
        limiters: Limiters::new(&config.rate_limits),
        config,
        store,
        blobs,
        device_auth: DeviceAuth::new(crate::secrets::device_token_key(&secret)),
        server_key: Arc::new(server_key),
        fleet: Fleet::default(),
        metrics: Metrics::default(),
    });
    if let Ok(g) = state.store.desired_generation().await {
        state.fleet.set_generation(g);
    }

    let scheme = if tls.is_some() { "https" } else { "http" };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(background(state.clone(), closing.clone()));
    let app = router(state.clone());
    let served = state.clone();
    let task = tokio::spawn(async move {
        let closed = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|c| *c).await;
        };
        let limits = served.config.limits.clone();
        let metrics = metrics_listener.map(|l| {
            let (app, limits, closed) =
                (crate::api::metrics_router(served.clone()), limits.clone(), closed(closing.clone()));
            tokio::spawn(async move { crate::listener::serve(l, None, app, &limits, closed).await })
        });
        let signal = async move {
            tokio::select! {
                _ = stop_rx => {}
                _ = shutdown => {}
            }
            tracing::info!("shutting down: finishing requests in flight");
            let _ = closing_tx.send(true);
        };
        let (result, ()) = tokio::join!(crate::listener::serve(listener, tls, app, &limits, closed(closing)), signal);
        if let Some(m) = metrics
            && let Ok(Err(e)) = m.await
        {
            tracing::warn!(error = %e, "metrics listener");
        }
        let _ = background.await;
        flush_last_seen(&served).await;
        served.store.close().await;
        tracing::info!("server stopped");
        result
    });
    Ok(Running {
        addr,
        metrics_addr,
        scheme,
        admin_token,
        admin_token_file,
        server_key_id,
        server_key_file: key_file,
        state,
        stop: Some(stop_tx),
        task,
    })
}

fn open_blobs(config: &Config) -> Result<BlobStore, StartError> {
    match config.blobs.backend.as_str() {
        "local" => Ok(BlobStore::local(&config.blob_dir())?),
        "s3" => open_s3(config),
        other => Err(StartError::Config(format!("blobs.backend {other:?}: use local or s3"))),
    }
}

#[cfg(feature = "s3")]
fn open_s3(config: &Config) -> Result<BlobStore, StartError> {
    let b = &config.blobs;
    let bucket = b.bucket.as_deref().ok_or_else(|| StartError::Config("blobs.bucket is required for s3".into()))?;
    // Credentials come from the standard AWS_* environment variables.
    let mut builder =
        object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_allow_http(b.allow_http);
    if let Some(endpoint) = &b.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &b.region {
        builder = builder.with_region(region);
    }
    let s3 = builder.build().map_err(BlobError::from)?;
    Ok(BlobStore::from_store(Arc::new(s3)))
}

#[cfg(not(feature = "s3"))]
fn open_s3(_: &Config) -> Result<BlobStore, StartError> {
    Err(StartError::Config("this gantry-server was built without S3 support; rebuild with `--features s3`".into()))
}

fn load_or_create_key(path: &Path, key_type: &str) -> Result<FileKeySource, StartError> {
    if !path.exists() {
        let t = match key_type {
            "ed25519" => KeyType::Ed25519,
            "p256" => KeyType::P256,
            other => return Err(StartError::Config(format!("server_key_type {other:?}: use ed25519 or p256"))),
        };
        SigningKey::generate(t).write_pkcs8_file(path)?;
        tracing::info!(path = %path.display(), "generated the server's online key");
    }
    check_private(path)?;
    Ok(FileKeySource::open(path)?)
}

async fn flush_last_seen(s: &Shared) {
    let batch = s.fleet.take_last_seen();
    let n = batch.len() as u64;
    match s.store.flush_last_seen(&batch).await {
        Ok(()) => {
            s.metrics.last_seen_flushed.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, rows = n, "last-seen flush failed; retrying at the next one");
            for (id, at) in batch {
                s.fleet.touch(&id, at);
            }
        }
    }
}

async fn evaluate_rollouts(s: &Shared) {
    let running = match s.store.rollouts(Some("running"), 1000).await {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "cannot list running rollouts"),
    };
    for r in running {
        if let Err(e) = crate::rollout::evaluate(&s.store, &r.id, s.config.rollouts.stuck_after.0).await {
            tracing::warn!(rollout = %r.id, error = %e, "rollout evaluation failed");
        }
    }
}

/// How often expired rate-limit state is dropped.
const LIMITER_PRUNE: Duration = Duration::from_secs(60);
/// How often reports older than `reports.max_age` are deleted.
const REPORT_RETENTION: Duration = Duration::from_secs(3600);

async fn background(s: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = |d: Duration| tokio::time::interval(d.max(Duration::from_millis(100)));
    let mut flush = every(s.config.devices.last_seen_flush.0);
    let mut refresh = every(s.config.devices.cache_refresh.0);
    // Rollouts are also moved by reports; this catches what another node or
    // a restart left waiting, and devices that went quiet mid-update.
    let mut rollouts = every(Duration::from_secs(5));
    let mut prune = every(LIMITER_PRUNE);
    let mut retention = every(REPORT_RETENTION);
    let mut uploads = every(s.config.limits.upload_timeout.0);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = flush.tick() => flush_last_seen(&s).await,
            _ = refresh.tick() => match s.store.desired_generation().await {
                Ok(g) => s.fleet.set_generation(g),
                Err(e) => tracing::warn!(error = %e, "cannot read the desired-state generation"),
            },
            _ = rollouts.tick() => evaluate_rollouts(&s).await,
            _ = prune.tick() => s.limiters.prune(),
            _ = retention.tick() => {
                let before = crate::store::now().saturating_sub(s.config.reports.max_age.0.as_secs() as i64);
                match s.store.delete_reports_before(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "reports past reports.max_age deleted"),
                    Err(e) => tracing::warn!(error = %e, "report retention failed; retrying in an hour"),
                }
            }
            _ = uploads.tick() => s.blobs.remove_stale_uploads(s.config.limits.upload_timeout.0).await,
        }
    }
}
