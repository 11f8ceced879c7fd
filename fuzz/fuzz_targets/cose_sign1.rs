//! COSE_Sign1 parsing (tag optional) and verification, attached and
//! detached, with the SUIT example P-256 key.
#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use gantry_keys::PublicKey;
use gantry_signing::cose::{Sign1, TagRule};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<PublicKey> = LazyLock::new(common::p256_key);
static ED_KEY: LazyLock<PublicKey> = LazyLock::new(common::ed25519_key);

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Sign1::parse(data, TagRule::Optional) else { return };
    let _ = (s.algorithm(), s.algorithm_is_protected(), s.key_id(), s.payload());
    let _ = s.verify(&KEY, b"", Some(b"x"));
    let _ = s.verify(&KEY, b"", None);
    let _ = s.verify(&ED_KEY, b"", None);
});
