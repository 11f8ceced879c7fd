//! The supervisor's time: a monotonic millisecond count and naps that wake
//! early. Probations, health-check intervals, heartbeats and restart
//! back-off all read one [`Clock`], so a test injects a [`ManualClock`]
//! and proves an hour-long probation or a back-off capped at minutes in
//! milliseconds of real time, deterministically.
//!
//! What stays on the real clock, by design: a run's `deadline_ms` and CPU
//! share (the sandbox enforces them against the time the guest really
//! uses) and the supervisor's poll for its stop flag.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// A monotonic clock the supervisor decides with.
pub trait Clock: Debug + Send + Sync {
    /// Milliseconds since this clock's origin; never decreases.
    fn now_ms(&self) -> u64;

    /// Waits until [`Clock::now_ms`] reaches `until_ms` or `wake` returns
    /// true, whichever is first, and returns `wake()` then. `wake` is
    /// polled (it reads flags another thread sets), at least every 20 ms.
    fn wait_until(&self, until_ms: u64, wake: &dyn Fn() -> bool) -> bool;

    /// Waits `d` from now, waking early on `wake` (see [`Clock::wait_until`]).
    fn nap(&self, d: Duration, wake: &dyn Fn() -> bool) -> bool {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.wait_until(self.now_ms().saturating_add(ms), wake)
    }
}

/// How often a waiting thread looks at its wake condition.
const POLL: Duration = Duration::from_millis(20);

/// The real, monotonic time of the host (`Instant`), from its creation.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn wait_until(&self, until_ms: u64, wake: &dyn Fn() -> bool) -> bool {
        loop {
            if wake() {
                return true;
            }
            let left = until_ms.saturating_sub(self.now_ms());
            if left == 0 {
                return wake();
            }
            std::thread::sleep(Duration::from_millis(left).min(POLL));
        }
    }
}

#[cfg(feature = "sim")]
pub use manual::ManualClock;

#[cfg(feature = "sim")]
mod manual {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use parking_lot::{Condvar, Mutex};

    use super::{Clock, POLL};

    /// A clock that moves only when told: for tests (behind the `sim`
    /// feature). Threads waiting on it are tracked, so a test can let time
    /// pass only once every participant is blocked on the clock
    /// ([`ManualClock::advance_to_next`]), as a simulator's event loop does.
    #[derive(Debug, Default)]
    pub struct ManualClock {
        state: Mutex<State>,
        changed: Condvar,
    }

    #[derive(Debug, Default)]
    struct State {
        now: u64,
        /// Each waiting thread's wake-up time, by a ticket.
        waiting: BTreeMap<u64, u64>,
        next_ticket: u64,
    }

    impl State {
        /// Every waiter is waiting for a time still ahead.
        fn settled(&self, participants: usize) -> bool {
            self.waiting.len() >= participants && self.waiting.values().all(|&until| until > self.now)
        }
    }

    impl ManualClock {
        /// A clock at 0 ms.
        pub fn new() -> ManualClock {
            ManualClock::default()
        }

        /// Moves time forward by `ms`.
        pub fn advance(&self, ms: u64) {
            let mut s = self.state.lock();
            s.now = s.now.saturating_add(ms);
            self.changed.notify_all();
        }

        /// Waits (up to `timeout` of real time) until `participants`
        /// threads wait on this clock, each for a time still ahead; false
        /// if that did not happen in time.
        pub fn settle(&self, participants: usize, timeout: Duration) -> bool {
            let give_up = Instant::now() + timeout;
            let mut s = self.state.lock();
            while !s.settled(participants) {
                if self.changed.wait_until(&mut s, give_up).timed_out() {
                    return s.settled(participants);
                }
            }
            true
        }

        /// Moves time to the earliest wake-up among the waiting threads and
        /// returns it; `None` if nobody waits.
        pub fn advance_to_next(&self) -> Option<u64> {
            let mut s = self.state.lock();
            let next = s.waiting.values().copied().min()?.max(s.now);
            s.now = next;
            self.changed.notify_all();
            Some(next)
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.state.lock().now
        }

        fn wait_until(&self, until_ms: u64, wake: &dyn Fn() -> bool) -> bool {
            let mut s = self.state.lock();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiting.insert(ticket, until_ms);
            self.changed.notify_all();
            while s.now < until_ms && !wake() {
                // Timed, so that `wake` (flags, not this lock) is polled.
                self.changed.wait_for(&mut s, POLL);
            }
            s.waiting.remove(&ticket);
            self.changed.notify_all();
            drop(s);
            wake()
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::{AtomicBool, Ordering};

        use super::*;

        #[test]
        fn a_waiter_wakes_when_time_reaches_it_and_not_before() {
            let clock = ManualClock::new();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                let waiter = s.spawn(|| {
                    let woke = clock.nap(Duration::from_secs(3600), &|| stop.load(Ordering::Relaxed));
                    (woke, clock.now_ms())
                });
                assert!(clock.settle(1, Duration::from_secs(10)));
                clock.advance(3_599_999);
                assert!(clock.settle(1, Duration::from_secs(10)), "woke a millisecond early");
                assert_eq!(clock.advance_to_next(), Some(3_600_000));
                assert_eq!(waiter.join().unwrap(), (false, 3_600_000));
            });
            assert_eq!(clock.advance_to_next(), None);
        }

        #[test]
        fn a_wake_condition_ends_a_wait_without_time_passing() {
            let clock = ManualClock::new();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                let waiter = s.spawn(|| clock.nap(Duration::from_secs(60), &|| stop.load(Ordering::Relaxed)));
                assert!(clock.settle(1, Duration::from_secs(10)));
                stop.store(true, Ordering::Relaxed);
                assert!(waiter.join().unwrap());
            });
            assert_eq!(clock.now_ms(), 0);
        }

        #[test]
        fn settle_gives_up_when_too_few_threads_wait() {
            assert!(!ManualClock::new().settle(1, Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_naps_about_as_long_as_asked_and_wakes_early_on_its_condition() {
        let clock = SystemClock::new();
        let before = clock.now_ms();
        assert!(!clock.nap(Duration::from_millis(30), &|| false));
        assert!(clock.now_ms() >= before + 30);
        let started = Instant::now();
        assert!(clock.nap(Duration::from_secs(3600), &|| true));
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
