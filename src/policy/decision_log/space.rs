//! Free space on the decision log's filesystem. The writer thread looks (one `statvfs` of the
//! log's directory) at most once a second, and sooner when what it wrote since the last look
//! could have crossed a threshold; never on a request's path. Below `min_free_bytes`,
//! `min_free_percent` or `min_free_inodes` the space is *low*: a WARN (repeated at most every
//! [`REMINDER`]), the gauges, and early retention. Below `reserved_bytes` it is *exhausted*: the
//! log counts as full and is not written, exactly as when a write fails for want of space
//! (`fail_closed` then refuses requests; fail-open keeps lines in the bounded queue, then
//! counts them lost).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default `min_free_bytes`: 256 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// Default `min_free_percent` of the filesystem's size.
pub const DEFAULT_MIN_FREE_PERCENT: u8 = 5;
/// Default `min_free_inodes`.
pub const DEFAULT_MIN_FREE_INODES: u64 = 1000;
/// Most time between two looks at the filesystem.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Most often the low-space WARN (and early retention) repeats while space stays low.
pub const REMINDER: Duration = Duration::from_secs(300);

/// The thresholds, as configured in `[decision_log]` (0 turns one off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceLimits {
    /// Low below this many free bytes.
    pub min_free_bytes: u64,
    /// Low below this percentage of the filesystem free.
    pub min_free_percent: u8,
    /// Low below this many free inodes (on filesystems that count them).
    pub min_free_inodes: u64,
    /// Exhausted below this many free bytes: the log is not written (0: only a failed write).
    pub reserved_bytes: u64,
}

impl Default for SpaceLimits {
    fn default() -> Self {
        Self {
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            min_free_percent: DEFAULT_MIN_FREE_PERCENT,
            min_free_inodes: DEFAULT_MIN_FREE_INODES,
            reserved_bytes: 0,
        }
    }
}

/// How much room the log has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Space {
    /// Above every threshold.
    Ample = 0,
    /// Below a `min_free_*` threshold: warned, early retention asked for.
    Low = 1,
    /// Below `reserved_bytes`: the log is not written.
    Exhausted = 2,
}

impl Space {
    fn from_u8(v: u8) -> Space {
        match v {
            0 => Space::Ample,
            1 => Space::Low,
            _ => Space::Exhausted,
        }
    }

    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Space::Ample => "ample",
            Space::Low => "low",
            Space::Exhausted => "exhausted",
        }
    }
}

/// One look at the filesystem (what an unprivileged writer may use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    /// 0 on filesystems that do not count inodes.
    pub total_inodes: u64,
}

impl Reading {
    /// `statvfs` of `dir`.
    pub fn of(dir: &Path) -> std::io::Result<Reading> {
        let s = rustix::fs::statvfs(dir)?;
        Ok(Reading {
            free_bytes: s.f_bavail.saturating_mul(s.f_frsize),
            total_bytes: s.f_blocks.saturating_mul(s.f_frsize),
            free_inodes: s.f_favail,
            total_inodes: s.f_files,
        })
    }
}

impl SpaceLimits {
    /// Where `r` stands against the thresholds.
    pub fn classify(&self, r: &Reading) -> Space {
        if r.free_bytes < self.reserved_bytes {
            return Space::Exhausted;
        }
        let inodes_low = r.total_inodes > 0 && r.free_inodes < self.min_free_inodes;
        if r.free_bytes < self.low_bytes(r) || inodes_low {
            Space::Low
        } else {
            Space::Ample
        }
    }

    /// The free bytes below which `r`'s filesystem is low (the larger of the two thresholds).
    fn low_bytes(&self, r: &Reading) -> u64 {
        let percent = u128::from(r.total_bytes) * u128::from(self.min_free_percent) / 100;
        self.min_free_bytes
            .max(u64::try_from(percent).unwrap_or(u64::MAX))
    }

    /// Bytes the log may write after the look `r` before a threshold could be crossed (the
    /// next one below where it stands).
    fn headroom(&self, r: &Reading, at: Space) -> u64 {
        let floor = match at {
            Space::Ample => self.low_bytes(r).max(self.reserved_bytes),
            Space::Low => self.reserved_bytes,
            // Nothing is written: the next look comes with the clock.
            Space::Exhausted => 0,
        };
        if floor == 0 {
            return u64::MAX;
        }
        r.free_bytes.saturating_sub(floor)
    }
}

/// The last look and the state, shared with [`DecisionLog`](super::DecisionLog) (its
/// metrics).
#[derive(Debug, Default)]
pub(crate) struct SpaceGauges {
    free_bytes: AtomicU64,
    total_bytes: AtomicU64,
    free_inodes: AtomicU64,
    threshold_bytes: AtomicU64,
    state: AtomicU8,
    early_retention: AtomicU64,
}

/// What the metrics show of the log's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStatus {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    /// Free bytes below which space is low.
    pub threshold_bytes: u64,
    pub space: Space,
    /// Times early retention was asked for because space was low.
    pub early_retention_requests: u64,
}

impl SpaceGauges {
    pub(crate) fn status(&self) -> SpaceStatus {
        SpaceStatus {
            free_bytes: self.free_bytes.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            free_inodes: self.free_inodes.load(Ordering::Relaxed),
            threshold_bytes: self.threshold_bytes.load(Ordering::Relaxed),
            space: Space::from_u8(self.state.load(Ordering::Relaxed)),
            early_retention_requests: self.early_retention.load(Ordering::Relaxed),
        }
    }

    pub(super) fn count_early_retention(&self) {
        self.early_retention.fetch_add(1, Ordering::Relaxed);
    }

    fn publish(&self, r: &Reading, space: Space, threshold: u64) {
        self.threshold_bytes.store(threshold, Ordering::Relaxed);
        self.free_bytes.store(r.free_bytes, Ordering::Relaxed);
        self.total_bytes.store(r.total_bytes, Ordering::Relaxed);
        self.free_inodes.store(r.free_inodes, Ordering::Relaxed);
        self.state.store(space as u8, Ordering::Relaxed);
    }
}

/// What a look found, for the writer to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// The state changed from the first to the second.
    Moved(Space, Space),
    /// Still below a threshold, and the reminder is due.
    StillShort(Space),
}

/// The writer's watch on its filesystem.
#[derive(Debug)]
pub(super) struct SpaceWatch {
    dir: PathBuf,
    limits: SpaceLimits,
    state: Space,
    last: Reading,
    looked_at: Option<Instant>,
    /// Bytes written since the last look, and how many could be written before a threshold.
    written: u64,
    headroom: u64,
    reminded_at: Instant,
    /// A look failed (logged once until one succeeds).
    failing: bool,
}

impl SpaceWatch {
    /// Watches the filesystem holding `log`.
    pub(super) fn new(log: &Path, limits: SpaceLimits) -> Self {
        let dir = match log.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        Self {
            dir,
            limits,
            state: Space::Ample,
            last: Reading::default(),
            looked_at: None,
            written: 0,
            headroom: 0,
            reminded_at: Instant::now(),
            failing: false,
        }
    }

    pub(super) fn state(&self) -> Space {
        self.state
    }

    pub(super) fn last(&self) -> Reading {
        self.last
    }

    pub(super) fn limits(&self) -> SpaceLimits {
        self.limits
    }

    /// The writer appended `bytes`.
    pub(super) fn wrote(&mut self, bytes: u64) {
        self.written = self.written.saturating_add(bytes);
    }

    /// Look again at the next [`SpaceWatch::look`], whatever the time (a write failed).
    pub(super) fn force(&mut self) {
        self.looked_at = None;
    }

    /// Looks at the filesystem when due (a second since the last look, or the bytes written
    /// since may have crossed a threshold); publishes the reading to `gauges`.
    pub(super) fn look(&mut self, gauges: &SpaceGauges, now: Instant) -> Option<Change> {
        let due = self
            .looked_at
            .is_none_or(|at| now.duration_since(at) >= LOOK_EVERY)
            || self.written >= self.headroom;
        if !due {
            return None;
        }
        self.looked_at = Some(now);
        self.written = 0;
        let reading = match Reading::of(&self.dir) {
            Ok(r) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(dir = %self.dir.display(), "decision log free space readable again");
                }
                r
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the decision log's free space");
                }
                self.headroom = u64::MAX;
                return None;
            }
        };
        let space = self.limits.classify(&reading);
        self.last = reading;
        self.headroom = self.limits.headroom(&reading, space);
        gauges.publish(&reading, space, self.limits.low_bytes(&reading));
        let was = std::mem::replace(&mut self.state, space);
        if was != space {
            self.reminded_at = now;
            return Some(Change::Moved(was, space));
        }
        if space != Space::Ample && now.duration_since(self.reminded_at) >= REMINDER {
            self.reminded_at = now;
            return Some(Change::StillShort(space));
        }
        None
    }

    /// The directory looked at.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn reading(free: u64, total: u64, inodes: (u64, u64)) -> Reading {
        Reading {
            free_bytes: free,
            total_bytes: total,
            free_inodes: inodes.0,
            total_inodes: inodes.1,
        }
    }

    #[test]
    fn thresholds_classify_a_reading() {
        let limits = SpaceLimits {
            min_free_bytes: 10 * MIB,
            min_free_percent: 5,
            min_free_inodes: 100,
            reserved_bytes: 2 * MIB,
        };
        let c = |free, total, inodes| limits.classify(&reading(free, total, inodes));
        assert_eq!(c(50 * MIB, 100 * MIB, (1000, 2000)), Space::Ample);
        // Bytes, then percent (5% of 1000 MiB is 50 MiB), then inodes.
        assert_eq!(c(9 * MIB, 100 * MIB, (1000, 2000)), Space::Low);
        assert_eq!(c(40 * MIB, 1000 * MIB, (1000, 2000)), Space::Low);
        assert_eq!(c(60 * MIB, 1000 * MIB, (1000, 2000)), Space::Ample);
        assert_eq!(c(50 * MIB, 100 * MIB, (99, 2000)), Space::Low);
        // A filesystem that does not count inodes reports 0 of 0.
        assert_eq!(c(50 * MIB, 100 * MIB, (0, 0)), Space::Ample);
        assert_eq!(c(2 * MIB - 1, 100 * MIB, (1000, 2000)), Space::Exhausted);
        assert_eq!(c(2 * MIB, 100 * MIB, (1000, 2000)), Space::Low);
        // Everything off: never low, never exhausted.
        let off = SpaceLimits {
            min_free_bytes: 0,
            min_free_percent: 0,
            min_free_inodes: 0,
            reserved_bytes: 0,
        };
        assert_eq!(off.classify(&reading(0, 100, (0, 10))), Space::Ample);
        // No overflow at the extremes.
        assert_eq!(
            limits.classify(&reading(u64::MAX, u64::MAX, (u64::MAX, u64::MAX))),
            Space::Ample
        );
    }

    #[test]
    fn headroom_is_the_distance_to_the_next_threshold() {
        let limits = SpaceLimits {
            min_free_bytes: 10 * MIB,
            min_free_percent: 0,
            min_free_inodes: 0,
            reserved_bytes: 2 * MIB,
        };
        let r = reading(15 * MIB, 100 * MIB, (0, 0));
        assert_eq!(limits.headroom(&r, Space::Ample), 5 * MIB);
        let r = reading(5 * MIB, 100 * MIB, (0, 0));
        assert_eq!(limits.headroom(&r, Space::Low), 3 * MIB);
        let no_reserve = SpaceLimits {
            reserved_bytes: 0,
            ..limits
        };
        assert_eq!(no_reserve.headroom(&r, Space::Low), u64::MAX);
        // With the low thresholds off, the reserve is the next one.
        let reserve_only = SpaceLimits {
            min_free_bytes: 0,
            ..limits
        };
        assert_eq!(reserve_only.headroom(&r, Space::Ample), 3 * MIB);
    }

    #[test]
    fn a_look_reads_the_real_filesystem_and_reports_changes_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("decisions.log");
        let gauges = SpaceGauges::default();
        // Every filesystem has fewer than u64::MAX free bytes: low from the first look.
        let limits = SpaceLimits {
            min_free_bytes: u64::MAX,
            ..SpaceLimits::default()
        };
        let mut watch = SpaceWatch::new(&log, limits);
        let now = Instant::now();
        assert_eq!(
            watch.look(&gauges, now),
            Some(Change::Moved(Space::Ample, Space::Low))
        );
        let status = gauges.status();
        assert_eq!(status.space, Space::Low);
        assert!(status.total_bytes > 0 && status.free_bytes <= status.total_bytes);
        // Not due again within the second; then due, but unchanged and no reminder yet.
        assert_eq!(watch.look(&gauges, now), None);
        assert_eq!(watch.look(&gauges, now + LOOK_EVERY), None);
        // The reminder, once per REMINDER.
        assert_eq!(
            watch.look(&gauges, now + REMINDER),
            Some(Change::StillShort(Space::Low))
        );
        assert_eq!(watch.look(&gauges, now + REMINDER + LOOK_EVERY), None);
    }
}
