//! Gantry's update server: the service a fleet pulls from.
//!
//! ```text
//!  release pipeline ── PUT blobs, POST release ──►┐
//!  operators ──────── devices, assignments ───────┤   ┌──────────────┐
//!                                                 ├──►│ gantry-server│── sqlx ── SQLite | PostgreSQL
//!  devices ── challenge, login, check-in ────────►┤   │  (axum)      │── object_store ── dir | S3
//!          ◄─ 304, or 200 + deployment ticket ────┘   └──────────────┘
//!          ── GET /blobs/sha256/<hex> (Range) ──►
//! ```
//!
//! What it guarantees: a release is stored only if it verifies under the
//! installed trust root's `release` role and every payload it names is
//! present with the declared digest and size; a device is told what to run
//! only in a deployment ticket signed with the server's online key for the
//! nonce the device sent (so a replayed answer is refused by the device); a
//! device token is bound to one device; an operator token can do only what
//! its role allows. A check-in that changes nothing is answered from memory
//! and writes nothing to the database.
//!
//! What it never does: install anything (devices decide, after verifying
//! both the release signatures and the ticket), hold release keys, or
//! serve a blob under a name that is not its SHA-256.
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs)]

pub mod api;
mod api_tokens;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod error;
pub mod fleet;
mod listener;
pub mod logfmt;
pub mod metrics;
pub mod ratelimit;
pub mod rollout;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod tls;

pub use config::Config;
pub use serve::{Running, StartError, start};
