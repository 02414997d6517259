//! The decision log's metrics: lines written and lost, its head, whether a log is configured,
//! fail-closed and writable, the requests refused because their line could not be written,
//! and the lines judged but not yet on disk. The rules in `deploy/prometheus/` build the
//! audit coverage (lines written / judged requests) and the audit alerts from them.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Decision-log handles, for the policy engine's writer (or copied in at scrape time with
/// [`Metrics::on_encode`](super::Metrics::on_encode)). Clones share the values.
#[derive(Debug, Clone)]
pub struct DecisionLogCounters {
    /// A line reached the log.
    pub written: Counter,
    /// A line was dropped (queue full or write error).
    pub lost: Counter,
    /// `seq` of the last line written: an outside record of the log's head, against which
    /// `keygate audit verify --checkpoint` shows lines cut off the end.
    pub head_seq: Gauge,
    /// 1 when a decision log is configured, 0 otherwise.
    pub enabled: Gauge,
    /// 1 when the log is fail-closed (requests are refused while it cannot be written).
    pub fail_closed: Gauge,
    /// 0 while the log cannot be written; 1 otherwise, and when no log is configured.
    pub writable: Gauge,
    /// Failed write or reopen attempts.
    pub write_errors: Counter,
    /// Requests refused because their line could not be written (fail-closed mode).
    pub refusals: Counter,
    /// Judged requests whose line is not yet written or counted lost: requests still being
    /// served, and lines queued for the writer (the log's lag, in lines).
    pub pending: Gauge,
}

impl Default for DecisionLogCounters {
    fn default() -> Self {
        let counters = DecisionLogCounters {
            written: Counter::default(),
            lost: Counter::default(),
            head_seq: Gauge::default(),
            enabled: Gauge::default(),
            fail_closed: Gauge::default(),
            writable: Gauge::default(),
            write_errors: Counter::default(),
            refusals: Counter::default(),
            pending: Gauge::default(),
        };
        counters.writable.set(1);
        counters
    }
}

impl DecisionLogCounters {
    /// Sets both totals (for a writer that keeps its own counts; call from `on_encode`).
    pub fn set_totals(&self, written: u64, lost: u64) {
        self.written.inner().store(written, Ordering::Relaxed);
        self.lost.inner().store(lost, Ordering::Relaxed);
    }

    /// Sets the failure totals: write errors and requests refused (call from `on_encode`).
    pub fn set_failures(&self, write_errors: u64, refusals: u64) {
        self.write_errors
            .inner()
            .store(write_errors, Ordering::Relaxed);
        self.refusals.inner().store(refusals, Ordering::Relaxed);
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "decision_log_lines_written",
            "Policy decision-log lines written",
            self.written.clone(),
        );
        r.register(
            "decision_log_lines_lost",
            "Policy decision-log lines lost (dropped when the queue was full, or failed to write)",
            self.lost.clone(),
        );
        r.register(
            "decision_log_head_seq",
            "seq of the last decision-log line written (a log whose last seq is lower was cut off)",
            self.head_seq.clone(),
        );
        r.register(
            "decision_log_enabled",
            "1 when a decision log is configured, 0 otherwise",
            self.enabled.clone(),
        );
        r.register(
            "decision_log_fail_closed",
            "1 when the decision log is fail-closed: requests are refused while it cannot be written",
            self.fail_closed.clone(),
        );
        r.register(
            "decision_log_writable",
            "0 while the decision log cannot be written; 1 otherwise, and when no log is configured",
            self.writable.clone(),
        );
        r.register(
            "decision_log_write_errors",
            "Failed decision-log write or reopen attempts",
            self.write_errors.clone(),
        );
        r.register(
            "decision_log_refusals",
            "Requests refused because their decision line could not be written (fail_closed)",
            self.refusals.clone(),
        );
        r.register(
            "decision_log_lines_pending",
            "Judged requests whose decision line is not yet written or counted lost (requests being served, lines queued for the writer)",
            self.pending.clone(),
        );
    }
}
