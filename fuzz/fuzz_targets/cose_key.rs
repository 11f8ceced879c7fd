//! COSE_Key decoding; a decoded key must survive an encode/decode round trip.
#![no_main]

use gantry_keys::{COSE_KEY_MAX_LEN, decode_cose_key, encode_cose_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = decode_cose_key(data) else { return };
    let _ = key.key_id().to_string();
    let mut buf = [0u8; COSE_KEY_MAX_LEN];
    let n = encode_cose_key(&key, &mut buf);
    assert_eq!(decode_cose_key(&buf[..n]).ok(), Some(key));
});
