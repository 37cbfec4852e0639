//! Request limits, so that one client cannot crowd out the others: requests
//! per client IP (before any work), requests per user (after the token is
//! verified), and a brake on an IP that keeps presenting bad tokens: past its
//! allowance every authenticated request from it is refused for a while,
//! without verifying anything. Over a limit: 429 with `Retry-After` and
//! `RATE_LIMITED`.

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Per-minute allowances (bursts are a fifth of a minute's worth, at least 5).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub per_ip_per_minute: u32,
    pub per_user_per_minute: u32,
    pub auth_failures_per_ip_per_minute: u32,
}

struct Keyed<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, DashMapStateStore<K>, DefaultClock>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new((n.get() / 5).max(5)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst)),
        }
    }

    /// Takes one; `Err(wait)` when the key has none left.
    fn take(&self, key: &K) -> Result<(), Duration> {
        let result = self
            .limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()));
        if self.limiter.len() > 50_000 {
            self.limiter.retain_recent();
        }
        result
    }
}

pub struct RequestLimits {
    per_ip: Keyed<IpAddr>,
    per_user: Keyed<Uuid>,
    auth_failures: Keyed<IpAddr>,
    /// IPs that spent their authentication-failure allowance, and until when.
    braked: Mutex<HashMap<IpAddr, Instant>>,
}

impl RequestLimits {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            per_ip: Keyed::per_minute(limits.per_ip_per_minute),
            per_user: Keyed::per_minute(limits.per_user_per_minute),
            auth_failures: Keyed::per_minute(limits.auth_failures_per_ip_per_minute),
            braked: Mutex::new(HashMap::new()),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        self.per_ip.take(&ip).inspect_err(|_| {
            metrics::counter!("rate_limited_total", "scope" => "ip").increment(1);
        })
    }

    pub fn check_user(&self, user: Uuid) -> Result<(), Duration> {
        self.per_user.take(&user).inspect_err(|_| {
            metrics::counter!("rate_limited_total", "scope" => "user").increment(1);
        })
    }

    /// How long an IP must still wait before its tokens are looked at again.
    pub fn auth_brake(&self, ip: IpAddr) -> Option<Duration> {
        let mut braked = self.braked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *braked.get(&ip)?;
        let now = Instant::now();
        if until > now {
            metrics::counter!("rate_limited_total", "scope" => "auth_failures").increment(1);
            return Some(until - now);
        }
        braked.remove(&ip);
        None
    }

    /// Counts a failed authentication; past the allowance the IP is braked.
    pub fn record_auth_failure(&self, ip: IpAddr) {
        metrics::counter!("auth_failures_total").increment(1);
        if let Err(wait) = self.auth_failures.take(&ip) {
            let mut braked = self.braked.lock().unwrap_or_else(|p| p.into_inner());
            if braked.len() > 50_000 {
                let now = Instant::now();
                braked.retain(|_, until| *until > now);
            }
            braked.insert(ip, Instant::now() + wait.max(Duration::from_secs(1)));
            tracing::warn!(%ip, "repeated authentication failures: requests from this address are refused for a while");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32) -> RequestLimits {
        RequestLimits::new(RateLimits {
            per_ip_per_minute: per_minute,
            per_user_per_minute: per_minute,
            auth_failures_per_ip_per_minute: per_minute,
        })
    }

    #[test]
    fn each_ip_and_user_has_its_own_allowance() {
        let l = limits(5); // burst 5
        let (a, b): (IpAddr, IpAddr) = ("1.1.1.1".parse().unwrap(), "2.2.2.2".parse().unwrap());
        for _ in 0..5 {
            l.check_ip(a).unwrap();
        }
        let wait = l.check_ip(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(12), "{wait:?}");
        l.check_ip(b).unwrap();
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..5 {
            l.check_user(u).unwrap();
        }
        assert!(l.check_user(u).is_err());
        l.check_user(v).unwrap();
    }

    #[test]
    fn repeated_auth_failures_brake_only_that_ip() {
        let l = limits(5);
        let (a, b): (IpAddr, IpAddr) = ("1.1.1.1".parse().unwrap(), "2.2.2.2".parse().unwrap());
        for _ in 0..5 {
            l.record_auth_failure(a);
            assert_eq!(l.auth_brake(a), None);
        }
        l.record_auth_failure(a);
        assert!(l.auth_brake(a).is_some_and(|w| w >= Duration::from_secs(1)));
        assert_eq!(l.auth_brake(b), None);
    }
}
