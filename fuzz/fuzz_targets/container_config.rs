//! The container config's canonical CBOR form (`ContainerConfig::from_cbor`,
//! mounts, stdin and seed included): a config it accepts is valid and is
//! exactly its own canonical encoding, so one config has one digest.
#![no_main]

use gantry_signing::config::ContainerConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = ContainerConfig::from_cbor(data) {
        assert_eq!(config.to_cbor(), data, "accepted a non-canonical encoding");
        config.validate().expect("accepted an invalid config");
    }
});
