//! The runtime's side: stage an update into DFU, ask for it, confirm it.
//!
//! Every change of embassy-boot's STATE goes through the journal: the
//! intended magic is saved in the boot map before STATE is erased, so a
//! power cut during the erase is finished by the next boot rather than
//! misread as a half-done swap.

use embedded_storage::nor_flash::NorFlash;

use crate::check::{BootConfig, Measurement, verify_slot};
use crate::embassy_state::{self, BOOT_MAGIC, SWAP_MAGIC, SwapState};
use crate::error::ControlError;
use crate::keys::BootKeys;
use crate::record::BootRecord;
use crate::store::{BootState, Store};

/// Largest write size supported for padding the last chunk of an update.
const MAX_WORD: usize = 32;

/// The runtime's handle on the DFU and STATE partitions and the boot map.
pub struct Control<D: NorFlash, S: NorFlash, K: NorFlash> {
    dfu: D,
    state: S,
    store: Store<K>,
    /// Pages in ACTIVE (the update must fit it).
    active_size: usize,
    active_pages: usize,
    /// Bytes of the update written so far, `None` before `begin_update`.
    written: Option<usize>,
}

impl<D: NorFlash, S: NorFlash, K: NorFlash> Control<D, S, K> {
    /// `active_size`: bytes in ACTIVE, whose page size is `D::ERASE_SIZE` or larger.
    pub fn new(dfu: D, state: S, boot_kv: K, active_size: usize, page_size: usize) -> Result<Self, ControlError> {
        if S::WRITE_SIZE > MAX_WORD || D::WRITE_SIZE > MAX_WORD || page_size == 0 {
            return Err(ControlError::Image("write size or page size unsupported"));
        }
        Ok(Control {
            dfu,
            state,
            store: Store::new(boot_kv)?,
            active_size,
            active_pages: active_size / page_size,
            written: None,
        })
    }

    /// Where embassy-boot stands and what the bootloader keeps.
    pub fn status(&mut self) -> Result<(SwapState, BootState), ControlError> {
        let mut word = [0u8; MAX_WORD];
        let swap = embassy_state::read(&mut self.state, self.active_pages, &mut word).map_err(ControlError::flash)?;
        Ok((swap, self.store.load()?))
    }

    /// Starts writing a new update into DFU. Refused while an update is
    /// requested, swapping, on trial or reverting.
    pub fn begin_update(&mut self) -> Result<(), ControlError> {
        match self.status()?.0 {
            SwapState::Boot | SwapState::DfuDetach => {
                self.written = Some(0);
                Ok(())
            }
            _ => Err(ControlError::BadState("an update is already in progress or on trial")),
        }
    }

    /// Appends `data` to the update. Chunks must come in order; every chunk
    /// but the last must be a whole number of write words.
    pub fn write_update(&mut self, data: &[u8]) -> Result<(), ControlError> {
        let at = self.written.ok_or(ControlError::BadState("call begin_update first"))?;
        let end = at.checked_add(data.len()).filter(|&e| e <= self.active_size);
        let end = end.ok_or(ControlError::Image("the update is larger than the ACTIVE slot"))?;
        if at % D::WRITE_SIZE != 0 {
            return Err(ControlError::Image("a chunk that is not a whole number of words must be the last"));
        }
        // Erase every page the chunk starts.
        let page = D::ERASE_SIZE;
        let first_new = at.div_ceil(page) * page;
        for p in (first_new..end).step_by(page) {
            self.dfu.erase(p as u32, (p + page) as u32).map_err(ControlError::flash)?;
        }
        let whole = data.len() - data.len() % D::WRITE_SIZE;
        self.dfu.write(at as u32, &data[..whole]).map_err(ControlError::flash)?;
        if whole < data.len() {
            let mut word = [0xFFu8; MAX_WORD];
            word[..data.len() - whole].copy_from_slice(&data[whole..]);
            self.dfu.write((at + whole) as u32, &word[..D::WRITE_SIZE]).map_err(ControlError::flash)?;
        }
        self.written = Some(end);
        Ok(())
    }

    /// Verifies the staged update as the bootloader will, so the runtime can
    /// refuse it before asking for a reboot.
    pub fn verify_update(
        &mut self,
        config: &BootConfig<'_>,
        envelope: &mut [u8],
        chunk: &mut [u8],
    ) -> Result<Measurement, ControlError> {
        let min = self.store.load()?.security_counter;
        Ok(verify_slot(&mut self.dfu, self.active_size, config, min, envelope, chunk)?)
    }

    /// Forgets why the last update was refused or reverted: a new one is on
    /// its way, and a failure recorded from now on is its own. (A request
    /// clears it too; clearing it before the runtime remembers an update as
    /// pending lets it tell an update that failed from one a power cut kept
    /// from being requested.)
    pub fn clear_failure(&mut self) -> Result<(), ControlError> {
        let mut st = self.store.load()?;
        if st.last_failure.take().is_some() {
            self.store.save(&st)?;
        }
        Ok(())
    }

    /// Asks the bootloader to swap the staged update in at the next boot.
    pub fn request_update(&mut self) -> Result<(), ControlError> {
        match self.status()?.0 {
            SwapState::Boot | SwapState::DfuDetach => {}
            _ => return Err(ControlError::BadState("an update is already in progress or on trial")),
        }
        let mut st = self.store.load()?;
        st.last_failure = None;
        self.set_magic(st, SWAP_MAGIC)?;
        self.written = None;
        Ok(())
    }

    /// Confirms the running image (the one `record` describes): ends its
    /// trial and raises the anti-rollback counter to its sequence number.
    /// Confirming an image that is not on trial only raises the counter.
    pub fn confirm(&mut self, record: &BootRecord) -> Result<(), ControlError> {
        let (swap, mut st) = self.status()?;
        match swap {
            SwapState::Swapped => {
                st.security_counter = st.security_counter.max(record.sequence);
                st.generation = st.generation.wrapping_add(1);
                st.trial_boots = 0;
                st.last_failure = None;
                self.set_magic(st, BOOT_MAGIC)
            }
            SwapState::Boot | SwapState::DfuDetach => {
                if record.sequence > st.security_counter {
                    st.security_counter = record.sequence;
                    self.store.save(&st)?;
                }
                Ok(())
            }
            _ => Err(ControlError::BadState("no image to confirm while a swap or revert is under way")),
        }
    }

    /// The keys provisioned in the boot map, if any.
    pub fn keys(&mut self) -> Result<Option<BootKeys>, ControlError> {
        Ok(self.store.load_keys()?)
    }

    /// Provisions the bootloader's keys and identity (manufacture).
    /// Provisioning the same keys again is a no-op; other keys are refused
    /// once some are provisioned: from then on only
    /// [`Control::rotate_trust_root`] changes them.
    pub fn provision(&mut self, keys: &BootKeys) -> Result<(), ControlError> {
        match self.store.load_keys()? {
            None => Ok(self.store.save_keys(keys)?),
            Some(held) if held == *keys => Ok(()),
            Some(_) => Err(ControlError::BadState("the bootloader is already provisioned with other keys")),
        }
    }

    /// Moves the bootloader to the newest trust root of `chain` (oldest
    /// first; roots not newer than the one held are skipped) if each is a
    /// valid successor of the one before, starting from the `root` role
    /// the boot map holds, and the last has not expired at `now`: the
    /// rule the device applies to its own root. One atomic write; returns
    /// the new version, or `None` when `chain` holds nothing newer. The
    /// identity is kept, and the firmware `running` (this boot's record;
    /// `None` when none runs) stays bootable under the release keys that
    /// signed it ([`crate::keys::Retired`]).
    #[cfg(feature = "std")]
    pub fn rotate_trust_root(
        &mut self,
        chain: &[gantry_keys::trust::SignedTrustRoot],
        now: u64,
        running: Option<&BootRecord>,
    ) -> Result<Option<u64>, ControlError> {
        let held = self.keys()?.ok_or(ControlError::BadState("the bootloader holds no keys to rotate from"))?;
        if chain.iter().all(|r| r.unverified_content().version <= held.version) {
            return Ok(None);
        }
        let next = held.root_role().verify_successors(chain, now)?;
        let keys = held.rotated_to(next.root(), running.map(|r| r.manifest_digest))?;
        self.store.save_keys(&keys)?;
        Ok(Some(keys.version))
    }

    /// Journal, erase STATE, write the magic, clear the journal.
    fn set_magic(&mut self, mut st: BootState, magic: u8) -> Result<(), ControlError> {
        st.pending_magic = Some(magic);
        self.store.save(&st)?;
        let mut word = [0u8; MAX_WORD];
        embassy_state::force_magic(&mut self.state, magic, &mut word).map_err(ControlError::flash)?;
        st.pending_magic = None;
        self.store.save(&st)?;
        Ok(())
    }

    /// Gives the partitions back.
    pub fn into_parts(self) -> (D, S) {
        (self.dfu, self.state)
    }
}
