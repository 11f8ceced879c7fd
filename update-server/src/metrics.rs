//! Prometheus counters, rendered by `GET /metrics` in the text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    /// Check-ins answered 304.
    pub checkins_unchanged: AtomicU64,
    /// Check-ins answered with a ticket.
    pub checkins_ticket: AtomicU64,
    /// Check-ins whose inventory changed (one database write each).
    pub inventory_writes: AtomicU64,
    /// Successful device logins.
    pub logins: AtomicU64,
    /// Refused device logins.
    pub login_refusals: AtomicU64,
    /// Blob responses (200 and 206).
    pub blob_responses: AtomicU64,
    /// Blob bytes requested (the body lengths of those responses).
    pub blob_bytes: AtomicU64,
    /// Releases accepted.
    pub releases_accepted: AtomicU64,
    /// Releases refused.
    pub releases_refused: AtomicU64,
    /// Last-seen rows flushed.
    pub last_seen_flushed: AtomicU64,
    /// Requests refused by a rate limit (`429`).
    pub rate_limited: AtomicU64,
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The text exposition format; `cached_devices` and `rate_limit_keys`
    /// are gauges.
    pub fn render(&self, cached_devices: usize, rate_limit_keys: usize) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64, &str); 11] = [
            ("gantry_checkins_total", "Device check-ins", &self.checkins_unchanged, "result=\"not-modified\""),
            ("gantry_checkins_total", "Device check-ins", &self.checkins_ticket, "result=\"ticket\""),
            ("gantry_inventory_writes_total", "Inventories written", &self.inventory_writes, ""),
            ("gantry_logins_total", "Device logins", &self.logins, "result=\"ok\""),
            ("gantry_logins_total", "Device logins", &self.login_refusals, "result=\"refused\""),
            ("gantry_blob_responses_total", "Blob responses", &self.blob_responses, ""),
            ("gantry_blob_bytes_total", "Blob bytes answered", &self.blob_bytes, ""),
            ("gantry_releases_total", "Release uploads", &self.releases_accepted, "result=\"accepted\""),
            ("gantry_releases_total", "Release uploads", &self.releases_refused, "result=\"refused\""),
            ("gantry_last_seen_flushed_total", "Last-seen rows written", &self.last_seen_flushed, ""),
            ("gantry_rate_limited_total", "Requests refused by a rate limit", &self.rate_limited, ""),
        ];
        let mut described = Vec::new();
        for (name, help, value, labels) in counters {
            if !described.contains(&name) {
                let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
                described.push(name);
            }
            let labels = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            let _ = writeln!(out, "{name}{labels} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP gantry_cached_devices Devices held in the check-in cache.\n# TYPE gantry_cached_devices gauge\ngantry_cached_devices {cached_devices}"
        );
        let _ = writeln!(
            out,
            "# HELP gantry_rate_limit_keys Sources and devices with rate-limit state.\n# TYPE gantry_rate_limit_keys gauge\ngantry_rate_limit_keys {rate_limit_keys}"
        );
        out
    }
}
