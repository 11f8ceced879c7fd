//! Secrets at rest: files only the server's user may read.
//!
//! The server keeps three kinds of secret, each in a file of its own (mode
//! 0600), never in the database an operator copies and backs up:
//!
//! | file (default)            | what                                                  |
//! |---------------------------|-------------------------------------------------------|
//! | `server-secret`           | 32 random bytes (hex); the device-token HMAC key is derived from it |
//! | `server-key.pem`          | the online ticket-signing key                          |
//! | `admin-token`             | the first admin API token, written once                |
//! | `tls.key` (configured)    | the TLS private key                                    |
//!
//! As ssh does with a private key, the server refuses to start while any of
//! them can be read or written by another user (group or other bits set;
//! for the TLS key, which the operator provides, other bits: Debian lets
//! the `ssl-cert` group read keys): someone who can read the server secret
//! can mint device tokens. The SQLite
//! database holds no secret (API and enrollment tokens are stored as
//! hashes), but device inventories and history: it is created 0600, and an
//! older database found readable by others is narrowed to 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::auth::random_bytes;

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Another user could read or change it.
    #[error(
        "{path}: permissions {mode:04o} are too open: other users could read this secret; \
         run `chmod 600 {path}` (and check who has read it)"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// It cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// It is not what the server writes.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |error| SecretError::Io { path: path.display().to_string(), error }
}

/// Refuses a file that exists with any group or other permission bit.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    check_mode(path, 0o077)
}

/// Refuses a file that exists with any "other" permission bit: for the
/// TLS key, which the operator provides and which Debian's convention
/// (group `ssl-cert`, mode 0640) lets a group read.
pub fn check_not_public(path: &Path) -> Result<(), SecretError> {
    check_mode(path, 0o007)
}

fn check_mode(path: &Path, forbidden: u32) -> Result<(), SecretError> {
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & forbidden != 0 => {
            Err(SecretError::TooOpen { path: path.display().to_string(), mode: m.permissions().mode() & 0o7777 })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `contents` to a new file `path`, mode 0600; `Ok(false)` if it
/// exists already (another node created it first: use that one).
fn create_private(path: &Path, contents: &[u8]) -> Result<bool, SecretError> {
    let mut f = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io(path)(e)),
    };
    // The umask cannot widen 0600, but a default ACL could.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(true)
}

/// The server secret at `path`, generated on first use.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], SecretError> {
    if create_private(path, format!("{}\n", hex::encode(random_bytes::<32>())).as_bytes())? {
        tracing::info!(path = %path.display(), "generated the server secret");
    }
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| SecretError::Malformed {
        path: path.display().to_string(),
        reason: "not 64 hex digits (32 bytes); restore the file every node shares, or delete it to log every device out",
    })?;
    Ok(secret)
}

/// The key device challenges and tokens are bound with, derived from the
/// server secret (so rotating the secret logs every device out, nothing
/// else).
pub fn device_token_key(secret: &[u8; 32]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"gantry-server device-token key v1");
    mac.finalize().into_bytes().to_vec()
}

/// Writes a secret string to `path` (0600), replacing the file whole: it
/// is written beside and renamed over, so a stale one (from a database that
/// was reset) is never readable by others, not even for a moment.
pub fn write_secret_file(path: &Path, secret: &str) -> Result<(), SecretError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    create_private(&tmp, format!("{secret}\n").as_bytes())?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The SQLite database file of `url`, if it names one on disk.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    use std::str::FromStr as _;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty()).then(|| file.to_path_buf())
}

/// Creates the SQLite database file 0600 before SQLite does (which would
/// make it 0644 under the usual umask; its `-wal` and `-shm` files take the
/// database's mode), and narrows an existing one that others can read.
pub fn prepare_sqlite_file(file: &Path) -> Result<(), SecretError> {
    if create_private(file, b"")? {
        return Ok(());
    }
    for f in [file.to_path_buf(), suffixed(file, "-wal"), suffixed(file, "-shm")] {
        match std::fs::metadata(&f) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                let was = m.permissions().mode() & 0o7777;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).map_err(io(&f))?;
                tracing::warn!(path = %f.display(), was = format_args!("{was:04o}"), "narrowed the database's permissions to 0600");
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&f)(e)),
        }
    }
    Ok(())
}

fn suffixed(file: &Path, suffix: &str) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server-secret");
        let a = load_or_create_secret(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_secret(&path).unwrap(), a, "read back, not made again");
        assert_ne!(device_token_key(&a), device_token_key(&[0; 32]));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_or_create_secret(&path).unwrap_err().to_string();
        assert!(e.contains("0640 are too open") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(load_or_create_secret(&path), Err(SecretError::Malformed { .. })));
    }

    #[test]
    fn the_database_is_created_private_and_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gantry.db");
        prepare_sqlite_file(&db).unwrap();
        assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
        let wal = suffixed(&db, "-wal");
        std::fs::write(&wal, b"").unwrap();
        for f in [&db, &wal] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_sqlite_file(&db).unwrap();
        for f in [&db, &wal] {
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(sqlite_file(&format!("sqlite://{}", db.display())), Some(db.clone()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
