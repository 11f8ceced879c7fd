//! Verifying a slot image in place: envelope from the header, signatures
//! and identity by `gantry_signing::verify`, then the manifest's validate
//! section run against the slot, then the image digest checked again here,
//! so a manifest that forgets to check its image cannot boot.

use embedded_storage::nor_flash::ReadNorFlash;
use gantry_keys::PublicKey;
use gantry_signing::{ActionFailed, ComponentId, FIRMWARE_COMPONENT, Image, Parameters, Policy, Section, SuitDevice};
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::image::{FIXED_HEADER, Header};

/// What the bootloader trusts and what it allows; fixed when the bootloader
/// is built and provisioned.
#[derive(Clone, Copy, Debug)]
pub struct BootConfig<'a> {
    /// Release keys provisioned into the bootloader.
    pub anchors: &'a [PublicKey],
    /// How many of them must have signed.
    pub threshold: usize,
    /// This device's SUIT vendor id.
    pub vendor_id: [u8; 16],
    /// This device's SUIT class id.
    pub class_id: [u8; 16],
    /// Boots an update may take without being confirmed before it is reverted
    /// (at least one: 0 counts as 1).
    pub max_trial_boots: u16,
    /// Verify an update in DFU before swapping it in, so a bad one costs no
    /// swap and no revert. The ACTIVE slot is verified after the swap either way.
    pub check_update_before_swap: bool,
}

/// What was measured in a verified slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// SHA-256 of the bstr-wrapped manifest (the manifest's identity).
    pub manifest_digest: [u8; 32],
    /// SHA-256 of the firmware image.
    pub image_digest: [u8; 32],
    /// The manifest's sequence number.
    pub sequence: u64,
    /// Firmware image size in bytes.
    pub image_size: u32,
}

/// Whether `manifest` is a firmware release: exactly one component,
/// `["firmware"]`.
pub fn is_firmware_manifest(manifest: &gantry_signing::Manifest<'_>) -> bool {
    manifest.component_count() == 1
        && manifest.component(0).is_some_and(|id: ComponentId<'_>| {
            let mut segments = id.segments();
            segments.next() == Some(FIRMWARE_COMPONENT) && segments.next().is_none()
        })
}

/// Verifies the slot image at the start of `flash`, which may occupy its
/// first `limit` bytes, requiring a sequence number of at least
/// `min_sequence`. `envelope` receives the envelope (its length bounds the
/// accepted envelope size); `chunk` is the hashing buffer.
pub fn verify_slot<F: ReadNorFlash>(
    flash: &mut F,
    limit: usize,
    config: &BootConfig<'_>,
    min_sequence: u64,
    envelope: &mut [u8],
    chunk: &mut [u8],
) -> Result<Measurement, ImageError> {
    if chunk.is_empty() {
        return Err(ImageError::BadHeader("empty hashing buffer"));
    }
    let header = Header::read(flash, limit)?;
    let len = header.envelope_len as usize;
    let max = envelope.len() as u32;
    let buf = envelope.get_mut(..len).ok_or(ImageError::EnvelopeTooLarge { len: header.envelope_len, max })?;
    flash.read(FIXED_HEADER as u32, buf).map_err(ImageError::flash)?;

    let policy = Policy::new(config.anchors, config.threshold)
        .min_sequence(min_sequence)
        .identity(Some(&config.vendor_id), Some(&config.class_id));
    let verified = gantry_signing::verify(buf, &policy)?;
    if !is_firmware_manifest(verified.manifest()) {
        return Err(ImageError::NotFirmware("expected exactly one component, [\"firmware\"]"));
    }

    let mut slot = Slot {
        flash,
        offset: header.payload_offset,
        room: (limit - header.payload_offset as usize) as u64,
        chunk,
        config,
        seen: None,
        error: None,
    };
    let run = verified.run(Section::Validate, &mut slot);
    if let Some(e) = slot.error {
        return Err(e);
    }
    run?;
    // Do not rely on the manifest to have asked: check the image ourselves.
    let (declared, size, image) =
        slot.seen.ok_or(ImageError::NotFirmware("the validate section does not check the firmware image"))?;
    if declared != Some(image.sha256) || size != image.size {
        return Err(ImageError::DigestMismatch);
    }
    Ok(Measurement {
        manifest_digest: *verified.digest(),
        image_digest: image.sha256,
        sequence: verified.sequence_number(),
        image_size: image.size as u32,
    })
}

/// The slot as the SUIT interpreter sees it during validation.
struct Slot<'f, 'c, 'k, F> {
    flash: &'f mut F,
    offset: u32,
    room: u64,
    chunk: &'f mut [u8],
    config: &'c BootConfig<'k>,
    /// Declared digest, declared size and measured image of the last image-match.
    seen: Option<(Option<[u8; 32]>, u64, Image)>,
    error: Option<ImageError>,
}

impl<F: ReadNorFlash> Slot<'_, '_, '_, F> {
    fn hash(&mut self, size: u64) -> Result<Image, ImageError> {
        if size > self.room {
            return Err(ImageError::ImageTooLarge { size, max: self.room });
        }
        let mut sha = Sha256::new();
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(self.chunk.len() as u64) as usize;
            let buf = &mut self.chunk[..n];
            self.flash.read(self.offset + at as u32, buf).map_err(ImageError::flash)?;
            sha.update(&*buf);
            at += n as u64;
        }
        Ok(Image { sha256: sha.finalize().into(), size })
    }
}

impl<F: ReadNorFlash> SuitDevice for Slot<'_, '_, '_, F> {
    fn check_vendor(&self, _: ComponentId<'_>, vendor_id: &[u8]) -> bool {
        vendor_id == self.config.vendor_id
    }

    fn check_class(&self, _: ComponentId<'_>, class_id: &[u8]) -> bool {
        class_id == self.config.class_id
    }

    fn image(&mut self, _: ComponentId<'_>, params: &Parameters<'_>) -> Option<Image> {
        // verify_slot already made sure the only component is the firmware.
        let Some(size) = params.image_size else {
            self.error = Some(ImageError::NotFirmware("the firmware component has no image size"));
            return None;
        };
        match self.hash(size) {
            Ok(image) => {
                self.seen = Some((params.image_digest.and_then(|d| d.sha256()), size, image));
                Some(image)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn in_slot(&self, _: ComponentId<'_>, _: u64) -> bool {
        false
    }

    fn fetch(&mut self, _: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        Err(ActionFailed)
    }

    fn copy(&mut self, _: ComponentId<'_>, _: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        Err(ActionFailed)
    }

    fn invoke(&mut self, _: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        Err(ActionFailed)
    }
}
