//! File helpers: bounded reads and atomic writes.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Largest envelope or trust root read; real ones are a few KiB.
pub(crate) const MAX_DOCUMENT: u64 = 1 << 20;

/// Reads a small document (envelope, trust root), refusing oversized files.
pub(crate) fn read_document(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(bytes.len() as u64 <= MAX_DOCUMENT, "{} is larger than {} bytes", path.display(), MAX_DOCUMENT);
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over the target. A crash leaves the old
/// file or the new one, never half of either.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Parses RFC 3339 into Unix seconds.
pub(crate) fn parse_time(text: &str) -> Result<u64> {
    let t = humantime::parse_rfc3339_weak(text).with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).context("time before 1970")?.as_secs())
}

/// Now, or the `--at` time.
pub(crate) fn now_or(at: Option<&str>) -> Result<u64> {
    match at {
        Some(t) => parse_time(t),
        None => Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()),
    }
}

/// Unix seconds as RFC 3339.
pub(crate) fn format_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}
