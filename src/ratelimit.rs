//! Token buckets per client address, for refusals that come before a
//! credential is known: a flood of leaked-looking or expired tokens costs a
//! bounded number of audit events and alerts. Past its bucket a client's
//! refusals are answered 429 with nothing recorded; a valid credential from
//! the same address is never held back, since only refusals take tokens.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::time::unix_ms;

/// Clients remembered at once; the least recently seen are forgotten first
/// (a forgotten client starts again with a full bucket).
const MAX_CLIENTS: u64 = 100_000;

/// One client's bucket. Pure: the time comes in as an argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    pub fn full(burst: f64, now_ms: i64) -> Bucket {
        Bucket {
            tokens: burst,
            at_ms: now_ms,
        }
    }

    /// Refills at `rate` tokens a second up to `burst`, then takes one if
    /// there is one.
    pub fn take(&mut self, now_ms: i64, rate: f64, burst: f64) -> bool {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at_ms = now_ms.max(self.at_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct PeerLimiter {
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
    rate: f64,
    burst: f64,
}

impl PeerLimiter {
    /// `rate` refusals a second, `burst` at once, per client address.
    pub fn new(rate: f64, burst: u32) -> PeerLimiter {
        let burst = f64::from(burst.max(1));
        // A bucket idle long enough to be full again is the same as none.
        let refill = Duration::from_secs_f64((burst / rate.max(0.001)).clamp(1.0, 3600.0));
        PeerLimiter {
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(refill)
                .build(),
            rate,
            burst,
        }
    }

    /// Whether one more refusal from `client` may be recorded. Addresses of
    /// one host share a bucket (`peer::client_key`).
    pub fn allow(&self, client: IpAddr, now: SystemTime) -> bool {
        let now_ms = unix_ms(now);
        let bucket = self.buckets.get_with(crate::peer::client_key(client), || {
            Arc::new(Mutex::new(Bucket::full(self.burst, now_ms)))
        });
        let mut bucket = bucket.lock().expect("bucket lock");
        bucket.take(now_ms, self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::full(3.0, 0);
        assert_eq!((0..5).filter(|_| b.take(0, 2.0, 3.0)).count(), 3);
        assert!(!b.take(100, 2.0, 3.0));
        assert!(b.take(600, 2.0, 3.0));
        // Refills never beyond the burst.
        assert_eq!((0..10).filter(|_| b.take(60_000, 2.0, 3.0)).count(), 3);
        // A clock that goes back refills nothing.
        assert!(!b.take(0, 2.0, 3.0));
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let limiter = PeerLimiter::new(0.001, 2);
        let now = SystemTime::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(limiter.allow(a, now) && limiter.allow(a, now));
        assert!(!limiter.allow(a, now));
        assert!(limiter.allow(b, now));
        // Loopback addresses are one host.
        let (l1, l2): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        assert!(limiter.allow(l1, now) && limiter.allow(l2, now));
        assert!(!limiter.allow(l1, now) && !limiter.allow(l2, now));
    }
}
