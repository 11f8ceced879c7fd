//! The measured boot record the runtime reads from the bootloader; a decoded
//! record must re-encode within `MAX_RECORD_LEN` and decode to itself.
#![no_main]

use gantry_boot::BootRecord;
use gantry_boot::record::MAX_RECORD_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = BootRecord::decode(data) else { return };
    let mut buf = [0u8; MAX_RECORD_LEN];
    let bytes = record.encode(&mut buf).expect("a decoded record fits MAX_RECORD_LEN");
    assert_eq!(BootRecord::decode(bytes), Ok(record));
});
