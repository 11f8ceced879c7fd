//! The whole verification path with the SUIT example ES256 key and the
//! RFC 8032 Ed25519 key as anchors (threshold 1); a verified manifest is
//! then run, every section, against a deterministic device.
#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use gantry_keys::PublicKey;
use gantry_signing::{Policy, Section, verify};
use libfuzzer_sys::fuzz_target;

static ANCHORS: LazyLock<[PublicKey; 2]> = LazyLock::new(|| [common::p256_key(), common::ed25519_key()]);

fuzz_target!(|data: &[u8]| {
    let policy = Policy::new(&ANCHORS[..], 1);
    let Ok(m) = verify(data, &policy) else { return };
    let _ = (m.digest(), m.sequence_number(), m.signer_indices().count(), m.text(), m.vendor_id(), m.class_id());
    let mut dev = common::FuzzDevice::default();
    for s in [Section::Validate, Section::Install, Section::Invoke, Section::Load, Section::PayloadFetch] {
        let _ = m.section(s);
        let _ = m.run(s, &mut dev);
    }
});
