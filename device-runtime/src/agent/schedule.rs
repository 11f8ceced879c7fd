//! When to poll next: the server's interval while things work, a doubling
//! back-off with full jitter while they do not, so a fleet that lost its
//! server does not come back in lockstep, and never sooner than a busy
//! server's `Retry-After`.

use std::time::Duration;

/// Poll timing rules.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Interval used until the server names one.
    pub default_interval: Duration,
    /// The shortest interval honoured, whatever the server says.
    pub min_interval: Duration,
    /// The longest wait, for a server interval and for the back-off.
    pub max_interval: Duration,
    /// First back-off after a failure.
    pub backoff_initial: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            default_interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(2),
        }
    }
}

/// The poll clock of one agent.
#[derive(Clone, Debug)]
pub struct Poller {
    rules: Schedule,
    failures: u32,
}

impl Poller {
    /// A poller under `rules`.
    pub fn new(rules: Schedule) -> Poller {
        Poller { rules, failures: 0 }
    }

    /// After a check-in the server answered: its `poll_after` seconds
    /// (the server already added its jitter), clamped to the rules.
    pub fn succeeded(&mut self, poll_after: Option<u64>) -> Duration {
        self.failures = 0;
        poll_after
            .map_or(self.rules.default_interval, Duration::from_secs)
            .clamp(self.rules.min_interval, self.rules.max_interval)
    }

    /// After a failed cycle: a random wait in `[0, min(max, initial·2ⁿ)]`
    /// ("full jitter"); `random` is a uniformly random u64. A server that
    /// said how long it is busy (`retry_after`, its `Retry-After`) is not
    /// asked again sooner, nor later than the rules' longest wait.
    pub fn failed(&mut self, random: u64, retry_after: Option<Duration>) -> Duration {
        let ceiling = self
            .rules
            .backoff_initial
            .saturating_mul(1u32.checked_shl(self.failures.min(20)).unwrap_or(u32::MAX))
            .min(self.rules.max_interval);
        self.failures = self.failures.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        let backoff = Duration::from_millis(if ms == 0 { 0 } else { random % (ms + 1) })
            .max(self.rules.min_interval.min(ceiling));
        retry_after.map_or(backoff, |r| backoff.max(r.min(self.rules.max_interval)))
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_interval_is_clamped() {
        let mut p = Poller::new(Schedule::default());
        assert_eq!(p.succeeded(Some(30)), Duration::from_secs(30));
        assert_eq!(p.succeeded(Some(0)), Duration::from_secs(1));
        assert_eq!(p.succeeded(Some(u64::MAX / 2)), Duration::from_secs(3600));
        assert_eq!(p.succeeded(None), Duration::from_secs(60));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut p = Poller::new(Schedule::default());
        let ceilings: Vec<Duration> = (0..14).map(|_| p.failed(u64::MAX, None)).collect();
        // u64::MAX % (ms + 1) is not the ceiling itself; bound instead.
        let mut expected = Duration::from_secs(2);
        for c in &ceilings {
            assert!(*c <= expected, "{c:?} > {expected:?}");
            expected = (expected * 2).min(Duration::from_secs(3600));
        }
        assert!(ceilings.iter().all(|c| *c >= Duration::from_secs(1)));
        assert_eq!(p.failures(), 14);
        // Full jitter: small random numbers give short waits.
        assert_eq!(p.failed(1500, None), Duration::from_millis(1500));
        p.succeeded(Some(10));
        assert_eq!(p.failures(), 0);
        assert!(p.failed(u64::MAX, None) <= Duration::from_secs(2));
    }

    #[test]
    fn a_busy_servers_retry_after_is_waited_within_the_longest_wait() {
        let mut p = Poller::new(Schedule::default());
        // A first failure backs off at most 2 s; the server asked for 90.
        assert_eq!(p.failed(0, Some(Duration::from_secs(90))), Duration::from_secs(90));
        // A longer back-off still applies: the fifth ceiling is 32 s.
        for _ in 0..3 {
            p.failed(0, None);
        }
        assert_eq!(p.failed(20_000, Some(Duration::from_secs(7))), Duration::from_secs(20));
        // Never past the rules' longest wait (an hour).
        assert_eq!(p.failed(0, Some(Duration::from_secs(86_400))), Duration::from_secs(3600));
        assert_eq!(p.failures(), 6, "a busy answer is a failure: the back-off grows");
    }
}
