//! The bootloader's check of a slot image in flash: fixed header, envelope
//! (signature by the RFC 8032 Ed25519 key, sequence, vendor and class),
//! firmware-only manifest, its validate section run against the slot, and
//! the image digest checked again by `verify_slot`. The input is the slot's
//! contents from offset 0, the rest of the 64 KiB flash erased.
//!
//! An accepted slot must measure what will actually run: the measured digest
//! is recomputed here from the bytes after the header's payload offset.
#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use embedded_storage::nor_flash::ReadNorFlash as _;
use gantry_boot::image::Header;
use gantry_keys::PublicKey;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

static ANCHORS: LazyLock<[PublicKey; 1]> = LazyLock::new(|| [common::ed25519_key()]);

fuzz_target!(|data: &[u8]| {
    let Some(mut flash) = common::boot_flash(data) else { return };
    let Ok(m) = common::verify_boot_slot(&mut flash, &ANCHORS[..]) else { return };
    assert!(m.sequence >= common::BOOT_MIN_SEQUENCE, "accepted a rollback to {}", m.sequence);
    let header = Header::read(&mut flash, common::BOOT_FLASH_SIZE).expect("an accepted slot has a header");
    let mut image = vec![0u8; m.image_size as usize];
    flash.read(header.payload_offset, &mut image).expect("an accepted image lies inside the slot");
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&image)), m.image_digest, "measured digest is not the image's");
});
