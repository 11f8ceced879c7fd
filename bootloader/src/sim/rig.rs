//! A simulated device: one [`SimFlash`] split by a [`Layout`], with the
//! bootloader and the runtime's control handle opened over it the way a
//! real boot would, and signed test images.

use core::cell::RefCell;

use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use gantry_keys::{FileKeySource, KeyType, PublicKey, SigningKey};
use gantry_signing::build::{FirmwareRelease, add_signature, class_id_from_model, vendor_id_from_domain};

use super::flash::SimFlash;
use crate::layout::{Layout, Region};
use crate::{
    BootConfig, BootError, BootOutcome, BootPolicy, BootState, Bootloader, Control, ControlError, SwapState, Workspace,
};

/// A partition of the rig's flash.
pub type Part<'a, const W: usize, const E: usize> = BlockingPartition<'a, NoopRawMutex, SimFlash<W, E>>;

/// A device: flash, layout and what its bootloader was provisioned with.
pub struct Rig<const W: usize, const E: usize> {
    flash: Mutex<NoopRawMutex, RefCell<SimFlash<W, E>>>,
    /// Where the partitions are.
    pub layout: Layout,
    /// Provisioned release keys.
    pub anchors: Vec<PublicKey>,
    /// This device's vendor id.
    pub vendor_id: [u8; 16],
    /// This device's class id.
    pub class_id: [u8; 16],
    /// Trial boots allowed.
    pub max_trial_boots: u16,
    /// Verify DFU before swapping.
    pub check_update_before_swap: bool,
}

impl<const W: usize, const E: usize> Rig<W, E> {
    /// A blank device with an `active_pages`-page ACTIVE slot, trusting `anchors`.
    pub fn new(active_pages: u32, write_once: bool, anchors: Vec<PublicKey>) -> Self {
        let layout = Layout::packed(0, active_pages, E as u32, W as u32).expect("sim geometry is valid");
        let flash = SimFlash::new(layout.end() as usize).with_write_once(write_once);
        let vendor_id = vendor_id_from_domain("example.com");
        Rig {
            flash: Mutex::new(RefCell::new(flash)),
            layout,
            anchors,
            vendor_id,
            class_id: class_id_from_model(&vendor_id, "sim-board"),
            max_trial_boots: 3,
            check_update_before_swap: true,
        }
    }

    /// Runs `f` on the raw flash (arming cuts, snapshots, statistics).
    pub fn flash<R>(&self, f: impl FnOnce(&mut SimFlash<W, E>) -> R) -> R {
        self.flash.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// A partition of the flash (e.g. `rig.partition(rig.layout.state)`).
    pub fn partition(&self, r: Region) -> Part<'_, W, E> {
        BlockingPartition::new(&self.flash, r.offset, r.size)
    }

    /// The bootloader's configuration.
    pub fn config(&self) -> BootConfig<'_> {
        BootConfig {
            anchors: &self.anchors,
            threshold: 1,
            vendor_id: self.vendor_id,
            class_id: self.class_id,
            max_trial_boots: self.max_trial_boots,
            check_update_before_swap: self.check_update_before_swap,
        }
    }

    /// What the bootloader does with updates.
    pub fn policy(&self) -> BootPolicy {
        BootPolicy { max_trial_boots: self.max_trial_boots, check_update_before_swap: self.check_update_before_swap }
    }

    /// One power-on of a bootloader that verifies with the keys
    /// provisioned in its boot map ([`Control::provision`]), not [`Rig::anchors`].
    pub fn boot_provisioned(&self) -> Result<BootOutcome, BootError> {
        let l = &self.layout;
        let (active, dfu, state, kv) =
            (self.partition(l.active), self.partition(l.dfu), self.partition(l.state), self.partition(l.boot_kv));
        Self::power_on(Bootloader::provisioned(self.policy(), active, dfu, state, kv)?)
    }

    /// One power-on: the bootloader's decision, with [`Rig::anchors`].
    pub fn boot(&self) -> Result<BootOutcome, BootError> {
        let l = &self.layout;
        let (active, dfu, state, kv) =
            (self.partition(l.active), self.partition(l.dfu), self.partition(l.state), self.partition(l.boot_kv));
        Self::power_on(Bootloader::new(self.config(), active, dfu, state, kv)?)
    }

    fn power_on(
        mut bl: Bootloader<'_, Part<'_, W, E>, Part<'_, W, E>, Part<'_, W, E>, Part<'_, W, E>>,
    ) -> Result<BootOutcome, BootError> {
        let (mut page, mut envelope) = ([0u8; 256], [0u8; crate::image::MAX_ENVELOPE]);
        bl.boot(&mut Workspace { page: &mut page, envelope: &mut envelope })
    }

    /// The runtime's control handle.
    pub fn control(&self) -> Result<Control<Part<'_, W, E>, Part<'_, W, E>, Part<'_, W, E>>, ControlError> {
        let l = &self.layout;
        Control::new(
            self.partition(l.dfu),
            self.partition(l.state),
            self.partition(l.boot_kv),
            l.active.size as usize,
            E,
        )
    }

    /// Stages `image` and requests the update, as the runtime does.
    pub fn stage(&self, image: &[u8]) -> Result<(), ControlError> {
        let mut c = self.control()?;
        c.begin_update()?;
        for chunk in image.chunks(E) {
            c.write_update(chunk)?;
        }
        c.request_update()
    }

    /// Swap state and boot state.
    pub fn status(&self) -> Result<(SwapState, BootState), ControlError> {
        self.control()?.status()
    }

    /// The first `len` bytes of ACTIVE.
    pub fn active(&self, len: usize) -> Vec<u8> {
        let at = self.layout.active.offset as usize;
        self.flash(|f| f.contents()[at..at + len].to_vec())
    }

    /// Writes a slot image into ACTIVE directly (factory programming).
    pub fn program_active(&self, image: &[u8]) {
        use embedded_storage::nor_flash::NorFlash as _;
        let mut padded = image.to_vec();
        padded.resize(image.len().next_multiple_of(W), 0xFF);
        let at = self.layout.active.offset;
        self.flash(|f| {
            f.erase(at, at + self.layout.active.size).expect("erase ACTIVE");
            f.write(at, &padded).expect("program ACTIVE");
        });
    }
}

/// A release key and the slot images it signs.
pub struct Signer {
    source: FileKeySource,
}

impl Signer {
    /// A fresh Ed25519 or P-256 release key.
    pub fn new(key_type: KeyType) -> Self {
        Signer { source: FileKeySource::from_key("sim-release.key".into(), SigningKey::generate(key_type)) }
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        gantry_keys::KeySource::public_key(&self.source).clone()
    }

    /// The signed envelope for `firmware`.
    pub fn envelope(&self, firmware: &[u8], sequence: u64, vendor_id: [u8; 16], class_id: [u8; 16]) -> Vec<u8> {
        let unsigned = FirmwareRelease { image: firmware, sequence, vendor_id, class_id }
            .build_unsigned()
            .expect("firmware manifest builds");
        add_signature(&unsigned, &self.source).expect("signing works")
    }

    /// A signed slot image of `firmware` for the rig's device.
    pub fn image<const W: usize, const E: usize>(&self, rig: &Rig<W, E>, firmware: &[u8], sequence: u64) -> Vec<u8> {
        let env = self.envelope(firmware, sequence, rig.vendor_id, rig.class_id);
        crate::image::pack(&env, firmware).expect("envelope fits")
    }
}

/// `len` bytes of deterministic pseudo-firmware.
pub fn firmware(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = super::SplitMix64::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}
