//! Typed errors, and the one-byte reasons persisted for the runtime to report.

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};

use crate::layout::LayoutError;

/// Why a slot image is not bootable.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The slot is erased.
    #[error("the slot is empty")]
    Empty,
    /// The fixed header is malformed.
    #[error("bad slot image header: {0}")]
    BadHeader(&'static str),
    /// The envelope is longer than the bootloader accepts.
    #[error("envelope of {len} bytes exceeds the {max}-byte limit")]
    EnvelopeTooLarge {
        /// Claimed length.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// The envelope failed verification (signature, digest, sequence, identity...).
    #[error("manifest refused: {0}")]
    Manifest(#[from] gantry_signing::Error),
    /// The manifest is not a firmware manifest Gantry can boot.
    #[error("not a firmware manifest: {0}")]
    NotFirmware(&'static str),
    /// The manifest's image does not fit in the slot.
    #[error("image of {size} bytes does not fit the {max} bytes after the header")]
    ImageTooLarge {
        /// Size the manifest declares.
        size: u64,
        /// Room in the slot.
        max: u64,
    },
    /// The image in flash does not match the manifest's digest.
    #[error("image digest does not match the manifest")]
    DigestMismatch,
    /// The flash failed.
    #[error("flash error: {0:?}")]
    Flash(NorFlashErrorKind),
    /// The boot map holds no keys record that decodes: nothing can be
    /// verified, so nothing boots.
    #[error("no keys are provisioned in the boot map")]
    Unprovisioned,
}

impl ImageError {
    pub(crate) fn flash<E: NorFlashError>(e: E) -> Self {
        ImageError::Flash(e.kind())
    }

    /// The persisted one-byte reason.
    pub fn reason(&self) -> Reason {
        use gantry_signing::Error as S;
        match self {
            ImageError::Empty => Reason::Empty,
            ImageError::BadHeader(_) | ImageError::EnvelopeTooLarge { .. } => Reason::BadHeader,
            ImageError::Manifest(e) => match e {
                S::Unsigned | S::SignatureInvalid | S::UnknownSigner | S::ThresholdNotMet { .. } => {
                    Reason::SignatureInvalid
                }
                S::SequenceTooLow { .. } => Reason::Rollback,
                S::WrongVendor | S::WrongClass | S::MissingIdentity(_) => Reason::WrongDevice,
                S::DigestMismatch => Reason::ManifestDigestMismatch,
                S::ConditionFailed { .. } => Reason::ImageDigestMismatch,
                _ => Reason::ManifestInvalid,
            },
            ImageError::NotFirmware(_) => Reason::NotFirmware,
            ImageError::ImageTooLarge { .. } => Reason::ImageTooLarge,
            ImageError::DigestMismatch => Reason::ImageDigestMismatch,
            ImageError::Flash(_) => Reason::Flash,
            ImageError::Unprovisioned => Reason::Unprovisioned,
        }
    }
}

/// Why the bootloader refused or reverted an image, in one byte, so it
/// survives in flash for the runtime to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// The slot was empty.
    Empty = 1,
    /// The slot image header was malformed.
    BadHeader = 2,
    /// Not enough valid signatures from the provisioned keys.
    SignatureInvalid = 3,
    /// Sequence number below the anti-rollback counter.
    Rollback = 4,
    /// Vendor or class id of another device.
    WrongDevice = 5,
    /// The manifest does not match the digest that was signed.
    ManifestDigestMismatch = 6,
    /// The manifest is malformed or uses what Gantry does not support.
    ManifestInvalid = 7,
    /// The manifest is not a firmware manifest.
    NotFirmware = 8,
    /// The image does not fit the slot.
    ImageTooLarge = 9,
    /// The image does not match the manifest's digest.
    ImageDigestMismatch = 10,
    /// The flash failed while reading the image.
    Flash = 11,
    /// The runtime did not confirm the update within the allowed trial boots.
    TrialExpired = 12,
    /// No keys are provisioned in the boot map.
    Unprovisioned = 13,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 13] = [
        Reason::Empty,
        Reason::BadHeader,
        Reason::SignatureInvalid,
        Reason::Rollback,
        Reason::WrongDevice,
        Reason::ManifestDigestMismatch,
        Reason::ManifestInvalid,
        Reason::NotFirmware,
        Reason::ImageTooLarge,
        Reason::ImageDigestMismatch,
        Reason::Flash,
        Reason::TrialExpired,
        Reason::Unprovisioned,
    ];

    /// Decodes a persisted reason.
    pub fn from_u8(b: u8) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| *r as u8 == b)
    }

    /// A stable name for logs and JSON.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::BadHeader => "bad-header",
            Reason::SignatureInvalid => "signature-invalid",
            Reason::Rollback => "rollback",
            Reason::WrongDevice => "wrong-device",
            Reason::ManifestDigestMismatch => "manifest-digest-mismatch",
            Reason::ManifestInvalid => "manifest-invalid",
            Reason::NotFirmware => "not-firmware",
            Reason::ImageTooLarge => "image-too-large",
            Reason::ImageDigestMismatch => "image-digest-mismatch",
            Reason::Flash => "flash",
            Reason::TrialExpired => "trial-expired",
            Reason::Unprovisioned => "unprovisioned",
        }
    }
}

/// Why a boot could not complete. None of these jump to anything; after a
/// power cut or a flash error the next boot picks up where this one stopped.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The partitions break a rule.
    #[error("flash layout: {0}")]
    Layout(#[from] LayoutError),
    /// The work buffers are too small or do not fit the page size.
    #[error("work buffer: {0}")]
    Buffer(&'static str),
    /// A flash operation failed (or the power went).
    #[error("flash error: {0:?}")]
    Flash(NorFlashErrorKind),
    /// embassy-boot's swap or revert stopped.
    #[error("embassy-boot: {0:?}")]
    Embassy(embassy_boot::BootError),
    /// Gantry's boot state map failed.
    #[error("boot state: {0}")]
    Store(StoreError),
    /// The boot loop did not settle (a bug: every step makes progress).
    #[error("the boot state did not settle")]
    NoProgress,
}

impl BootError {
    pub(crate) fn flash<E: NorFlashError>(e: E) -> Self {
        BootError::Flash(e.kind())
    }
}

impl From<StoreError> for BootError {
    fn from(e: StoreError) -> Self {
        BootError::Store(e)
    }
}

/// The boot state map could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The flash failed (or the power went).
    #[error("flash error: {0:?}")]
    Flash(NorFlashErrorKind),
    /// The map's pages are not a valid sequential-storage map.
    #[error("the boot state map is corrupted")]
    Corrupted,
    /// The stored record does not decode.
    #[error("the boot state record is malformed")]
    BadRecord,
    /// Anything else sequential-storage reports (a bug or a misconfiguration).
    #[error("sequential-storage: {0}")]
    Other(&'static str),
}

/// Errors of the runtime-side control API.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A flash operation failed.
    #[error("flash error: {0:?}")]
    Flash(NorFlashErrorKind),
    /// The boot state map failed.
    #[error("boot state: {0}")]
    Store(#[from] StoreError),
    /// The request does not fit the current state (e.g. a new download while an update is on trial).
    #[error("{0}")]
    BadState(&'static str),
    /// The update image does not fit the DFU slot or is written out of order.
    #[error("update image: {0}")]
    Image(&'static str),
    /// The staged update failed verification.
    #[error("staged update refused: {0}")]
    Refused(#[from] ImageError),
    /// A keys record that cannot be built or read.
    #[error("boot keys: {0}")]
    Keys(#[from] crate::keys::KeysError),
    /// A trust root refused as the successor of the one the boot map holds.
    #[cfg(feature = "std")]
    #[error("trust root refused by the bootloader: {0}")]
    Trust(#[from] gantry_keys::trust::TrustError),
}

impl ControlError {
    pub(crate) fn flash<E: NorFlashError>(e: E) -> Self {
        ControlError::Flash(e.kind())
    }
}
