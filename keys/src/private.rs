//! Private keys: generation, signing and PKCS#8 files.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ed25519_dalek::Signer as _;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand_core::OsRng;

use crate::{Algorithm, KeyError, KeyType, PublicKey};

/// A private key held in memory (zeroized on drop by the underlying types).
pub enum SigningKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
    /// ECDSA P-256.
    P256(p256::ecdsa::SigningKey),
}

impl SigningKey {
    /// A fresh key from the operating system's random generator.
    pub fn generate(key_type: KeyType) -> Self {
        match key_type {
            KeyType::Ed25519 => SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            KeyType::P256 => SigningKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            SigningKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            SigningKey::P256(k) => PublicKey::P256(*k.verifying_key()),
        }
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        match self {
            SigningKey::Ed25519(_) => KeyType::Ed25519,
            SigningKey::P256(_) => KeyType::P256,
        }
    }

    /// Signs `message` with the key type's algorithm ([`KeyType::signing_algorithm`]).
    /// ECDSA signatures are deterministic (RFC 6979), raw `r || s`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
        }
    }

    /// The algorithm [`SigningKey::sign`] produces.
    pub fn algorithm(&self) -> Algorithm {
        self.key_type().signing_algorithm()
    }

    /// PKCS#8 PEM ("PRIVATE KEY"); the string is wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        let pem = match self {
            SigningKey::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF),
            SigningKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| KeyError::Pem { what: "new key".into(), reason: e.to_string() })
    }

    /// Writes the key as PKCS#8 PEM to a new file with mode 0600. Refuses to
    /// overwrite an existing file: losing a release key is worse than an error.
    pub fn write_pkcs8_file(&self, path: &Path) -> Result<(), KeyError> {
        let io = |error| KeyError::Io { path: path.display().to_string(), error };
        let pem = self.to_pkcs8_pem()?;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        // The umask cannot widen 0600, but a pre-set ACL default could; be explicit.
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        file.write_all(pem.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        write!(f, "SigningKey({}, {})", self.key_type(), self.public_key().key_id())
    }
}
