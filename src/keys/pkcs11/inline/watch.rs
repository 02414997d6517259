//! The watch over inline calls: keeps the runtime's I/O going while one is long.
//!
//! A tokio worker that blocks inside a module call cannot poll the I/O driver, and the other
//! workers may all be asleep on their condition variables: a worker parked there is woken only
//! by new work, and new work (a connection, a request's bytes, a timer) arrives only through
//! the driver. So one call held inside the module could leave the whole server silent, health
//! and metrics included, until the module let go. (It did: the slow-HSM test saw the metrics
//! endpoint unanswered for 20 s in 3 of 60 runs under load.) `block_in_place` hands the
//! worker's place to another thread for every call, which costs a thread wake-up per call: on
//! SoftHSMv2 it cut keygate's encrypts from 18,300 to 11,900/s (CPU 68 to 108 µs each).
//!
//! Instead a thread watches the calls: every [`PERIOD`], if calls are inside the module and
//! none has started or ended since the last look, one of them has been inside for a whole
//! period. It then spawns an empty task on the runtime from outside, which wakes a sleeping
//! worker; that worker finds the driver free and takes it, and the server answers again while
//! the call goes on. Fast calls cost two atomic updates each; the thread sleeps when no call
//! has run for a while (the next call wakes it).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often the watcher looks while calls run: a held call is noticed within two periods.
pub const PERIOD: Duration = Duration::from_millis(2);

/// After this long without a call the watcher sleeps until the next one.
const IDLE: Duration = Duration::from_secs(1);

/// The state the calls and the watcher share.
#[derive(Debug, Default)]
pub struct Watch {
    /// Calls inside the module now.
    active: AtomicUsize,
    /// Bumped at every call's start and end.
    ticks: AtomicU64,
    /// The watcher is asleep: the next call wakes it.
    asleep: AtomicBool,
    /// Times the runtime was woken for a held call.
    nudges: AtomicU64,
    /// The watcher thread (started at the first call, on that call's runtime).
    watcher: OnceLock<Option<Thread>>,
}

/// One call inside the module; ends when dropped.
#[derive(Debug)]
pub struct Inside(Arc<Watch>);

impl Watch {
    /// A call starts, on a runtime worker (the first call's runtime is the one the watcher
    /// wakes; outside a runtime calls go unwatched, as nothing needs waking).
    pub fn enter(self: &Arc<Self>) -> Inside {
        let watcher = self.watcher.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            start(Arc::downgrade(self), runtime)
        });
        self.active.fetch_add(1, SeqCst);
        self.ticks.fetch_add(1, SeqCst);
        if self.asleep.swap(false, SeqCst)
            && let Some(t) = watcher
        {
            t.unpark();
        }
        Inside(self.clone())
    }

    /// Times the runtime was woken because a call was held.
    #[cfg(test)]
    pub fn nudges(&self) -> u64 {
        self.nudges.load(SeqCst)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.ticks.fetch_add(1, SeqCst);
        self.0.active.fetch_sub(1, SeqCst);
    }
}

/// The watcher thread; `None` (calls unwatched, as before) when no thread can be started.
fn start(watch: Weak<Watch>, runtime: tokio::runtime::Handle) -> Option<Thread> {
    let spawned = std::thread::Builder::new()
        .name("keygate-hsm-watch".to_owned())
        .spawn(move || run(&watch, &runtime));
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the HSM call watcher");
            None
        }
    }
}

fn run(watch: &Weak<Watch>, runtime: &tokio::runtime::Handle) {
    let mut seen = u64::MAX;
    let mut nudged_at = u64::MAX;
    let mut last_call = Instant::now();
    loop {
        // Only a weak hold between looks: the backend's drop ends the thread.
        let Some(w) = watch.upgrade() else { return };
        let ticks = w.ticks.load(SeqCst);
        if w.active.load(SeqCst) > 0 {
            last_call = Instant::now();
            if ticks == seen && nudged_at != ticks {
                // Woken from outside the runtime, a sleeping worker runs this and then parks
                // on the I/O driver, which the held worker left free.
                drop(runtime.spawn(async {}));
                let times = w.nudges.fetch_add(1, SeqCst) + 1;
                tracing::debug!(
                    times,
                    "an HSM call stays inside the module; woke a runtime worker"
                );
                nudged_at = ticks;
            }
        } else if last_call.elapsed() >= IDLE {
            w.asleep.store(true, SeqCst);
            if w.active.load(SeqCst) == 0 {
                drop(w);
                // Woken by the next call; the timeout only bounds how long a dropped backend
                // keeps this thread.
                std::thread::park_timeout(IDLE);
                seen = u64::MAX;
                last_call = Instant::now();
                continue;
            }
            w.asleep.store(false, SeqCst);
        }
        seen = ticks;
        drop(w);
        std::thread::sleep(PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_held_call_wakes_the_runtime_once_and_short_calls_never() {
        let rt = runtime();
        let _in_runtime = rt.enter();
        let watch = Arc::new(Watch::default());
        for _ in 0..200 {
            drop(watch.enter());
        }
        std::thread::sleep(PERIOD * 5);
        assert_eq!(watch.nudges(), 0, "calls that end at once");

        let held = watch.enter();
        std::thread::sleep(PERIOD * 10);
        assert_eq!(watch.nudges(), 1, "one wake-up for one held call");
        drop(held);
        std::thread::sleep(PERIOD * 5);
        assert_eq!(watch.nudges(), 1);
    }

    /// The situation the watch is for, made on purpose: both workers idle (one parked on the
    /// I/O driver, the other on its condition variable), then bytes arrive for a task that
    /// blocks its worker inside a call. The worker that ran it came from the driver and left
    /// it free; the other sleeps. A connection to accept now needs someone on the driver.
    #[test]
    fn io_is_served_while_a_worker_is_held() {
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let rt = runtime();
        let watch = Arc::new(Watch::default());
        let bind = || {
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap()
        };
        let (calls, accepts) = (bind(), bind());
        let (calls_at, accepts_at) = (calls.local_addr().unwrap(), accepts.local_addr().unwrap());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let w = watch.clone();
        rt.spawn(async move {
            let (mut s, _) = calls.accept().await.unwrap();
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.unwrap();
            let _inside = w.enter();
            // Blocks this worker, as a module call does.
            let _ = held.recv_timeout(Duration::from_secs(30));
        });
        let accepted = rt.spawn(async move { accepts.accept().await.is_ok() });
        let mut caller = std::net::TcpStream::connect(calls_at).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        caller.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let _client = std::net::TcpStream::connect(accepts_at).unwrap();
        let started = Instant::now();
        while !accepted.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the accept waited for the held call (woken {} times)",
                watch.nudges()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        release.send(()).unwrap();
        assert!(rt.block_on(accepted).unwrap());
    }
}
