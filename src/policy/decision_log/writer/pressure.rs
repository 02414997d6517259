//! The writer under disk pressure: acting on what [`SpaceWatch`](super::SpaceWatch) finds. Low
//! space: a WARN (again at most every `space::REMINDER`) and early retention. Exhausted
//! (below `reserved_bytes`): early retention first, a second look, and only then the log
//! counts as unwritable (`fail_closed` refuses requests). Back above: writable again and an
//! INFO line, without a restart. A write that fails for want of space also asks for early
//! retention. At shutdown the lines still waiting are written into the reserve.

use std::time::{Duration, Instant};

use super::super::space::{Change, Space};
use super::Writer;

/// Least time between two requests for early retention after failed writes (the writer
/// retries every second).
const RETENTION_RETRY: Duration = Duration::from_secs(10);

impl Writer {
    /// Looks at the free space when due and acts on a change.
    pub(super) fn watch_space(&mut self) {
        if let Some(change) = self.space.look(&self.health.space, Instant::now()) {
            self.on_change(change);
        }
        // While space stays short, early retention is asked for again every
        // [`RETENTION_RETRY`]: each pass drops at least the oldest retirable rotated file, until
        // space is ample again or nothing is left that may go.
        if self.space.state() != Space::Ample
            && self
                .retention_asked
                .is_none_or(|at| at.elapsed() >= RETENTION_RETRY)
        {
            self.on_low_space("free space still low");
        }
    }

    fn on_change(&mut self, change: Change) {
        match change {
            Change::Moved(_, Space::Exhausted) => {
                // Retention runs in the background; the next look sees what it freed.
                self.on_low_space("free space below reserved_bytes");
                self.warn_low();
                let r = self.space.last();
                let reserved = self.space.limits().reserved_bytes;
                let why = std::io::Error::other(format!(
                    "{} bytes free on its filesystem, below reserved_bytes ({reserved})",
                    r.free_bytes
                ));
                self.set_writable(false, Some(&why));
            }
            Change::Moved(Space::Exhausted, now) => {
                tracing::info!(
                    free_bytes = self.space.last().free_bytes,
                    dir = %self.space.dir().display(),
                    "decision log free space above reserved_bytes again"
                );
                match now {
                    Space::Ample => self.log_recovered(),
                    _ => self.warn_low(),
                }
                // With lines waiting, writing them makes the log writable again; without,
                // the file must be there.
                if self.pending.is_empty() && self.ensure_file() {
                    self.set_writable(true, None);
                }
            }
            Change::Moved(Space::Ample, Space::Low) | Change::StillShort(_) => {
                self.warn_low();
                self.on_low_space("free space low");
            }
            Change::Moved(_, Space::Ample) => self.log_recovered(),
            Change::Moved(_, _) => {}
        }
    }

    fn log_recovered(&self) {
        let r = self.space.last();
        tracing::info!(
            free_bytes = r.free_bytes,
            free_inodes = r.free_inodes,
            dir = %self.space.dir().display(),
            "decision log free space recovered"
        );
    }

    /// Whether waiting lines are held back: below `reserved_bytes`, except at shutdown, when
    /// they go into the reserve rather than being lost.
    pub(super) fn held_back(&self) -> bool {
        self.space.state() == Space::Exhausted && !self.closing
    }

    /// The low-space WARN, with what was found and the thresholds.
    fn warn_low(&self) {
        let (r, limits) = (self.space.last(), self.space.limits());
        tracing::warn!(
            free_bytes = r.free_bytes,
            total_bytes = r.total_bytes,
            free_inodes = r.free_inodes,
            min_free_bytes = limits.min_free_bytes,
            min_free_percent = limits.min_free_percent,
            min_free_inodes = limits.min_free_inodes,
            reserved_bytes = limits.reserved_bytes,
            state = self.space.state().as_str(),
            dir = %self.space.dir().display(),
            "decision log free space low"
        );
    }

    /// A write failed: for want of space, early retention is asked for (at most every
    /// [`RETENTION_RETRY`]) and the space looked at again at once.
    pub(super) fn write_failed(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind;
        if !matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
            return;
        }
        self.space.force();
        if self
            .retention_asked
            .is_none_or(|at| at.elapsed() >= RETENTION_RETRY)
        {
            self.on_low_space("a write failed for want of space");
        }
    }

    /// Space is short: apply retention early, before any request is refused. The lifecycle
    /// thread drops the oldest retirable rotated files (urgent: limits halved, at least one
    /// file) in the background; its retention line is written even below the reserve.
    fn on_low_space(&mut self, why: &str) {
        // One INFO line per low-space episode (and per reminder), not one per pass.
        let quiet = self
            .retention_asked
            .is_some_and(|at| at.elapsed() < super::super::space::REMINDER);
        self.retention_asked = Some(Instant::now());
        self.health.space.count_early_retention();
        self.notice.enforce_retention(true);
        if quiet {
            tracing::debug!(reason = why, "decision log early retention requested again");
            return;
        }
        tracing::info!(
            reason = why,
            dir = %self.space.dir().display(),
            "decision log early retention requested"
        );
    }
}
