//! The device's flash: the bootloader's partitions, then the device map,
//! then an A/B slot pair per container.
//!
//! ```text
//! | ACTIVE | DFU | STATE | BOOT KV | DEVICE KV | pair 0: A, B | pair 1: A, B | ... |
//!  \_________ gantry-boot ________/  slot table, identity, trust root
//! ```

use gantry_boot::Slot;
use gantry_boot::layout::{Layout, LayoutError, Region};

/// Erase page of the device flash.
pub const PAGE: u32 = 4096;
/// Write word of the device flash.
pub const WORD: u32 = 4;

/// Where everything lives on the device flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLayout {
    /// The bootloader's partitions (firmware A/B).
    pub boot: Layout,
    /// The device map: slot table, identity, trust root.
    pub device_kv: Region,
    /// Containers the store holds at most.
    pub max_containers: u8,
    /// Bytes per container slot (module, blobs and the envelope).
    pub slot_size: u32,
    /// Where the first slot pair starts.
    pub containers_start: u32,
}

/// Sizes chosen at `gantry-device init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Firmware ACTIVE slot, in pages.
    pub firmware_pages: u32,
    /// Device map, in pages.
    pub device_kv_pages: u32,
    /// Containers the store holds at most.
    pub max_containers: u8,
    /// Bytes per container slot, a multiple of the page size.
    pub slot_size: u32,
}

impl Default for Geometry {
    /// 256 KiB firmware, a 64 KiB device map, 8 containers of up to 32 MiB.
    fn default() -> Self {
        Geometry { firmware_pages: 64, device_kv_pages: 16, max_containers: 8, slot_size: 32 << 20 }
    }
}

impl DeviceLayout {
    /// Lays `g` out from offset 0.
    pub fn new(g: Geometry) -> Result<DeviceLayout, LayoutError> {
        let boot = Layout::packed(0, g.firmware_pages, PAGE, WORD)?;
        let device_kv = Region { offset: boot.end() as u32, size: g.device_kv_pages.max(2) * PAGE };
        if g.slot_size == 0 || !g.slot_size.is_multiple_of(PAGE) {
            return Err(LayoutError::Misaligned { partition: gantry_boot::layout::Partition::Active, page: PAGE });
        }
        let layout = DeviceLayout {
            boot,
            device_kv,
            max_containers: g.max_containers,
            slot_size: g.slot_size,
            containers_start: device_kv.offset + device_kv.size,
        };
        if layout.size() > u32::MAX as u64 {
            return Err(LayoutError::OutOfFlash {
                partition: gantry_boot::layout::Partition::Active,
                end: layout.size(),
                capacity: u32::MAX,
            });
        }
        Ok(layout)
    }

    /// The region of one container slot.
    pub fn slot(&self, pair: u8, slot: Slot) -> Region {
        let index = 2 * pair as u32 + matches!(slot, Slot::B) as u32;
        Region { offset: self.containers_start + index * self.slot_size, size: self.slot_size }
    }

    /// Whether the device map holds the slot table's records for
    /// `max_containers` (two per container, [`crate::table::MAX_RECORD`]
    /// bytes at most each) beside the trust root, the artifact list and the
    /// small records, with a page free for sequential-storage's garbage
    /// collection.
    pub fn check_device_map(&self) -> Result<(), String> {
        use crate::table::{MAX_CONTAINERS, MAX_RECORD};
        if self.max_containers > MAX_CONTAINERS {
            return Err(format!("at most {MAX_CONTAINERS} containers, not {}", self.max_containers));
        }
        // Records do not straddle pages: count them per page.
        let per_page = (PAGE as usize - 64) / (MAX_RECORD + 16);
        let needed = (2 * self.max_containers as usize).div_ceil(per_page) as u32 + 3;
        let have = self.device_kv.size / PAGE;
        if have < needed {
            return Err(format!(
                "a device map of {have} pages is too small for {} containers: it needs {needed}",
                self.max_containers
            ));
        }
        Ok(())
    }

    /// Total flash size in bytes.
    pub fn size(&self) -> u64 {
        self.containers_start as u64 + 2 * self.max_containers as u64 * self.slot_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_maps_without_overlap() {
        let l = DeviceLayout::new(Geometry { slot_size: 1 << 20, ..Geometry::default() }).unwrap();
        assert_eq!(l.device_kv.offset as u64, l.boot.end());
        let a0 = l.slot(0, Slot::A);
        let b0 = l.slot(0, Slot::B);
        let a1 = l.slot(1, Slot::A);
        assert_eq!(a0.offset, l.device_kv.offset + l.device_kv.size);
        assert_eq!(b0.offset, a0.offset + a0.size);
        assert_eq!(a1.offset, b0.offset + b0.size);
        assert_eq!(l.size(), (l.slot(7, Slot::B).offset + (1 << 20)) as u64);
        assert!(DeviceLayout::new(Geometry { slot_size: 1000, ..Geometry::default() }).is_err());
        assert!(DeviceLayout::new(Geometry { slot_size: 1 << 30, max_containers: 8, ..Geometry::default() }).is_err());
    }
}
