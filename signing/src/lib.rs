//! Gantry's signed objects and how they are checked.
//!
//! Today: SUIT manifests (draft-ietf-suit-manifest-37) authenticated by
//! COSE_Sign1 with a detached payload over the SUIT_Digest of the
//! bstr-wrapped manifest. Deployment tickets, attestation evidence and audit
//! checkpoints join this crate as they are built.
//!
//! ```text
//!   release pipeline (std)                      device / bootloader (no_std)
//!  ┌──────────────────────────┐  envelope   ┌──────────────────────────────┐
//!  │ ContainerManifest builder│ ──────────► │ verify(): signatures k-of-n, │
//!  │ add_signature(KeySource) │   .suit     │ digest, sequence, identity   │
//!  └──────────────────────────┘             │ → VerifiedManifest → run()   │
//!                                           └──────────────────────────────┘
//! ```
//!
//! **The verification core is `no_std` and allocation-free**: it parses
//! borrowed bytes with a strict CBOR reader (definite lengths, bounded
//! counts and depth, unique keys in deterministic order) and assembles each
//! Sig_structure in a fixed stack buffer. Build it with
//! `--no-default-features` to check.
//!
//! **Order of checks** (see [`verify()`]): signature first, then digest, then
//! sequence number, then vendor/class ids; the manifest is not interpreted
//! before its digest is authenticated. A [`VerifiedManifest`] can only come
//! out of [`verify()`], and only a verified manifest can be run by the SUIT
//! interpreter ([`suit::interp`]). The signatures cover the manifest only:
//! an integrated payload (such as a container's `#config`) is handed out by
//! [`VerifiedManifest::integrated_payload`] once its SHA-256 digest and size
//! match those signed for the component that names it
//! ([`suit::integrated`]).
//!
//! **Never**: accept an unsigned envelope, let an algorithm choose the key
//! type, honour an unknown critical header, or offer a "skip verification"
//! switch. ECDSA high-S signatures *are* accepted (the draft's own examples
//! use them); signing uses ESP256 (-9) and Ed25519 (-19), verification also
//! takes ES256 (-7) and EdDSA (-8).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "std")]
extern crate alloc;

mod cbor;
pub mod cose;
pub mod device_auth;
mod error;
pub mod suit;
pub mod ticket;
mod verify;

#[cfg(feature = "std")]
pub mod build;
#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod inspect;
#[cfg(feature = "wasm")]
pub mod module;
#[cfg(feature = "wasm")]
pub mod tree;

pub use error::Error;

/// Component id (one segment) of a runtime firmware image, which the
/// bootloader checks before every boot.
pub const FIRMWARE_COMPONENT: &[u8] = b"firmware";
pub use suit::envelope::{Digest, Envelope};
pub use suit::integrated::{DeclaredImage, IntegratedPayload};
pub use suit::interp::{ActionFailed, Image, Parameters, SuitDevice};
pub use suit::manifest::{ComponentId, Manifest, Member, Section};
pub use verify::{MAX_ANCHORS, MAX_SIGNATURES, Policy, VerifiedManifest, verify, verify_pinned};
