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
//! The file is accessed a call at a time, not a word at a time: a write of
//! any number of words is one positioned read of its range, the NOR rules
//! applied word by word to that buffer, and one positioned write of what
//! was programmed; an erase is one write of zeros (per MiB); a read is one
//! read ([`SimFlash::file_calls`] counts them). Installing the 4.2 MiB resvg
//! module took 2.2 million system calls and about 2 s of flash time with a
//! `pread` and a `pwrite` per word, and takes about 1,100 calls and 20 ms
//! this way (docs/benchmarks.md, 5.1).
//!
//! A power cut is planned at the Nth *operation*, where one operation is one
//! word write or one page erase, however many of them share a call to the
//! file. What the interrupted operation leaves behind depends on the
//! [`CutModel`]; after the cut every access fails with
//! [`SimError::PowerLoss`] until [`SimFlash::power_on`], which is the
//! simulated reboot. The contents stay as the cut left them.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The most bytes one call to the backing file erases: a large erase is a
/// few large writes, never a buffer the size of the flash.
const ERASE_CHUNK: usize = 1 << 20;

/// Where the cells live.
#[derive(Debug)]
enum Cells {
    Memory(Vec<u8>),
    /// `calls`: positioned reads and writes of `file` so far.
    File {
        file: File,
        len: usize,
        calls: AtomicU64,
    },
}

impl Cells {
    fn len(&self) -> usize {
        match self {
            Cells::Memory(m) => m.len(),
            Cells::File { len, .. } => *len,
        }
    }

    fn calls(&self) -> u64 {
        match self {
            Cells::Memory(_) => 0,
            Cells::File { calls, .. } => calls.load(Ordering::Relaxed),
        }
    }

    /// Reads `out.len()` bytes at `at`: one read of the file.
    fn get(&self, at: usize, out: &mut [u8]) -> Result<(), SimError> {
        match self {
            Cells::Memory(m) => out.copy_from_slice(&m[at..at + out.len()]),
            Cells::File { file, calls, .. } => {
                calls.fetch_add(1, Ordering::Relaxed);
                file.read_exact_at(out, at as u64)?;
                out.iter_mut().for_each(|b| *b = !*b);
            }
        }
        Ok(())
    }

    /// Writes `data` at `at`: one write of the file.
    fn set(&mut self, at: usize, data: &[u8]) -> Result<(), SimError> {
        match self {
            Cells::Memory(m) => m[at..at + data.len()].copy_from_slice(data),
            Cells::File { file, calls, .. } => {
                let inverted: Vec<u8> = data.iter().map(|b| !b).collect();
                *calls.get_mut() += 1;
                file.write_all_at(&inverted, at as u64)?;
            }
        }
        Ok(())
    }

    /// Lets `program` change the `len` bytes at `at` in place. It returns
    /// how many leading bytes it went through (only those are stored back)
    /// and its result. In a file: one read and at most one write.
    fn update<R>(
        &mut self,
        at: usize,
        len: usize,
        program: impl FnOnce(&mut [u8]) -> (usize, R),
    ) -> Result<R, SimError> {
        if let Cells::Memory(m) = self {
            return Ok(program(&mut m[at..at + len]).1);
        }
        let mut cells = vec![0u8; len];
        self.get(at, &mut cells)?;
        let (done, result) = program(&mut cells);
        if done > 0 {
            self.set(at, &cells[..done])?;
        }
        Ok(result)
    }

    /// Erases `len` bytes at `at`: zeros in the file, at most
    /// [`ERASE_CHUNK`] bytes a write.
    fn erase(&mut self, at: usize, len: usize) -> Result<(), SimError> {
        match self {
            Cells::Memory(m) => m[at..at + len].fill(0xFF),
            Cells::File { file, calls, .. } => {
                let zeros = vec![0u8; len.min(ERASE_CHUNK)];
                for chunk in (at..at + len).step_by(ERASE_CHUNK) {
                    let n = (at + len - chunk).min(ERASE_CHUNK);
                    *calls.get_mut() += 1;
                    file.write_all_at(&zeros[..n], chunk as u64)?;
                }
            }
        }
        Ok(())
    }
}

/// The operation count and the planned cut.
#[derive(Debug)]
struct Power {
    ops: u64,
    cut: Option<Cut>,
    on: bool,
}

impl Power {
    fn new() -> Self {
        Power { ops: 0, cut: None, on: true }
    }

    /// Counts one operation; returns the cut if it is this one.
    fn tick(&mut self) -> Option<Cut> {
        self.ops += 1;
        match self.cut {
            Some(cut) if cut.at == self.ops => {
                self.on = false;
                Some(cut)
            }
            _ => None,
        }
    }
}

/// Programs `data` over `cells`, the current contents of the words from
/// flash offset `from`, one word (one operation) at a time as the chip
/// does: a word becomes `old & new`. A cut tears its word and ends the
/// write, as does a word already written on write-once flash (which is left
/// as it is). Returns how many leading bytes of `cells` were gone through,
/// and the outcome.
fn program<const WRITE: usize>(
    cells: &mut [u8],
    data: &[u8],
    from: usize,
    write_once: bool,
    power: &mut Power,
    stats: &mut FlashStats,
) -> (usize, Result<(), SimError>) {
    for (i, (word, new)) in cells.chunks_exact_mut(WRITE).zip(data.chunks_exact(WRITE)).enumerate() {
        let at = from + i * WRITE;
        if write_once && word.iter().any(|&b| b != 0xFF) {
            return (i * WRITE, Err(SimError::WriteTwice(at as u32)));
        }
        stats.word_writes += 1;
        match power.tick() {
            None => word.iter_mut().zip(new).for_each(|(w, d)| *w &= d),
            Some(cut) => {
                tear_write(word, new, cut, at);
                return ((i + 1) * WRITE, Err(SimError::PowerLoss));
            }
        }
    }
    (cells.len(), Ok(()))
}

/// What a write of `new` over `word`, at flash offset `at`, leaves behind
/// when the power is cut during it.
fn tear_write(word: &mut [u8], new: &[u8], cut: Cut, at: usize) {
    let mut rng = SplitMix64::new(cut.seed ^ at as u64);
    match cut.model {
        CutModel::Clean => {}
        CutModel::TornPrefix => {
            let n = rng.below(word.len() as u64 + 1) as usize;
            word[..n].iter_mut().zip(new).for_each(|(w, d)| *w &= d);
        }
        CutModel::TornRandom => {
            for (w, d) in word.iter_mut().zip(new) {
                // Clear a random subset of the bits the write would clear.
                *w &= !(!d & rng.next_u64() as u8);
            }
        }
    }
}

/// What an erase of `page`, at flash offset `at`, leaves behind when the
/// power is cut during it.
fn tear_erase<const WRITE: usize>(page: &mut [u8], cut: Cut, at: usize) {
    let mut rng = SplitMix64::new(cut.seed ^ at as u64);
    match cut.model {
        CutModel::Clean => {}
        CutModel::TornPrefix => {
            let n = rng.below(page.len() as u64 + 1) as usize;
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
}

/// A simulated NOR flash of `WRITE`-byte words and `ERASE`-byte pages.
#[derive(Debug)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    cells: Cells,
    write_once: bool,
    power: Power,
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
            power: Power::new(),
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
            cells: Cells::File { file, len: size, calls: AtomicU64::new(0) },
            write_once: false,
            power: Power::new(),
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
        self.power.ops = 0;
        self.power.cut = Some(cut);
    }

    /// Disarms any planned cut.
    pub fn disarm(&mut self) {
        self.power.cut = None;
    }

    /// Operations (word writes and page erases) since the last `arm` or `reset_ops`.
    pub fn ops(&self) -> u64 {
        self.power.ops
    }

    /// Restarts the operation count.
    pub fn reset_ops(&mut self) {
        self.power.ops = 0;
    }

    /// Whether a planned cut has happened and the power is still off.
    pub fn is_off(&self) -> bool {
        !self.power.on
    }

    /// The simulated reboot: power returns, contents are as the cut left them.
    pub fn power_on(&mut self) {
        self.power.on = true;
        self.power.cut = None;
    }

    /// Counts of operations so far.
    pub fn stats(&self) -> FlashStats {
        self.stats
    }

    /// Zeroes the operation counts.
    pub fn reset_stats(&mut self) {
        self.stats = FlashStats::default();
    }

    /// Positioned reads and writes of the backing file so far (one system
    /// call each on a regular file), 0 for a flash in memory. Whatever its
    /// length, a read costs one, a write two (a read and a write), an erase
    /// one per MiB.
    pub fn file_calls(&self) -> u64 {
        self.cells.calls()
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
        if !self.power.on {
            return Err(SimError::PowerLoss);
        }
        let from = offset as usize;
        if !from.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimError::NotAligned);
        }
        let to = from.checked_add(len).filter(|&to| to <= self.cells.len()).ok_or(SimError::OutOfBounds)?;
        Ok((from, to))
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
        // One operation per page, up to a cut if one falls in the range:
        // the pages before it are erased in one go, then its page is torn.
        let cut = (from..to).step_by(ERASE).find_map(|page| {
            self.stats.page_erases += 1;
            self.power.tick().map(|cut| (page, cut))
        });
        let erased = cut.map_or(to, |(page, _)| page);
        if erased > from {
            self.cells.erase(from, erased - from)?;
        }
        let Some((page, cut)) = cut else { return Ok(()) };
        self.cells.update(page, ERASE, |cells| {
            tear_erase::<WRITE>(cells, cut, page);
            (ERASE, ())
        })?;
        Err(SimError::PowerLoss)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let (from, _) = self.check(offset, bytes.len(), WRITE)?;
        let SimFlash { cells, write_once, power, stats } = self;
        cells.update(from, bytes.len(), |old| program::<WRITE>(old, bytes, from, *write_once, power, stats))?
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

    /// A flash in a fresh file, removed when the guard drops.
    fn file_flash(name: &str, size: usize) -> (Flash, Removed) {
        let path = std::env::temp_dir().join(format!("gantry-sim-{}-{name}.bin", std::process::id()));
        let _ = std::fs::remove_file(&path);
        (Flash::open(&path, size).unwrap(), Removed(path))
    }

    struct Removed(std::path::PathBuf);

    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// `check` on a flash in memory and on one in a file.
    fn in_memory_and_file(name: &str, size: usize, write_once: bool, check: impl Fn(&mut Flash)) {
        check(&mut Flash::new(size).with_write_once(write_once));
        let (f, _file) = file_flash(name, size);
        check(&mut f.with_write_once(write_once));
    }

    /// What the flash did before writes were batched: a write of n words
    /// as n one-word writes, stopping at the first error.
    fn word_by_word(f: &mut Flash, offset: u32, data: &[u8]) -> Result<(), SimError> {
        data.chunks(4).enumerate().try_for_each(|(i, word)| f.write(offset + 4 * i as u32, word))
    }

    /// And an erase of n pages as n one-page erases.
    fn page_by_page(f: &mut Flash, from: u32, to: u32) -> Result<(), SimError> {
        (from..to).step_by(256).try_for_each(|page| f.erase(page, page + 256))
    }

    #[test]
    fn a_file_backed_write_read_or_erase_is_one_call_to_the_file() {
        let (mut f, _file) = file_flash("calls", 64 * 256);
        f.write(256, &[0x5A; 4096]).unwrap();
        assert_eq!(f.file_calls(), 2, "one read and one write for 1024 words");
        assert_eq!((f.stats().word_writes, f.ops()), (1024, 1024), "still one operation per word");
        let mut buf = vec![0u8; 4096];
        f.read(256, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x5A));
        assert_eq!(f.file_calls(), 3);
        f.erase(0, 32 * 256).unwrap();
        assert_eq!(f.file_calls(), 4, "one write for 32 pages");
        assert_eq!((f.stats().page_erases, f.ops()), (32, 1056), "still one operation per page");
        // Refused before the file is touched or an operation counted.
        assert!(matches!(f.write(2, &[0; 8]), Err(SimError::NotAligned)));
        assert!(matches!(f.write(0, &[0; 6]), Err(SimError::NotAligned)));
        assert!(matches!(f.write(64 * 256 - 4, &[0; 8]), Err(SimError::OutOfBounds)));
        assert!(matches!(f.erase(0, 100), Err(SimError::NotAligned)));
        assert_eq!((f.file_calls(), f.ops()), (4, 1056));
        assert!(f.contents()[..8 * 256].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn a_write_of_many_words_only_clears_bits_in_each() {
        in_memory_and_file("and", 1024, false, |f| {
            let a: Vec<u8> = (0..256u32).map(|i| (i * 37) as u8).collect();
            let b: Vec<u8> = (0..256u32).map(|i| (i * 101 + 7) as u8).collect();
            f.write(256, &a).unwrap();
            // Sets bits that `a` cleared: they stay clear, nothing is refused.
            f.write(256, &b).unwrap();
            let want: Vec<u8> = a.iter().zip(&b).map(|(x, y)| x & y).collect();
            let c = f.contents();
            assert_eq!(&c[256..512], &want[..]);
            assert!(c[..256].iter().chain(&c[512..]).all(|&b| b == 0xFF), "neighbours untouched");
            assert_eq!(f.stats().word_writes, 128);
        });
    }

    #[test]
    fn write_once_stops_a_write_at_the_first_word_already_written() {
        in_memory_and_file("once", 1024, true, |f| {
            f.write(20, &[0xFE; 4]).unwrap();
            f.reset_ops();
            assert!(matches!(f.write(0, &[0; 64]), Err(SimError::WriteTwice(20))));
            assert_eq!(f.ops(), 5, "the five words before it were written");
            let c = f.contents();
            assert!(c[..20].iter().all(|&b| b == 0));
            assert_eq!(&c[20..24], &[0xFE; 4], "the word written before is left as it was");
            assert!(c[24..].iter().all(|&b| b == 0xFF), "nothing after it is written");
        });
    }

    #[test]
    fn a_cut_tears_its_word_and_leaves_the_rest_of_the_write_undone() {
        let old: Vec<u8> = (0..64u32).map(|i| !(1u8 << (i % 8))).collect();
        let new: Vec<u8> = (0..64u32).map(|i| (i * 73 + 5) as u8).collect();
        for model in CutModel::ALL {
            for seed in 0..8 {
                for at in 1..=16u64 {
                    let cut = Cut { at, model, seed };
                    let mut reference = Flash::new(512);
                    reference.write(64, &old).unwrap();
                    reference.arm(cut);
                    assert!(matches!(word_by_word(&mut reference, 64, &new), Err(SimError::PowerLoss)));
                    in_memory_and_file("torn", 512, false, |f| {
                        f.write(64, &old).unwrap();
                        f.arm(cut);
                        assert!(matches!(f.write(64, &new), Err(SimError::PowerLoss)));
                        assert!(f.is_off() && f.ops() == at);
                        assert!(matches!(f.write(0, &[0; 4]), Err(SimError::PowerLoss)), "off until power_on");
                        f.power_on();
                        let c = f.contents();
                        let torn = 64 + 4 * (at as usize - 1);
                        for (i, (&got, (&o, &n))) in c[64..128].iter().zip(old.iter().zip(&new)).enumerate() {
                            let at_byte = 64 + i;
                            if at_byte < torn {
                                assert_eq!(got, o & n, "{model:?}: written before the cut");
                            } else if at_byte < torn + 4 {
                                assert!(got & (o & n) == o & n && got & !o == 0, "{model:?}: between old and new");
                                if model == CutModel::Clean {
                                    assert_eq!(got, o, "a clean cut leaves the word as it was");
                                }
                            } else {
                                assert_eq!(got, o, "{model:?}: not written after the cut");
                            }
                        }
                        assert_eq!(c, reference.contents(), "{model:?} seed {seed} at {at}: as word by word");
                    });
                }
            }
        }
    }

    #[test]
    fn a_cut_in_an_erase_of_many_pages_tears_one_page() {
        for model in CutModel::ALL {
            for seed in 0..16 {
                let cut = Cut { at: 4, model, seed };
                let mut reference = Flash::new(2048);
                reference.write(0, &[0; 2048]).unwrap();
                reference.arm(cut);
                assert!(matches!(page_by_page(&mut reference, 0, 2048), Err(SimError::PowerLoss)));
                in_memory_and_file("erase", 2048, false, |f| {
                    f.write(0, &[0; 2048]).unwrap();
                    f.arm(cut);
                    assert!(matches!(f.erase(0, 2048), Err(SimError::PowerLoss)));
                    assert_eq!(f.ops(), 4);
                    let c = f.contents();
                    assert!(c[..768].iter().all(|&b| b == 0xFF), "the pages before the cut are erased");
                    assert!(c[1024..].iter().all(|&b| b == 0), "the pages after it are not");
                    if model == CutModel::Clean {
                        assert!(c[768..1024].iter().all(|&b| b == 0));
                    }
                    assert_eq!(c, reference.contents(), "{model:?} seed {seed}: as page by page");
                });
            }
        }
    }

    /// FNV-1a, to pin whole contents in a few digits.
    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }

    /// What torn cuts leave, byte for byte, as recorded from the simulator
    /// before writes were batched (one call to the file per word): the
    /// third word of an 8-word write of zeros over erased flash, and the
    /// second page of a 4-page erase of zeroed flash.
    #[test]
    fn torn_cuts_leave_exactly_what_they_left_before() {
        #[rustfmt::skip]
        let expected: [(CutModel, u64, [u8; 4], u64, u64); 8] = [
            (CutModel::TornPrefix, 0, [0x00, 0x00, 0x00, 0xff], 0xb86a_b536_486a_c684, 0xd92b_7bd8_7266_b7e2),
            (CutModel::TornPrefix, 1, [0x00, 0x00, 0x00, 0xff], 0xb86a_b536_486a_c684, 0x8417_541f_951a_6f3e),
            (CutModel::TornPrefix, 2, [0x00, 0x00, 0x00, 0x00], 0x8cdd_6f6a_a796_f891, 0x325f_2112_69d6_bb94),
            (CutModel::TornPrefix, 3, [0x00, 0x00, 0x00, 0x00], 0x8cdd_6f6a_a796_f891, 0xd9f0_56ad_8cdd_d186),
            (CutModel::TornRandom, 0, [0xbb, 0x54, 0xd1, 0x08], 0xca9d_ac71_8f57_7067, 0x8c95_7188_ad40_2a4e),
            (CutModel::TornRandom, 1, [0xf6, 0x17, 0xac, 0xf6], 0x505b_6eb9_1356_83e8, 0x6e82_7db0_2a3b_aa79),
            (CutModel::TornRandom, 2, [0x25, 0x94, 0x87, 0x57], 0x5906_9023_c23e_edce, 0xfb88_427c_d877_7e2d),
            (CutModel::TornRandom, 3, [0x75, 0xf5, 0x0c, 0x1d], 0xa6ec_9e99_7530_6dc8, 0x6ecb_f23f_4574_161d),
        ];
        for (model, seed, word, written, erased) in expected {
            in_memory_and_file("golden", 1024, false, |f| {
                f.arm(Cut { at: 3, model, seed });
                assert!(matches!(f.write(16, &[0; 32]), Err(SimError::PowerLoss)));
                f.power_on();
                assert_eq!(&f.contents()[24..28], &word, "{model:?} seed {seed}: torn word");
                assert_eq!(fnv(&f.contents()), written, "{model:?} seed {seed}: after the torn write");
                f.write(0, &[0; 1024]).unwrap();
                f.arm(Cut { at: 2, model, seed });
                assert!(matches!(f.erase(0, 1024), Err(SimError::PowerLoss)));
                assert_eq!(fnv(&f.contents()), erased, "{model:?} seed {seed}: after the torn erase");
            });
        }
    }

    /// Random writes, erases and reads with cuts armed at random
    /// operations, on plain and write-once flash: a write or erase in one
    /// call, in memory and in a file, ends exactly as the same write word
    /// by word (erase page by page) did: same result, contents, operation
    /// counts and power.
    #[test]
    fn one_call_does_what_one_call_per_word_did() {
        const SIZE: usize = 2048;
        let mut rng = SplitMix64::new(13);
        let (file, _file) = file_flash("random", SIZE);
        let mut flashes = [Flash::new(SIZE), Flash::new(SIZE), file];
        let outcome = |r: Result<(), SimError>| format!("{r:?}");
        for round in 0..200 {
            let write_once = round % 3 == 0;
            for f in &mut flashes {
                f.power_on();
                f.restore(&[0xFF; SIZE]).unwrap();
                f.write_once = write_once;
                f.reset_stats();
            }
            let cut = Cut { at: 1 + rng.below(400), model: CutModel::ALL[rng.below(3) as usize], seed: rng.next_u64() };
            flashes.iter_mut().for_each(|f| f.arm(cut));
            for step in 0..24 {
                let [reference, memory, file] = &mut flashes;
                let (results, what) = match rng.below(4) {
                    0 => {
                        let from = rng.below(SIZE as u64 / 256) as u32 * 256;
                        let to = from + 256 * (1 + rng.below((SIZE as u64 - from as u64) / 256)) as u32;
                        let r = [page_by_page(reference, from, to), memory.erase(from, to), file.erase(from, to)];
                        (r.map(outcome), format!("erase {from:#x}..{to:#x}"))
                    }
                    1 => {
                        let from = rng.below(SIZE as u64) as u32;
                        let mut buf = [[0u8; 64]; 3];
                        let len = (rng.below(64) as usize).min(SIZE - from as usize);
                        let [b0, b1, b2] = &mut buf;
                        let r = [
                            reference.read(from, &mut b0[..len]),
                            memory.read(from, &mut b1[..len]),
                            file.read(from, &mut b2[..len]),
                        ];
                        assert!(buf[1] == buf[0] && buf[2] == buf[0], "round {round} step {step}: read");
                        (r.map(outcome), format!("read {from:#x}+{len}"))
                    }
                    _ => {
                        let from = rng.below(SIZE as u64 / 4) as u32 * 4;
                        let words = 1 + rng.below(((SIZE as u64 - from as u64) / 4).min(64)) as usize;
                        // Mostly zeros and ones, so words get written twice.
                        let data: Vec<u8> = (0..4 * words)
                            .map(|_| match rng.below(4) {
                                0 => 0xFF,
                                1 => 0,
                                _ => rng.next_u64() as u8,
                            })
                            .collect();
                        let r =
                            [word_by_word(reference, from, &data), memory.write(from, &data), file.write(from, &data)];
                        (r.map(outcome), format!("write {from:#x}+{}", data.len()))
                    }
                };
                let context = format!("round {round} step {step}, {what}, {cut:?}, write once {write_once}");
                assert!(results[1] == results[0] && results[2] == results[0], "{context}: {results:?}");
                for f in [&*memory, &*file] {
                    assert!(f.contents() == reference.contents(), "{context}: contents");
                    assert_eq!((f.ops(), f.is_off()), (reference.ops(), reference.is_off()), "{context}");
                    let (s, r) = (f.stats(), reference.stats());
                    assert_eq!((s.word_writes, s.page_erases), (r.word_writes, r.page_erases), "{context}");
                }
                if reference.is_off() && rng.below(2) == 0 {
                    flashes.iter_mut().for_each(Flash::power_on);
                }
            }
        }
    }
}
