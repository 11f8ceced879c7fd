use crate::{Algorithm, KeyType};

/// Everything that can go wrong with a key, a signature or a trust root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm cannot be used with this key's type (e.g. ES256 with an
    /// Ed25519 key): refused rather than guessed.
    #[error("algorithm {alg} does not match the {key} key")]
    AlgorithmMismatch {
        /// Algorithm the signature claims.
        alg: Algorithm,
        /// Type of the key asked to verify it.
        key: KeyType,
    },
    /// The signature has the wrong length or is not a valid encoding.
    #[error("malformed signature for {0}")]
    MalformedSignature(Algorithm),
    /// The signature does not verify with this key.
    #[error("signature does not verify")]
    BadSignature,
    /// Key bytes are not a valid point / key of the claimed type.
    #[error("invalid {0} public key")]
    InvalidPublicKey(KeyType),
    /// A COSE_Key structure is malformed or describes a key we do not support.
    #[error("invalid COSE_Key: {0}")]
    InvalidCoseKey(&'static str),
    /// Neither an Ed25519 nor a P-256 key in a PEM file.
    #[cfg(feature = "std")]
    #[error("{what}: {reason}")]
    Pem {
        /// What was being read (usually a path).
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// A private key file that group or others can read.
    #[cfg(feature = "std")]
    #[error("private key {path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}`")]
    InsecurePermissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// File system error, with the path it concerns.
    #[cfg(feature = "std")]
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// A key source failed to produce a signature (e.g. an HSM refused).
    #[cfg(feature = "std")]
    #[error("key source {source_name} could not sign: {reason}")]
    SignFailed {
        /// Which key source.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// A trust root is malformed, expired, under-signed or not a valid successor.
    #[cfg(feature = "std")]
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
}
