//! Test tooling every crate can use: a NOR flash simulator with power-cut
//! injection, and the power-cut sweep of the boot path.

mod flash;
mod rng;

pub use flash::{Cut, CutModel, FlashStats, SimError, SimFlash};
pub use rng::SplitMix64;
mod rig;
mod sweep;

pub use rig::{Part, Rig, Signer, firmware};
pub use sweep::{Phase, PhaseReport, SweepOptions, sweep};
