//! The decision log's metrics: lines written and lost, its head, whether a log is configured,
//! fail-closed and writable, the requests refused because their line could not be written,
//! the lines judged but not yet on disk, and the free space of the log's filesystem. The rules in `deploy/prometheus/` build the
//! audit coverage (lines written / judged requests) and the audit alerts from them. Also the
//! uploader to an OPA collector (events uploaded, failed uploads, events dropped, buffer
//! bytes, how far shipped, whether it is failing) and the signed digests (written, failed,
//! how far covered, when), and the files' lifecycle (rotations, compressions, retention
//! deletions and failures).

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
    /// The free space of the log's filesystem.
    pub space: SpaceGauges,
    /// Shipping to the collector.
    pub upload: UploadCounters,
    /// Signed digests.
    pub digests: DigestCounters,
    /// Rotation, compression and retention.
    pub lifecycle: LifecycleCounters,
}

/// Rotation, compression and retention metrics.
#[derive(Debug, Clone, Default)]
pub struct LifecycleCounters {
    pub rotations: Counter,
    pub compressions: Counter,
    pub compression_failures: Counter,
    pub retention_deletions: Counter,
    pub retention_failures: Counter,
    pub retention_lines: Counter,
}

/// Rotation, compression and retention totals, as the log keeps them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LifecycleTotals {
    pub rotations: u64,
    pub compressions: u64,
    pub compression_failures: u64,
    pub retention_deletions: u64,
    pub retention_failures: u64,
    pub retention_lines: u64,
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
            space: SpaceGauges::default(),
            upload: UploadCounters::default(),
            digests: DigestCounters::default(),
            lifecycle: LifecycleCounters::default(),
        };
        counters.writable.set(1);
        counters
    }
}

/// The decision log's filesystem, as the writer last found it.
#[derive(Debug, Clone, Default)]
pub struct SpaceGauges {
    pub free_bytes: Gauge,
    pub size_bytes: Gauge,
    pub free_inodes: Gauge,
    /// Free bytes below which space is low (the larger of min_free_bytes and min_free_percent).
    pub threshold_bytes: Gauge,
    /// 0 ample, 1 low, 2 below reserved_bytes (the log is not written).
    pub low_space: Gauge,
    pub early_retention: Counter,
}

/// The filesystem's figures, as the log keeps them.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpaceTotals {
    pub free_bytes: u64,
    pub size_bytes: u64,
    pub free_inodes: u64,
    pub threshold_bytes: u64,
    pub low_space: u8,
    pub early_retention: u64,
}

/// The uploader's metrics.
#[derive(Debug, Clone, Default)]
pub struct UploadCounters {
    pub uploaded: Counter,
    pub failed: Counter,
    pub dropped: Counter,
    pub buffer_bytes: Gauge,
    pub shipped_seq: Gauge,
    pub failing: Gauge,
}

/// The uploader's totals, as the log keeps them.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadTotals {
    pub uploaded: u64,
    pub failed: u64,
    pub dropped: u64,
    pub buffer_bytes: u64,
    pub shipped_seq: u64,
    pub failing: bool,
}

/// The digests' totals, as the log keeps them.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestTotals {
    pub written: u64,
    pub failed: u64,
    /// `last_seq` of the newest digest.
    pub digested_seq: u64,
    /// Unix time of the newest digest.
    pub last_unix: u64,
    pub interval_secs: u64,
}

/// The digests' metrics.
#[derive(Debug, Clone, Default)]
pub struct DigestCounters {
    pub written: Counter,
    pub failed: Counter,
    pub digested_seq: Gauge,
    pub last_timestamp: Gauge,
    pub interval: Gauge,
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

    /// Sets the filesystem's figures.
    pub fn set_space(&self, t: SpaceTotals) {
        let s = &self.space;
        s.free_bytes.set(gauge(t.free_bytes));
        s.size_bytes.set(gauge(t.size_bytes));
        s.free_inodes.set(gauge(t.free_inodes));
        s.threshold_bytes.set(gauge(t.threshold_bytes));
        s.low_space.set(i64::from(t.low_space));
        s.early_retention
            .inner()
            .store(t.early_retention, Ordering::Relaxed);
    }

    /// Sets the uploader's totals.
    pub fn set_upload(&self, t: UploadTotals) {
        let u = &self.upload;
        u.uploaded.inner().store(t.uploaded, Ordering::Relaxed);
        u.failed.inner().store(t.failed, Ordering::Relaxed);
        u.dropped.inner().store(t.dropped, Ordering::Relaxed);
        u.buffer_bytes.set(gauge(t.buffer_bytes));
        u.shipped_seq.set(gauge(t.shipped_seq));
        u.failing.set(i64::from(t.failing));
    }

    /// Sets the rotation, compression and retention totals.
    pub fn set_lifecycle(&self, t: LifecycleTotals) {
        let l = &self.lifecycle;
        for (counter, value) in [
            (&l.rotations, t.rotations),
            (&l.compressions, t.compressions),
            (&l.compression_failures, t.compression_failures),
            (&l.retention_deletions, t.retention_deletions),
            (&l.retention_failures, t.retention_failures),
            (&l.retention_lines, t.retention_lines),
        ] {
            counter.inner().store(value, Ordering::Relaxed);
        }
    }

    /// Sets the digests' totals.
    pub fn set_digests(&self, t: DigestTotals) {
        let d = &self.digests;
        d.written.inner().store(t.written, Ordering::Relaxed);
        d.failed.inner().store(t.failed, Ordering::Relaxed);
        d.digested_seq.set(gauge(t.digested_seq));
        d.last_timestamp.set(gauge(t.last_unix));
        d.interval.set(gauge(t.interval_secs));
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
        let s = &self.space;
        r.register(
            "decision_log_free_bytes",
            "Bytes free (to keygate) on the decision log's filesystem, as the writer last found them",
            s.free_bytes.clone(),
        );
        r.register(
            "decision_log_filesystem_size_bytes",
            "Size of the decision log's filesystem",
            s.size_bytes.clone(),
        );
        r.register(
            "decision_log_free_inodes",
            "Inodes free on the decision log's filesystem (0 where it does not count them)",
            s.free_inodes.clone(),
        );
        r.register(
            "decision_log_low_space_threshold_bytes",
            "Free bytes below which the decision log's space is low (min_free_bytes, or min_free_percent of the filesystem if larger)",
            s.threshold_bytes.clone(),
        );
        r.register(
            "decision_log_low_space",
            "0: space ample; 1: below a min_free_* threshold (warned, early retention); 2: below reserved_bytes (the log is not written; fail_closed refuses)",
            s.low_space.clone(),
        );
        r.register(
            "decision_log_early_retention_requests",
            "Times early retention was asked for because the decision log's space was low or a write failed for want of space",
            s.early_retention.clone(),
        );
        let u = &self.upload;
        r.register(
            "decision_log_upload_events_uploaded",
            "Decision events the OPA collector acknowledged (2xx)",
            u.uploaded.clone(),
        );
        r.register(
            "decision_log_upload_requests_failed",
            "Uploads to the collector that failed (refused, non-2xx, timed out); retried with backoff",
            u.failed.clone(),
        );
        r.register(
            "decision_log_upload_events_dropped",
            "Decision events never shipped: over upload_size_limit_bytes alone, or their file was gone (they stay in the local log)",
            u.dropped.clone(),
        );
        r.register(
            "decision_log_upload_buffer_bytes",
            "Bytes of decision events read from the log and not yet acknowledged by the collector",
            u.buffer_bytes.clone(),
        );
        r.register(
            "decision_log_upload_shipped_seq",
            "seq of the last decision-log line the collector acknowledged (compare with head_seq)",
            u.shipped_seq.clone(),
        );
        r.register(
            "decision_log_upload_failing",
            "1 while the last upload failed (with require_upload, requests are refused meanwhile)",
            u.failing.clone(),
        );
        let d = &self.digests;
        r.register(
            "decision_log_digests_written",
            "Signed decision-log digests written",
            d.written.clone(),
        );
        r.register(
            "decision_log_digests_failed",
            "Decision-log digests that could not be signed or written (their content goes into the next)",
            d.failed.clone(),
        );
        r.register(
            "decision_log_digest_last_seq",
            "Head seq the newest signed digest covers",
            d.digested_seq.clone(),
        );
        r.register(
            "decision_log_digest_last_timestamp_seconds",
            "Unix time of the newest signed digest (alert when older than the interval)",
            d.last_timestamp.clone(),
        );
        r.register(
            "decision_log_digest_interval_seconds",
            "Configured most time between two signed digests (interval_secs)",
            d.interval.clone(),
        );
        let l = &self.lifecycle;
        for (name, help, counter) in [
            (
                "decision_log_rotations",
                "Rotations of the live decision-log file",
                &l.rotations,
            ),
            (
                "decision_log_compressions",
                "Rotated decision-log files compressed",
                &l.compressions,
            ),
            (
                "decision_log_compression_failures",
                "Compressions of rotated decision-log files that failed (retried with backoff)",
                &l.compression_failures,
            ),
            (
                "decision_log_retention_deletions",
                "Decision-log files removed by the retention policy (each named first by a retention line)",
                &l.retention_deletions,
            ),
            (
                "decision_log_retention_failures",
                "Decision-log files the retention policy could not remove, or retention lines not written (retried with backoff)",
                &l.retention_failures,
            ),
            (
                "decision_log_retention_lines",
                "Retention lines written to the decision log",
                &l.retention_lines,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
