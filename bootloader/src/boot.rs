//! The boot decision. Each boot:
//!
//! 1. finishes any STATE erase the journal says was interrupted;
//! 2. reads where embassy-boot stands and acts:
//!    - swap requested: verify the update in DFU (if configured); refuse it
//!      (back to boot) if it fails, otherwise let embassy-boot swap;
//!    - swapping / reverting: let embassy-boot finish;
//!    - swapped (trial): revert if the trial boots are used up or ACTIVE
//!      does not verify, otherwise hand over as a trial boot;
//!    - boot: verify ACTIVE and hand over; if it does not verify, fall
//!      forward to an image in DFU that does (swapped in, on trial), else
//!      stop in recovery;
//! 3. records the boot (counters, journal) in one atomic map write and
//!    returns the measured [`BootRecord`].
//!
//! Nothing unverified is ever handed over: every path that returns
//! [`BootOutcome::Boot`] went through [`verify_slot`] on ACTIVE in this boot.

use embassy_boot::{BootLoader, BootLoaderConfig};
use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

use crate::check::{BootConfig, verify_slot};
use crate::embassy_state::{self, BOOT_MAGIC, REVERT_MAGIC, SWAP_MAGIC, SwapState};
use crate::error::{BootError, ImageError, Reason, StoreError};
use crate::keys::{BootKeys, BootPolicy};
use crate::layout::check_sizes;
use crate::record::{BootRecord, Slot};
use crate::store::{BootState, Store};

/// Caller-provided buffers: the bootloader allocates nothing.
pub struct Workspace<'w> {
    /// Page-copy buffer for embassy-boot: its length must divide the page
    /// size and be a multiple of every partition's write size; aligned as
    /// the flash driver needs.
    pub page: &'w mut [u8],
    /// Receives the envelope; its length is the largest envelope accepted.
    pub envelope: &'w mut [u8],
}

/// What to do after [`Bootloader::boot`].
#[derive(Debug)]
pub enum BootOutcome {
    /// Jump to ACTIVE, handing over this record.
    Boot(BootRecord),
    /// Nothing verifiable is left to boot: stay in recovery (e.g. wait for
    /// a serial or USB download) and report why.
    Recovery(ImageError),
}

/// What the bootloader verifies with.
// One per bootloader, and there is no allocator to box the keys into
// (about 5 KB with 24 P-256 keys).
#[allow(clippy::large_enum_variant)]
enum Anchors<'c> {
    /// Keys the caller gives (a board that compiles them in; tests).
    Given(BootConfig<'c>),
    /// Keys read from the boot map at open; `None` if none decode.
    Provisioned(Option<BootKeys>, BootPolicy),
}

impl Anchors<'_> {
    fn config(&self) -> Result<BootConfig<'_>, ImageError> {
        match self {
            Anchors::Given(config) => Ok(*config),
            Anchors::Provisioned(Some(keys), policy) => Ok(keys.config(*policy)),
            Anchors::Provisioned(None, _) => Err(ImageError::Unprovisioned),
        }
    }

    fn policy(&self) -> BootPolicy {
        match self {
            Anchors::Given(c) => {
                BootPolicy { max_trial_boots: c.max_trial_boots, check_update_before_swap: c.check_update_before_swap }
            }
            Anchors::Provisioned(_, policy) => *policy,
        }
    }
}

/// Gantry's bootloader over embassy-boot's ACTIVE, DFU and STATE partitions
/// and its own boot key-value map.
pub struct Bootloader<'c, A: NorFlash, D: NorFlash, S: NorFlash, K: NorFlash> {
    anchors: Anchors<'c>,
    active: A,
    dfu: D,
    state: S,
    store: Store<K>,
}

/// Largest write size whose marks the STATE guard makes idempotent.
const MAX_MARK: usize = 32;

/// Upper bound of steps in one boot: request, swap, verify, revert, verify.
const MAX_STEPS: usize = 8;

impl<'c, A: NorFlash, D: NorFlash, S: NorFlash, K: NorFlash> Bootloader<'c, A, D, S, K> {
    /// The bootloader of a device provisioned at manufacture: it verifies
    /// with the keys and identity in its boot map (see [`crate::keys`]);
    /// with none there, nothing verifies and every boot ends in recovery.
    pub fn provisioned(policy: BootPolicy, active: A, dfu: D, state: S, boot_kv: K) -> Result<Self, BootError> {
        let mut bl = Self::open(Anchors::Provisioned(None, policy), active, dfu, state, boot_kv)?;
        // A record that does not decode is no keys: recovery, never a guess.
        let keys = match bl.store.load_keys() {
            Ok(keys) => keys,
            Err(StoreError::BadRecord) => None,
            Err(e) => return Err(e.into()),
        };
        bl.anchors = Anchors::Provisioned(keys, policy);
        Ok(bl)
    }

    /// A bootloader verifying with the keys and identity in `config`,
    /// given by the caller (a board that compiles them in; tests).
    /// Checks the partition rules and opens the boot state map.
    pub fn new(config: BootConfig<'c>, active: A, dfu: D, state: S, boot_kv: K) -> Result<Self, BootError> {
        Self::open(Anchors::Given(config), active, dfu, state, boot_kv)
    }

    fn open(anchors: Anchors<'c>, active: A, dfu: D, state: S, boot_kv: K) -> Result<Self, BootError> {
        let page = A::ERASE_SIZE.max(D::ERASE_SIZE) as u32;
        check_sizes(
            active.capacity() as u32,
            dfu.capacity() as u32,
            page,
            state.capacity() as u32,
            S::ERASE_SIZE as u32,
            S::WRITE_SIZE as u32,
            boot_kv.capacity() as u32,
            K::ERASE_SIZE as u32,
        )?;
        Ok(Bootloader { anchors, active, dfu, state, store: Store::new(boot_kv)? })
    }

    fn page_size() -> usize {
        A::ERASE_SIZE.max(D::ERASE_SIZE)
    }

    fn active_pages(&self) -> usize {
        self.active.capacity() / Self::page_size()
    }

    /// Decides what to boot, doing whatever swap, revert or repair that takes.
    pub fn boot(&mut self, ws: &mut Workspace<'_>) -> Result<BootOutcome, BootError> {
        let n = ws.page.len();
        let writes = [A::WRITE_SIZE, D::WRITE_SIZE, S::WRITE_SIZE];
        if n == 0 || Self::page_size() % n != 0 || writes.iter().any(|&w| n < w || !n.is_multiple_of(w)) {
            return Err(BootError::Buffer("page buffer must divide the page size and hold whole words"));
        }
        let mut st = self.store.load()?;
        if let Some(magic) = st.pending_magic {
            embassy_state::force_magic(&mut self.state, magic, ws.page).map_err(BootError::flash)?;
            st.pending_magic = None;
            self.store.save(&st)?;
        }
        let pages = self.active_pages();
        let mut fell_forward = false;
        for _ in 0..MAX_STEPS {
            let swap = embassy_state::read(&mut self.state, pages, ws.page).map_err(BootError::flash)?;
            match swap {
                SwapState::Boot | SwapState::DfuDetach => {
                    st.trial_boots = 0;
                    let e = match self.verify_active(&st, ws) {
                        Ok(m) => return self.hand_over(st, m, false),
                        Err(e) => e,
                    };
                    // ACTIVE does not verify: an image in DFU that does
                    // (signature, identity, not below the counter) is
                    // swapped in and tried rather than stopping. Once per
                    // boot: if that one fails too, recovery.
                    if fell_forward || self.verify_dfu(&st, ws).is_err() {
                        return Ok(BootOutcome::Recovery(e));
                    }
                    fell_forward = true;
                    st.last_failure = Some(e.reason());
                    self.set_magic(&mut st, SWAP_MAGIC, ws.page)?;
                }
                SwapState::SwapRequested => {
                    if self.anchors.policy().check_update_before_swap
                        && let Err(e) = self.verify_dfu(&st, ws)
                    {
                        st.last_failure = Some(e.reason());
                        self.set_magic(&mut st, BOOT_MAGIC, ws.page)?;
                        continue;
                    }
                    self.run_embassy(&mut st, ws.page)?;
                }
                SwapState::Swapping => self.run_embassy(&mut st, ws.page)?,
                SwapState::Swapped => {
                    if st.trial_boots >= self.anchors.policy().max_trial_boots.max(1) {
                        self.revert(&mut st, Reason::TrialExpired, ws.page)?;
                        continue;
                    }
                    match self.verify_active(&st, ws) {
                        Ok(m) => {
                            st.trial_boots += 1;
                            return self.hand_over(st, m, true);
                        }
                        // Revert at once: never wait for a trial of an unverified image.
                        Err(e) => self.revert(&mut st, e.reason(), ws.page)?,
                    }
                }
                SwapState::Reverting => self.run_embassy(&mut st, ws.page)?,
            }
        }
        Err(BootError::NoProgress)
    }

    /// Verifies ACTIVE under the current keys or, for the one manifest
    /// the retired release keys keep bootable, under those.
    fn verify_active(&mut self, st: &BootState, ws: &mut Workspace<'_>) -> Result<crate::Measurement, ImageError> {
        let limit = self.active.capacity();
        let config = self.anchors.config()?;
        let min = st.security_counter;
        let current = verify_slot(&mut self.active, limit, &config, min, ws.envelope, ws.page);
        let Err(e) = current else { return current };
        let retired = match &self.anchors {
            Anchors::Provisioned(Some(keys), policy) if e.reason() == Reason::SignatureInvalid => {
                keys.retired_config(*policy)
            }
            _ => None,
        };
        let Some((config, digest)) = retired else { return Err(e) };
        match verify_slot(&mut self.active, limit, &config, min, ws.envelope, ws.page) {
            Ok(m) if m.manifest_digest == digest => Ok(m),
            _ => Err(e),
        }
    }

    /// Verifies the image in DFU as it would be verified in ACTIVE.
    fn verify_dfu(&mut self, st: &BootState, ws: &mut Workspace<'_>) -> Result<crate::Measurement, ImageError> {
        // The swap moves an ACTIVE-sized image.
        let limit = self.active.capacity();
        let config = self.anchors.config()?;
        verify_slot(&mut self.dfu, limit, &config, st.security_counter, ws.envelope, ws.page)
    }

    /// Rewrites STATE to `magic` (refuse a requested swap: boot; fall
    /// forward: swap), journaled first so a cut erase is finished at the
    /// next boot.
    fn set_magic(&mut self, st: &mut BootState, magic: u8, word: &mut [u8]) -> Result<(), BootError> {
        st.pending_magic = Some(magic);
        self.store.save(st)?;
        embassy_state::force_magic(&mut self.state, magic, word).map_err(BootError::flash)?;
        st.pending_magic = None;
        self.store.save(st)?;
        Ok(())
    }

    /// Reverts the image on trial, for `why`: the reason is saved before
    /// the revert starts, so a power cut in the middle of it (which the
    /// next boot finishes as `Reverting`) does not lose it.
    fn revert(&mut self, st: &mut BootState, why: Reason, page: &mut [u8]) -> Result<(), BootError> {
        st.last_failure = Some(why);
        self.store.save(st)?;
        self.run_embassy(st, page)
    }

    /// Lets embassy-boot swap or revert. Its STATE goes through a guard that
    /// journals the final erase of a revert before it starts.
    fn run_embassy(&mut self, st: &mut BootState, page: &mut [u8]) -> Result<(), BootError> {
        let mut guard = JournaledState { state: &mut self.state, store: &mut self.store, st, journaled: None };
        let mut embassy =
            BootLoader::new(BootLoaderConfig { active: &mut self.active, dfu: &mut self.dfu, state: &mut guard });
        let result = embassy.prepare_boot(page);
        let journal_error = guard.journaled.and_then(Result::err);
        let was_journaled = guard.journaled.is_some();
        match result {
            Ok(_) => {
                if was_journaled {
                    st.pending_magic = None;
                    self.store.save(st)?;
                }
                Ok(())
            }
            Err(e) => Err(journal_error.map_or(BootError::Embassy(e), BootError::Store)),
        }
    }

    fn hand_over(&mut self, mut st: BootState, m: crate::Measurement, trial: bool) -> Result<BootOutcome, BootError> {
        st.boot_count = st.boot_count.saturating_add(1);
        self.store.save(&st)?;
        let generation = if trial { st.generation.wrapping_add(1) } else { st.generation };
        Ok(BootOutcome::Boot(BootRecord {
            manifest_digest: m.manifest_digest,
            image_digest: m.image_digest,
            sequence: m.sequence,
            image_size: m.image_size,
            boot_count: st.boot_count,
            slot: Slot::of(generation),
            trial,
            trial_boots: st.trial_boots,
            security_counter: st.security_counter,
            last_failure: st.last_failure,
        }))
    }

    /// Gives the partitions back (e.g. to hand them to the runtime).
    pub fn into_parts(self) -> (A, D, S) {
        (self.active, self.dfu, self.state)
    }
}

/// embassy-boot's STATE as `prepare_boot` sees it, made safe in two ways:
///
/// - every erase is journaled first: an erase of STATE by `prepare_boot` is
///   always the end of a revert, so the journal says "finish with the revert
///   magic";
/// - marks are idempotent: a progress or progress-valid word with any bit
///   programmed reads as fully programmed, and writing it again is skipped.
///   A mark is written only after the step it records is complete, so a torn
///   mark still means "done"; embassy-boot would read it as not done and
///   program the word again, which flash with per-word ECC refuses, leaving
///   the device unable to boot.
struct JournaledState<'a, S: NorFlash, K: NorFlash> {
    state: &'a mut S,
    store: &'a mut Store<K>,
    st: &'a mut BootState,
    journaled: Option<Result<(), StoreError>>,
}

#[derive(Debug)]
enum GuardError<E> {
    Flash(E),
    Journal(StoreError),
}

impl<E: NorFlashError> NorFlashError for GuardError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            GuardError::Flash(e) => e.kind(),
            GuardError::Journal(StoreError::Flash(k)) => *k,
            GuardError::Journal(_) => NorFlashErrorKind::Other,
        }
    }
}

impl<S: NorFlash, K: NorFlash> ErrorType for JournaledState<'_, S, K> {
    type Error = GuardError<S::Error>;
}

impl<S: NorFlash, K: NorFlash> ReadNorFlash for JournaledState<'_, S, K> {
    const READ_SIZE: usize = S::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.state.read(offset, bytes).map_err(GuardError::Flash)?;
        let w = S::WRITE_SIZE;
        if offset as usize >= w && (offset as usize).is_multiple_of(w) {
            for word in bytes.chunks_mut(w) {
                if word.iter().any(|&b| b != embassy_state::ERASED) {
                    word.fill(0);
                }
            }
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.state.capacity()
    }
}

impl<S: NorFlash, K: NorFlash> NorFlash for JournaledState<'_, S, K> {
    const WRITE_SIZE: usize = S::WRITE_SIZE;
    const ERASE_SIZE: usize = S::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if self.journaled.is_none() {
            self.st.pending_magic = Some(REVERT_MAGIC);
            let saved = self.store.save(self.st);
            self.journaled = Some(saved);
            saved.map_err(GuardError::Journal)?;
        }
        self.state.erase(from, to).map_err(GuardError::Flash)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let w = S::WRITE_SIZE;
        if offset as usize >= w && bytes.len() == w && w <= MAX_MARK {
            let mut current = [0u8; MAX_MARK];
            self.state.read(offset, &mut current[..w]).map_err(GuardError::Flash)?;
            if current[..w].iter().any(|&b| b != embassy_state::ERASED) {
                return Ok(());
            }
        }
        self.state.write(offset, bytes).map_err(GuardError::Flash)
    }
}
