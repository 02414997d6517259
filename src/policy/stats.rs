//! Counters of policy outcomes, shared by every request (exposed through the App).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, PolicyError};

/// How requests fared under the policy.
#[derive(Debug, Default)]
pub struct PolicyStats {
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    log_refusals: AtomicU64,
    reload_failures: AtomicU64,
}

/// A snapshot of [`PolicyStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCounts {
    /// Requests the policy allowed.
    pub allowed: u64,
    /// Requests the policy denied.
    pub denied: u64,
    /// Evaluations that failed or timed out (the requests were refused).
    pub errors: u64,
    /// Requests refused because the decision log could not take their line (fail-closed mode).
    pub log_refusals: u64,
    /// Policy reloads refused (did not compile or their tests failed).
    pub reload_failures: u64,
}

impl PolicyStats {
    /// Count one evaluation.
    pub fn count(&self, outcome: &Result<Decision, PolicyError>) {
        let counter = match outcome {
            Ok(d) if d.allow => &self.allowed,
            Ok(_) => &self.denied,
            Err(_) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a request refused because of the decision log.
    pub fn count_log_refusal(&self) {
        self.log_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a refused reload.
    pub fn count_reload_failure(&self) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> PolicyCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PolicyCounts {
            allowed: get(&self.allowed),
            denied: get(&self.denied),
            errors: get(&self.errors),
            log_refusals: get(&self.log_refusals),
            reload_failures: get(&self.reload_failures),
        }
    }
}
