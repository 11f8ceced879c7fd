//! The device runtime's check of a container slot in flash: fixed header
//! with the container magic, envelope (signature by the RFC 8032 Ed25519
//! key, sequence, vendor and class), the signed `#config`, the component
//! layout (module first, then blobs) and every payload region hashed from
//! flash. The input is the slot's contents from offset 0, the rest of the
//! 256 KiB flash erased.
//!
//! An accepted slot must hold what the runtime will load: every payload is
//! read back here from flash and must lie inside it and hash to its signed
//! digest.
#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use embedded_storage::nor_flash::ReadNorFlash as _;
use gantry_device::bundle::{Trust, read_payload};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

static TRUST: LazyLock<Trust> = LazyLock::new(common::container_trust);

fuzz_target!(|data: &[u8]| {
    let Some(mut flash) = common::container_flash(data) else { return };
    let Ok(release) = common::verify_container_slot(&mut flash, &TRUST) else { return };
    assert!(release.sequence >= common::CONTAINER_MIN_SEQUENCE, "accepted a rollback to {}", release.sequence);
    assert!(release.module().blob.is_none(), "the first payload is not the module");
    for p in &release.payloads {
        let end = p.offset.checked_add(p.len).expect("payload end overflows");
        assert!(end <= flash.capacity() as u64, "payload {p:?} ends past the flash");
        let bytes = read_payload(&mut flash, p).expect("an accepted payload is readable");
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&bytes)),
            p.sha256,
            "payload {} does not hash to its digest",
            p.component
        );
    }
});
