//! Gantry's keys: who may sign what, and how a signature is checked.
//!
//! This crate owns every key Gantry handles and the document that says which
//! of them to trust:
//!
//! * **Public keys and verification** ([`PublicKey`], [`Algorithm`]) work in
//!   `no_std` without an allocator, so the bootloader can verify with them.
//! * **Key ids** ([`KeyId`]) are RFC 9679 COSE key thumbprints: SHA-256 over
//!   the deterministic encoding of the key's required COSE_Key members. The
//!   same key always has the same id, whatever file or HSM it came from.
//! * **Encodings**: COSE_Key (`no_std` decode), SPKI PEM for public keys and
//!   PKCS#8 PEM for private keys (written with mode 0600).
//! * **Key sources** ([`KeySource`]): the signer asks a source to sign and
//!   never sees where the key lives (a file today, an HSM later).
//! * **The trust root** ([`trust`]): a COSE_Sign document listing keys per role
//!   (`root`, `release`, `server`) with a threshold each, a version and an
//!   expiry. A successor root is accepted only when a threshold of the previous
//!   root keys *and* of its own root keys signed it.
//!
//! What this crate never does: accept a signature whose algorithm does not
//! match the key's type, accept an expired or under-signed trust root, or read
//! a private key file that other users can read.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "std")]
extern crate alloc;

mod alg;
mod cose_key;
mod error;
mod key_id;
mod public;

#[cfg(feature = "std")]
pub mod cbor_vec;
#[cfg(feature = "std")]
mod pem;
#[cfg(feature = "std")]
mod private;
#[cfg(feature = "std")]
mod source;
#[cfg(feature = "std")]
pub mod trust;

pub use alg::{Algorithm, KeyType};
pub use cose_key::{COSE_KEY_MAX_LEN, decode_cose_key, encode_cose_key};
pub use error::KeyError;
pub use key_id::KeyId;
pub use public::{PublicKey, RawPublicKey};

#[cfg(feature = "std")]
pub use pem::{read_private_key_pem, read_public_key_file, read_public_key_pem};
#[cfg(feature = "std")]
pub use private::SigningKey;
#[cfg(feature = "std")]
pub use source::{FileKeySource, KeySource};
