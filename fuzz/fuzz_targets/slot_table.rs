//! The device runtime's slot table (which container lives in which slot
//! pair, what each slot holds, where each update stands), read back from the
//! device map on every start: a decoded record must re-encode and decode to
//! itself, and a legacy whole table, written by earlier firmware, must read
//! or be refused without a panic.
#![no_main]

use gantry_device::table::{Record, SlotTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let bytes = record.encode().expect("a decoded record is within bounds");
        assert_eq!(Record::decode(&bytes), Ok(record));
    }
    let _ = SlotTable::decode_legacy(data);
});
