//! COSE signature algorithms Gantry verifies, and the key types behind them.

use core::fmt;

/// A COSE signature algorithm (IANA "COSE Algorithms" registry).
///
/// Gantry signs with the fully specified identifiers [`Algorithm::Esp256`] and
/// [`Algorithm::Ed25519`] (suit-mti) and still verifies the older polymorphic
/// [`Algorithm::Es256`] and [`Algorithm::EdDsa`], which the SUIT draft examples
/// and the COSE WG vectors use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256, fully specified (-9).
    Esp256,
    /// ECDSA with SHA-256, curve taken from the key (-7).
    Es256,
    /// Ed25519, fully specified (-19).
    Ed25519,
    /// EdDSA, curve taken from the key (-8); only Ed25519 keys are supported.
    EdDsa,
}

impl Algorithm {
    /// The COSE algorithm identifier.
    pub const fn cose_id(self) -> i64 {
        match self {
            Algorithm::Esp256 => -9,
            Algorithm::Es256 => -7,
            Algorithm::Ed25519 => -19,
            Algorithm::EdDsa => -8,
        }
    }

    /// The algorithm with this COSE identifier, if Gantry supports it.
    pub const fn from_cose_id(id: i64) -> Option<Self> {
        match id {
            -9 => Some(Algorithm::Esp256),
            -7 => Some(Algorithm::Es256),
            -19 => Some(Algorithm::Ed25519),
            -8 => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// The only key type this algorithm may be used with.
    pub const fn key_type(self) -> KeyType {
        match self {
            Algorithm::Esp256 | Algorithm::Es256 => KeyType::P256,
            Algorithm::Ed25519 | Algorithm::EdDsa => KeyType::Ed25519,
        }
    }

    /// The IANA name, e.g. `ESP256`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Esp256 => "ESP256",
            Algorithm::Es256 => "ES256",
            Algorithm::Ed25519 => "Ed25519",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.cose_id())
    }
}

/// The kinds of key pair Gantry handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over NIST P-256, as secure elements hold.
    P256,
}

impl KeyType {
    /// The algorithm Gantry signs with for this key type (suit-mti).
    pub const fn signing_algorithm(self) -> Algorithm {
        match self {
            KeyType::Ed25519 => Algorithm::Ed25519,
            KeyType::P256 => Algorithm::Esp256,
        }
    }

    /// A short lowercase name, as the CLI spells it (`ed25519`, `p256`).
    pub const fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::P256 => "p256",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
