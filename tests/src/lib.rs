//! Whole-system test support: the real server with simulated devices
//! around it, and a hostile proxy for the network between them. The
//! scenarios are in `tests/`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fleet;
pub mod proxy;
