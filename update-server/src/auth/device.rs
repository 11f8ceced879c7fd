//! Device challenges and bearer tokens, both stateless HMACs under a key
//! every server node shares (derived from the server secret file,
//! `crate::secrets`), so a device may
//! challenge one node and log in or check in at another.
//!
//! ```text
//! challenge (32 bytes) = expiry (8, big endian) ‖ random (8) ‖ HMAC(k, "challenge" ‖ id ‖ expiry ‖ random)[..16]
//! token                = "gd1." ‖ b64url(id) ‖ "." ‖ expiry ‖ "." ‖ b64url(HMAC(k, "token" ‖ id ‖ expiry))
//! ```
//!
//! A challenge is bound to the device id it was issued for and is accepted
//! once per node ([`UsedChallenges`]); a token is bound to its device id,
//! so it cannot be used for another device.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::random_bytes;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted in a header, in bytes.
pub const MAX_TOKEN_LEN: usize = 512;

/// Issues and checks device challenges and tokens.
pub struct DeviceAuth {
    key: Vec<u8>,
    used: UsedChallenges,
}

/// A token a device presented, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The device it was issued to.
    pub device_id: String,
}

/// Challenges accepted by this node and not yet expired.
#[derive(Default)]
pub struct UsedChallenges {
    seen: Mutex<HashMap<[u8; 32], u64>>,
}

/// Most challenges remembered before expired ones are purged.
const USED_PURGE_AT: usize = 100_000;

impl UsedChallenges {
    /// Records `challenge`; false if it was used before.
    fn first_use(&self, challenge: [u8; 32], expires: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= USED_PURGE_AT {
            seen.retain(|_, exp| *exp > now);
        }
        seen.insert(challenge, expires).is_none()
    }
}

impl DeviceAuth {
    /// Uses `key` (at least 32 bytes) for every HMAC.
    pub fn new(key: Vec<u8>) -> Self {
        DeviceAuth { key, used: UsedChallenges::default() }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for p in parts {
            // Length-prefixed, so no two part lists give the same input.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A fresh challenge for `device_id`, valid until `now + ttl`.
    pub fn challenge(&self, device_id: &str, now: u64, ttl: u64) -> [u8; 32] {
        let expires = (now + ttl).to_be_bytes();
        let random = random_bytes::<8>();
        let tag = self.mac(&[b"challenge", device_id.as_bytes(), &expires, &random]);
        let mut c = [0u8; 32];
        c[..8].copy_from_slice(&expires);
        c[8..16].copy_from_slice(&random);
        c[16..].copy_from_slice(&tag[..16]);
        c
    }

    /// Accepts `challenge` once if this server issued it for `device_id`
    /// and it has not expired.
    pub fn redeem_challenge(&self, challenge: &[u8], device_id: &str, now: u64) -> Result<(), ChallengeError> {
        let c: [u8; 32] = challenge.try_into().map_err(|_| ChallengeError::Invalid)?;
        let expires = u64::from_be_bytes(c[..8].try_into().unwrap_or_default());
        let tag = self.mac(&[b"challenge", device_id.as_bytes(), &c[..8], &c[8..16]]);
        if !constant_time_eq(&tag[..16], &c[16..]) {
            return Err(ChallengeError::Invalid);
        }
        if now >= expires {
            return Err(ChallengeError::Expired);
        }
        if !self.used.first_use(c, expires, now) {
            return Err(ChallengeError::Used);
        }
        Ok(())
    }

    /// A bearer token for `device_id`, valid until `expires`.
    pub fn token(&self, device_id: &str, expires: u64) -> String {
        let exp = expires.to_string();
        let tag = self.mac(&[b"token", device_id.as_bytes(), exp.as_bytes()]);
        format!("gd1.{}.{exp}.{}", URL_SAFE_NO_PAD.encode(device_id), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The device a token was issued to, if it is genuine and not expired.
    pub fn check_token(&self, token: &str, now: u64) -> Option<DeviceIdentity> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut parts = token.split('.');
        let (Some("gd1"), Some(id), Some(exp), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let id = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = self.mac(&[b"token", id.as_bytes(), exp.as_bytes()]);
        if !constant_time_eq(&expected, &tag) || exp.parse::<u64>().ok()? <= now {
            return None;
        }
        Some(DeviceIdentity { device_id: id })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a challenge was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not issued by this server for this device.
    #[error("challenge was not issued for this device")]
    Invalid,
    /// Too old.
    #[error("challenge expired; ask for a new one")]
    Expired,
    /// Already used for a login.
    #[error("challenge already used; ask for a new one")]
    Used,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_bound_single_use_and_expire() {
        let auth = DeviceAuth::new(vec![1; 32]);
        let c = auth.challenge("dev-1", 1000, 60);
        assert_eq!(auth.redeem_challenge(&c, "dev-2", 1001), Err(ChallengeError::Invalid));
        assert_eq!(auth.redeem_challenge(&c, "dev-1", 1060), Err(ChallengeError::Expired));
        assert_eq!(auth.redeem_challenge(&c, "dev-1", 1001), Ok(()));
        assert_eq!(auth.redeem_challenge(&c, "dev-1", 1002), Err(ChallengeError::Used));
        let mut forged = auth.challenge("dev-1", 1000, 60);
        forged[0] ^= 1; // a later expiry
        assert_eq!(auth.redeem_challenge(&forged, "dev-1", 1001), Err(ChallengeError::Invalid));
        assert_eq!(auth.redeem_challenge(&c[..16], "dev-1", 1001), Err(ChallengeError::Invalid));
        // Another server key: not ours.
        let other = DeviceAuth::new(vec![2; 32]);
        assert_eq!(other.redeem_challenge(&auth.challenge("d", 0, 60), "d", 1), Err(ChallengeError::Invalid));
    }

    #[test]
    fn tokens_are_bound_to_their_device() {
        let auth = DeviceAuth::new(vec![1; 32]);
        let t = auth.token("dev-1", 2000);
        assert_eq!(auth.check_token(&t, 1999), Some(DeviceIdentity { device_id: "dev-1".into() }));
        assert_eq!(auth.check_token(&t, 2000), None);
        // Swapping in another device id (or a later expiry) breaks the HMAC.
        let swapped = t.replacen(&URL_SAFE_NO_PAD.encode("dev-1"), &URL_SAFE_NO_PAD.encode("dev-2"), 1);
        assert_eq!(auth.check_token(&swapped, 1000), None);
        assert_eq!(auth.check_token(&t.replacen(".2000.", ".3000.", 1), 1000), None);
        assert_eq!(DeviceAuth::new(vec![2; 32]).check_token(&t, 1000), None);
        for junk in ["", "gd1", "gd1.a.b.c.d", "x.ZGV2LTE.2000.AAAA", &"a".repeat(600)] {
            assert_eq!(auth.check_token(junk, 0), None);
        }
    }
}
