//! Gantry's bootloader core.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "sim")]
pub mod sim;
