//! Whole-system test support: the real server with simulated devices
//! around it, a hostile proxy for the network between them and a man in
//! the middle that rewrites whole messages. The scenarios are in `tests/`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bins;
pub mod fleet;
pub mod mitm;
pub mod proxy;
