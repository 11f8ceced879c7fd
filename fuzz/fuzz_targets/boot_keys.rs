//! The keys record the bootloader reads from its map at every boot: never
//! a panic; a decoded record re-encodes within `MAX_KEYS_RECORD` and
//! decodes to itself.
#![no_main]

use gantry_boot::BootKeys;
use gantry_boot::keys::MAX_KEYS_RECORD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = BootKeys::decode(data) else { return };
    let mut buf = [0u8; MAX_KEYS_RECORD];
    let n = keys.encode(&mut buf).expect("a decoded record fits MAX_KEYS_RECORD");
    assert_eq!(BootKeys::decode(&buf[..n]), Ok(keys));
});
