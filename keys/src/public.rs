//! Public keys and signature verification (`no_std`, no allocator).

use ed25519_dalek::Verifier as _;
use sha2::{Digest as _, Sha256};

use crate::{Algorithm, KeyError, KeyId, KeyType, cose_key};

/// A public key Gantry can verify with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An ECDSA P-256 key.
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Ed25519 key from its 32-byte encoding (RFC 8032).
    pub fn ed25519_from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidPublicKey(KeyType::Ed25519))?;
        ed25519_dalek::VerifyingKey::from_bytes(arr)
            .map(PublicKey::Ed25519)
            .map_err(|_| KeyError::InvalidPublicKey(KeyType::Ed25519))
    }

    /// P-256 key from a SEC1 point (compressed or uncompressed).
    pub fn p256_from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
            .map(PublicKey::P256)
            .map_err(|_| KeyError::InvalidPublicKey(KeyType::P256))
    }

    /// P-256 key from its affine coordinates (COSE_Key `x` and `y`).
    pub fn p256_from_xy(x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(KeyError::InvalidPublicKey(KeyType::P256));
        }
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(x);
        sec1[33..].copy_from_slice(y);
        Self::p256_from_sec1(&sec1)
    }

    /// Which kind of key this is.
    pub fn key_type(&self) -> KeyType {
        match self {
            PublicKey::Ed25519(_) => KeyType::Ed25519,
            PublicKey::P256(_) => KeyType::P256,
        }
    }

    /// Checks `signature` over `message` under `alg`.
    ///
    /// The algorithm must fit the key type. ECDSA signatures are the raw
    /// 64-byte `r || s` form COSE uses; high-S values are accepted, because
    /// signers such as the SUIT draft's example tooling produce them. Ed25519
    /// uses the strict check (no small-order keys, canonical `S`).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        if alg.key_type() != self.key_type() {
            return Err(KeyError::AlgorithmMismatch { alg, key: self.key_type() });
        }
        match self {
            PublicKey::Ed25519(key) => {
                let sig =
                    ed25519_dalek::Signature::from_slice(signature).map_err(|_| KeyError::MalformedSignature(alg))?;
                key.verify_strict(message, &sig).map_err(|_| KeyError::BadSignature)
            }
            PublicKey::P256(key) => {
                if signature.len() != 64 {
                    return Err(KeyError::MalformedSignature(alg));
                }
                let sig =
                    p256::ecdsa::Signature::from_slice(signature).map_err(|_| KeyError::MalformedSignature(alg))?;
                key.verify(message, &sig).map_err(|_| KeyError::BadSignature)
            }
        }
    }

    /// The key's RFC 9679 thumbprint.
    pub fn key_id(&self) -> KeyId {
        let mut buf = [0u8; cose_key::THUMBPRINT_INPUT_MAX];
        let n = cose_key::thumbprint_input(self, &mut buf);
        KeyId(Sha256::digest(&buf[..n]).into())
    }

    /// The raw public key bytes: 32 bytes for Ed25519, the 65-byte uncompressed
    /// SEC1 point for P-256.
    pub fn to_raw(&self) -> RawPublicKey {
        match self {
            PublicKey::Ed25519(k) => {
                let mut r = RawPublicKey { buf: [0; 65], len: 32 };
                r.buf[..32].copy_from_slice(k.as_bytes());
                r
            }
            PublicKey::P256(k) => {
                let point = k.to_encoded_point(false);
                let mut r = RawPublicKey { buf: [0; 65], len: 65 };
                r.buf.copy_from_slice(point.as_bytes());
                r
            }
        }
    }
}

/// Raw public key bytes without allocation; see [`PublicKey::to_raw`].
#[derive(Clone, Copy)]
pub struct RawPublicKey {
    buf: [u8; 65],
    len: usize,
}

impl AsRef<[u8]> for RawPublicKey {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
