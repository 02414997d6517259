//! Retention: which rotated files go, and the evidence they went on purpose. Files are dropped
//! oldest first and only as a run from the oldest (never a file in the middle of the chain),
//! the newest rotated file is always kept, and a file is dropped only once it is retirable
//! (shipped and digested). Before any file is removed, the writer appends a retention line to
//! the live log, in the chain:
//!
//! ```text
//! {"event":"retention","seq":912,"timestamp":"...","labels":{"id":"...","version":"..."},
//!  "reason":"keep_files","dropped":[{"file":"decisions.log.3","stored_as":"decisions.log.3.zst",
//!  "first_seq":1,"last_seq":400,"last_hash":"<hex>","bytes":20311}],
//!  "prev_file":null,"prev_hash":"<hex>","hash":"<hex>"}
//! ```
//!
//! `audit verify` matches the first file it reads against these records: a log that starts
//! after a file a retention line names (same name, last seq and final hash) was cut by the
//! retention policy; any other start short of the genesis is a missing file.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::line::Position;

/// What the `event` member of a retention line says.
pub const EVENT: &str = "retention";

/// Limits on the rotated files kept (the live file is never dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionLimits {
    /// Most rotated files kept.
    pub keep_files: usize,
    /// Rotated files older than this (by their last write) go.
    pub max_age: Duration,
    /// Most bytes on disk for the whole log (rotated files as stored, and the live file).
    pub max_bytes: u64,
}

impl Default for RetentionLimits {
    /// 50 files, 365 days, 10 GiB: with the default rotation (100 MiB or a day, whichever
    /// comes first) and compression, the log cannot fill a disk by itself.
    fn default() -> Self {
        Self {
            keep_files: 50,
            max_age: Duration::from_secs(365 * 24 * 3600),
            max_bytes: 10 << 30,
        }
    }
}

/// One dropped file, as its retention line records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Its name in the chain (`FILE.<n>`, what the next file's `prev_file` says).
    pub file: String,
    /// Its name on disk when dropped (`FILE.<n>.zst` once compressed).
    pub stored_as: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The hash of its last line: the next file's first `prev_hash`.
    pub last_hash: String,
    /// Its size on disk.
    pub bytes: u64,
}

/// What a retention line says.
#[derive(Debug, Clone)]
pub(crate) struct Evidence {
    pub reason: &'static str,
    pub dropped: Vec<Dropped>,
    pub at: SystemTime,
}

/// A rotated file as retention weighs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub bytes: u64,
    /// Time since its last write.
    pub age: Duration,
    /// Shipped and digested (see `Settled::retirable`).
    pub retirable: bool,
}

/// How many of the oldest `files` (oldest first) to drop, and why (`None`: none). `live_bytes`
/// is the live file's size. `urgent` (disk space is low): the limits are halved and at least
/// the oldest retirable file goes.
pub(crate) fn choose(
    files: &[Candidate],
    live_bytes: u64,
    limits: &RetentionLimits,
    urgent: bool,
) -> Option<(usize, &'static str)> {
    let (keep, age, bytes) = if urgent {
        (
            (limits.keep_files / 2).max(1),
            limits.max_age / 2,
            limits.max_bytes / 2,
        )
    } else {
        (limits.keep_files.max(1), limits.max_age, limits.max_bytes)
    };
    let mut total: u64 = files.iter().map(|f| f.bytes).sum::<u64>() + live_bytes;
    let mut drop = 0;
    let mut reason = None;
    // The newest rotated file always stays.
    for (at, file) in files.iter().enumerate().take(files.len().saturating_sub(1)) {
        let why = if files.len() - at > keep {
            "keep_files"
        } else if file.age > age {
            "max_age"
        } else if total > bytes {
            "max_bytes"
        } else if urgent && at == 0 {
            "disk_space"
        } else {
            break;
        };
        if !file.retirable {
            break;
        }
        reason.get_or_insert(why);
        total -= file.bytes;
        drop += 1;
    }
    reason.map(|r| (drop, r))
}

#[derive(Serialize)]
struct Members<'a> {
    reason: &'static str,
    dropped: &'a [Dropped],
}

/// The retention line's body (JSON object without the hash member).
pub(crate) fn body(evidence: &Evidence, instance_id: &str, at: &Position<'_>) -> String {
    let members = Members {
        reason: evidence.reason,
        dropped: &evidence.dropped,
    };
    super::evidence::body(EVENT, members, instance_id, at, evidence.at)
}

/// The files a retention line names, when `line` (parsed) is one.
pub fn dropped_in(line: &serde_json::Value) -> Option<Vec<Dropped>> {
    if line.get("event")?.as_str()? != EVENT {
        return None;
    }
    serde_json::from_value(line.get("dropped")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize, bytes: u64, age_days: u64) -> Vec<Candidate> {
        (0..n)
            .map(|_| Candidate {
                bytes,
                age: Duration::from_secs(age_days * 86400),
                retirable: true,
            })
            .collect()
    }

    fn limits(keep_files: usize, max_age_days: u64, max_bytes: u64) -> RetentionLimits {
        RetentionLimits {
            keep_files,
            max_age: Duration::from_secs(max_age_days * 86400),
            max_bytes,
        }
    }

    #[test]
    fn drops_the_oldest_by_count_age_and_bytes() {
        assert_eq!(
            choose(&files(5, 10, 1), 0, &limits(3, 30, 1000), false),
            Some((2, "keep_files"))
        );
        assert_eq!(
            choose(&files(5, 10, 1), 0, &limits(9, 30, 1000), false),
            None
        );
        assert_eq!(
            choose(&files(5, 10, 40), 0, &limits(9, 30, 1000), false),
            Some((4, "max_age")),
            "the newest rotated file always stays"
        );
        assert_eq!(
            choose(&files(5, 10, 1), 15, &limits(9, 30, 40), false),
            Some((3, "max_bytes"))
        );
    }

    #[test]
    fn never_drops_past_a_file_that_is_not_retirable() {
        let mut f = files(5, 10, 1);
        f[1].retirable = false;
        assert_eq!(
            choose(&f, 0, &limits(1, 30, 1000), false),
            Some((1, "keep_files"))
        );
        f[0].retirable = false;
        assert_eq!(choose(&f, 0, &limits(1, 30, 1000), false), None);
    }

    #[test]
    fn urgent_halves_the_limits_and_drops_at_least_one() {
        assert_eq!(
            choose(&files(3, 10, 1), 0, &limits(9, 30, 1000), true),
            Some((1, "disk_space"))
        );
        assert_eq!(
            choose(&files(6, 10, 1), 0, &limits(8, 30, 1000), true),
            Some((2, "keep_files"))
        );
        assert_eq!(
            choose(&files(1, 10, 1), 0, &limits(8, 30, 1000), true),
            None
        );
    }
}
