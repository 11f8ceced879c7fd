//! Directory trees as blobs: a canonical tar archive, so that one tree has
//! exactly one archive and a device can check a tree it unpacked against
//! the signed digest by archiving it again.
//!
//! The canonical form (docs/formats.md, *Blob trees*): GNU tar, the tree's
//! entries depth first, each directory's entries sorted by name bytes, a
//! directory before its contents; directories as `path/` with mode 0755,
//! regular files with mode 0755 if any execute bit is set and 0644
//! otherwise; uid, gid and mtime 0, no user or group names; GNU long-name
//! entries for paths past 100 bytes; two zero blocks at the end. Only
//! regular files and directories; names are UTF-8, at most
//! [`MAX_TREE_PATH`] bytes per path and [`MAX_TREE_ENTRIES`] entries.
//!
//! [`unpack`] refuses an archive that is not canonical (it archives what
//! it unpacked again and compares digests), that holds anything but files
//! and directories, or a path that could leave the destination.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Most entries (files and directories) in one tree.
pub const MAX_TREE_ENTRIES: usize = 100_000;
/// Longest path of an entry, in bytes.
pub const MAX_TREE_PATH: usize = 1024;

/// Why a tree cannot be archived or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The file system failed.
    #[error("{path}: {error}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        error: io::Error,
    },
    /// The tree or the archive holds what a blob tree may not.
    #[error("{0}")]
    Refused(String),
    /// The archive unpacked, but is not the canonical archive of what it
    /// holds, or not the one signed.
    #[error("the archive is not the canonical archive of its tree, or not the one signed")]
    NotCanonical,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |error| TreeError::Io { path: path.to_owned(), error }
}

fn refused(why: impl Into<String>) -> TreeError {
    TreeError::Refused(why.into())
}

/// An entry of a tree, in canonical order.
struct Entry {
    /// Its path in the archive (no trailing `/`).
    rel: String,
    host: PathBuf,
    meta: fs::Metadata,
}

/// A directory's entry names, sorted by bytes, last first (to pop).
fn names(dir: &Path) -> Result<Vec<String>, TreeError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let entry = entry.map_err(at(dir))?;
        names.push(entry.file_name().into_string().map_err(|n| refused(format!("{n:?}: not a UTF-8 name")))?);
    }
    names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

/// The entries under `dir`, depth first, each directory's sorted by name
/// bytes; links and special files refused.
fn walk(dir: &Path) -> Result<Vec<Entry>, TreeError> {
    if !fs::symlink_metadata(dir).map_err(at(dir))?.is_dir() {
        return Err(refused(format!("{}: not a directory (a link?)", dir.display())));
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new(), names(dir)?)];
    while let Some((host, rel, pending)) = stack.last_mut() {
        let Some(name) = pending.pop() else {
            stack.pop();
            continue;
        };
        let rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let host = host.join(&name);
        if rel.len() + 1 > MAX_TREE_PATH {
            return Err(refused(format!("{rel}: a path longer than {MAX_TREE_PATH} bytes")));
        }
        if out.len() == MAX_TREE_ENTRIES {
            return Err(refused(format!("more than {MAX_TREE_ENTRIES} entries")));
        }
        let meta = fs::symlink_metadata(&host).map_err(at(&host))?;
        if meta.is_dir() {
            stack.push((host.clone(), rel.clone(), names(&host)?));
        } else if !meta.is_file() {
            return Err(refused(format!("{rel}: only regular files and directories may be in a blob tree")));
        }
        out.push(Entry { rel, host, meta });
    }
    Ok(out)
}

/// Writes the canonical archive of the tree under `dir` (not `dir`
/// itself) to `out`; returns the number of entries.
pub fn archive(dir: &Path, out: impl Write) -> Result<usize, TreeError> {
    let entries = walk(dir)?;
    let mut builder = tar::Builder::new(out);
    for e in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if e.meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, format!("{}/", e.rel), io::empty()).map_err(at(&e.host))?;
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if e.meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 });
            header.set_size(e.meta.len());
            // A file that changes length while it is read would break the
            // archive: exactly the length in the header is taken, and a
            // shorter read fails.
            let file = File::open(&e.host).map_err(at(&e.host))?;
            let mut data = Exact { inner: file.take(e.meta.len()), left: e.meta.len() };
            builder.append_data(&mut header, &e.rel, &mut data).map_err(at(&e.host))?;
        }
    }
    builder.into_inner().and_then(|mut out| out.flush()).map_err(at(dir))?;
    Ok(entries.len())
}

/// A reader that fails if its source ends before `left` bytes.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was archived"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that only hashes.
struct Hasher(Sha256);

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The SHA-256 of the canonical archive of the tree under `dir`: equal to
/// a signed blob's digest exactly when the tree is that blob unpacked.
pub fn digest(dir: &Path) -> Result<[u8; 32], TreeError> {
    let mut hasher = Hasher(Sha256::new());
    archive(dir, &mut hasher)?;
    Ok(hasher.0.finalize().into())
}

/// Unpacks the canonical archive `bytes`, whose signed SHA-256 is
/// `sha256`, into `dest`, which must not exist. Files and directories are
/// left read-only when `read_only` (0444 / 0555, 0555 for executables),
/// else the owner's only (0600 / 0700).
/// Anything but a canonical archive of files and directories with that
/// digest is refused, and `dest` removed.
pub fn unpack(bytes: &[u8], sha256: &[u8; 32], dest: &Path, read_only: bool) -> Result<usize, TreeError> {
    if Sha256::digest(bytes)[..] != sha256[..] {
        return Err(TreeError::NotCanonical);
    }
    let result = unpack_into(bytes, dest).and_then(|entries| {
        if digest(dest)? != *sha256 {
            return Err(TreeError::NotCanonical);
        }
        if read_only {
            set_read_only(dest)?;
        }
        Ok(entries)
    });
    if result.is_err() {
        let _ = remove(dest);
    }
    result
}

/// What an error while unpacking means: the storage failing (full, read
/// only, broken) is [`TreeError::Io`], which refuses no release; anything
/// else (a malformed header, a path given twice, a file before its
/// directory) is the archive's fault: [`TreeError::Refused`].
fn unpacking(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    /// Linux's `EIO`, which `io::ErrorKind` does not name.
    const EIO: i32 = 5;
    move |error| {
        use io::ErrorKind::{QuotaExceeded, ReadOnlyFilesystem, StorageFull};
        if matches!(error.kind(), StorageFull | QuotaExceeded | ReadOnlyFilesystem) || error.raw_os_error() == Some(EIO)
        {
            at(path)(error)
        } else {
            refused(format!("{}: not a blob tree archive ({error})", path.display()))
        }
    }
}

fn unpack_into(bytes: &[u8], dest: &Path) -> Result<usize, TreeError> {
    fs::create_dir(dest).map_err(at(dest))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o700)).map_err(at(dest))?;
    let mut archive = tar::Archive::new(bytes);
    let mut count = 0usize;
    for entry in archive.entries().map_err(unpacking(dest))? {
        let mut entry = entry.map_err(unpacking(dest))?;
        count += 1;
        if count > MAX_TREE_ENTRIES {
            return Err(refused(format!("more than {MAX_TREE_ENTRIES} entries")));
        }
        let raw = entry.path_bytes().into_owned();
        if raw.len() > MAX_TREE_PATH {
            return Err(refused(format!("a path longer than {MAX_TREE_PATH} bytes")));
        }
        let rel = std::str::from_utf8(&raw).map_err(|_| refused("a path that is not UTF-8"))?;
        let rel = rel.strip_suffix('/').unwrap_or(rel);
        let path = Path::new(rel);
        if rel.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(refused(format!("{rel:?}: not a plain relative path")));
        }
        let host = dest.join(path);
        // Owner only until the digest is checked (and for good in a
        // writable tree: a data directory's seed is the container's).
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir(&host).map_err(unpacking(&host))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o700)).map_err(at(&host))?;
            }
            tar::EntryType::Regular => {
                // `create_new`: a path given twice is refused, and nothing
                // is written through a link (there are none to follow).
                let mut file = File::create_new(&host).map_err(unpacking(&host))?;
                io::copy(&mut entry, &mut file).map_err(unpacking(&host))?;
                let exec = entry.header().mode().map_err(unpacking(&host))? & 0o111 != 0;
                let mode = if exec { 0o700 } else { 0o600 };
                fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(at(&host))?;
            }
            other => return Err(refused(format!("{rel}: a {other:?} entry; only files and directories"))),
        }
    }
    Ok(count)
}

/// Makes every file and directory under `dir` (and `dir`) read-only.
fn set_read_only(dir: &Path) -> Result<(), TreeError> {
    // Files first, then directories deepest first: a directory made
    // read-only first would refuse nothing here, but keep the order plain.
    let entries = walk(dir)?;
    for e in entries.iter().rev() {
        let mode = if e.meta.is_dir() || e.meta.permissions().mode() & 0o111 != 0 { 0o555 } else { 0o444 };
        fs::set_permissions(&e.host, fs::Permissions::from_mode(mode)).map_err(at(&e.host))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).map_err(at(dir))
}

/// Removes a tree [`unpack`] left, read-only or not. A missing tree is
/// not an error.
pub fn remove(dir: &Path) -> Result<(), TreeError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at(dir)(e)),
        Ok(m) if !m.is_dir() => return fs::remove_file(dir).map_err(at(dir)),
        Ok(_) => {}
    }
    // Directories must be writable to remove what they hold.
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).map_err(at(&d))?;
        for entry in fs::read_dir(&d).map_err(at(&d))? {
            let entry = entry.map_err(at(&d))?;
            if entry.file_type().map_err(at(&d))?.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    fs::remove_dir_all(dir).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("lib/python3.12/encodings")).unwrap();
        fs::write(root.join("lib/python3.12/encodings/utf_8.py"), b"# codec\n").unwrap();
        fs::write(root.join("lib/python3.12/os.py"), b"import sys\n").unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(root.join("a-b"), b"sorted between lib and lib/...").unwrap();
        fs::write(root.join("run"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        let long = "d".repeat(90);
        fs::create_dir_all(root.join(&long).join(&long)).unwrap();
        fs::write(root.join(&long).join(&long).join("deep.txt"), b"past 100 bytes").unwrap();
    }

    fn archived(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        archive(dir, &mut out).unwrap();
        out
    }

    #[test]
    fn a_tree_has_one_archive_and_unpacks_to_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        tree(&a);
        // The same tree made in another order, with other times and modes.
        fs::create_dir(&b).unwrap();
        for rel in ["lib", "lib/python3.12", "lib/python3.12/encodings"] {
            fs::create_dir(b.join(rel)).unwrap();
        }
        tree(&b);
        fs::set_permissions(b.join("lib/python3.12/os.py"), fs::Permissions::from_mode(0o600)).unwrap();
        let bytes = archived(&a);
        assert_eq!(bytes, archived(&b));
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(digest(&a).unwrap(), sha);

        let out = tmp.path().join("out");
        assert_eq!(unpack(&bytes, &sha, &out, true).unwrap(), walk(&a).unwrap().len());
        assert_eq!(digest(&out).unwrap(), sha, "read-only modes archive as 0644 / 0755");
        assert_eq!(fs::read(out.join("lib/python3.12/os.py")).unwrap(), b"import sys\n");
        assert_eq!(fs::metadata(out.join("run")).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(fs::metadata(out.join("lib")).unwrap().permissions().mode() & 0o777, 0o555);
        let names: Vec<String> = walk(&a).unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(&names[..3], ["a-b", "ddd".repeat(30).as_str(), &format!("{}/{}", "d".repeat(90), "d".repeat(90))]);
        remove(&out).unwrap();
        assert!(!out.exists());
        remove(&out).unwrap();
    }

    #[test]
    fn anything_but_the_canonical_archive_of_files_and_directories_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(&src);
        let bytes = archived(&src);
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let out = tmp.path().join("out");

        // Another digest: unpacked, found wrong, removed.
        assert!(matches!(unpack(&bytes, &[0; 32], &out, true), Err(TreeError::NotCanonical)));
        assert!(!out.exists());

        // The same files with a non-zero mtime: another archive of the same tree.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1);
        h.set_mtime(1);
        b.append_data(&mut h, "x", &b"y"[..]).unwrap();
        let other = b.into_inner().unwrap();
        let other_sha: [u8; 32] = Sha256::digest(&other).into();
        assert!(matches!(unpack(&other, &other_sha, &out, false), Err(TreeError::NotCanonical)));
        assert!(!out.exists());

        // A link, a path out of the tree, a name twice.
        let entry = |name: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_size(0);
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            h.as_bytes().to_vec()
        };
        for (entries, why) in [
            (vec![entry(b"l", tar::EntryType::Symlink)], "Symlink"),
            (vec![entry(b"../escape", tar::EntryType::Regular)], "not a plain relative path"),
            (vec![entry(b"/abs", tar::EntryType::Regular)], "not a plain relative path"),
            (vec![entry(b"x", tar::EntryType::Regular), entry(b"x", tar::EntryType::Regular)], "exists"),
        ] {
            let mut bytes: Vec<u8> = entries.concat();
            bytes.extend([0u8; 1024]);
            let sha: [u8; 32] = Sha256::digest(&bytes).into();
            let err = unpack(&bytes, &sha, &out, false).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
            assert!(!out.exists(), "{why}");
            assert!(!tmp.path().join("escape").exists());
        }

        // Cut anywhere: refused, nothing left.
        for cut in (0..bytes.len()).step_by(509) {
            assert!(unpack(&bytes[..cut], &sha, &out, true).is_err(), "cut at {cut}");
            assert!(!out.exists());
        }
        // A destination that exists is never written into.
        fs::create_dir(&out).unwrap();
        assert!(unpack(&bytes, &sha, &out, true).is_err());
    }

    #[test]
    fn trees_with_links_or_overlong_paths_are_not_archived() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("link")).unwrap();
        assert!(archive(tmp.path(), io::sink()).unwrap_err().to_string().contains("only regular files"));
        fs::remove_file(tmp.path().join("link")).unwrap();
        let mut deep = tmp.path().to_owned();
        for _ in 0..6 {
            deep = deep.join("x".repeat(200));
        }
        fs::create_dir_all(&deep).unwrap();
        assert!(archive(tmp.path(), io::sink()).unwrap_err().to_string().contains("longer than"));
    }
}
