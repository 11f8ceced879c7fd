//! Gantry's device runtime: a container store with an A/B slot pair per
//! container on (simulated) NOR flash, the update engine that installs,
//! probates, confirms or reverts a container by itself, and the Wasm
//! sandbox that runs them.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod bundle;
pub mod device;
pub mod layout;
pub mod sandbox;
pub mod store;
pub mod supervisor;
pub mod table;
pub mod update;
