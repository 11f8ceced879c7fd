//! embassy-boot 0.7's STATE partition, read and repaired directly.
//!
//! Layout, in `WRITE_SIZE` words: word 0 is the magic (every byte `0xF0`
//! swap requested, `0xC0` reverted, `0xE0` DFU detach, anything else boot);
//! word 1 is 0xFF while the progress words are valid; words 2.. are progress
//! marks, one per page copy, `2N` for a swap and `2N` for a revert of an
//! N-page ACTIVE. embassy-boot counts a mark as done when none of its bytes
//! is `0xFF`; Gantry counts it done when any bit is programmed (a torn mark
//! is written only after its step completed) and shows embassy-boot the
//! same view (see `boot::JournaledState`).
//!
//! embassy-boot rewrites the magic by erasing the whole partition. A power
//! cut during that erase can leave a swap magic over half-erased progress
//! marks, which it then reads as "swap not finished" and re-runs the swap
//! over an already swapped image. Gantry journals every such erase in its
//! own map first (see `boot` and `control`) and finishes it with
//! [`force_magic`] after the reboot.

use embedded_storage::nor_flash::NorFlash;

pub(crate) const SWAP_MAGIC: u8 = 0xF0;
pub(crate) const BOOT_MAGIC: u8 = 0xD0;
pub(crate) const REVERT_MAGIC: u8 = 0xC0;
const DFU_DETACH_MAGIC: u8 = 0xE0;
pub(crate) const ERASED: u8 = 0xFF;

/// Where embassy-boot's swap machinery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapState {
    /// Nothing to do: boot ACTIVE.
    Boot,
    /// The runtime asked for USB DFU mode (Gantry boots ACTIVE).
    DfuDetach,
    /// An update is marked and no page has been swapped yet.
    SwapRequested,
    /// A swap was interrupted part way.
    Swapping,
    /// The swap finished and the new image is on trial.
    Swapped,
    /// A revert is under way (or finished copying and not yet marked).
    Reverting,
}

/// Reads the state of an `active_pages`-page ACTIVE; `word` is a scratch buffer.
pub(crate) fn read<S: NorFlash>(state: &mut S, active_pages: usize, word: &mut [u8]) -> Result<SwapState, S::Error> {
    let w = S::WRITE_SIZE;
    let word = &mut word[..w];
    state.read(0, word)?;
    let all = |word: &[u8], b: u8| word.iter().all(|&x| x == b);
    if !all(word, SWAP_MAGIC) {
        return Ok(if all(word, DFU_DETACH_MAGIC) { SwapState::DfuDetach } else { SwapState::Boot });
    }
    state.read(w as u32, word)?;
    if !all(word, ERASED) {
        // Progress invalidated: embassy-boot treats every copy as done.
        return Ok(SwapState::Reverting);
    }
    let max_index = (state.capacity() - w) / w - 2;
    let mut progress = max_index;
    for index in 0..max_index {
        state.read(((2 + index) * w) as u32, word)?;
        if all(word, ERASED) {
            progress = index;
            break;
        }
    }
    let swap = 2 * active_pages;
    Ok(match progress {
        0 => SwapState::SwapRequested,
        p if p < swap => SwapState::Swapping,
        p if p == swap => SwapState::Swapped,
        _ => SwapState::Reverting,
    })
}

/// Erases the partition and writes `magic`: what embassy-boot's `set_magic`
/// does, but unconditionally, so it also finishes an interrupted one.
pub(crate) fn force_magic<S: NorFlash>(state: &mut S, magic: u8, word: &mut [u8]) -> Result<(), S::Error> {
    let word = &mut word[..S::WRITE_SIZE];
    state.erase(0, state.capacity() as u32)?;
    word.fill(magic);
    state.write(0, word)
}
