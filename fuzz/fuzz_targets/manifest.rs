//! Manifest::parse directly on arbitrary bytes (in `verify` it is only
//! reached behind a valid signature), then its accessors.
#![no_main]

use gantry_signing::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::parse(data) else { return };
    let mut n = 0;
    for c in m.components() {
        let _ = c.to_string();
        let _ = format!("{c:?}");
        n += 1;
    }
    assert_eq!(n, m.component_count());
    for i in 0..=m.component_count() {
        let _ = m.component(i);
    }
    for k in [16, 20, 23, 7] {
        let _ = m.severable(k);
    }
    let _ = (m.sequence_number(), m.shared_sequence(), m.reference_uri());
});
