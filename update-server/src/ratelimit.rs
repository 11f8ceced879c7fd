//! Request rates per source address and per device (`[rate_limits]`):
//! a token bucket per key (governor's GCRA), answered `429 rate-limited`
//! with `Retry-After` when empty. The device agent waits at least that
//! long before it tries again.
//!
//! | limiter                  | key                           | counts                               |
//! |--------------------------|-------------------------------|--------------------------------------|
//! | `device_auth_per_source` | source address (IPv6: /64)    | challenges, logins, enrollments      |
//! | `operator_per_source`    | source address (IPv6: /64)    | every operator API request           |
//! | `checkins_per_device`    | device id (from its token)    | check-ins                            |
//! | `reports_per_device`     | device id (from its token)    | reports                              |
//!
//! A device id is kept as a 64-bit keyed hash (8 bytes a device, not its
//! string: a million devices polling within the refill time stay a few
//! tens of MB); two devices sharing a hash would share a bucket, which at
//! a million devices happens with odds of about 1 in 10^7.
//!
//! State is per node and in memory: keys idle long enough to be back at a
//! full bucket are dropped every minute, so memory follows the clients
//! active in the last burst window, not every client ever seen. Behind a
//! load balancer, `rate_limits.source_header` names the header that carries
//! the client's address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::api::Shared;
use crate::config::{Rate, RateLimits};
use crate::error::ApiError;

/// One limiter, or none when its rate is 0.
struct Limiter<K: std::hash::Hash + Eq + Clone>(Option<DefaultKeyedRateLimiter<K>>);

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(rate: Rate) -> Self {
        let quota = (rate.per_minute > 0)
            .then(|| Quota::with_period(Duration::from_secs(60) / rate.per_minute))
            .flatten()
            .map(|q| q.allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN)));
        Limiter(quota.map(governor::RateLimiter::keyed))
    }

    /// `Ok`, or the whole seconds to wait (at least 1).
    fn check(&self, key: &K) -> Result<(), u64> {
        let Some(limiter) = &self.0 else { return Ok(()) };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            (wait.as_millis() as u64).div_ceil(1000).max(1)
        })
    }

    fn prune(&self) {
        if let Some(l) = &self.0 {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.len())
    }
}

/// Every limiter of one node.
pub struct Limiters {
    source_header: Option<axum::http::HeaderName>,
    device_auth: Limiter<IpAddr>,
    operator: Limiter<IpAddr>,
    checkins: Limiter<u64>,
    reports: Limiter<u64>,
    hasher: std::hash::RandomState,
}

/// Which per-device limit a request counts against.
#[derive(Clone, Copy, Debug)]
pub enum DeviceLimit {
    /// `checkins_per_device`.
    Checkin,
    /// `reports_per_device`.
    Report,
}

/// Which per-source limit a route counts against.
#[derive(Clone, Copy, Debug)]
pub enum SourceLimit {
    /// `device_auth_per_source`.
    DeviceAuth,
    /// `operator_per_source`.
    Operator,
}

fn limited(what: &str, retry_after: u64) -> ApiError {
    ApiError::rate_limited(retry_after, format!("too many {what}; try again in {retry_after} s"))
}

/// The address a limit is kept for: IPv4 as is, IPv6 by its /64 (one
/// subscriber usually holds a whole /64).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl Limiters {
    /// The limiters `config` asks for.
    pub fn new(config: &RateLimits) -> Self {
        let header = config.source_header.trim();
        Limiters {
            source_header: (!header.is_empty()).then(|| header.parse().ok()).flatten(),
            device_auth: Limiter::new(config.device_auth_per_source),
            operator: Limiter::new(config.operator_per_source),
            checkins: Limiter::new(config.checkins_per_device),
            reports: Limiter::new(config.reports_per_device),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The client's address: the last one in the configured header, or the
    /// TCP peer.
    pub fn source(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if let Some(name) = &self.source_header {
            let forwarded = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .next_back();
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer.map(|p| p.ip())
    }

    /// Counts one request of `device`.
    pub fn device(&self, limit: DeviceLimit, device: &str) -> Result<(), ApiError> {
        let (limiter, what) = match limit {
            DeviceLimit::Checkin => (&self.checkins, "check-ins from this device"),
            DeviceLimit::Report => (&self.reports, "reports from this device"),
        };
        limiter.check(&std::hash::BuildHasher::hash_one(&self.hasher, device)).map_err(|wait| limited(what, wait))
    }

    /// Counts one request from `source`.
    pub fn source_request(&self, limit: SourceLimit, source: IpAddr) -> Result<(), ApiError> {
        let (limiter, what) = match limit {
            SourceLimit::DeviceAuth => (&self.device_auth, "device logins from this address"),
            SourceLimit::Operator => (&self.operator, "API requests from this address"),
        };
        limiter.check(&bucket(source)).map_err(|wait| limited(what, wait))
    }

    /// Drops keys whose buckets are full again.
    pub fn prune(&self) {
        self.device_auth.prune();
        self.operator.prune();
        self.checkins.prune();
        self.reports.prune();
    }

    /// Keys held, all limiters (a gauge in `/metrics`).
    pub fn keys(&self) -> usize {
        self.device_auth.len() + self.operator.len() + self.checkins.len() + self.reports.len()
    }
}

async fn per_source(s: &Shared, limit: SourceLimit, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if let Some(source) = s.limiters.source(req.headers(), peer)
        && let Err(e) = s.limiters.source_request(limit, source)
    {
        crate::metrics::inc(&s.metrics.rate_limited);
        return axum::response::IntoResponse::into_response(e);
    }
    next.run(req).await
}

/// Middleware: `device_auth_per_source` for the routes it wraps.
pub async fn device_auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    per_source(&s, SourceLimit::DeviceAuth, req, next).await
}

/// Middleware: `operator_per_source` for the routes it wraps.
pub async fn operator(State(s): State<Shared>, req: Request, next: Next) -> Response {
    per_source(&s, SourceLimit::Operator, req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_says_how_long_to_wait() {
        let l = Limiter::<u64>::new(Rate { per_minute: 60, burst: 3 });
        let k = 7;
        for _ in 0..3 {
            assert_eq!(l.check(&k), Ok(()));
        }
        let wait = l.check(&k).unwrap_err();
        assert_eq!(wait, 1);
        assert_eq!(l.check(&8), Ok(()), "keys are apart");
        assert_eq!(l.len(), 2);
        // Off: never limits.
        let off = Limiter::<u64>::new(Rate { per_minute: 0, burst: 1 });
        assert!((0..1000).all(|_| off.check(&k).is_ok()));
        // A burst of 0 is read as 1, not as "refuse everything".
        let one = Limiter::<u64>::new(Rate { per_minute: 1, burst: 0 });
        assert_eq!(one.check(&k), Ok(()));
        assert!(one.check(&k).unwrap_err() >= 59);
    }

    #[test]
    fn sources_come_from_the_peer_or_the_configured_header() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 198.51.100.2".parse().unwrap());
        let plain = Limiters::new(&RateLimits::default());
        assert_eq!(plain.source(&headers, Some(peer)), Some(peer.ip()), "the header is ignored unless configured");
        let proxied = Limiters::new(&RateLimits { source_header: "X-Forwarded-For".into(), ..RateLimits::default() });
        assert_eq!(proxied.source(&headers, Some(peer)), Some("198.51.100.2".parse().unwrap()));
        assert_eq!(proxied.source(&HeaderMap::new(), Some(peer)), Some(peer.ip()));
        // One /64 is one source.
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(c));
        assert_eq!(bucket("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn devices_have_buckets_of_their_own() {
        let limits = Limiters::new(&RateLimits {
            reports_per_device: Rate { per_minute: 60, burst: 2 },
            ..RateLimits::default()
        });
        for _ in 0..2 {
            assert!(limits.device(DeviceLimit::Report, "gw-1").is_ok());
        }
        let e = limits.device(DeviceLimit::Report, "gw-1").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code, e.retry_after), (429, "rate-limited", Some(1)));
        assert!(limits.device(DeviceLimit::Report, "gw-2").is_ok());
        assert!(limits.device(DeviceLimit::Checkin, "gw-1").is_ok(), "check-ins count apart");
    }
}
