//! The error body every refusal carries, and why a request is refused.

use serde::{Deserialize, Serialize};

use crate::limits::{FIRMWARE_STREAM, MAX_BOOT_REASON, MAX_DETAIL, MAX_INVENTORY, MAX_PROGRESS, MAX_STREAM};

/// The body of every error answer: `{"error": code, "message": text}`.
/// Codes are stable (`bad-request`, `unauthorized`, `forbidden`, ...),
/// messages are for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: String,
    /// What went wrong and what to do next.
    pub message: String,
}

/// Why a request body is refused: one variant per rule, each naming the
/// field and the bound. The server answers these `400` with
/// [`ValidationError::code`]; the device checks its own requests with the
/// same `validate()` before it sends them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// More inventory entries than [`MAX_INVENTORY`].
    #[error("inventory: {count} entries, at most {MAX_INVENTORY}")]
    InventoryTooLong {
        /// Entries sent.
        count: usize,
    },
    /// One inventory entry is refused.
    #[error("inventory entry {index}: {cause}")]
    InventoryEntry {
        /// Its position in the list, from 0.
        index: usize,
        /// Why.
        cause: Box<ValidationError>,
    },
    /// A stream name that is empty, longer than [`MAX_STREAM`] bytes, or
    /// holds a control character ([`crate::printable`]).
    #[error("stream: {len} bytes, 1 to {MAX_STREAM} allowed, no control or bidirectional formatting characters")]
    Stream {
        /// Its length in bytes.
        len: usize,
    },
    /// A `manifest_digest` that is not 64 lowercase hex digits.
    #[error("manifest_digest: not 64 lowercase hex digits")]
    Digest,
    /// A `vendor_id` or `class_id` that is not 32 lowercase hex digits.
    #[error("vendor_id, class_id: 32 lowercase hex digits (a UUID)")]
    Uuid,
    /// A boot measurement on an inventory entry other than the firmware's.
    #[error("boot: only the {FIRMWARE_STREAM:?} entry carries a boot measurement")]
    BootNotFirmware,
    /// A boot measurement's `last_failure` that is not a reason code.
    #[error("boot.last_failure: 1 to {MAX_BOOT_REASON} bytes of a-z, 0-9 and -")]
    BootReason,
    /// A `progress` outside 0 to [`MAX_PROGRESS`].
    #[error("progress: {value}, 0 to {MAX_PROGRESS} allowed")]
    Progress {
        /// The value sent.
        value: i64,
    },
    /// A `detail` longer than [`MAX_DETAIL`] bytes.
    #[error("detail: {len} bytes, at most {MAX_DETAIL}")]
    DetailTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A state string that is not one of the enum's (from `FromStr`, e.g.
    /// reading a stored state back).
    #[error("unknown state {0:?}")]
    UnknownState(String),
}

impl ValidationError {
    /// The stable error code the server answers it with (`400`).
    pub fn code(&self) -> &'static str {
        "bad-request"
    }
}

/// `Display` and `FromStr` for a state enum by its wire strings (its
/// `as_str` and `ALL`), so the text a device writes is the text the server
/// reads back.
macro_rules! wire_text {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::ValidationError;

            fn from_str(s: &str) -> Result<Self, $crate::ValidationError> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::ValidationError::UnknownState(s.to_owned()))
            }
        }
    };
}
pub(crate) use wire_text;
