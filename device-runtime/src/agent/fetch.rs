//! Content-addressed downloads that resume where they stopped (HTTP Range)
//! and never take more than they should: the length and digest come from
//! the signed manifest (or the ticket), so a server or proxy that sends
//! endless data, trickles bytes or corrupts them wastes at most the cap
//! and the deadline, and nothing unverified is ever handed on.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use ureq::http::StatusCode;

use super::AgentError;
use super::client::Client;

/// Time limits of one download.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Deadline of a download, whatever its size…
    pub base_time: Duration,
    /// …plus its size at this rate (bytes per second): a server slower
    /// than this cannot keep the device busy for long.
    pub min_rate: u64,
    /// Longest wait for the next bytes.
    pub stall: Duration,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { base_time: Duration::from_secs(30), min_rate: 16 * 1024, stall: Duration::from_secs(15) }
    }
}

impl Caps {
    fn deadline(&self, len: u64) -> Duration {
        self.base_time + Duration::from_secs(len / self.min_rate.max(1))
    }
}

/// How a download fails (the partial file is kept for a resume unless the
/// bytes are known bad).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// More bytes than the signed length.
    #[error("the server sent more than the {limit} bytes expected")]
    TooLong {
        /// The expected length.
        limit: u64,
    },
    /// The bytes do not hash to the expected digest.
    #[error("the downloaded bytes do not match their digest")]
    Digest,
    /// The deadline passed.
    #[error("download not done within {0:?}")]
    Deadline(Duration),
    /// The server answered with something else than the blob.
    #[error("download: HTTP {0}")]
    Status(u16),
    /// The connection failed.
    #[error("download: {0}")]
    Transport(String),
    /// Local storage.
    #[error("download: {0}")]
    Io(#[from] std::io::Error),
}

/// Where downloads wait, one `<sha256>.part` file per blob.
pub(crate) struct Downloads {
    dir: PathBuf,
}

impl Downloads {
    pub(crate) fn new(dir: &Path) -> Result<Downloads, AgentError> {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::Io(format!("{}: {e}", dir.display())))?;
        Ok(Downloads { dir: dir.to_owned() })
    }

    fn part(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.part", hex::encode(sha256)))
    }

    /// Forgets a blob's partial or finished file.
    pub(crate) fn discard(&self, sha256: &[u8; 32]) {
        let _ = std::fs::remove_file(self.part(sha256));
    }

    /// Removes every file but those of `keep`.
    pub(crate) fn retain(&self, keep: &[[u8; 32]]) {
        let keep: Vec<String> = keep.iter().map(|k| format!("{}.part", hex::encode(k))).collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if !keep.iter().any(|k| e.file_name().to_str() == Some(k)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Fetches `/blobs/sha256/<hex>` of exactly `len` bytes, resuming a
    /// partial file; returns the verified bytes. `progress` hears the
    /// bytes held so far.
    pub(crate) fn fetch(
        &self,
        client: &Client,
        sha256: &[u8; 32],
        len: u64,
        caps: &Caps,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<u8>, FetchError> {
        let path = self.part(sha256);
        let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&path)?;
        let mut have = file.metadata()?.len();
        if have > len {
            file.set_len(0)?;
            have = 0;
        }
        if have < len {
            let deadline = caps.deadline(len - have);
            let result = download(client, &mut file, sha256, have, len, caps, deadline, progress);
            if let Err(e) = result {
                if matches!(e, FetchError::TooLong { .. }) {
                    // What came is not trusted; keep only the signed length.
                    file.set_len(len.min(file.metadata()?.len()))?;
                }
                return Err(e);
            }
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0))?;
        file.take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len || Sha256::digest(&bytes)[..] != sha256[..] {
            drop(bytes);
            let _ = std::fs::remove_file(&path);
            return Err(FetchError::Digest);
        }
        Ok(bytes)
    }
}

/// One HTTP request for the missing bytes `have..len`, appended to `file`.
#[allow(clippy::too_many_arguments)]
fn download(
    client: &Client,
    file: &mut File,
    sha256: &[u8; 32],
    have: u64,
    len: u64,
    caps: &Caps,
    deadline: Duration,
    progress: &mut dyn FnMut(u64),
) -> Result<(), FetchError> {
    let started = Instant::now();
    let mut req = client
        .http()
        .get(client.url(&format!("/blobs/sha256/{}", hex::encode(sha256))))
        .config()
        .timeout_global(Some(deadline))
        .timeout_per_read(Some(caps.stall))
        .build();
    if have > 0 {
        req = req.header("range", format!("bytes={have}-"));
    }
    let mut r = req.call().map_err(|e| map_transport(e, deadline))?;
    let mut at = match r.status() {
        StatusCode::PARTIAL_CONTENT => {
            let start = r
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(have) {
                return Err(FetchError::Transport(format!("range answer does not start at byte {have}")));
            }
            have
        }
        // The whole blob (the server or a proxy ignored the range).
        StatusCode::OK => 0,
        // The range is past the end: the partial file is not a prefix of
        // the blob; start again.
        StatusCode::RANGE_NOT_SATISFIABLE => {
            file.set_len(0)?;
            return Err(FetchError::Status(416));
        }
        s => return Err(FetchError::Status(s.as_u16())),
    };
    file.set_len(at)?;
    file.seek(SeekFrom::Start(at))?;
    let mut body = r.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = body.read(&mut buf).map_err(|e| {
            if started.elapsed() >= deadline {
                FetchError::Deadline(deadline)
            } else {
                FetchError::Transport(e.to_string())
            }
        })?;
        if n == 0 {
            break;
        }
        let room = (len - at) as usize;
        file.write_all(&buf[..n.min(room)])?;
        at += n.min(room) as u64;
        progress(at);
        if n > room {
            return Err(FetchError::TooLong { limit: len });
        }
        if started.elapsed() >= deadline {
            return Err(FetchError::Deadline(deadline));
        }
    }
    file.flush()?;
    if at < len {
        return Err(FetchError::Transport(format!("the connection ended after {at} of {len} bytes")));
    }
    Ok(())
}

fn map_transport(e: ureq::Error, deadline: Duration) -> FetchError {
    match e {
        ureq::Error::Timeout(_) => FetchError::Deadline(deadline),
        e => FetchError::Transport(e.to_string()),
    }
}
