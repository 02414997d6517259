//! Load shedding: a per-key-store request-rate limit (a lock-free token bucket, GCRA form)
//! and a global cap on requests in flight. Both answer 429 ThrottlingException at once,
//! before SigV4 and before the key backend is touched, so keygate sheds load instead of
//! missing KMS's 250 ms deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

/// A key store's configured rate: `rps` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rps: u32,
    pub burst: u32,
}

/// A token bucket as a "theoretical arrival time" in one atomic (GCRA): each admitted
/// request pushes it `1/rps` into the future; a request is refused when that would put it
/// more than `burst/rps` ahead of now.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    /// Nanoseconds per request.
    interval: u64,
    /// Nanoseconds of burst tolerance.
    tolerance: u64,
    start: Instant,
    tat: AtomicU64,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let interval = 1_000_000_000 / u64::from(limit.rps.max(1));
        RateLimiter {
            limit,
            interval,
            tolerance: interval.saturating_mul(u64::from(limit.burst.max(1))),
            start: Instant::now(),
            tat: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next - now > self.tolerance {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Counts requests in flight against a cap that a config reload may change.
#[derive(Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

/// One admitted request; dropping it frees the slot.
#[derive(Debug)]
pub struct InFlightGuard {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl InFlight {
    pub fn new(gauge: Gauge) -> Self {
        InFlight {
            count: Arc::new(AtomicUsize::new(0)),
            gauge,
        }
    }

    /// Admits a request unless `cap` are already in flight.
    pub fn try_enter(&self, cap: usize) -> Option<InFlightGuard> {
        let admitted = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| {
            self.gauge.inc();
            InFlightGuard {
                count: self.count.clone(),
                gauge: self.gauge.clone(),
            }
        })
    }

    /// Requests in flight now.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    InFlight { cap: usize },
    RateLimit { limit: RateLimit },
}

impl Shed {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::InFlight { .. } => "in_flight",
            Shed::RateLimit { .. } => "rate_limit",
        }
    }

    /// The errorMessage sent with ThrottlingException.
    pub fn message(self, keystore: &str) -> String {
        match self {
            Shed::InFlight { cap } => {
                format!("keygate is at its limit of {cap} requests in flight; retry")
            }
            Shed::RateLimit { limit } => format!(
                "key store {keystore} is over its limit of {} requests/s (burst {}); retry",
                limit.rps, limit.burst
            ),
        }
    }
}

/// How long a request would wait for a token at `limit` (for documentation and tests).
pub fn interval(limit: RateLimit) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(limit.rps.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_the_rate() {
        let l = RateLimiter::new(RateLimit { rps: 10, burst: 3 });
        let admitted = (0..10).filter(|_| l.try_acquire()).count();
        assert_eq!(admitted, 3);
        std::thread::sleep(interval(l.limit()) + Duration::from_millis(20));
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
    }

    #[test]
    fn the_in_flight_cap_holds_and_frees() {
        let f = InFlight::new(Gauge::default());
        let a = f.try_enter(2).unwrap();
        let _b = f.try_enter(2).unwrap();
        assert!(f.try_enter(2).is_none());
        drop(a);
        assert_eq!(f.current(), 1);
        assert!(f.try_enter(2).is_some());
    }
}
