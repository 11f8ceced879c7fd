//! Partition rules, checked up front with a clear error, because embassy-boot
//! only finds out with an `assert!` in the middle of a boot.
//!
//! ```text
//! | ACTIVE: N pages | DFU: >= N + 1 pages | STATE: >= (2 + 4N) words | BOOT KV: >= 2 pages |
//! ```
//!
//! - ACTIVE holds the running slot image; DFU receives the next one and needs
//!   one spare page for embassy-boot's swap.
//! - STATE is embassy-boot's: a magic word, a progress-valid word and two
//!   progress words per ACTIVE page (swap and revert).
//! - BOOT KV is Gantry's sequential-storage map: anti-rollback counter,
//!   boot-attempt counter, journal.

/// One partition: where it starts and how long it is, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Offset from the start of the flash.
    pub offset: u32,
    /// Length in bytes.
    pub size: u32,
}

impl Region {
    /// `offset + size`, or `None` past 4 GiB.
    pub fn end(&self) -> Option<u32> {
        self.offset.checked_add(self.size)
    }

    fn overlaps(&self, other: &Region) -> bool {
        let (a, b) = (self.offset as u64, other.offset as u64);
        a < b + other.size as u64 && b < a + self.size as u64
    }
}

/// Which partition a [`LayoutError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// The running slot.
    Active,
    /// The update slot.
    Dfu,
    /// embassy-boot's state page(s).
    State,
    /// Gantry's boot key-value map.
    BootKv,
}

impl core::fmt::Display for Partition {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Partition::Active => "ACTIVE",
            Partition::Dfu => "DFU",
            Partition::State => "STATE",
            Partition::BootKv => "BOOT KV",
        })
    }
}

/// A partition rule that does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Page or write size of zero, or a page size that is not a multiple of the write size.
    #[error("page size {page} must be a non-zero multiple of the write size {write}")]
    Geometry {
        /// Erase size.
        page: u32,
        /// Write size.
        write: u32,
    },
    /// A partition does not start or end on a page boundary.
    #[error("{partition} must start and end on a {page}-byte page boundary")]
    Misaligned {
        /// The partition.
        partition: Partition,
        /// The page size.
        page: u32,
    },
    /// A partition is empty.
    #[error("{partition} is empty")]
    Empty {
        /// The partition.
        partition: Partition,
    },
    /// DFU is smaller than ACTIVE plus one page.
    #[error("DFU holds {dfu} bytes; the swap needs ACTIVE + one page = {needed}")]
    DfuTooSmall {
        /// DFU size.
        dfu: u32,
        /// What it needs.
        needed: u32,
    },
    /// STATE cannot hold the progress of a swap and a revert of ACTIVE.
    #[error("STATE holds {state} bytes; {pages} ACTIVE pages need (2 + 4 x {pages}) words = {needed}")]
    StateTooSmall {
        /// STATE size.
        state: u32,
        /// ACTIVE pages.
        pages: u32,
        /// What it needs.
        needed: u32,
    },
    /// The key-value map needs at least two pages to survive a power cut.
    #[error("BOOT KV holds {size} bytes; it needs at least two {page}-byte pages")]
    KvTooSmall {
        /// BOOT KV size.
        size: u32,
        /// The page size.
        page: u32,
    },
    /// Two partitions overlap.
    #[error("{0} and {1} overlap")]
    Overlap(Partition, Partition),
    /// A partition runs past the end of the flash.
    #[error("{partition} ends at {end:#x}, past the end of the {capacity:#x}-byte flash")]
    OutOfFlash {
        /// The partition.
        partition: Partition,
        /// Where it ends.
        end: u64,
        /// Flash size.
        capacity: u32,
    },
}

/// The four partitions on one flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The running slot.
    pub active: Region,
    /// The update slot.
    pub dfu: Region,
    /// embassy-boot's state.
    pub state: Region,
    /// Gantry's boot key-value map.
    pub boot_kv: Region,
}

impl Layout {
    /// The smallest valid layout for an ACTIVE slot of `active_pages` pages,
    /// packed from `start`, with a two-page key-value map.
    pub fn packed(start: u32, active_pages: u32, page: u32, write: u32) -> Result<Layout, LayoutError> {
        if page == 0 || write == 0 || !page.is_multiple_of(write) {
            return Err(LayoutError::Geometry { page, write });
        }
        let region = |offset: u32, size: u32| Region { offset, size };
        let active = region(start, active_pages * page);
        let dfu = region(start + active.size, active.size + page);
        let state_bytes = (2 + 4 * active_pages) * write;
        let state = region(dfu.offset + dfu.size, state_bytes.div_ceil(page) * page);
        let boot_kv = region(state.offset + state.size, 2 * page);
        let layout = Layout { active, dfu, state, boot_kv };
        layout.check(u32::MAX - u32::MAX % page, page, write)?;
        Ok(layout)
    }

    /// Bytes from the start of the flash to the end of the last partition.
    pub fn end(&self) -> u64 {
        [self.active, self.dfu, self.state, self.boot_kv]
            .iter()
            .map(|r| r.offset as u64 + r.size as u64)
            .max()
            .unwrap_or(0)
    }

    /// Checks every rule for a flash of `capacity` bytes with `page`-byte
    /// erases and `write`-byte words.
    pub fn check(&self, capacity: u32, page: u32, write: u32) -> Result<(), LayoutError> {
        let parts = [
            (Partition::Active, self.active),
            (Partition::Dfu, self.dfu),
            (Partition::State, self.state),
            (Partition::BootKv, self.boot_kv),
        ];
        if page == 0 || write == 0 || !page.is_multiple_of(write) {
            return Err(LayoutError::Geometry { page, write });
        }
        for (partition, r) in parts {
            if r.size == 0 {
                return Err(LayoutError::Empty { partition });
            }
            if r.offset % page != 0 || r.size % page != 0 {
                return Err(LayoutError::Misaligned { partition, page });
            }
            let end = r.offset as u64 + r.size as u64;
            if end > capacity as u64 {
                return Err(LayoutError::OutOfFlash { partition, end, capacity });
            }
        }
        for (i, (pa, a)) in parts.iter().enumerate() {
            for (pb, b) in &parts[i + 1..] {
                if a.overlaps(b) {
                    return Err(LayoutError::Overlap(*pa, *pb));
                }
            }
        }
        check_sizes(self.active.size, self.dfu.size, page, self.state.size, page, write, self.boot_kv.size, page)
    }
}

/// The size rules alone, for partitions given as separate flash devices:
/// `page` is the swap page (the larger of ACTIVE's and DFU's erase sizes),
/// STATE and BOOT KV have their own erase sizes.
#[allow(clippy::too_many_arguments)]
pub fn check_sizes(
    active: u32,
    dfu: u32,
    page: u32,
    state: u32,
    state_page: u32,
    write: u32,
    boot_kv: u32,
    kv_page: u32,
) -> Result<(), LayoutError> {
    if page == 0 || write == 0 || state_page == 0 || kv_page == 0 || !state_page.is_multiple_of(write) {
        return Err(LayoutError::Geometry { page: state_page, write });
    }
    let sizes = [
        (Partition::Active, active, page),
        (Partition::Dfu, dfu, page),
        (Partition::State, state, state_page),
        (Partition::BootKv, boot_kv, kv_page),
    ];
    for (partition, size, page) in sizes {
        if size == 0 {
            return Err(LayoutError::Empty { partition });
        }
        if size % page != 0 {
            return Err(LayoutError::Misaligned { partition, page });
        }
    }
    let needed = active as u64 + page as u64;
    if (dfu as u64) < needed {
        return Err(LayoutError::DfuTooSmall { dfu, needed: needed.min(u32::MAX as u64) as u32 });
    }
    let pages = active / page;
    let needed = (2 + 4 * pages as u64) * write as u64;
    if (state as u64) < needed {
        return Err(LayoutError::StateTooSmall { state, pages, needed: needed.min(u32::MAX as u64) as u32 });
    }
    if boot_kv < 2 * kv_page {
        return Err(LayoutError::KvTooSmall { size: boot_kv, page: kv_page });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_layout_is_valid_and_minimal() {
        let l = Layout::packed(0, 8, 1024, 4).unwrap();
        assert_eq!(l.active, Region { offset: 0, size: 8192 });
        assert_eq!(l.dfu, Region { offset: 8192, size: 9216 });
        assert_eq!(l.state, Region { offset: 17408, size: 1024 });
        assert_eq!(l.boot_kv, Region { offset: 18432, size: 2048 });
        l.check(20480, 1024, 4).unwrap();
        assert!(matches!(
            l.check(20479, 1024, 4),
            Err(LayoutError::Misaligned { .. }) | Err(LayoutError::OutOfFlash { .. })
        ));
        assert_eq!(
            l.check(19456, 1024, 4),
            Err(LayoutError::OutOfFlash { partition: Partition::BootKv, end: 20480, capacity: 19456 })
        );
    }

    #[test]
    fn each_rule_has_its_error() {
        let ok = Layout::packed(0, 8, 1024, 4).unwrap();
        let mut l = ok;
        l.dfu.size = 8192;
        assert_eq!(l.check(1 << 20, 1024, 4), Err(LayoutError::DfuTooSmall { dfu: 8192, needed: 9216 }));
        let mut l = ok;
        l.active.size = 512 * 1024;
        l.dfu.offset = 600 * 1024;
        l.dfu.size = 513 * 1024;
        l.state.offset = 2 << 20;
        l.boot_kv.offset = 3 << 20;
        assert_eq!(
            l.check(4 << 20, 1024, 4),
            Err(LayoutError::StateTooSmall { state: 1024, pages: 512, needed: 8200 })
        );
        let mut l = ok;
        l.boot_kv.size = 1024;
        assert_eq!(l.check(1 << 20, 1024, 4), Err(LayoutError::KvTooSmall { size: 1024, page: 1024 }));
        let mut l = ok;
        l.state.offset = 1024;
        assert_eq!(l.check(1 << 20, 1024, 4), Err(LayoutError::Overlap(Partition::Active, Partition::State)));
        let mut l = ok;
        l.dfu.offset += 4;
        assert_eq!(l.check(1 << 20, 1024, 4), Err(LayoutError::Misaligned { partition: Partition::Dfu, page: 1024 }));
        assert_eq!(ok.check(1 << 20, 1000, 16), Err(LayoutError::Geometry { page: 1000, write: 16 }));
        assert!(LayoutError::DfuTooSmall { dfu: 1, needed: 2 }.to_string().contains("ACTIVE + one page"));
    }
}
