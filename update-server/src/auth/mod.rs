//! Who is calling: devices (short-lived bearer tokens earned with a login
//! proof) and operators (API tokens with a role).

pub mod device;
pub mod operator;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// A new secret token: `prefix` + 32 random bytes, base64url.
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// How a secret is stored: its SHA-256, hex. The secrets are 256-bit
/// random, so a plain hash is enough (no password stretching needed).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
