//! Rate limits on join attempts (link checks, joins, resumes, failed clinician sign-ins): a
//! token bucket of `per_minute` attempts per key, refilled evenly. Per instance. The key is the
//! client's address ([`RateLimiter`]'s default), a visit (link checks and joins with a valid
//! link for it), or `()` for one allowance shared by every address. And [`Bucket`], one
//! connection's allowance of messages and bytes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter<K = IpAddr> {
    per_minute: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

/// Buckets kept before full ones are forgotten.
const MAX_TRACKED: usize = 10_000;

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `key`; false when its bucket is empty.
    pub fn allow(&self, key: K) -> bool {
        self.allow_at(key, Instant::now())
    }

    pub fn allow_at(&self, key: K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED {
            let per_minute = self.per_minute;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_minute / 60.0
                    < per_minute
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.per_minute, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Attempts from client addresses: each address has its own allowance, and all of them
/// together one more (`total_per_minute`), so that many addresses cannot add up to a flood.
pub struct Attempts {
    per_address: RateLimiter<IpAddr>,
    total: RateLimiter<()>,
}

impl Attempts {
    pub fn new(per_address_per_minute: u32, total_per_minute: u32) -> Self {
        Self {
            per_address: RateLimiter::new(per_address_per_minute),
            total: RateLimiter::new(total_per_minute),
        }
    }

    /// Takes one attempt for `ip` (and one of everyone's); false when either is used up.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.per_address.allow(ip) && self.total.allow(())
    }
}

/// One connection's allowance of messages or bytes: `rate` a second, at most `capacity` at once.
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32, capacity: u64) -> Self {
        let capacity = capacity.max(1) as f64;
        Self {
            rate: f64::from(rate.max(1)),
            capacity,
            tokens: capacity,
            at: Instant::now(),
        }
    }

    /// Takes `amount`; false when there is not enough left.
    pub fn take(&mut self, amount: u64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
        let amount = amount as f64;
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_cut_off_and_refills_over_time() {
        let limiter = RateLimiter::<IpAddr>::new(6);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(limiter.allow_at(a, t0));
        }
        assert!(!limiter.allow_at(a, t0));
        assert!(
            limiter.allow_at(b, t0),
            "another address has its own bucket"
        );
        assert!(!limiter.allow_at(a, t0 + Duration::from_secs(5)));
        assert!(
            limiter.allow_at(a, t0 + Duration::from_secs(11)),
            "one attempt per 10 s"
        );
    }

    #[test]
    fn all_addresses_together_share_one_allowance() {
        let attempts = Attempts::new(2, 5);
        let taken = (1..=10u8)
            .filter(|i| attempts.allow(IpAddr::from([10, 0, 0, *i])))
            .count();
        assert_eq!(taken, 5, "ten addresses, one attempt each, five in all");
        let visits = RateLimiter::<String>::new(2);
        assert!(visits.allow("a".into()) && visits.allow("a".into()));
        assert!(!visits.allow("a".into()));
        assert!(
            visits.allow("b".into()),
            "another visit has its own allowance"
        );
    }

    #[test]
    fn a_connections_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(10, 40);
        bucket.at = t0;
        assert!(bucket.take(40, t0));
        assert!(!bucket.take(1, t0));
        assert!(bucket.take(5, t0 + Duration::from_millis(500)));
        assert!(!bucket.take(1, t0 + Duration::from_millis(500)));
        assert!(
            !bucket.take(41, t0 + Duration::from_secs(60)),
            "never more than the burst"
        );
    }
}
