//! Key sources: where a signing key lives is the source's business.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::{Algorithm, KeyError, KeyId, PublicKey, SigningKey, pem};

/// Something that can sign with one key: a file, an HSM slot, a cloud KMS.
///
/// The signer only asks for the public key (to name the signer) and for a
/// signature over bytes it provides; the private key never leaves the source.
pub trait KeySource: Send + Sync {
    /// The public half of the key.
    fn public_key(&self) -> &PublicKey;
    /// The algorithm [`KeySource::sign`] produces.
    fn algorithm(&self) -> Algorithm;
    /// Signs `message`; the result is the raw COSE signature bytes.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// A human-readable name for messages (e.g. `file:release.key`).
    fn describe(&self) -> String;
    /// The key id (RFC 9679 thumbprint).
    fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }
}

/// A PKCS#8 PEM private key file.
#[derive(Debug)]
pub struct FileKeySource {
    path: PathBuf,
    key: SigningKey,
    public: PublicKey,
}

impl FileKeySource {
    /// Opens a private key file. Refuses files that group or others can
    /// access, as ssh does: a release key readable by every CI job is leaked.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let io = |error| KeyError::Io { path: path.display().to_string(), error };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions { path: path.display().to_string(), mode: mode & 0o777 });
        }
        let bytes = zeroize::Zeroizing::new(pem::read_bounded(path)?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| KeyError::Pem { what: path.display().to_string(), reason: "not a PEM text file".into() })?;
        let key = pem::read_private_key_pem(text, &path.display().to_string())?;
        Ok(Self::from_key(path.to_owned(), key))
    }

    /// Wraps an in-memory key (tests, freshly generated keys).
    pub fn from_key(path: PathBuf, key: SigningKey) -> Self {
        let public = key.public_key();
        FileKeySource { path, key, public }
    }

    /// The file this key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl KeySource for FileKeySource {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.key.sign(message))
    }
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}
