//! Gantry's device runtime: a container store with an A/B slot pair per
//! container on (simulated) NOR flash, the update engine that installs,
//! probates, confirms or reverts a container by itself, and the Wasm
//! sandbox that runs them.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "agent")]
pub mod agent;
pub mod bundle;
#[cfg(feature = "runtime")]
pub mod clock;
#[cfg(feature = "runtime")]
pub mod device;
pub mod firmware;
pub mod layout;
#[cfg(feature = "runtime")]
pub mod sandbox;
pub mod store;
#[cfg(feature = "runtime")]
pub mod supervisor;
pub mod table;
pub mod update;
