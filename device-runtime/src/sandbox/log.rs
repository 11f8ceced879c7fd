//! A container's log on disk: capped by its signed `limits.log` and rotated.
//!
//! stdout, stderr and `gantry.log` all write through one [`LogWriter`]. The
//! log has two generations, `log` (current) and `log.1` (previous), each
//! at most half of `limits.log`: when a write would take `log` past its
//! half, the bytes that fit are written, `log` is renamed over `log.1` and a
//! fresh `log` takes the rest. A crash at any point (kill -9 included)
//! leaves at most these two files, each within its half, because no write
//! ever goes past the half and a rename is atomic.
//!
//! A write that fails (a full disk) never reaches the guest: the bytes are
//! dropped and counted in [`LogWriter::dropped`], for the supervisor to
//! report, and the container goes on.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The log of one container, shared by its stdout, stderr and `gantry.log`.
#[derive(Clone)]
pub(crate) struct LogWriter {
    inner: Arc<Mutex<Generations>>,
    dropped: Arc<AtomicU64>,
}

/// The two files and where the current one ends.
struct Generations {
    current: PathBuf,
    previous: PathBuf,
    /// Bytes each generation may hold: half of `limits.log`.
    share: u64,
    /// The current generation, `None` until it could be opened.
    file: Option<File>,
    /// Its length.
    len: u64,
}

impl LogWriter {
    /// The log `current` (its previous generation: [`previous`]) capped at
    /// `limit` bytes in all. Generations left above their share by an older
    /// runtime (which had no cap) are cut to it here, so the cap holds from
    /// the first write on. Bytes dropped are added to `dropped`.
    pub(crate) fn open(current: &Path, limit: u64, dropped: Arc<AtomicU64>) -> LogWriter {
        let share = (limit / 2).max(1);
        let (current, previous) = (current.to_owned(), previous(current));
        let mut g = Generations { current, previous, share, file: None, len: 0 };
        g.reopen();
        if g.len > share {
            g.rotate();
        }
        if std::fs::metadata(&g.previous).is_ok_and(|m| m.len() > share) {
            // Cut in place: that frees space and needs none. If even that
            // fails, the next rotation replaces the file.
            let _ = OpenOptions::new().write(true).open(&g.previous).and_then(|f| f.set_len(share));
        }
        LogWriter { inner: Arc::new(Mutex::new(g)), dropped }
    }

    /// Appends `bytes`, rotating as needed; what cannot be written is
    /// dropped and counted, never reported to the guest.
    pub(crate) fn write(&self, bytes: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let lost = g.write(bytes);
        if lost > 0 {
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        }
    }
}

/// The previous generation of the log `current`: `current.1`.
pub(crate) fn previous(current: &Path) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

impl Generations {
    /// Opens the current generation for appending, if it can be.
    fn reopen(&mut self) {
        self.file = OpenOptions::new().create(true).append(true).open(&self.current).ok();
        self.len = self.file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
    }

    /// Makes the current generation the previous one and starts a new one.
    fn rotate(&mut self) {
        self.file = None;
        if std::fs::rename(&self.current, &self.previous).is_err() {
            // Cannot rename (it should not happen in our own directory):
            // start the current generation over rather than exceed the cap.
            let _ = OpenOptions::new().write(true).open(&self.current).and_then(|f| f.set_len(0));
        }
        self.reopen();
    }

    /// Writes `bytes`; returns how many were dropped.
    fn write(&mut self, mut bytes: &[u8]) -> usize {
        // At most the last `2 * share` bytes can be kept: skip the rest
        // rather than write it only to rotate it away (not a loss).
        let keep = usize::try_from(self.share.saturating_mul(2)).unwrap_or(usize::MAX);
        bytes = &bytes[bytes.len().saturating_sub(keep)..];
        while !bytes.is_empty() {
            if self.file.is_none() {
                self.reopen();
            }
            if self.len >= self.share {
                self.rotate();
            }
            let room = usize::try_from(self.share.saturating_sub(self.len)).unwrap_or(usize::MAX);
            let Some(file) = self.file.as_mut().filter(|_| room > 0) else { return bytes.len() };
            match file.write(&bytes[..bytes.len().min(room)]) {
                Ok(n) if n > 0 => {
                    self.len += n as u64;
                    bytes = &bytes[n..];
                }
                // A full disk (or any other failure): drop the rest, and
                // reopen at the next write, where the length is read again.
                _ => {
                    self.file = None;
                    return bytes.len();
                }
            }
        }
        0
    }
}

impl IsTerminal for LogWriter {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogWriter {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogWriter {
    async fn ready(&mut self) {}
}

/// Most bytes the guest is told it may write at once.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for LogWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        LogWriter::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for LogWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        LogWriter::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(dir: &Path) -> (u64, u64) {
        let len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        (len(dir.join("log")), len(dir.join("log.1")))
    }

    #[test]
    fn rotates_within_the_cap_and_keeps_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let log = LogWriter::open(&dir.path().join("log"), 100, dropped.clone());
        for i in 0..30u8 {
            log.write(&[b'a' + (i % 26); 7]);
            let (cur, prev) = sizes(dir.path());
            assert!(cur <= 50 && prev <= 50, "{cur} + {prev} after write {i}");
        }
        // 210 bytes written: 200 in four generations; the last two are kept.
        assert_eq!(sizes(dir.path()), (10, 50));
        let both = || ["log.1", "log"].map(|f| std::fs::read(dir.path().join(f)).unwrap()).concat();
        assert!(both().ends_with(&[b'a' + 29 % 26; 7]), "the newest bytes are last");
        // One write larger than the whole cap: its newest bytes are kept.
        let big: Vec<u8> = (0..250u8).collect();
        log.write(&big);
        let kept = both();
        assert!(kept.len() >= 50 && big.ends_with(&kept), "{kept:?}");
        assert_eq!(dropped.load(Ordering::Relaxed), 0, "rotation is not a loss");
    }

    #[test]
    fn what_cannot_be_written_is_dropped_and_counted() {
        // Every write to /dev/full fails with ENOSPC, like a full disk.
        let dropped = Arc::new(AtomicU64::new(0));
        let log = LogWriter::open(Path::new("/dev/full"), 100, dropped.clone());
        log.write(b"hello\n");
        log.write(b"again\n");
        assert_eq!(dropped.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn an_uncapped_log_from_an_older_runtime_is_cut_to_the_cap_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("log"), vec![b'x'; 1000]).unwrap();
        std::fs::write(dir.path().join("log.1"), vec![b'y'; 1000]).unwrap();
        let log = LogWriter::open(&dir.path().join("log"), 100, Arc::default());
        assert!(sizes(dir.path()).0 + sizes(dir.path()).1 <= 100, "{:?}", sizes(dir.path()));
        log.write(b"hello\n");
        let (cur, prev) = sizes(dir.path());
        assert!(cur <= 50 && prev <= 50, "{cur} {prev}");
    }
}
