//! The log's lifecycle thread: compresses rotated files and enforces retention, in the
//! background, so neither ever delays the writer or a request. It wakes when the writer
//! rotates, when retention is asked for early ([`Notice::enforce_retention`], e.g. on low
//! disk space), and every [`PASS_EVERY`]. A file is compressed or dropped only once it is
//! retirable (every line shipped and covered by a digest, when those are configured), so the
//! uploader and the digest feed are done with a file before it changes. Failures are logged,
//! counted and retried with backoff, never in a hot loop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::compress::{self, CompressError};
use super::progress::{self, DigestStats, UploadStats};
use super::retention::{self, Candidate, Dropped, Evidence, RetentionLimits};
use super::segments::{self, Codec, Segment};
use super::{Message, chain};

/// Longest time between two passes.
const PASS_EVERY: Duration = Duration::from_secs(30);
/// First wait after a failure; doubles with each failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often files waiting to be shipped or digested are looked at again.
const SETTLE_POLL: Duration = Duration::from_secs(2);
/// How long the writer may take to write a retention line.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Compression and retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// How rotated files are compressed (`None`: they stay plain).
    pub compression: Option<Codec>,
    pub retention: RetentionLimits,
}

impl Default for LifecycleConfig {
    /// zstd, and the default retention limits.
    fn default() -> Self {
        Self {
            compression: Some(Codec::Zstd),
            retention: RetentionLimits::default(),
        }
    }
}

/// Counters of rotations, compressions and retention.
#[derive(Debug, Default)]
pub struct LifecycleStats {
    pub(crate) rotations: AtomicU64,
    pub(crate) compressed: AtomicU64,
    pub(crate) compress_failures: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) delete_failures: AtomicU64,
    pub(crate) retention_lines: AtomicU64,
}

impl LifecycleStats {
    /// Rotations of the live file since start.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }
    /// Rotated files compressed since start.
    pub fn compressed(&self) -> u64 {
        self.compressed.load(Ordering::Relaxed)
    }
    /// Compressions that failed (retried with backoff).
    pub fn compress_failures(&self) -> u64 {
        self.compress_failures.load(Ordering::Relaxed)
    }
    /// Files removed by the retention policy since start.
    pub fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }
    /// Removals that failed, and retention lines that could not be written (retried with
    /// backoff).
    pub fn delete_failures(&self) -> u64 {
        self.delete_failures.load(Ordering::Relaxed)
    }
    /// Retention lines written to the log.
    pub fn retention_lines(&self) -> u64 {
        self.retention_lines.load(Ordering::Relaxed)
    }
}

/// How the writer (and a disk-space watcher) wakes the lifecycle thread.
#[derive(Debug, Default)]
pub struct Notice {
    /// (woken, urgent retention asked for)
    flags: Mutex<(bool, bool)>,
    bell: Condvar,
    stop: AtomicBool,
}

impl Notice {
    /// The live file was rotated: compress and apply retention now.
    pub fn rotated(&self) {
        self.ring(false);
    }

    /// Apply retention now, without waiting for the next pass. `urgent` (disk space is low):
    /// the limits are halved and at least the oldest retirable rotated file is dropped, with
    /// its retention line. Never blocks; safe to call from the writer thread.
    pub fn enforce_retention(&self, urgent: bool) {
        self.ring(urgent);
    }

    fn ring(&self, urgent: bool) {
        let mut flags = self
            .flags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        flags.0 = true;
        flags.1 |= urgent;
        self.bell.notify_one();
    }

    /// Waits for a ring or `timeout`; returns whether urgent retention was asked for.
    fn wait(&self, timeout: Duration) -> bool {
        let flags = self
            .flags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut flags, _) = self
            .bell
            .wait_timeout_while(flags, timeout, |f| {
                !f.0 && !self.stop.load(Ordering::Acquire)
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let urgent = flags.1;
        *flags = (false, false);
        urgent
    }

    /// Asks the thread to stop (an ongoing compression is abandoned, its temporary removed).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.ring(false);
    }
}

/// What the thread needs from the log.
pub(crate) struct Parts {
    pub path: PathBuf,
    pub config: LifecycleConfig,
    pub uploads: Option<Arc<UploadStats>>,
    pub digests: Option<Arc<DigestStats>>,
    pub stats: Arc<LifecycleStats>,
    pub notice: Arc<Notice>,
    /// The way to the writer, gone once every handle of the log is dropped: the thread then
    /// stops.
    pub owner: Weak<SyncSender<Message>>,
}

/// Starts the thread.
pub(crate) fn spawn(parts: Parts) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("decision-log-lifecycle".into())
        .spawn(move || Retention::new(parts).run())
}

/// A failing action, retried no sooner than `next`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    next: Instant,
}

impl Backoff {
    fn after_failure(previous: Option<Backoff>) -> Self {
        let failures = previous.map_or(1, |b| b.failures.saturating_add(1));
        let wait = FIRST_BACKOFF
            .saturating_mul(1 << failures.saturating_sub(1).min(12))
            .min(MAX_BACKOFF);
        Self {
            failures,
            next: Instant::now() + wait,
        }
    }

    fn due(this: Option<&Backoff>) -> bool {
        this.is_none_or(|b| Instant::now() >= b.next)
    }
}

/// The lifecycle thread's state: compression and retention of one log.
pub(crate) struct Retention {
    parts: Parts,
    /// Files whose compression failed.
    compress_backoff: BTreeMap<PathBuf, Backoff>,
    /// Files a retention line already named that could not be removed yet.
    recorded: BTreeMap<PathBuf, Option<Backoff>>,
    /// Writing a retention line failed.
    line_backoff: Option<Backoff>,
    /// A file waits to be shipped or digested before it may be compressed or dropped.
    unsettled: bool,
}

impl Retention {
    fn new(parts: Parts) -> Self {
        Self {
            parts,
            compress_backoff: BTreeMap::new(),
            recorded: BTreeMap::new(),
            line_backoff: None,
            unsettled: false,
        }
    }

    fn stopping(&self) -> bool {
        self.parts.notice.stop.load(Ordering::Acquire) || self.parts.owner.strong_count() == 0
    }

    fn run(mut self) {
        let removed = compress::remove_temporaries(&self.parts.path);
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed temporary files of a compression stopped by the last shutdown"
            );
        }
        let mut urgent = false;
        while !self.stopping() {
            self.unsettled = false;
            self.compress_pass();
            self.enforce(urgent);
            urgent = self.parts.notice.wait(self.next_wait());
        }
    }

    /// Until the next pass: [`PASS_EVERY`], or sooner when a retry falls due.
    fn next_wait(&self) -> Duration {
        let now = Instant::now();
        self.recorded
            .values()
            .flatten()
            .chain(self.compress_backoff.values())
            .chain(self.line_backoff.as_ref())
            .map(|b| b.next.saturating_duration_since(now))
            .fold(PASS_EVERY, Duration::min)
            .min(if self.unsettled {
                SETTLE_POLL
            } else {
                PASS_EVERY
            })
    }

    /// Compresses every retirable plain rotated file, oldest first.
    fn compress_pass(&mut self) {
        let Some(codec) = self.parts.config.compression else {
            return;
        };
        let plain = segments::rotated(&self.parts.path)
            .into_iter()
            .filter(|s| s.codec.is_none());
        for segment in plain {
            if self.stopping() {
                return;
            }
            if !Backoff::due(self.compress_backoff.get(&segment.path)) {
                continue;
            }
            if !self.retirable(&segment) {
                self.unsettled = true;
                continue;
            }
            match compress::compress(&segment.path, codec, &self.parts.notice.stop) {
                Ok(done) => {
                    self.compress_backoff.remove(&segment.path);
                    self.parts.stats.compressed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(file = %done.display(), codec = codec.as_str(), "decision log file compressed");
                }
                Err(CompressError::Stopped) => return,
                Err(CompressError::Io(e)) => {
                    self.parts
                        .stats
                        .compress_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let next =
                        Backoff::after_failure(self.compress_backoff.get(&segment.path).copied());
                    tracing::warn!(file = %segment.path.display(), error = %e, failures = next.failures, "cannot compress a decision log file; retrying later");
                    self.compress_backoff.insert(segment.path, next);
                }
            }
        }
    }

    fn retirable(&self, segment: &Segment) -> bool {
        progress::settled(
            &segment.path,
            self.parts.uploads.as_deref(),
            self.parts.digests.as_deref(),
        )
        .is_ok_and(|s| s.retirable())
    }

    /// Applies the retention limits (halved, and at least one file, when `urgent`): records
    /// the files to drop in a retention line, then removes them.
    pub(crate) fn enforce(&mut self, urgent: bool) {
        self.retry_removals();
        if !Backoff::due(self.line_backoff.as_ref()) {
            return;
        }
        let files: Vec<Segment> = segments::rotated(&self.parts.path)
            .into_iter()
            .filter(|s| !self.recorded.contains_key(&s.path))
            .collect();
        let now = SystemTime::now();
        let candidates: Vec<Candidate> = files
            .iter()
            .map(|s| {
                let meta = std::fs::metadata(&s.path).ok();
                Candidate {
                    bytes: meta.as_ref().map_or(0, std::fs::Metadata::len),
                    age: meta
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| now.duration_since(t).ok())
                        .unwrap_or_default(),
                    retirable: false,
                }
            })
            .collect();
        let live = std::fs::metadata(&self.parts.path).map_or(0, |m| m.len());
        let limits = self.parts.config.retention;
        // Ask "retirable?" only of the files the limits would drop (it reads each one).
        let Some((upper, _)) = choose_with(&candidates, live, &limits, urgent, |_| true) else {
            return;
        };
        let checked: Vec<bool> = files
            .iter()
            .take(upper)
            .map(|s| self.retirable(s))
            .collect();
        self.unsettled |= checked.contains(&false);
        let Some((count, reason)) = choose_with(&candidates, live, &limits, urgent, |i| {
            checked.get(i).copied().unwrap_or(false)
        }) else {
            return;
        };
        let chosen: Vec<&Segment> = files.iter().take(count).collect();
        match chosen.iter().map(|s| describe(s)).collect() {
            Ok(dropped) => self.record_and_remove(&chosen, dropped, reason),
            Err(e) => {
                self.line_failed(&format!("cannot read a file to drop: {e}"));
            }
        }
    }

    fn record_and_remove(
        &mut self,
        chosen: &[&Segment],
        dropped: Vec<Dropped>,
        reason: &'static str,
    ) {
        let evidence = Evidence {
            reason,
            dropped,
            at: SystemTime::now(),
        };
        let (ack, done) = mpsc::channel();
        let sent = self.parts.owner.upgrade().is_some_and(|writer| {
            writer
                .send(Message::Retention(Box::new(evidence), ack))
                .is_ok()
        });
        // Waits in slices, so a stop is not held up by a writer that cannot write.
        let deadline = Instant::now() + LINE_TIMEOUT;
        let answer = sent.then(|| {
            loop {
                match done.recv_timeout(Duration::from_millis(100)) {
                    Err(mpsc::RecvTimeoutError::Timeout)
                        if Instant::now() < deadline && !self.stopping() => {}
                    other => break other,
                }
            }
        });
        match answer {
            Some(Ok(Ok(seq))) => {
                self.line_backoff = None;
                self.parts
                    .stats
                    .retention_lines
                    .fetch_add(1, Ordering::Relaxed);
                let names: Vec<String> = chosen.iter().map(|s| s.chain_name()).collect();
                tracing::info!(seq, reason, files = %names.join(","), "decision log retention: dropping files (recorded in the log)");
                for segment in chosen {
                    self.recorded.insert(segment.path.clone(), None);
                }
                self.retry_removals();
            }
            Some(Ok(Err(e))) => self.line_failed(&e),
            _ => self.line_failed("the writer did not write the retention line"),
        }
    }

    fn line_failed(&mut self, why: &str) {
        self.parts
            .stats
            .delete_failures
            .fetch_add(1, Ordering::Relaxed);
        let next = Backoff::after_failure(self.line_backoff);
        tracing::warn!(
            error = why,
            failures = next.failures,
            "decision log retention postponed: no file is dropped without its retention line"
        );
        self.line_backoff = Some(next);
    }

    /// Removes the files already recorded as dropped, each no sooner than its backoff allows.
    fn retry_removals(&mut self) {
        let due: Vec<PathBuf> = self
            .recorded
            .iter()
            .filter(|(_, b)| Backoff::due(b.as_ref()))
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.recorded.remove(&path);
                    self.parts.stats.deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.recorded.remove(&path);
                }
                Err(e) => {
                    self.parts
                        .stats
                        .delete_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let previous = self.recorded.get(&path).copied().flatten();
                    let next = Backoff::after_failure(previous);
                    tracing::warn!(file = %path.display(), error = %e, failures = next.failures, "cannot remove a decision log file the retention policy dropped; retrying later");
                    self.recorded.insert(path, Some(next));
                }
            }
        }
    }
}

/// `retention::choose` with each file's retirability given by `retirable(index)`.
fn choose_with(
    files: &[Candidate],
    live: u64,
    limits: &RetentionLimits,
    urgent: bool,
    retirable: impl Fn(usize) -> bool,
) -> Option<(usize, &'static str)> {
    let marked: Vec<Candidate> = files
        .iter()
        .enumerate()
        .map(|(i, c)| Candidate {
            retirable: retirable(i),
            ..*c
        })
        .collect();
    retention::choose(&marked, live, limits, urgent)
}

/// What a retention line records of `segment` (an empty file: seq 0 and no hash).
fn describe(segment: &Segment) -> Result<Dropped, String> {
    let shown = segment.path.display();
    let link = |l: std::io::Result<Option<String>>| -> Result<Option<chain::Link>, String> {
        match l.map_err(|e| format!("{shown}: {e}"))? {
            Some(text) => chain::open_line(&text)
                .map(Some)
                .map_err(|e| format!("{shown}: {e}")),
            None => Ok(None),
        }
    };
    let first = link(segments::first_line(&segment.path))?;
    let last = link(segments::last_line(&segment.path))?;
    Ok(Dropped {
        file: segment.chain_name(),
        stored_as: chain::file_name(&segment.path.display().to_string()),
        first_seq: first.map_or(0, |l| l.seq),
        last_seq: last.as_ref().map_or(0, |l| l.seq),
        last_hash: last.map(|l| l.hash).unwrap_or_default(),
        bytes: segment.bytes(),
    })
}
