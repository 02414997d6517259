//! What every test module shares: the fixture, the XKS client, the two ways to run keygate
//! (`TestServer` in this process, `KeygateProcess` as the real binary), the SoftHSMv2
//! and OpenBao harnesses, the TLS helpers, a size-limited tmpfs, running one test in a
//! process of its own, and waiting for a condition instead of sleeping a guessed time.

pub mod bao;
pub mod client;
pub mod collector;
pub mod dev;
pub mod fixtures;
pub mod kms;
pub mod own_process;
pub mod process;
pub mod prometheus;
pub mod server;
pub mod softhsm;
pub mod tls;
pub mod tmpfs;

use std::collections::HashMap;
use std::fmt::Display;
use std::time::{Duration, Instant};

pub use client::*;
pub use fixtures::*;
pub use process::KeygateProcess;
pub use server::TestServer;

/// How long a test waits for something that normally takes milliseconds before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Blocks until `condition` holds; fails the test, naming `what`, after `within`.
#[track_caller]
pub fn wait_until(within: Duration, what: impl Display, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(POLL);
    }
}

/// `wait_until` for async tests: yields to the runtime between looks.
pub async fn wait_for(within: Duration, what: impl Display, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `attempt` until it returns `Some`, and returns that; fails the test after `within`.
pub async fn eventually<T>(
    within: Duration,
    what: impl Display,
    mut attempt: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Parses the metrics text exposition format into `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The value of one series, 0 when absent.
pub fn metric(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}
