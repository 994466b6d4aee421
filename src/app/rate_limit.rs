//! How often a key may call: one token bucket per key, in memory on each instance.
//!
//! The buckets are governor's (GCRA: a token bucket kept as one timestamp, with no timer to
//! refill it). The key cache ([`super::authentication::KeyRing`]) owns them, one per loaded key, and
//! carries each over when it reloads the keys, so a reload neither refills a bucket nor lets
//! one be forgotten: a revoked key's bucket goes with the key, and a changed limit gets a
//! fresh bucket at the next reload. Each instance counts only what it serves: behind a load
//! balancer spreading a key's calls over N instances, the key may make up to N times its
//! limit in all.

use std::{fmt, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::domain::RateLimit;

/// One key's bucket, and the limit it was made for.
pub struct KeyLimiter {
    limit: RateLimit,
    bucket: DefaultDirectRateLimiter,
}

/// A request over its key's limit: what the limit is, and how long until the bucket has a
/// token again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: RateLimit,
    pub wait: Duration,
}

impl RateLimited {
    /// The wait in whole seconds, rounded up, and at least one: what `Retry-After` can say, and
    /// never "now", which would invite a retry that is refused again at once.
    pub fn retry_after_seconds(&self) -> u32 {
        let seconds = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
    }
}

impl KeyLimiter {
    /// A full bucket for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limit,
            bucket: RateLimiter::direct(quota),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token for one request, or says how long until there is one.
    pub fn check(&self) -> Result<(), RateLimited> {
        self.bucket.check().map_err(|not_until| RateLimited {
            limit: self.limit,
            wait: not_until.wait_time_from(self.bucket.clock().now()),
        })
    }
}

impl fmt::Debug for KeyLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Two limiters are alike when they enforce the same limit, whatever their buckets hold.
impl PartialEq for KeyLimiter {
    fn eq(&self, other: &Self) -> bool {
        self.limit == other.limit
    }
}

impl Eq for KeyLimiter {}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit::new(NonZeroU32::new(per_second).unwrap(), NonZeroU32::new(burst))
    }

    #[test]
    fn a_bucket_admits_its_burst_then_says_how_long_to_wait() {
        let limiter = KeyLimiter::new(limit(1, 3));
        for _ in 0..3 {
            assert_eq!(limiter.check(), Ok(()));
        }
        let refused = limiter.check().unwrap_err();
        assert_eq!(refused.limit, limit(1, 3));
        // One token a second: the next is due within a second.
        assert!(
            refused.wait > Duration::ZERO && refused.wait <= Duration::from_secs(1),
            "{refused:?}"
        );
        assert_eq!(refused.retry_after_seconds(), 1);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        let after = |wait| {
            RateLimited {
                limit: limit(1, 1),
                wait,
            }
            .retry_after_seconds()
        };
        assert_eq!(after(Duration::ZERO), 1);
        assert_eq!(after(Duration::from_millis(1)), 1);
        assert_eq!(after(Duration::from_secs(1)), 1);
        assert_eq!(after(Duration::from_millis(1001)), 2);
        assert_eq!(after(Duration::from_secs(30)), 30);
    }
}
