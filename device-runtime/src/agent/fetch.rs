//! Content-addressed downloads that start where the device needs them to
//! (HTTP Range) and never take more than they should: the length and
//! digest come from the signed manifest (or the ticket), so a server or
//! proxy that sends endless data, trickles bytes or corrupts them wastes at
//! most the cap and the deadline. Payloads are not kept in files or in RAM:
//! the bytes go straight to a sink (the standby slot, which hashes them as
//! they come), so the RAM a download takes does not grow with the blob.

use std::io::Read as _;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use ureq::http::StatusCode;

use super::client::{Client, retry_after};
use crate::device::DeviceError;

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

/// How a download fails.
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
    /// The server (or a proxy) is busy: `429` or `503`, with the wait its
    /// `Retry-After` asked for, if any.
    #[error("download: HTTP {status}, the server is busy")]
    Busy {
        /// HTTP status.
        status: u16,
        /// Its `Retry-After` in delta-seconds, capped; none if it sent
        /// none, or a date.
        retry_after: Option<Duration>,
    },
    /// The server answered with something else than the blob.
    #[error("download: HTTP {0}")]
    Status(u16),
    /// The connection failed.
    #[error("download: {0}")]
    Transport(String),
    /// The sink refused the bytes (the slot: flash, or a payload that
    /// does not hash to its signed digest).
    #[error("{0}")]
    Sink(#[from] DeviceError),
}

/// Fetches a small blob whole (an envelope: at most `len` bytes, bounded by
/// the caller) and checks its digest.
pub(crate) fn fetch_small(client: &Client, sha256: &[u8; 32], len: u64, caps: &Caps) -> Result<Vec<u8>, FetchError> {
    let mut bytes = Vec::with_capacity(len as usize);
    stream(client, sha256, 0, len, caps, &mut |b| {
        bytes.extend_from_slice(b);
        Ok(())
    })?;
    if Sha256::digest(&bytes)[..] != sha256[..] {
        return Err(FetchError::Digest);
    }
    Ok(bytes)
}

/// Streams bytes `from..len` of `/blobs/sha256/<hex>` into `sink`, in
/// order, never more than `len` in all. The digest is the sink's to check.
pub(crate) fn stream(
    client: &Client,
    sha256: &[u8; 32],
    from: u64,
    len: u64,
    caps: &Caps,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    if from >= len {
        return Ok(());
    }
    let deadline = caps.deadline(len - from);
    let started = Instant::now();
    let mut req = client
        .http()
        .get(client.url(&format!("/blobs/sha256/{}", hex::encode(sha256))))
        .config()
        .timeout_global(Some(deadline))
        .timeout_per_read(Some(caps.stall))
        .build();
    if from > 0 {
        req = req.header("range", format!("bytes={from}-"));
    }
    let mut r = req.call().map_err(|e| map_transport(e, deadline))?;
    // Bytes of the answer to drop before `from`.
    let mut skip = match r.status() {
        StatusCode::PARTIAL_CONTENT => {
            let start = r
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(from) {
                return Err(FetchError::Transport(format!("range answer does not start at byte {from}")));
            }
            0
        }
        // The whole blob (the server or a proxy ignored the range).
        StatusCode::OK => from,
        s @ (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
            return Err(FetchError::Busy { status: s.as_u16(), retry_after: retry_after(r.headers()) });
        }
        s => return Err(FetchError::Status(s.as_u16())),
    };
    let mut at = from;
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
        let dropped = skip.min(n as u64) as usize;
        skip -= dropped as u64;
        let data = &buf[dropped..n];
        let room = (len - at) as usize;
        sink(&data[..data.len().min(room)])?;
        at += data.len().min(room) as u64;
        if data.len() > room {
            return Err(FetchError::TooLong { limit: len });
        }
        if started.elapsed() >= deadline {
            return Err(FetchError::Deadline(deadline));
        }
    }
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
