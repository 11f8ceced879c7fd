//! The update engine, sans IO: pure functions from the slot table and an
//! event to the next table and what to report, and the probation monitor.
//! The driver (`store::Store`) persists each new table atomically before it
//! acts on it, so every power cut lands between two consistent tables.
//!
//! ```text
//!  install(release)                                     health ok for probation_ms
//!   │ refuse: sequence ≤ running or < counter,          ┌──────────────► Confirmed
//!   │         no free pair                              │                (counter = seq)
//!   ▼                                                   │
//!  standby := none ─► write standby slot ─► verify ─► switch: active := standby,
//!  (table)            (flash)               (flash)    Probation ──────┤
//!                                                                      │ crash loop, health
//!                                                                      │ failures, or too many
//!                                                                      ▼ runtime restarts
//!                                                        Reverted: active := previous slot
//! ```

use gantry_boot::Slot;
use gantry_signing::config::{ContainerConfig, RestartPolicy};

use crate::table::{Container, Installed, Phase, RevertReason, SlotTable, index, other};

/// Runtime restarts a probation survives before the update is reverted.
pub const MAX_PROBATION_RESTARTS: u8 = 3;
/// Probation of a container whose config has no health check.
pub const DEFAULT_PROBATION_MS: u64 = 10_000;

/// Why a release was refused, before anything was written. Each has a
/// stable [`Refusal::code`] for scripts and reports; the text says what to
/// do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It does not verify: signatures, digests, payloads, identity, config.
    #[error("{0}")]
    Unverified(String),
    /// The container's previous update is still on probation.
    #[error("{name} is still on probation; wait for it to be confirmed or reverted")]
    OnProbation {
        /// Container.
        name: String,
    },
    /// Not newer than what runs.
    #[error("sequence number {sequence} is not newer than the installed {installed} (rollback)")]
    Rollback {
        /// The release's sequence number.
        sequence: u64,
        /// What runs.
        installed: u64,
    },
    /// Below the container's anti-rollback counter.
    #[error("sequence number {sequence} is below the anti-rollback counter {counter}")]
    BelowCounter {
        /// The release's sequence number.
        sequence: u64,
        /// The counter.
        counter: u64,
    },
    /// Every slot pair is taken.
    #[error("no free slot pair (at most {max})")]
    NoFreePair {
        /// Containers the device holds at most.
        max: u8,
    },
    /// It does not fit a slot.
    #[error("a release of {size} bytes does not fit a {slot}-byte slot")]
    TooLarge {
        /// Bytes it needs.
        size: u64,
        /// Bytes a slot has.
        slot: u64,
    },
    /// Its module imports what its config does not grant, or does not compile.
    #[error("{0}")]
    Sandbox(String),
}

impl Refusal {
    /// A stable name for the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unverified(_) => "unverified",
            Refusal::OnProbation { .. } => "on-probation",
            Refusal::Rollback { .. } => "rollback",
            Refusal::BelowCounter { .. } => "below-counter",
            Refusal::NoFreePair { .. } => "no-free-slot-pair",
            Refusal::TooLarge { .. } => "too-large",
            Refusal::Sandbox(_) => "sandbox",
        }
    }
}

/// An outcome of the update flow, reported as a structured event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateEvent {
    /// A release was refused before anything was written.
    Refused {
        /// Container (`?` when the release did not verify far enough to say).
        name: String,
        /// Why.
        reason: Refusal,
    },
    /// A release was written, verified and switched to; probation starts.
    Switched {
        /// Container.
        name: String,
        /// New version.
        version: String,
        /// New sequence number.
        sequence: u64,
        /// Slot it runs from.
        slot: Slot,
    },
    /// The new version passed probation.
    Confirmed {
        /// Container.
        name: String,
        /// Sequence number, now the container's anti-rollback counter.
        sequence: u64,
    },
    /// The new version failed; the previous one runs again.
    Reverted {
        /// Container.
        name: String,
        /// Sequence number that failed.
        from: u64,
        /// Sequence number running again (none if it was a first install).
        to: Option<u64>,
        /// Why.
        reason: String,
    },
    /// A container was removed.
    Removed {
        /// Container.
        name: String,
    },
}

/// Where a release goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallPlan {
    /// The container's slot pair.
    pub pair: u8,
    /// The slot to write (the standby one).
    pub slot: Slot,
    /// The table to persist before writing the slot: the slot is marked
    /// empty, so a torn write is never mistaken for a version.
    pub table: SlotTable,
}

/// Decides where `name`'s release with `sequence` goes, or why it cannot.
pub fn plan_install(table: &SlotTable, name: &str, sequence: u64, max_pairs: u8) -> Result<InstallPlan, Refusal> {
    let mut next = table.clone();
    let (pair, slot) = match next.get_mut(name) {
        Some(c) => {
            if matches!(c.phase, Phase::Probation { .. }) {
                return Err(Refusal::OnProbation { name: name.to_owned() });
            }
            if let Some(running) = c.running()
                && sequence <= running.sequence
            {
                return Err(Refusal::Rollback { sequence, installed: running.sequence });
            }
            if sequence < c.counter {
                return Err(Refusal::BelowCounter { sequence, counter: c.counter });
            }
            let standby = other(c.active);
            c.slots[index(standby)] = None;
            (c.pair, standby)
        }
        None => {
            let pair = next.free_pair(max_pairs).ok_or(Refusal::NoFreePair { max: max_pairs })?;
            next.containers.push(Container {
                name: name.to_owned(),
                pair,
                active: Slot::B,
                phase: Phase::Confirmed,
                slots: [None, None],
                counter: 0,
                enabled: true,
            });
            (pair, Slot::A)
        }
    };
    Ok(InstallPlan { pair, slot, table: next })
}

/// After the written slot verified: make it active, on probation.
pub fn switch(table: &SlotTable, name: &str, slot: Slot, installed: Installed) -> Option<(SlotTable, UpdateEvent)> {
    let mut next = table.clone();
    let c = next.get_mut(name)?;
    let event = UpdateEvent::Switched {
        name: name.to_owned(),
        version: installed.version.clone(),
        sequence: installed.sequence,
        slot,
    };
    c.slots[index(slot)] = Some(installed);
    c.active = slot;
    c.phase = Phase::Probation { restarts: 0 };
    c.enabled = true;
    Some((next, event))
}

/// Probation passed: confirm and raise the counter.
pub fn confirm(table: &SlotTable, name: &str) -> Option<(SlotTable, UpdateEvent)> {
    let mut next = table.clone();
    let c = next.get_mut(name)?;
    if !matches!(c.phase, Phase::Probation { .. }) {
        return None;
    }
    let sequence = c.running()?.sequence;
    c.phase = Phase::Confirmed;
    c.counter = c.counter.max(sequence);
    Some((next, UpdateEvent::Confirmed { name: name.to_owned(), sequence }))
}

/// Probation failed: back to the previous slot. A first install has no
/// previous slot; the container is then disabled.
pub fn revert(table: &SlotTable, name: &str, reason: &str) -> Option<(SlotTable, UpdateEvent)> {
    let mut next = table.clone();
    let c = next.get_mut(name)?;
    if !matches!(c.phase, Phase::Probation { .. }) {
        return None;
    }
    let from = c.running()?.sequence;
    let to = c.standby().map(|i| i.sequence);
    if to.is_some() {
        c.active = other(c.active);
    } else {
        c.enabled = false;
    }
    // Bounded here, once: the table stores it and the event reports it.
    let reason = RevertReason::new(reason);
    let event = UpdateEvent::Reverted { name: name.to_owned(), from, to, reason: reason.to_string() };
    c.phase = Phase::Reverted { reason };
    Some((next, event))
}

/// At runtime start: count a restart against every probation, reverting
/// those that used up their restarts (a new version that keeps taking the
/// runtime down must not keep running).
pub fn on_runtime_start(table: &SlotTable) -> (SlotTable, Vec<UpdateEvent>) {
    let mut next = table.clone();
    let mut events = Vec::new();
    let names: Vec<String> = next.containers.iter().map(|c| c.name.clone()).collect();
    for name in names {
        let Some(c) = next.get_mut(&name) else { continue };
        let Phase::Probation { restarts } = c.phase else { continue };
        if restarts + 1 > MAX_PROBATION_RESTARTS {
            let reason = format!("the runtime restarted {restarts} times during probation");
            if let Some((t, e)) = revert(&next, &name, &reason) {
                next = t;
                events.push(e);
            }
        } else {
            c.phase = Phase::Probation { restarts: restarts + 1 };
        }
    }
    (next, events)
}

/// What the probation monitor concludes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep watching.
    Pending,
    /// Confirm the new version.
    Confirm,
    /// Revert, for this reason.
    Revert(String),
}

/// Watches one container's new version during probation.
#[derive(Clone, Debug)]
pub struct Probation {
    deadline_ms: u64,
    failure_threshold: u32,
    max_crashes: u32,
    crashes: u32,
    failures: u32,
    needs_health: bool,
    healthy_once: bool,
}

impl Probation {
    /// Starts a probation at `now_ms` under `config`'s health and restart rules.
    pub fn start(config: &ContainerConfig, now_ms: u64) -> Probation {
        let (period, threshold, needs_health) = match &config.health {
            Some(h) => (h.probation_ms, h.failure_threshold.max(1), true),
            None => (DEFAULT_PROBATION_MS, 1, false),
        };
        let max_crashes = match config.restart.policy {
            RestartPolicy::Never => 0,
            _ => config.restart.max_restarts,
        };
        Probation {
            deadline_ms: now_ms.saturating_add(period),
            failure_threshold: threshold,
            max_crashes,
            crashes: 0,
            failures: 0,
            needs_health,
            healthy_once: false,
        }
    }

    /// The container trapped or exited with a failure.
    pub fn crashed(&mut self, why: &str) -> Verdict {
        self.crashes += 1;
        if self.crashes > self.max_crashes {
            Verdict::Revert(format!("crashed {} time(s) during probation: {why}", self.crashes))
        } else {
            Verdict::Pending
        }
    }

    /// A health check result.
    pub fn health(&mut self, ok: bool) -> Verdict {
        if ok {
            self.failures = 0;
            self.healthy_once = true;
            return Verdict::Pending;
        }
        self.failures += 1;
        if self.failures >= self.failure_threshold {
            Verdict::Revert(format!("health check failed {} time(s) in a row", self.failures))
        } else {
            Verdict::Pending
        }
    }

    /// A health check's result at `now_ms`: what both kinds of health check
    /// (an export polled, heartbeats watched) decide with, in one place. A
    /// failure threshold reached reverts at once; otherwise the probation
    /// ends when its time is up.
    pub fn observe(&mut self, healthy: bool, now_ms: u64) -> Verdict {
        match self.health(healthy) {
            Verdict::Pending => self.tick(now_ms),
            decided => decided,
        }
    }

    /// Time passes.
    pub fn tick(&self, now_ms: u64) -> Verdict {
        if now_ms < self.deadline_ms {
            Verdict::Pending
        } else if self.needs_health && !self.healthy_once {
            Verdict::Revert("no successful health check during probation".into())
        } else {
            Verdict::Confirm
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(seq: u64) -> Installed {
        Installed { manifest_digest: [seq as u8; 32], sequence: seq, version: format!("v{seq}") }
    }

    #[test]
    fn first_install_then_update_then_revert() {
        let t = SlotTable::default();
        let plan = plan_install(&t, "app", 1, 8).unwrap();
        assert_eq!((plan.pair, plan.slot), (0, Slot::A));
        let (t, e) = switch(&plan.table, "app", plan.slot, installed(1)).unwrap();
        assert!(matches!(e, UpdateEvent::Switched { sequence: 1, slot: Slot::A, .. }));
        assert_eq!(plan_install(&t, "app", 2, 8).unwrap_err(), Refusal::OnProbation { name: "app".into() });
        let (t, _) = confirm(&t, "app").unwrap();
        assert_eq!(t.get("app").unwrap().counter, 1);

        assert_eq!(plan_install(&t, "app", 1, 8).unwrap_err(), Refusal::Rollback { sequence: 1, installed: 1 });
        let plan = plan_install(&t, "app", 2, 8).unwrap();
        assert_eq!(plan.slot, Slot::B);
        let (t, _) = switch(&plan.table, "app", Slot::B, installed(2)).unwrap();
        let (t, e) = revert(&t, "app", "crashed").unwrap();
        assert_eq!(e, UpdateEvent::Reverted { name: "app".into(), from: 2, to: Some(1), reason: "crashed".into() });
        let c = t.get("app").unwrap();
        assert_eq!((c.active, c.counter, c.running().unwrap().sequence), (Slot::A, 1, 1));
        assert!(confirm(&t, "app").is_none(), "nothing to confirm after a revert");
    }

    #[test]
    fn probation_survives_a_few_runtime_restarts_only() {
        let plan = plan_install(&SlotTable::default(), "app", 1, 8).unwrap();
        let (mut t, _) = switch(&plan.table, "app", plan.slot, installed(1)).unwrap();
        for _ in 0..MAX_PROBATION_RESTARTS {
            let (next, events) = on_runtime_start(&t);
            assert!(events.is_empty());
            t = next;
        }
        let (t, events) = on_runtime_start(&t);
        assert!(matches!(&events[..], [UpdateEvent::Reverted { to: None, .. }]));
        assert!(!t.get("app").unwrap().enabled, "a failed first install is disabled");
    }

    #[test]
    fn no_free_pair() {
        let mut t = SlotTable::default();
        for (i, name) in ["a", "b"].iter().enumerate() {
            let plan = plan_install(&t, name, 1, 2).unwrap();
            assert_eq!(plan.pair, i as u8);
            t = switch(&plan.table, name, plan.slot, installed(1)).unwrap().0;
        }
        let refusal = plan_install(&t, "c", 1, 2).unwrap_err();
        assert_eq!(
            (refusal.code(), refusal.to_string()),
            ("no-free-slot-pair", "no free slot pair (at most 2)".into())
        );
    }

    #[test]
    fn probation_verdicts() {
        let toml = "name = \"x\"\nversion = \"1\"\n[health]\nkind = \"heartbeat\"\ninterval_ms = 100\nprobation_ms = 1000\nfailure_threshold = 2\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 1\n";
        let config = ContainerConfig::from_toml(toml).unwrap();
        let mut p = Probation::start(&config, 0);
        assert_eq!(p.tick(999), Verdict::Pending);
        assert!(matches!(p.tick(1000), Verdict::Revert(_)), "never healthy");
        assert_eq!(p.health(true), Verdict::Pending);
        assert_eq!(p.tick(1000), Verdict::Confirm);
        assert_eq!(p.health(false), Verdict::Pending);
        assert!(matches!(p.health(false), Verdict::Revert(_)));
        let mut p = Probation::start(&config, 0);
        assert_eq!(p.observe(true, 500), Verdict::Pending);
        assert_eq!(p.observe(false, 999), Verdict::Pending, "one failure of two");
        assert!(matches!(p.observe(false, 999), Verdict::Revert(_)), "the second in a row");
        let mut p = Probation::start(&config, 0);
        assert_eq!(p.observe(true, 1000), Verdict::Confirm, "healthy when the time is up");
        let mut p = Probation::start(&config, 0);
        assert_eq!(p.crashed("trap"), Verdict::Pending);
        assert!(matches!(p.crashed("trap"), Verdict::Revert(r) if r.contains("2 time(s)")));
    }
}
