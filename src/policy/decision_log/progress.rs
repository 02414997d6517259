//! How far the log's lines have got beyond the local file: shipped to the collector (the
//! uploader) and covered by a signed digest (the notary), with their counters. The question a
//! later step that compresses or deletes rotated files must ask first is
//! [`DecisionLog::settled`](super::DecisionLog::settled): has every line of this file been
//! shipped, and is it covered by a digest?

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::chain;

/// The notary's progress and counters.
#[derive(Debug, Default)]
pub struct DigestStats {
    /// `last_seq` of the newest digest written: every line up to it is covered.
    pub(crate) digested_seq: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Unix time (seconds) of the newest digest written.
    pub(crate) last_unix: AtomicU64,
    /// The configured interval, in seconds.
    pub(crate) interval_secs: AtomicU64,
}

impl DigestStats {
    /// `last_seq` of the newest digest written.
    pub fn digested_seq(&self) -> u64 {
        self.digested_seq.load(Ordering::Acquire)
    }

    /// Digests written since start.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Digests that could not be signed or written (their content goes into the next one).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Unix time of the newest digest written (0: none yet).
    pub fn last_unix(&self) -> u64 {
        self.last_unix.load(Ordering::Relaxed)
    }

    /// Most seconds between two digests, as configured.
    pub fn interval_secs(&self) -> u64 {
        self.interval_secs.load(Ordering::Relaxed)
    }
}

/// The uploader's progress and counters.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// `seq` of the last line the collector acknowledged.
    pub(crate) shipped_seq: AtomicU64,
    pub(crate) uploaded: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) buffer_bytes: AtomicU64,
    /// The last upload attempt failed (and none succeeded since).
    pub(crate) failing: AtomicBool,
}

impl UploadStats {
    /// `seq` of the last line the collector acknowledged.
    pub fn shipped_seq(&self) -> u64 {
        self.shipped_seq.load(Ordering::Acquire)
    }

    /// Events the collector acknowledged since start.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    /// Upload requests that failed (refused, non-2xx, timed out, unreachable).
    pub fn failed_requests(&self) -> u64 {
        self.failed_requests.load(Ordering::Relaxed)
    }

    /// Events never shipped: larger than the upload size limit alone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of events read from the log and not yet acknowledged.
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes.load(Ordering::Relaxed)
    }

    /// Whether the collector is failing now (the last attempt failed).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

/// Where one file of the log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// `seq` of the file's last line (0 for an empty file).
    pub last_seq: u64,
    /// Every line of it reached the collector (always true without `[decision_log.upload]`).
    pub shipped: bool,
    /// A signed digest covers every line of it (always true without `[decision_log.digest]`).
    pub digested: bool,
}

impl Settled {
    /// Whether the file may be compressed or deleted without losing what only it holds.
    pub fn retirable(&self) -> bool {
        self.shipped && self.digested
    }
}

/// Where `file` stands, given the uploader's and notary's progress (`None`: not configured).
pub(crate) fn settled(
    file: &Path,
    upload: Option<&UploadStats>,
    digests: Option<&DigestStats>,
) -> std::io::Result<Settled> {
    let last_seq = match super::segments::last_line(file)? {
        Some(line) => {
            chain::open_line(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                .seq
        }
        None => 0,
    };
    Ok(Settled {
        last_seq,
        shipped: upload.is_none_or(|u| u.shipped_seq() >= last_seq),
        digested: digests.is_none_or(|d| d.digested_seq() >= last_seq),
    })
}
