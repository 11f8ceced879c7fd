//! Envelope::parse on arbitrary bytes, then everything an unverified
//! envelope offers, and the manifest parser on whatever it locates.
#![no_main]

use gantry_signing::{Envelope, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data) else { return };
    let _ = env.integrated_payload_names().count();
    for name in env.integrated_payload_names() {
        let _ = env.integrated_payload(name);
    }
    for k in [16, 20, 23] {
        let _ = env.severable(k);
    }
    let _ = env.authentication_wrapper();
    if let Ok(m) = Manifest::parse(env.manifest().content) {
        for c in m.components() {
            let _ = c.to_string();
        }
    }
});
