//! Shared by the fuzz targets (and by `seedgen`, so its seeds are made for
//! exactly what the targets check): the trust anchors, a deterministic
//! device, the bootloader's slot check as the `boot_slot` target runs it and
//! the device runtime's container slot check as `container_slot` runs it.
#![allow(dead_code)]

use embedded_storage::nor_flash::NorFlash as _;
use gantry_boot::image::MAX_ENVELOPE;
use gantry_boot::sim::SimFlash;
use gantry_boot::{BootConfig, ImageError, Measurement, verify_slot};
use gantry_device::bundle::{BundleError, Trust, VerifiedRelease};
use gantry_keys::PublicKey;
use gantry_signing::{ActionFailed, ComponentId, Image, Parameters, SuitDevice};

/// The SUIT draft examples' ES256 public key (SEC1, uncompressed), from
/// vectors/suit/suit-examples-es256-public.sec1.hex.
pub const SUIT_ES256_SEC1_HEX: &str = "048496811aae0baaabd26157189eecda26beaa8bf11b6f3fe6e2b5659c85dbc0ad3b1f2a4b6c098131c0a36dacd1d78bd381dcdfb09c052db33991db7338b4a896";
/// RFC 8032 §7.1 TEST 1 Ed25519 public key.
pub const RFC8032_TEST1_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn p256_key() -> PublicKey {
    PublicKey::p256_from_sec1(&unhex(SUIT_ES256_SEC1_HEX)).expect("SUIT example key")
}

pub fn ed25519_key() -> PublicKey {
    PublicKey::ed25519_from_bytes(&unhex(RFC8032_TEST1_HEX)).expect("RFC 8032 key")
}

/// A device whose answers depend only on its inputs: vendor/class checks
/// pass when the id's first byte is even, images exist for components whose
/// encoding has an even length, slot checks compare with the slot parity,
/// and actions fail after a fixed budget.
#[derive(Default)]
pub struct FuzzDevice {
    pub actions: u32,
}

impl FuzzDevice {
    fn act(&mut self) -> Result<(), ActionFailed> {
        self.actions += 1;
        if self.actions.is_multiple_of(7) { Err(ActionFailed) } else { Ok(()) }
    }
}

impl SuitDevice for FuzzDevice {
    fn check_vendor(&self, component: ComponentId<'_>, vendor_id: &[u8]) -> bool {
        let _ = component.to_string();
        vendor_id.first().is_none_or(|b| b % 2 == 0)
    }

    fn check_class(&self, component: ComponentId<'_>, class_id: &[u8]) -> bool {
        let _ = component.segments().count();
        class_id.len().is_multiple_of(2)
    }

    fn image(&mut self, component: ComponentId<'_>, params: &Parameters<'_>) -> Option<Image> {
        if component.raw().len() % 2 != 0 {
            return None;
        }
        let sha256 = params.image_digest.and_then(|d| d.sha256()).unwrap_or([0; 32]);
        Some(Image { sha256, size: params.image_size.unwrap_or(0) })
    }

    fn in_slot(&self, component: ComponentId<'_>, slot: u64) -> bool {
        (component.raw().len() as u64 + slot).is_multiple_of(2)
    }

    fn fetch(&mut self, _component: ComponentId<'_>, params: &Parameters<'_>) -> Result<(), ActionFailed> {
        if params.uri.is_none() {
            return Err(ActionFailed);
        }
        self.act()
    }

    fn copy(
        &mut self,
        _component: ComponentId<'_>,
        source: ComponentId<'_>,
        _params: &Parameters<'_>,
    ) -> Result<(), ActionFailed> {
        let _ = source.to_string();
        self.act()
    }

    fn invoke(&mut self, _component: ComponentId<'_>, params: &Parameters<'_>) -> Result<(), ActionFailed> {
        let _ = params.invoke_args.map(<[u8]>::len);
        self.act()
    }
}

/// The device identity `boot_slot` and `container_slot` provision; seedgen
/// signs for it.
pub const BOOT_VENDOR_ID: [u8; 16] = *b"gantry-fuzz-vend";
/// See [`BOOT_VENDOR_ID`].
pub const BOOT_CLASS_ID: [u8; 16] = *b"gantry-fuzz-clas";
/// The anti-rollback counter `boot_slot` checks against: above zero, so a
/// seed signed with a lower sequence reaches the rollback refusal.
pub const BOOT_MIN_SEQUENCE: u64 = 2;
/// The simulated flash holds one slot of this size, image at offset 0.
pub const BOOT_FLASH_SIZE: usize = 64 * 1024;
/// Hashing buffer of the slot check, as in the simulator rig.
pub const BOOT_CHUNK: usize = 256;
/// 4-byte words, 1 KiB pages: the geometry of the bootloader's own tests.
pub type BootFlash = SimFlash<4, 1024>;

/// What the bootloader is provisioned with in `boot_slot`.
pub fn boot_config(anchors: &[PublicKey]) -> BootConfig<'_> {
    BootConfig {
        anchors,
        threshold: 1,
        vendor_id: BOOT_VENDOR_ID,
        class_id: BOOT_CLASS_ID,
        max_trial_boots: 3,
        check_update_before_swap: true,
    }
}

/// An erased flash of `size` bytes with `image` programmed at offset 0
/// (padded with `0xFF` to a whole word), or `None` when the image is larger
/// than the flash.
fn programmed<const ERASE: usize>(size: usize, image: &[u8]) -> Option<SimFlash<4, ERASE>> {
    if image.len() > size {
        return None;
    }
    let mut flash = SimFlash::new(size);
    let mut padded = image.to_vec();
    padded.resize(image.len().next_multiple_of(4), 0xFF);
    flash.write(0, &padded).expect("an image that fits is programmed");
    Some(flash)
}

/// The `boot_slot` flash with `image` at offset 0, or `None` when it does
/// not fit.
pub fn boot_flash(image: &[u8]) -> Option<BootFlash> {
    programmed(BOOT_FLASH_SIZE, image)
}

/// The bootloader's check of the slot in `flash`, with the whole flash as
/// the slot and the buffers sized as on a device.
pub fn verify_boot_slot(flash: &mut BootFlash, anchors: &[PublicKey]) -> Result<Measurement, ImageError> {
    let mut envelope = [0u8; MAX_ENVELOPE];
    let mut chunk = [0u8; BOOT_CHUNK];
    verify_slot(flash, BOOT_FLASH_SIZE, &boot_config(anchors), BOOT_MIN_SEQUENCE, &mut envelope, &mut chunk)
}

/// The anti-rollback counter `container_slot` checks against: above zero,
/// so a seed signed with sequence 1 reaches the rollback refusal.
pub const CONTAINER_MIN_SEQUENCE: u64 = 2;
/// The simulated flash is one container slot of this size, image at offset
/// 0: room for a payload that spans several of the 64 KiB hashing chunks.
pub const CONTAINER_FLASH_SIZE: usize = 256 * 1024;
/// 4-byte words, 4 KiB pages: the geometry of the device runtime's store.
pub type ContainerFlash = SimFlash<4, 4096>;

/// What the device runtime is provisioned with in `container_slot`: the RFC
/// 8032 key as the only release key, threshold 1, the fuzz device identity.
pub fn container_trust() -> Trust {
    Trust { anchors: vec![ed25519_key()], threshold: 1, vendor_id: BOOT_VENDOR_ID, class_id: BOOT_CLASS_ID }
}

/// The `container_slot` flash with `image` at offset 0, or `None` when it
/// does not fit.
pub fn container_flash(image: &[u8]) -> Option<ContainerFlash> {
    programmed(CONTAINER_FLASH_SIZE, image)
}

/// The device runtime's check of the container slot in `flash`.
pub fn verify_container_slot(flash: &mut ContainerFlash, trust: &Trust) -> Result<VerifiedRelease, BundleError> {
    gantry_device::bundle::verify_slot(flash, trust, CONTAINER_MIN_SEQUENCE)
}
