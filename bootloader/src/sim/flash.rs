//! A NOR flash with real NOR rules and injectable power cuts.
//!
//! Rules: an erase sets a whole page to `0xFF`; a write can only clear bits
//! (the stored value becomes `old & new`); offsets and lengths must be
//! aligned to the write size (writes) or the page size (erases). With
//! `write_once`, a word that is not fully erased cannot be written again,
//! as on flash with per-word ECC (STM32L4/H7 and friends).
//!
//! In memory, or in a file that is the flash: every access goes to the file,
//! nothing is mirrored in RAM, so a device with a large flash stays small.
//! The file holds every byte inverted, so erased flash is zeros and a new
//! flash is a sparse file taking no disk space until written.
//!
//! A power cut is planned at the Nth *operation*, where one operation is one
//! word write or one page erase. What the interrupted operation leaves
//! behind depends on the [`CutModel`]; after the cut every access fails with
//! [`SimError::PowerLoss`] until [`SimFlash::power_on`], which is the
//! simulated reboot. The contents stay as the cut left them.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use super::rng::SplitMix64;

/// What an operation interrupted by a power cut leaves behind. All three are
/// allowed by `embedded_storage::nor_flash`, which only promises that the
/// rest of the flash is untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CutModel {
    /// The operation does not happen at all.
    Clean,
    /// A random-length prefix of the word (write) or page (erase) is done.
    TornPrefix,
    /// Write: a random subset of the bits to clear is cleared. Erase: each
    /// word of the page is erased, left as it was, or a random mix of both.
    TornRandom,
}

impl CutModel {
    /// All models, for sweeps.
    pub const ALL: [CutModel; 3] = [CutModel::Clean, CutModel::TornPrefix, CutModel::TornRandom];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            CutModel::Clean => "clean",
            CutModel::TornPrefix => "torn-prefix",
            CutModel::TornRandom => "torn-random",
        }
    }
}

/// A planned power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// 1-based index of the operation (word write or page erase) to cut, counted
    /// from when the cut was armed.
    pub at: u64,
    /// What the interrupted operation leaves behind.
    pub model: CutModel,
    /// Seed for the torn models.
    pub seed: u64,
}

/// Errors of the simulated flash.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Offset or length not aligned to the write or erase size.
    #[error("access not aligned")]
    NotAligned,
    /// Access beyond the end of the flash.
    #[error("access out of bounds")]
    OutOfBounds,
    /// The power was cut; nothing works until `power_on`.
    #[error("power lost")]
    PowerLoss,
    /// A write to a word that is not erased, on write-once flash.
    #[error("word at {0:#x} written twice without an erase")]
    WriteTwice(u32),
    /// The backing file failed.
    #[error("backing file: {0}")]
    Io(#[from] std::io::Error),
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::NotAligned => NorFlashErrorKind::NotAligned,
            SimError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Operation counts, for benchmarks and wear estimates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlashStats {
    /// Page erases.
    pub page_erases: u64,
    /// Word writes.
    pub word_writes: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

/// Where the cells live.
#[derive(Debug)]
enum Cells {
    Memory(Vec<u8>),
    File { file: File, len: usize },
}

impl Cells {
    fn len(&self) -> usize {
        match self {
            Cells::Memory(m) => m.len(),
            Cells::File { len, .. } => *len,
        }
    }

    fn get(&self, at: usize, out: &mut [u8]) -> Result<(), SimError> {
        match self {
            Cells::Memory(m) => out.copy_from_slice(&m[at..at + out.len()]),
            Cells::File { file, .. } => {
                file.read_exact_at(out, at as u64)?;
                out.iter_mut().for_each(|b| *b = !*b);
            }
        }
        Ok(())
    }

    fn set(&mut self, at: usize, data: &[u8]) -> Result<(), SimError> {
        match self {
            Cells::Memory(m) => m[at..at + data.len()].copy_from_slice(data),
            Cells::File { file, .. } => {
                let inverted: Vec<u8> = data.iter().map(|b| !b).collect();
                file.write_all_at(&inverted, at as u64)?;
            }
        }
        Ok(())
    }
}

/// A simulated NOR flash of `WRITE`-byte words and `ERASE`-byte pages.
#[derive(Debug)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    cells: Cells,
    write_once: bool,
    ops: u64,
    cut: Option<Cut>,
    powered: bool,
    stats: FlashStats,
}

impl<const WRITE: usize, const ERASE: usize> SimFlash<WRITE, ERASE> {
    const GEOMETRY_OK: () = assert!(WRITE > 0 && ERASE > 0 && ERASE.is_multiple_of(WRITE));

    /// An erased flash of `size` bytes (a multiple of the page size) in memory.
    pub fn new(size: usize) -> Self {
        let () = Self::GEOMETRY_OK;
        assert!(size.is_multiple_of(ERASE), "flash size must be a whole number of pages");
        SimFlash {
            cells: Cells::Memory(vec![0xFF; size]),
            write_once: false,
            ops: 0,
            cut: None,
            powered: true,
            stats: FlashStats::default(),
        }
    }

    /// A flash that is the file at `path`: an existing file of exactly
    /// `size` bytes is used as it is, a missing or empty one becomes an
    /// erased (sparse) flash of `size` bytes.
    pub fn open(path: &Path, size: usize) -> Result<Self, SimError> {
        let () = Self::GEOMETRY_OK;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            if !size.is_multiple_of(ERASE) {
                return Err(SimError::OutOfBounds);
            }
            file.set_len(size as u64)?;
        } else if len != size as u64 {
            return Err(SimError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds {len} bytes, not a {size}-byte flash", path.display()),
            )));
        }
        Ok(SimFlash {
            cells: Cells::File { file, len: size },
            write_once: false,
            ops: 0,
            cut: None,
            powered: true,
            stats: FlashStats::default(),
        })
    }

    /// Refuse writes to words that are not erased (flash with per-word ECC).
    pub fn with_write_once(mut self, on: bool) -> Self {
        self.write_once = on;
        self
    }

    /// Arms a power cut at the `cut.at`-th operation from now.
    pub fn arm(&mut self, cut: Cut) {
        self.ops = 0;
        self.cut = Some(cut);
    }

    /// Disarms any planned cut.
    pub fn disarm(&mut self) {
        self.cut = None;
    }

    /// Operations (word writes and page erases) since the last `arm` or `reset_ops`.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Restarts the operation count.
    pub fn reset_ops(&mut self) {
        self.ops = 0;
    }

    /// Whether a planned cut has happened and the power is still off.
    pub fn is_off(&self) -> bool {
        !self.powered
    }

    /// The simulated reboot: power returns, contents are as the cut left them.
    pub fn power_on(&mut self) {
        self.powered = true;
        self.cut = None;
    }

    /// Counts of operations so far.
    pub fn stats(&self) -> FlashStats {
        self.stats
    }

    /// Zeroes the operation counts.
    pub fn reset_stats(&mut self) {
        self.stats = FlashStats::default();
    }

    /// The whole contents (borrowed in memory, read from the file otherwise).
    pub fn contents(&self) -> Cow<'_, [u8]> {
        match &self.cells {
            Cells::Memory(m) => Cow::Borrowed(m),
            Cells::File { .. } => {
                let mut all = vec![0u8; self.cells.len()];
                match self.cells.get(0, &mut all) {
                    Ok(()) => Cow::Owned(all),
                    Err(_) => Cow::Owned(Vec::new()),
                }
            }
        }
    }

    /// Replaces the whole contents (a snapshot taken with `contents`).
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), SimError> {
        if snapshot.len() != self.cells.len() {
            return Err(SimError::OutOfBounds);
        }
        self.cells.set(0, snapshot)
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(usize, usize), SimError> {
        if !self.powered {
            return Err(SimError::PowerLoss);
        }
        let from = offset as usize;
        if !from.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimError::NotAligned);
        }
        let to = from.checked_add(len).filter(|&to| to <= self.cells.len()).ok_or(SimError::OutOfBounds)?;
        Ok((from, to))
    }

    /// Counts one operation; returns the cut if it is this one.
    fn tick(&mut self) -> Option<Cut> {
        self.ops += 1;
        match self.cut {
            Some(cut) if cut.at == self.ops => {
                self.powered = false;
                Some(cut)
            }
            _ => None,
        }
    }

    fn write_word(&mut self, at: usize, data: &[u8]) -> Result<(), SimError> {
        let mut word = [0u8; WRITE];
        self.cells.get(at, &mut word)?;
        if self.write_once && word.iter().any(|&b| b != 0xFF) {
            return Err(SimError::WriteTwice(at as u32));
        }
        self.stats.word_writes += 1;
        match self.tick() {
            None => word.iter_mut().zip(data).for_each(|(w, d)| *w &= d),
            Some(cut) => {
                let mut rng = SplitMix64::new(cut.seed ^ at as u64);
                match cut.model {
                    CutModel::Clean => {}
                    CutModel::TornPrefix => {
                        let n = rng.below(WRITE as u64 + 1) as usize;
                        word[..n].iter_mut().zip(data).for_each(|(w, d)| *w &= d);
                    }
                    CutModel::TornRandom => {
                        for (w, d) in word.iter_mut().zip(data) {
                            // Clear a random subset of the bits the write would clear.
                            *w &= !(!d & rng.next_u64() as u8);
                        }
                    }
                }
            }
        }
        self.cells.set(at, &word)?;
        if self.powered { Ok(()) } else { Err(SimError::PowerLoss) }
    }

    fn erase_page(&mut self, at: usize) -> Result<(), SimError> {
        self.stats.page_erases += 1;
        let Some(cut) = self.tick() else {
            return self.cells.set(at, &vec![0xFF; ERASE]);
        };
        let mut page = vec![0u8; ERASE];
        self.cells.get(at, &mut page)?;
        let mut rng = SplitMix64::new(cut.seed ^ at as u64);
        match cut.model {
            CutModel::Clean => {}
            CutModel::TornPrefix => {
                let n = rng.below(ERASE as u64 + 1) as usize;
                page[..n].fill(0xFF);
            }
            // Cells of a half-erased page end up erased, untouched or in
            // between, word by word.
            CutModel::TornRandom => {
                for word in page.chunks_mut(WRITE) {
                    match rng.below(3) {
                        0 => word.fill(0xFF),
                        1 => {}
                        _ => word.iter_mut().for_each(|b| *b |= rng.next_u64() as u8),
                    }
                }
            }
        }
        self.cells.set(at, &page)?;
        Err(SimError::PowerLoss)
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for SimFlash<WRITE, ERASE> {
    type Error = SimError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for SimFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        let (from, _) = self.check(offset, bytes.len(), 1)?;
        self.cells.get(from, bytes)?;
        self.stats.bytes_read += bytes.len() as u64;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.cells.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for SimFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let len = (to as usize).checked_sub(from as usize).ok_or(SimError::OutOfBounds)?;
        let (from, to) = self.check(from, len, ERASE)?;
        (from..to).step_by(ERASE).try_for_each(|page| self.erase_page(page))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let (from, _) = self.check(offset, bytes.len(), WRITE)?;
        bytes.chunks_exact(WRITE).enumerate().try_for_each(|(i, word)| self.write_word(from + i * WRITE, word))
    }
}

/// Writing a word twice only clears more bits, which NOR allows unless the
/// flash is `write_once`.
impl<const WRITE: usize, const ERASE: usize> MultiwriteNorFlash for SimFlash<WRITE, ERASE> {}

#[cfg(test)]
mod tests {
    use super::*;

    type Flash = SimFlash<4, 256>;

    #[test]
    fn nor_rules() {
        let mut f = Flash::new(1024);
        let mut buf = [0u8; 4];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 4]);
        f.write(0, &[0xF0, 0x0F, 0xAA, 0x55]).unwrap();
        f.write(0, &[0x3C, 0xFF, 0xFF, 0x00]).unwrap();
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0x30, 0x0F, 0xAA, 0x00], "a write only clears bits");
        assert!(matches!(f.write(1, &[0; 4]), Err(SimError::NotAligned)));
        assert!(matches!(f.write(0, &[0; 3]), Err(SimError::NotAligned)));
        assert!(matches!(f.erase(0, 100), Err(SimError::NotAligned)));
        assert!(matches!(f.write(1024, &[0; 4]), Err(SimError::OutOfBounds)));
        assert!(matches!(f.erase(256, 0), Err(SimError::OutOfBounds)));
        f.erase(0, 256).unwrap();
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 4]);
        assert_eq!(f.stats(), FlashStats { page_erases: 1, word_writes: 2, bytes_read: 12 });
    }

    #[test]
    fn write_once_refuses_a_second_write() {
        let mut f = Flash::new(512).with_write_once(true);
        f.write(8, &[0xFE; 4]).unwrap();
        assert!(matches!(f.write(8, &[0; 4]), Err(SimError::WriteTwice(8))));
        f.write(12, &[0; 4]).unwrap();
    }

    #[test]
    fn clean_cut_loses_the_operation_and_the_power() {
        let mut f = Flash::new(512);
        f.arm(Cut { at: 2, model: CutModel::Clean, seed: 0 });
        assert!(matches!(f.write(0, &[0; 8]), Err(SimError::PowerLoss)));
        assert!(f.is_off());
        assert!(matches!(f.read(0, &mut [0; 4]), Err(SimError::PowerLoss)));
        f.power_on();
        let mut buf = [0u8; 8];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], "first word written, second not");
    }

    #[test]
    fn torn_models_stay_between_old_and_new() {
        for seed in 0..200 {
            for model in [CutModel::TornPrefix, CutModel::TornRandom] {
                let mut f = Flash::new(512);
                f.write(256, &[0x00; 256]).unwrap();
                f.arm(Cut { at: 1, model, seed });
                assert!(f.write(0, &[0x5A; 4]).is_err());
                f.power_on();
                // Every byte is a bit-wise mix of 0xFF and 0x5A.
                assert!(f.contents()[..4].iter().all(|&b| b & 0x5A == 0x5A));
                f.arm(Cut { at: 1, model, seed });
                assert!(f.erase(256, 512).is_err());
                f.power_on();
                assert!(f.contents()[4..256].iter().all(|&b| b == 0xFF), "neighbours untouched");
            }
        }
        // A torn prefix erase leaves an erased head and an intact tail.
        let mut f = Flash::new(512);
        f.write(0, &[0; 256]).unwrap();
        f.arm(Cut { at: 1, model: CutModel::TornPrefix, seed: 7 });
        assert!(f.erase(0, 256).is_err());
        let n = f.contents()[..256].iter().take_while(|&&b| b == 0xFF).count();
        assert!(f.contents()[n..256].iter().all(|&b| b == 0));
    }

    #[test]
    fn file_backed_flash_keeps_its_contents() {
        let dir = std::env::temp_dir().join(format!("gantry-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flash.bin");
        let _ = std::fs::remove_file(&path);
        {
            let mut f = Flash::open(&path, 1024).unwrap();
            f.write(4, &[1, 2, 3, 4]).unwrap();
        }
        let mut f = Flash::open(&path, 1024).unwrap();
        assert_eq!(&f.contents()[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
        // Cuts behave as in memory, and what they leave is in the file.
        f.arm(Cut { at: 2, model: CutModel::Clean, seed: 0 });
        assert!(matches!(f.write(8, &[0; 8]), Err(SimError::PowerLoss)));
        drop(f);
        let f = Flash::open(&path, 1024).unwrap();
        assert_eq!(&f.contents()[8..16], &[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(Flash::open(&path, 2048).is_err(), "a file of another size is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
