//! Starting and stopping a server: the data directory, the database, the
//! blob store, the online key, the bootstrap admin token, the listener and
//! the background tasks (last-seen flush, desired-state generation poll).
//!
//! ```text
//!  <data_dir>/            (0700, created on first start)
//!  ├── gantry.db          SQLite database (default; -wal/-shm beside it)
//!  ├── blobs/sha256/<hex> content-addressed blobs (default local store)
//!  ├── server-key.pem     online ticket-signing key (0600, generated once)
//!  └── admin-token        first admin API token (0600, written once)
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gantry_keys::{FileKeySource, KeyError, KeyId, KeySource as _, KeyType, SigningKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{AppState, Shared, router};
use crate::api_tokens::bootstrap_admin;
use crate::auth::device::DeviceAuth;
use crate::auth::random_bytes;
use crate::blobs::{BlobError, BlobStore};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |error| StartError::Io { path: path.display().to_string(), error }
}

/// A server that is listening.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
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
    let store = Store::open(&config.database_url()).await?;
    let blobs = open_blobs(&config)?;
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err(StartError::Config("tls.cert and tls.key go together".into())),
    };
    let key_file = config.server_key_path();
    let server_key = load_or_create_key(&key_file, &config.server_key_type)?;
    let server_key_id = server_key.key_id();
    let device_key = store.secret("device-token-hmac", || random_bytes::<32>().to_vec()).await?;
    let admin_token_file = data.join("admin-token");
    let admin_token = bootstrap_admin(&store).await.map_err(|e| StartError::Config(e.message))?;
    if let Some(token) = &admin_token {
        write_secret_file(&admin_token_file, token)?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| StartError::Io { path: format!("listen address {}", config.listen), error })?;
    let addr = listener.local_addr().map_err(io(Path::new("listener")))?;
    let state: Shared = Arc::new(AppState {
        config,
        store,
        blobs,
        device_auth: DeviceAuth::new(device_key),
        server_key: Arc::new(server_key),
        fleet: Fleet::default(),
        metrics: Metrics::default(),
    });
    if let Ok(g) = state.store.desired_generation().await {
        state.fleet.set_generation(g);
    }

    let scheme = if tls.is_some() { "https" } else { "http" };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (bg_stop_tx, bg_stop_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(background(state.clone(), bg_stop_rx));
    let app = router(state.clone());
    let served = state.clone();
    let task = tokio::spawn(async move {
        let signal = async move {
            tokio::select! {
                _ = stop_rx => {}
                _ = shutdown => {}
            }
        };
        let result = crate::listener::serve(listener, tls, app, &served.config.limits, signal).await;
        let _ = bg_stop_tx.send(true);
        let _ = background.await;
        flush_last_seen(&served).await;
        served.store.close().await;
        tracing::info!("server stopped");
        result
    });
    Ok(Running {
        addr,
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
    Ok(FileKeySource::open(path)?)
}

fn write_secret_file(path: &Path, secret: &str) -> Result<(), StartError> {
    // Written beside and renamed over, so a stale file (from a database
    // that was reset) is replaced whole and never readable by others.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{secret}\n").as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
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
        if let Err(e) = crate::rollout::evaluate(&s.store, &r.id).await {
            tracing::warn!(rollout = %r.id, error = %e, "rollout evaluation failed");
        }
    }
}

async fn background(s: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut flush =
        tokio::time::interval(s.config.devices.last_seen_flush.0.max(std::time::Duration::from_millis(100)));
    let mut refresh =
        tokio::time::interval(s.config.devices.cache_refresh.0.max(std::time::Duration::from_millis(100)));
    // Rollouts are also moved by reports; this catches what another node or
    // a restart left waiting.
    let mut rollouts = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = flush.tick() => flush_last_seen(&s).await,
            _ = refresh.tick() => match s.store.desired_generation().await {
                Ok(g) => s.fleet.set_generation(g),
                Err(e) => tracing::warn!(error = %e, "cannot read the desired-state generation"),
            },
            _ = rollouts.tick() => evaluate_rollouts(&s).await,
        }
    }
}
