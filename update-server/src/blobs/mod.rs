//! Content-addressed blobs (`sha256/<hex>`) in an object store: a local
//! directory by default, S3-compatible storage with the `s3` feature.
//!
//! A blob's name is its SHA-256, checked while it is written, so a stored
//! blob never changes: its URL can be cached forever, by a CDN too.

pub mod range;

use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The bytes do not hash to the name they were uploaded under.
    #[error("blob content has SHA-256 {actual}, not {expected}")]
    DigestMismatch {
        /// Name it was uploaded under.
        expected: String,
        /// What it hashes to.
        actual: String,
    },
    /// Longer than allowed.
    #[error("blob is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The upload stream failed (client went away, timeout).
    #[error("upload interrupted: {0}")]
    Upload(String),
    /// The configuration cannot be used.
    #[error("blob store configuration: {0}")]
    Config(String),
}

/// Where blobs are kept.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store.
    local: Option<Arc<std::path::PathBuf>>,
}

/// A blob's bytes, possibly a range of them.
pub struct BlobBody {
    /// The bytes, streamed from the store.
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
}

fn path(sha256_hex: &str) -> ObjectPath {
    ObjectPath::from(format!("sha256/{sha256_hex}"))
}

/// Bytes read from a local file per blocking read. object_store's own
/// stream reads 8 KiB per blocking task, which held loopback downloads to a
/// fifth of what a plain static file server does; a larger chunk costs that
/// much memory per download in flight.
const FILE_CHUNK: u64 = 256 * 1024;

/// `range` of a local file, read in [`FILE_CHUNK`]s off the async threads.
fn file_chunks(file: std::fs::File, range: Range<u64>) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    let file = Arc::new(file);
    futures_util::stream::try_unfold(range, move |r| {
        let file = file.clone();
        async move {
            if r.start >= r.end {
                return Ok(None);
            }
            let len = (r.end - r.start).min(FILE_CHUNK) as usize;
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, r.start).map(|()| buf)
            })
            .await
            .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?
            .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?;
            Ok(Some((Bytes::from(chunk), r.start + len as u64..r.end)))
        }
    })
    .boxed()
}

impl BlobStore {
    /// Blobs in a local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|e| BlobError::Config(format!("{}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(BlobStore { store: Arc::new(fs), local: Some(Arc::new(dir.to_path_buf())) })
    }

    /// Blobs in any object store (S3, or an in-memory one for tests).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        BlobStore { store, local: None }
    }

    /// Deletes what uploads cut short left in a local store: object_store
    /// writes an upload to `sha256/<hex>#<n>` and renames it into place
    /// when it completes, so a process killed mid-upload leaves that file
    /// for good. Only files untouched for `older_than` (the upload timeout:
    /// no upload in progress is that old) go, so nodes sharing the
    /// directory never cut each other's uploads. Run at start and every
    /// `older_than`. (S3 keeps cut multipart uploads as invisible parts: a
    /// bucket lifecycle rule removes them; see docs/operations.md.)
    pub async fn remove_stale_uploads(&self, older_than: std::time::Duration) {
        let Some(dir) = self.local.clone() else { return };
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            let Ok(entries) = std::fs::read_dir(dir.join("sha256")) else { return removed };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= older_than));
                if name.to_string_lossy().contains('#') && stale && std::fs::remove_file(entry.path()).is_ok() {
                    removed.push(name.to_string_lossy().into_owned());
                }
            }
            removed
        })
        .await
        .unwrap_or_default();
        if !removed.is_empty() {
            tracing::info!(files = ?removed, "removed what cut uploads left");
        }
    }

    /// The blob's size, if the store has it.
    pub async fn size(&self, sha256_hex: &str) -> Result<Option<u64>, BlobError> {
        match self.store.head(&path(sha256_hex)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams the blob, or `range` of it (end exclusive).
    pub async fn get(&self, sha256_hex: &str, range: Option<std::ops::Range<u64>>) -> Result<BlobBody, BlobError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result = self.store.get_opts(&path(sha256_hex), options).await?;
        let stream = match result.payload {
            GetResultPayload::File(file, _) => file_chunks(file, result.range),
            GetResultPayload::Stream(_) => result.into_stream(),
        };
        Ok(BlobBody { stream })
    }

    /// Stores `bytes` under their own SHA-256; returns the hex name.
    pub async fn put_bytes(&self, bytes: Bytes) -> Result<String, BlobError> {
        let name = hex::encode(Sha256::digest(&bytes));
        if self.size(&name).await?.is_none() {
            self.store.put(&path(&name), PutPayload::from(bytes)).await?;
        }
        Ok(name)
    }

    /// Streams an upload into the store under `sha256_hex`, hashing as it
    /// goes; nothing becomes visible unless the whole upload hashes to its
    /// name and stays within `limit` bytes. Returns the size.
    pub async fn put_stream<S, E>(&self, sha256_hex: &str, mut body: S, limit: u64) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.store.put_multipart(&path(sha256_hex)).await?;
        let mut writer = WriteMultipart::new(upload);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(BlobError::Upload(e.to_string())),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > limit {
                        break Some(BlobError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    writer.write(&chunk);
                }
            }
        };
        let failure = failure.or_else(|| {
            let actual = hex::encode(hasher.finalize());
            (actual != sha256_hex).then(|| BlobError::DigestMismatch { expected: sha256_hex.to_owned(), actual })
        });
        match failure {
            Some(e) => {
                writer.abort().await?;
                Err(e)
            }
            None => {
                writer.finish().await?;
                Ok(size)
            }
        }
    }
}
