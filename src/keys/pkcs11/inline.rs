//! Where an HSM call runs: inline on the runtime worker that asked for it, while the module
//! has been answering fast, holding one of `workers - 1` inline slots; otherwise on tokio's
//! blocking pool. A call that finds every slot taken waits for one up to [`SLOT_WAIT`] (the
//! slot is handed over on the worker that frees it, without waking another thread), then
//! goes to the pool.
//!
//! Handing a 40 µs call to another thread and back costs more than the call (two or three
//! context switches); a network HSM's milliseconds must never hold a runtime worker. So every
//! call's duration goes into a moving average (1/8 weight per call, each call counted as at
//! most 4 x [`FAST`]): two calls of a millisecond or more in a row send the following calls
//! to the blocking pool, and they come back inline once the average is under [`FAST`] again
//! (about a dozen fast calls); one call preempted by the scheduler does not. A new backend
//! starts slow: its first few calls run on the pool (with the operation timeout) and show
//! whether the module is fast. At least one worker is never lent out, a watcher thread
//! (`inline/watch.rs`) wakes a sleeping worker when a call stays inside the module, and calls
//! run inline only on keygate's runtime without the LIFO slot (`crate::runtime`), so a module
//! that hangs inside a call leaves the runtime serving (health, metrics, 429s) and strands no
//! task.

mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use watch::{Inside, Watch};

/// A call that takes longer than this is slow: calls go to the blocking pool.
pub const FAST: Duration = Duration::from_micros(250);

/// How long a call waits for an inline slot before it goes to the blocking pool (tokio's
/// timer rounds it up to a millisecond).
pub const SLOT_WAIT: Duration = Duration::from_micros(500);

/// The state shared by all calls of one backend.
#[derive(Debug)]
pub struct Inline {
    /// One permit per runtime worker that may be inside a call (sized at the first call, from
    /// the runtime it runs on).
    slots: OnceLock<(usize, Semaphore)>,
    /// [`SLOT_WAIT`] (tests wait longer, so a hand-over never races the timer).
    wait: Duration,
    /// The recent call time in nanoseconds (a moving average that jumps up on a slow call).
    recent_ns: AtomicU64,
    /// Keeps the runtime's I/O going while an inline call is long (`inline/watch.rs`).
    watch: Arc<Watch>,
    /// Whether calls may run inline at all: only on a runtime without the LIFO slot
    /// (`crate::runtime`), where a blocked worker strands no task.
    allowed: bool,
}

impl Default for Inline {
    /// Slow until calls have shown otherwise (about six calls of tens of µs).
    fn default() -> Inline {
        Inline {
            slots: OnceLock::new(),
            wait: SLOT_WAIT,
            recent_ns: AtomicU64::new(2 * nanos(FAST)),
            watch: Arc::default(),
            allowed: crate::runtime::NO_LIFO_SLOT,
        }
    }
}

/// A worker lent to one inline call, watched while it is inside; returned when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    _inside: Inside,
}

impl Inline {
    /// A slot for a call on this worker, when the module is fast and a slot is (or within
    /// [`SLOT_WAIT`] becomes) free.
    pub async fn slot(&self) -> Option<Slot<'_>> {
        if !self.is_fast() {
            return None;
        }
        let (bound, slots) = self.slots.get_or_init(|| {
            let n = if self.allowed { lendable_workers() } else { 0 };
            (n, Semaphore::new(n))
        });
        let slot = match slots.try_acquire() {
            Ok(s) => s,
            Err(_) if *bound == 0 => return None,
            Err(_) => tokio::time::timeout(self.wait, slots.acquire())
                .await
                .ok()?
                .ok()?,
        };
        // The call that held the slot may have been slow.
        if !self.is_fast() {
            return None;
        }
        Some(Slot {
            _permit: slot,
            _inside: self.watch.enter(),
        })
    }

    /// Records how long one call took (inline or on the pool).
    pub fn record(&self, took: Duration) {
        // Capped, so one call preempted for a time slice of the scheduler does not count as
        // a slow module; two slow calls in a row do.
        let sample = nanos(took).min(4 * nanos(FAST));
        let _ = self
            .recent_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                // old - old/8 + sample/8, without overflow.
                Some(old - old / 8 + sample / 8)
            });
    }

    /// Whether calls run inline now.
    pub fn is_fast(&self) -> bool {
        self.recent_ns.load(Ordering::Relaxed) <= nanos(FAST)
    }
}

/// Runtime workers that may be inside an HSM call at once: all but one of the current
/// multi-thread runtime's; none outside a runtime or on a current-thread runtime.
fn lendable_workers() -> usize {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            h.metrics().num_workers().saturating_sub(1)
        }
        _ => 0,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_time()
            .build()
            .unwrap()
    }

    /// A backend's state after the calls that show the module is fast (on a runtime without
    /// the LIFO slot, which these tests do not need: nothing blocks in them).
    fn fast() -> Inline {
        let i = Inline {
            allowed: true,
            ..Inline::default()
        };
        assert!(!i.is_fast(), "a new backend starts on the pool");
        for _ in 0..20 {
            i.record(Duration::from_micros(40));
        }
        assert!(i.is_fast());
        i
    }

    #[test]
    fn one_worker_is_never_lent() {
        let i = fast();
        runtime(3).block_on(async {
            let a = i.slot().await.expect("first");
            let b = i.slot().await.expect("second");
            assert!(i.slot().await.is_none(), "a third of three workers");
            drop(a);
            assert!(i.slot().await.is_some());
            drop(b);
        });
        for no_spare_worker in [
            runtime(1),
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
        ] {
            let i = fast();
            no_spare_worker.block_on(async { assert!(i.slot().await.is_none()) });
        }
    }

    #[test]
    fn a_freed_slot_goes_to_a_waiting_call() {
        let mut i = fast();
        i.wait = Duration::from_secs(600);
        let i = std::sync::Arc::new(i);
        runtime(2).block_on(async {
            let held = i.slot().await.expect("the one slot");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let waiter = tokio::spawn({
                let i = i.clone();
                async move {
                    let _ = tx.send(());
                    i.slot().await.is_some()
                }
            });
            rx.await.unwrap();
            drop(held);
            assert!(waiter.await.unwrap());
        });
        // Nobody frees it: the wait ends and the call goes to the pool.
        let i = fast();
        runtime(2).block_on(async {
            let _held = i.slot().await.expect("the one slot");
            assert!(i.slot().await.is_none());
        });
    }

    #[test]
    fn slow_calls_send_calls_to_the_pool_until_calls_are_fast_again() {
        let i = fast();
        runtime(2).block_on(async {
            assert!(i.is_fast() && i.slot().await.is_some());
            i.record(Duration::from_millis(5));
            assert!(i.is_fast(), "one preempted call is not a slow module");
            i.record(Duration::from_millis(2));
            assert!(!i.is_fast() && i.slot().await.is_none());
            // The module stays slow for a while (these calls run on the pool).
            for _ in 0..20 {
                i.record(Duration::from_millis(2));
            }
            let mut calls = 0;
            while !i.is_fast() {
                i.record(Duration::from_micros(40));
                calls += 1;
                assert!(calls < 100, "never fast again");
            }
            assert!(calls > 5, "back after {calls} fast calls");
            assert!(i.slot().await.is_some());
        });
    }
}
