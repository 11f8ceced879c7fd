//! The rollout engine: moves a release through its stages as devices
//! confirm it, and halts by itself when too many fail.
//!
//! ```text
//!  create ─► targeted devices, spread over stages by a hash of (rollout, device)
//!     │      (stage i = the first stages[i] % of that order, cumulative)
//!     ▼
//!  running ─ stage k assigned ─► reports ─► evaluate():
//!     │        failed + stuck ≥ error_threshold % of assigned ─► halted (unconfirmed devices get their
//!     │                                                    previous assignment back)
//!     │        installed ≥ success_threshold % of assigned ─► stage k+1 (or completed)
//!  pause / resume / cancel (cancel restores like a halt)
//! ```
//!
//! "Installed" is what a device confirmed in a report, never what was
//! assigned. A device whose last report says it is at work (`downloading`,
//! `downloaded`, `installing`) and that then stays quiet for
//! `rollouts.stuck_after` is `stuck`, and counts as failed: a fleet of
//! devices that hang mid-update halts the rollout rather than stall it. All state is in the database, and every transition is a
//! conditional update, so several nodes (or a restarted one) evaluating the
//! same rollout move it once. Evaluation runs after every report that
//! concerns a rollout and periodically in the background.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::store::{RolloutRecord, StageCount, Store, StoreError};

/// Totals of a rollout's devices up to (and including) its current stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Devices the rollout targets, all stages.
    pub targeted: i64,
    /// Devices in the stages started so far.
    pub assigned: i64,
    /// Of those, devices that confirmed the install.
    pub installed: i64,
    /// Of those, devices whose install failed or was reverted, or that are
    /// stuck.
    pub failed: i64,
    /// Of the failed, those stuck mid-update.
    pub stuck: i64,
}

/// Sums `counts` for the stages up to `stage`.
pub fn progress(counts: &[StageCount], stage: i64) -> Progress {
    let mut p = Progress::default();
    for c in counts {
        p.targeted += c.devices;
        if c.stage > stage {
            continue;
        }
        p.assigned += c.devices;
        match c.state.as_str() {
            "installed" => p.installed += c.devices,
            "failed" => p.failed += c.devices,
            "stuck" => {
                p.failed += c.devices;
                p.stuck += c.devices;
            }
            _ => {}
        }
    }
    p
}

/// Spreads `devices` over `stages` (cumulative percentages ending at 100):
/// ordered by SHA-256 of rollout id and device id, so the order is random
/// across rollouts but the same every time it is computed.
pub fn plan(rollout_id: &str, mut devices: Vec<String>, stages: &[u32]) -> Vec<(String, i64)> {
    devices.sort_by_cached_key(|d| {
        let mut h = Sha256::new();
        h.update(rollout_id.as_bytes());
        h.update([0]);
        h.update(d.as_bytes());
        h.finalize()
    });
    let n = devices.len() as u64;
    devices
        .into_iter()
        .enumerate()
        .map(|(k, d)| {
            // The first stage whose cumulative share covers position k.
            let stage = stages
                .iter()
                .position(|&pct| (k as u64) < (n * pct as u64).div_ceil(100))
                .unwrap_or(stages.len().saturating_sub(1));
            (d, stage as i64)
        })
        .collect()
}

/// What [`evaluate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (not running, or waiting for devices).
    Unchanged,
    /// Started the next stage.
    Advanced,
    /// Every stage done.
    Completed,
    /// Too many failures: halted, unconfirmed devices restored.
    Halted,
}

/// Looks at a running rollout's reports and moves it if it must; devices
/// at work for longer than `stuck_after` without a report become `stuck`.
pub async fn evaluate(store: &Store, id: &str, stuck_after: Duration) -> Result<Outcome, StoreError> {
    let mut outcome = Outcome::Unchanged;
    let before = crate::store::now().saturating_sub(i64::try_from(stuck_after.as_secs()).unwrap_or(i64::MAX));
    let stuck = store.mark_stuck(id, before).await?;
    if stuck > 0 {
        tracing::warn!(rollout = %id, stuck, ?stuck_after, "devices stuck mid-update count as failed");
    }
    // Stages whose devices are all confirmed already (or that are empty)
    // are passed in the same evaluation.
    for _ in 0..=100 {
        let Some(r) = store.rollout(id).await? else { return Ok(outcome) };
        if r.state != "running" {
            return Ok(outcome);
        }
        let p = progress(&store.rollout_counts(id).await?, r.current_stage);
        if p.failed > 0 && p.failed * 100 >= r.error_threshold * p.assigned {
            if store.set_rollout_state(id, &["running"], "halted").await? {
                let restored = store.restore_rollout_devices(&r).await?;
                tracing::warn!(rollout = %id, failed = p.failed, assigned = p.assigned, restored, "rollout halted: error threshold reached");
                return Ok(Outcome::Halted);
            }
            return Ok(outcome);
        }
        if p.installed * 100 < r.success_threshold * p.assigned {
            return Ok(outcome);
        }
        let last = r.stages.len() as i64 - 1;
        if r.current_stage >= last {
            if store.set_rollout_state(id, &["running"], "completed").await? {
                tracing::info!(rollout = %id, installed = p.installed, "rollout completed");
                return Ok(Outcome::Completed);
            }
            return Ok(outcome);
        }
        if !store.advance_rollout(id, r.current_stage).await? {
            return Ok(outcome);
        }
        let assigned = store.assign_rollout_stage(&r, r.current_stage + 1).await?;
        tracing::info!(rollout = %id, stage = r.current_stage + 1, assigned, "rollout advanced");
        outcome = Outcome::Advanced;
    }
    Ok(outcome)
}

/// Starts a new rollout: assigns its first stage.
pub async fn start(store: &Store, r: &RolloutRecord, stuck_after: Duration) -> Result<u64, StoreError> {
    let n = store.assign_rollout_stage(r, 0).await?;
    tracing::info!(rollout = %r.id, digest = %r.manifest_digest, stage0 = n, "rollout started");
    // An empty first stage (few devices) moves on at once.
    evaluate(store, &r.id, stuck_after).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fill_the_stages_cumulatively() {
        let devices: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
        let plan = plan("r1", devices.clone(), &[20, 60, 100]);
        let per_stage = |s| plan.iter().filter(|(_, st)| *st == s).count();
        assert_eq!((per_stage(0), per_stage(1), per_stage(2)), (2, 4, 4));
        // Deterministic for a rollout, different across rollouts.
        assert_eq!(plan, super::plan("r1", devices.clone(), &[20, 60, 100]));
        assert_ne!(
            plan.iter().map(|p| &p.0).collect::<Vec<_>>(),
            super::plan("r2", devices, &[20, 60, 100]).iter().map(|p| &p.0).collect::<Vec<_>>()
        );
        // One device, 10 %: it is in the first stage (rounded up).
        assert_eq!(super::plan("r", vec!["only".into()], &[10, 100]), [("only".to_owned(), 0)]);
    }

    #[test]
    fn progress_counts_started_stages_only() {
        let c = |stage, state: &str, devices| StageCount { stage, state: state.into(), devices };
        let counts =
            [c(0, "installed", 2), c(1, "assigned", 3), c(1, "failed", 1), c(1, "stuck", 2), c(2, "pending", 4)];
        assert_eq!(progress(&counts, 0), Progress { targeted: 12, assigned: 2, installed: 2, failed: 0, stuck: 0 });
        assert_eq!(progress(&counts, 1), Progress { targeted: 12, assigned: 8, installed: 2, failed: 3, stuck: 2 });
    }
}
