//! The device API of the Gantry update server, as it travels: every JSON
//! body a device and the server exchange, defined once and used by both
//! sides (`gantry-device`'s agent writes and reads them, `gantry-server`
//! reads and writes them), with the states, limits and checks they share.
//!
//! ```text
//!  gantry-device (agent)                         gantry-server (api/device.rs)
//!  ─────────────────────                         ─────────────────────────────
//!  ChallengeRequest ───── POST …/challenge ─────► ChallengeRequest
//!  ChallengeResponse ◄───────────────────────────  ChallengeResponse
//!  LoginRequest / EnrollRequest ── …/login, …/enroll ──► (same types)
//!  LoginResponse ◄─────────────────────────────── LoginResponse
//!  CheckinRequest ─────── POST …/checkin ───────► CheckinRequest::validate()
//!  CheckinResponse ◄── 200 (304: POLL_AFTER_HEADER) CheckinResponse
//!  Report::new(..).with_detail(..) ─ …/reports ─► Report::validate()
//!  ErrorBody ◄──────────── any 4xx / 5xx ───────── ErrorBody
//! ```
//!
//! What this crate guarantees:
//!
//! - **One rule for writer and reader.** Each bound is a constant here
//!   ([`MAX_DETAIL`], [`MAX_STREAM`], [`MAX_INVENTORY`], ...); the server
//!   refuses with `validate()`, and the device builds its values through
//!   constructors that stay within the same constants ([`Report::with_detail`]
//!   truncates to [`MAX_DETAIL`] bytes on a character boundary), so a device
//!   cannot send what the server refuses.
//! - **States are enums**, with wire strings that never change (the server
//!   stores them): [`ReportState`], [`InventoryState`].
//! - **Numbers from the network are bounded before they become time**:
//!   [`LoginResponse::expires_in_clamped`], [`CheckinResponse::poll_after_clamped`]
//!   and [`parse_poll_after`] never give a duration that overflows an
//!   `Instant`.
//! - **`update-server/openapi.json` agrees with these types**: a test derives
//!   each type's JSON schema and compares property names, required fields,
//!   types and enum values, and the limits, with the document.
//!
//! What it does not do: it opens no socket and knows no HTTP client or
//! server (sans-IO); it does not decode base64 or check device ids, nonce
//! sizes or signatures: those rules belong to the signed formats in
//! `gantry-signing` (`device_auth::valid_device_id`, `ticket::NONCE_MIN`),
//! which both sides already share.

#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod checkin;
mod error;
mod limits;
#[cfg(test)]
mod openapi;
mod report;

pub use auth::{ChallengeRequest, ChallengeResponse, EnrollRequest, LoginRequest, LoginResponse};
pub use checkin::{
    Assignment, BlobRef, BootMeasurement, BootSlot, CheckinRequest, CheckinResponse, InventoryItem, InventoryState,
    parse_poll_after, valid_uuid_hex,
};
pub use error::{ErrorBody, ValidationError};
pub use limits::{
    DIGEST_HEX_LEN, FIRMWARE_STREAM, MAX_BOOT_REASON, MAX_DETAIL, MAX_INVENTORY, MAX_POLL_AFTER, MAX_PROGRESS,
    MAX_STREAM, MAX_TOKEN_TTL, MAX_TRUST_ROOTS, POLL_AFTER_HEADER, UUID_HEX_LEN, is_control_char, printable,
    valid_digest, valid_stream,
};
pub use report::{Report, ReportState};
