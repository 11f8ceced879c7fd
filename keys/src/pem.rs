//! PEM files: SPKI for public keys, PKCS#8 for private keys.

use std::path::Path;

use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};

use crate::{KeyError, PublicKey, SigningKey, decode_cose_key};

/// Largest key file we read; real ones are a few hundred bytes.
const MAX_KEY_FILE: u64 = 64 * 1024;

impl PublicKey {
    /// The key as an SPKI ("PUBLIC KEY") PEM document.
    pub fn to_spki_pem(&self) -> String {
        let pem = match self {
            PublicKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
        };
        // Encoding a valid key into SPKI cannot fail: both encoders only
        // fail on allocation, which aborts anyway.
        pem.unwrap_or_default()
    }

    /// The key as a COSE_Key (with its thumbprint as kid).
    pub fn to_cose_key(&self) -> Vec<u8> {
        let mut buf = [0u8; crate::COSE_KEY_MAX_LEN];
        let n = crate::encode_cose_key(self, &mut buf);
        buf[..n].to_vec()
    }
}

/// Parses an SPKI PEM public key (Ed25519 or P-256).
pub fn read_public_key_pem(pem: &str, what: &str) -> Result<PublicKey, KeyError> {
    // Whitespace around the armour is no part of it: `jq -r .key > f` and
    // editors add a blank line.
    let pem = pem.trim();
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return Ok(PublicKey::Ed25519(k));
    }
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        return Ok(PublicKey::P256(k));
    }
    Err(KeyError::Pem {
        what: what.to_owned(),
        reason: "not an Ed25519 or P-256 public key in SPKI PEM (\"BEGIN PUBLIC KEY\")".into(),
    })
}

/// Parses a PKCS#8 PEM private key (Ed25519 or P-256).
pub fn read_private_key_pem(pem: &str, what: &str) -> Result<SigningKey, KeyError> {
    let pem = pem.trim();
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
        return Ok(SigningKey::Ed25519(k));
    }
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(SigningKey::P256(k));
    }
    Err(KeyError::Pem {
        what: what.to_owned(),
        reason: "not an Ed25519 or P-256 private key in PKCS#8 PEM (\"BEGIN PRIVATE KEY\")".into(),
    })
}

/// Reads a public key file: SPKI PEM, or a binary COSE_Key.
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, KeyError> {
    let bytes = read_bounded(path)?;
    let what = path.display().to_string();
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => read_public_key_pem(text, &what),
        _ => decode_cose_key(&bytes)
            .map_err(|e| KeyError::Pem { what, reason: format!("neither SPKI PEM nor a COSE_Key ({e})") }),
    }
}

/// Reads a small file, refusing anything larger than a key file can be.
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let io = |error| KeyError::Io { path: path.display().to_string(), error };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Pem { what: path.display().to_string(), reason: "file too large for a key".into() });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;

    #[test]
    fn whitespace_around_the_armour_is_accepted() {
        for t in [KeyType::Ed25519, KeyType::P256] {
            let key = SigningKey::generate(t);
            let public = key.public_key().to_spki_pem();
            // What `jq -r .server_public_key_pem > server.pub` writes: the
            // document's own newline, then jq's.
            for text in [format!("{public}\n"), format!("\n  {public}\n\n"), format!("{public}\r\n")] {
                assert_eq!(read_public_key_pem(&text, "t").unwrap(), key.public_key(), "{text:?}");
            }
            let private = key.to_pkcs8_pem().unwrap();
            let back = read_private_key_pem(&format!("{}\n\n", &*private), "t").unwrap();
            assert_eq!(back.public_key(), key.public_key());
            // Still refused: anything else around it.
            assert!(read_public_key_pem(&format!("x{public}"), "t").is_err());
        }
    }
}
