//! Gantry's bootloader: verified A/B boot over embassy-boot.
//!
//! embassy-boot swaps pages between ACTIVE and DFU, power-fail safely, and
//! reverts an update the application did not mark as booted. It verifies
//! nothing at boot, and a power cut while it erases its STATE page can make
//! it re-run a finished swap over the swapped image. Gantry adds:
//!
//! - **verification before every hand-over**: the slot image carries its
//!   signed SUIT envelope ([`image`]); ACTIVE is checked against the
//!   provisioned keys, anti-rollback counter and device identity, and an
//!   update in DFU before it is swapped in ([`check`]);
//! - **keys provisioned into its own map**, not compiled in, and rotated in
//!   the field only by a valid successor trust root ([`keys`]);
//! - **revert at once** when a swapped-in image does not verify, and after
//!   `max_trial_boots` unconfirmed boots; **recovery** when nothing verifies;
//! - **anti-rollback**: a security counter raised only when the runtime
//!   confirms an image ([`control`]);
//! - **a journal** for every erase of embassy-boot's STATE, in Gantry's own
//!   power-fail-safe map ([`store`]), so an interrupted erase is finished
//!   rather than misread;
//! - **a measured boot record** for attestation ([`record`]);
//! - **layout checks** with clear errors ([`layout`]).
//!
//! `no_std`, no allocator in the boot path, generic over
//! `embedded_storage::nor_flash::NorFlash`. The `sim` feature adds a NOR
//! flash simulator with power-cut injection and the power-cut sweep.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod boot;
pub mod check;
pub mod control;
mod embassy_state;
mod error;
pub mod image;
pub mod keys;
pub mod layout;
pub mod record;
pub mod store;

#[cfg(feature = "sim")]
pub mod sim;

pub use boot::{BootOutcome, Bootloader, Workspace};
pub use check::{BootConfig, Measurement, verify_slot};
pub use control::Control;
pub use embassy_state::SwapState;
pub use error::{BootError, ControlError, ImageError, Reason, StoreError};
pub use keys::{BootKeys, BootPolicy, KeysError, Retired, RoleKeys};
pub use layout::{Layout, LayoutError};
pub use record::{BootRecord, Slot};
pub use store::{BootState, Kv};
