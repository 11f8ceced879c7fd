//! Deployment tickets and device login proofs (they share the COSE_Sign1
//! and payload readers): parsing without verification, then the full
//! checks with the RFC 8032 Ed25519 key and the SUIT example P-256 key as
//! server keys / device keys. Seeds are signed with the Ed25519 key for the
//! device `fuzz-device` and the nonce 16 × 0x5a, so mutations reach every
//! check after the signature.
#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use gantry_keys::PublicKey;
use gantry_signing::device_auth::{LoginPolicy, claimed_device_id, verify_login_proof};
use gantry_signing::ticket::{TicketPolicy, decode_ticket_unverified, verify_ticket};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<[PublicKey; 2]> = LazyLock::new(|| [common::ed25519_key(), common::p256_key()]);

const DEVICE: &str = "fuzz-device";
const NONCE: [u8; 16] = [0x5a; 16];
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode_ticket_unverified(data) {
        let n = c.assignments().count();
        assert_eq!(n, c.assignment_count(), "a parsed ticket iterates all its assignments");
        for a in c.assignments() {
            assert_eq!(c.assignment(a.stream).map(|b| b.stream), Some(a.stream));
        }
        assert!(c.expires_at() > c.issued_at());
    }
    let policy = TicketPolicy {
        server_keys: &KEYS[..],
        server_threshold: 1,
        device_id: DEVICE,
        nonce: &NONCE,
        now: Some(NOW),
        last_issued_at: Some(NOW - 86_400),
    };
    if let Ok(t) = verify_ticket(data, &policy) {
        assert_eq!(t.contents().device_id(), DEVICE);
        assert_eq!(t.contents().nonce(), NONCE);
        assert!(t.contents().expires_at() > NOW);
        for a in t.assignments() {
            assert!(t.authorizes(a.stream, &a.manifest_digest));
        }
    }
    let _ = claimed_device_id(data);
    for key in KEYS.iter() {
        let policy =
            LoginPolicy { device_key: key, device_id: DEVICE, challenge: &NONCE, now: Some(NOW), max_clock_skew: 300 };
        if let Ok(v) = verify_login_proof(data, &policy) {
            assert_eq!(v.device_id(), DEVICE);
            assert_eq!(v.key_id(), key.key_id());
        }
    }
});
