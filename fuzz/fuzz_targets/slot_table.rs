//! The device runtime's slot table (which container lives in which slot
//! pair, what each slot holds, where each update stands), read back from the
//! device map on every start; a decoded table must re-encode and decode to
//! itself.
#![no_main]

use gantry_device::table::SlotTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = SlotTable::decode(data) else { return };
    assert_eq!(SlotTable::decode(&table.encode()), Ok(table));
});
