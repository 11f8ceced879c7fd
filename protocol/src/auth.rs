//! Challenge, login and enrollment: a device proves it holds its key by
//! signing a fresh challenge, and gets a short-lived bearer token.
//!
//! Requests refuse unknown fields. Their rules are not JSON rules: the
//! device id's syntax (`gantry_signing::device_auth::valid_device_id`) is
//! part of the signed login proof both sides build and check, and the
//! base64 fields are decoded and checked by the server.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_TOKEN_TTL;

/// `POST /api/v1/device/challenge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ChallengeRequest {
    /// The device's id.
    pub device_id: String,
}

/// The answer to a [`ChallengeRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ChallengeResponse {
    /// The challenge to sign, standard base64.
    pub challenge: String,
    /// Seconds it stays valid (single use).
    pub expires_in: u64,
}

/// `POST /api/v1/device/login`: a signed challenge for a bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct LoginRequest {
    /// The device's id.
    pub device_id: String,
    /// The challenge, standard base64, as it was answered.
    pub challenge: String,
    /// The login proof (COSE_Sign1, formats.md §12), standard base64.
    pub proof: String,
}

/// `POST /api/v1/device/enroll`: self-enrollment with an enrollment token
/// and a proof of the key being enrolled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct EnrollRequest {
    /// The device's id.
    pub device_id: String,
    /// Its public key: SPKI PEM, or standard base64 of a COSE_Key.
    pub public_key: String,
    /// The enrollment token an operator created.
    pub enrollment_token: String,
    /// A fresh challenge, standard base64.
    pub challenge: String,
    /// The login proof signed with the key being enrolled, standard base64.
    pub proof: String,
}

/// The answer to a login or an enrollment: a bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct LoginResponse {
    /// The device the token is bound to.
    pub device_id: String,
    /// The bearer token.
    pub token: String,
    /// Seconds the token stays valid. A number from the network: use
    /// [`LoginResponse::expires_in_clamped`] to make it a duration.
    pub expires_in: u64,
}

impl LoginResponse {
    /// The token's lifetime, at most [`MAX_TOKEN_TTL`] seconds, so that
    /// `Instant::now() + expires_in_clamped()` cannot overflow whatever
    /// the server sent.
    pub fn expires_in_clamped(&self) -> Duration {
        Duration::from_secs(self.expires_in.min(MAX_TOKEN_TTL))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_huge_token_lifetime_is_clamped() {
        let login = LoginResponse { device_id: "d".into(), token: "t".into(), expires_in: u64::MAX };
        assert_eq!(login.expires_in_clamped(), Duration::from_secs(MAX_TOKEN_TTL));
        let _ = Instant::now() + login.expires_in_clamped();
        let short = LoginResponse { expires_in: 900, ..login };
        assert_eq!(short.expires_in_clamped(), Duration::from_secs(900));
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let r = serde_json::from_str::<ChallengeRequest>(r#"{"device_id": "d", "extra": 1}"#);
        assert!(r.unwrap_err().to_string().contains("unknown field"));
        // Answers are read leniently: a newer server may add a field.
        let l: LoginResponse =
            serde_json::from_str(r#"{"device_id": "d", "token": "t", "expires_in": 9, "scope": "x"}"#).unwrap();
        assert_eq!(l.expires_in, 9);
    }
}
