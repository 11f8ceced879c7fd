//! Device login proofs: a device proves it holds its enrolled key by signing
//! the server's challenge.
//!
//! ```text
//!  device ── POST challenge {device id} ──────────────► server
//!  device ◄── challenge (16-32 random bytes, short-lived) ┘
//!  device ── COSE_Sign1(device key, aad "gantry-login-v1",
//!                       {device id, challenge, timestamp}) ──► server
//!           verify_login_proof(): the device's enrolled key signed it
//!           ──► device id ──► challenge ──► clock skew (optional)
//!           ──► VerifiedLogin  → short-lived bearer token
//! ```
//!
//! The challenge makes each proof single-purpose and fresh without trusting
//! the device's clock; the timestamp is the device's own time (0 when it has
//! no clock), recorded by the server and checked against a skew only if the
//! caller asks. The external AAD `gantry-login-v1` keeps a login proof from
//! ever verifying as any other Gantry object. `no_std`, no allocation.

use gantry_keys::{KeyId, PublicKey};

use crate::Error;
use crate::cbor::{KeyOrder, Reader};
use crate::ticket::{NONCE_MAX, NONCE_MIN, SignedPayload, TicketError, expect_key};

/// External AAD of a login proof's Sig_structure.
pub const LOGIN_AAD: &[u8] = b"gantry-login-v1";
/// Longest device id, in bytes.
pub const MAX_DEVICE_ID: usize = 128;

const P_DEVICE: i64 = 1;
const P_CHALLENGE: i64 = 2;
const P_TIMESTAMP: i64 = 3;

/// Whether `id` is a valid device id: 1-128 bytes of ASCII letters, digits
/// and `.` `_` `:` `-`, so it is safe in URLs, logs and file names.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_DEVICE_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Why a login proof was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// Not a well-formed proof.
    #[error("malformed login proof: {0}")]
    Format(#[from] Error),
    /// Larger than any proof can be.
    #[error("login proof too large")]
    TooLarge,
    /// The proof names (kid) or uses (algorithm) a key other than the
    /// device's enrolled one.
    #[error("login proof is not signed with the device's enrolled key")]
    UnknownKey,
    /// The signature does not verify under the device's key.
    #[error("login proof signature invalid")]
    SignatureInvalid,
    /// The proof names another device.
    #[error("login proof is for another device")]
    WrongDevice,
    /// The proof signs another challenge (replayed or stale).
    #[error("login proof does not sign the current challenge")]
    ChallengeMismatch,
    /// The device's clock is further from the server's than allowed.
    #[error("device clock {timestamp} is more than {max_skew} s from the server's {now}")]
    ClockSkew {
        /// The proof's timestamp.
        timestamp: u64,
        /// The server's time.
        now: u64,
        /// The allowed difference.
        max_skew: u64,
    },
}

impl LoginError {
    /// A stable, machine-readable name of the cause.
    pub fn code(&self) -> &'static str {
        match self {
            LoginError::Format(e) => e.code(),
            LoginError::TooLarge => "limit-exceeded",
            LoginError::UnknownKey => "unknown-key",
            LoginError::SignatureInvalid => "signature-invalid",
            LoginError::WrongDevice => "wrong-device",
            LoginError::ChallengeMismatch => "challenge-mismatch",
            LoginError::ClockSkew { .. } => "clock-skew",
        }
    }
}

impl From<TicketError> for LoginError {
    fn from(e: TicketError) -> Self {
        match e {
            TicketError::Format(e) => LoginError::Format(e),
            TicketError::TooLarge { .. } => LoginError::TooLarge,
            TicketError::SignatureInvalid => LoginError::SignatureInvalid,
            _ => LoginError::UnknownKey,
        }
    }
}

/// What a login proof must satisfy.
#[derive(Clone, Copy, Debug)]
pub struct LoginPolicy<'p> {
    /// The device's enrolled public key.
    pub device_key: &'p PublicKey,
    /// The device id the proof must name.
    pub device_id: &'p str,
    /// The challenge the server issued.
    pub challenge: &'p [u8],
    /// The server's time, to check the device's clock against; `None`
    /// skips the check (the challenge already makes the proof fresh).
    pub now: Option<u64>,
    /// Largest accepted difference between the clocks, in seconds. A
    /// timestamp of 0 (no clock) is never checked.
    pub max_clock_skew: u64,
}

/// A login proof checked against a [`LoginPolicy`]; only
/// [`verify_login_proof`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct VerifiedLogin<'a> {
    device_id: &'a str,
    timestamp: u64,
    key_id: KeyId,
}

impl<'a> VerifiedLogin<'a> {
    /// The device that logged in.
    pub fn device_id(&self) -> &'a str {
        self.device_id
    }

    /// The device's clock when it signed (0: it has none).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Key id of the device key.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// Verifies a login proof under `policy`: signature by the device key, then
/// device id, then challenge, then (optionally) the clock.
pub fn verify_login_proof<'a>(proof: &'a [u8], policy: &LoginPolicy<'_>) -> Result<VerifiedLogin<'a>, LoginError> {
    let signed = SignedPayload::parse(proof)?;
    let key_id = signed.verify(core::slice::from_ref(policy.device_key), LOGIN_AAD)?;
    let (device_id, challenge, timestamp) = parse_payload(signed.payload)?;
    if device_id != policy.device_id {
        return Err(LoginError::WrongDevice);
    }
    if challenge != policy.challenge {
        return Err(LoginError::ChallengeMismatch);
    }
    if let Some(now) = policy.now
        && timestamp != 0
        && timestamp.abs_diff(now) > policy.max_clock_skew
    {
        return Err(LoginError::ClockSkew { timestamp, now, max_skew: policy.max_clock_skew });
    }
    Ok(VerifiedLogin { device_id, timestamp, key_id })
}

/// The device id a proof claims, **without verifying anything**: the
/// server uses it to look up which key to verify with.
pub fn claimed_device_id(proof: &[u8]) -> Result<&str, LoginError> {
    let signed = SignedPayload::parse(proof)?;
    Ok(parse_payload(signed.payload)?.0)
}

fn parse_payload(payload: &[u8]) -> Result<(&str, &[u8], u64), Error> {
    let mut r = Reader::new(payload);
    if r.map("login payload map")? != 3 {
        return Err(Error::Invalid("login payload must have 3 members"));
    }
    let mut order = KeyOrder::new();
    expect_key(&mut r, &mut order, P_DEVICE, "login device id (1)")?;
    let device_id = r.str("device id")?;
    if !valid_device_id(device_id) {
        return Err(Error::Invalid("device id"));
    }
    expect_key(&mut r, &mut order, P_CHALLENGE, "login challenge (2)")?;
    let challenge = r.bytes("challenge")?;
    if !(NONCE_MIN..=NONCE_MAX).contains(&challenge.len()) {
        return Err(Error::Invalid("challenge length (16 to 32 bytes)"));
    }
    expect_key(&mut r, &mut order, P_TIMESTAMP, "login timestamp (3)")?;
    let timestamp = r.u64("timestamp")?;
    r.finish("login payload")?;
    Ok((device_id, challenge, timestamp))
}

#[cfg(feature = "std")]
mod build;
#[cfg(feature = "std")]
pub use build::LoginProof;

#[cfg(test)]
mod tests;
