//! Decision log: one JSON line per evaluated request, an OPA decision-log event plus keygate's
//! `seq` and `error_name`, hash-chained for tamper evidence (see [`chain`]).
//!
//! Requests hand their record to a bounded queue and never wait for the disk; a writer thread
//! seals and appends the lines, rotates files, and notices when the file cannot be written. A full
//! queue loses the line, counted and logged. In `fail_closed` mode [`DecisionLog::record`] returns
//! an error whenever the line may not reach the disk, so the request can be refused. The writer
//! also watches the free space of the log's filesystem (see [`space`]): low space is warned
//! about and triggers early retention before any request is refused.
//!
//! ```text
//! decision_log/line.rs     the event (OPA's EventV1 members and keygate's)
//! decision_log/mask.rs     masking: erase or HMAC members by JSON pointer, before queueing
//! decision_log/chain.rs    the hash chain and its verifier
//! decision_log/writer.rs   the writer thread: seal, append, rotate, checkpoints, digest feed
//! decision_log/files.rs    the live file on disk: open (0600), resume, last lines
//! decision_log/segments.rs the log's files: rotated and compressed names, chain order, reading
//! decision_log/compress.rs compressing a rotated file (temporary, sync, rename, remove)
//! decision_log/retention.rs which rotated files go, and the retention line that says so
//! decision_log/lifecycle.rs the background thread that compresses and applies retention
//! decision_log/space.rs    free space on the log's filesystem: thresholds, looks, gauges
//! decision_log/writer/pressure.rs  the writer's answer to low and exhausted space
//! decision_log/writer/live_file.rs the live file: rotation, append, sync, writable state
//! decision_log/digest/     signed digests: format, the writer's feed, the notary thread, verify
//! decision_log/upload/     shipping to an OPA decision-log collector (its own thread)
//! decision_log/progress.rs shipped and digested: has this file been settled?
//! decision_log/settings.rs the [decision_log.upload] and [decision_log.digest] tables
//! ```

pub mod chain;
pub mod compress;
pub mod digest;
mod evidence;
mod files;
pub mod lifecycle;
mod line;
pub mod lost;
pub mod mask;
mod progress;
pub mod retention;
pub mod segments;
pub mod settings;
pub mod space;
mod upload;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

pub use digest::DigestConfig;
pub use lifecycle::{LifecycleConfig, LifecycleStats, Notice};
pub use line::{DECISION_PATH, DecisionRecord, EvalError, Requester};
pub use progress::{DigestStats, Settled, UploadStats};
pub use space::{Space, SpaceLimits, SpaceStatus};

/// Default number of lines that may wait for the writer.
pub const DEFAULT_QUEUE_LINES: usize = 8192;

pub use retention::RetentionLimits;
pub use segments::Codec;

/// Rotate the live file when it would grow past this (100 MiB) ...
pub const DEFAULT_ROTATE_BYTES: u64 = 100 << 20;
/// ... or when it is this old (a day), whichever comes first.
pub const DEFAULT_ROTATE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Settings of the decision log.
#[derive(Debug, Clone)]
pub struct DecisionLogConfig {
    /// The log file; rotated files are `FILE.1`, `FILE.2`, ... (higher is newer).
    pub path: PathBuf,
    /// Refuse requests whenever their line may not be written.
    pub fail_closed: bool,
    /// Rotate when the file would grow past this many bytes (`None`: never by size).
    pub rotate_bytes: Option<u64>,
    /// Rotate when the file is older than this (`None`: never by age).
    pub rotate_interval: Option<Duration>,
    /// Compression of rotated files and retention.
    pub lifecycle: LifecycleConfig,
    /// `labels.id`: this instance's id.
    pub instance_id: String,
    /// Records that may wait for the writer (in its queue, and again while the log cannot be
    /// written).
    pub queue_capacity: usize,
    /// Free-space thresholds of the log's filesystem.
    pub space: SpaceLimits,
    /// How often a failed log is retried.
    pub retry_interval: Duration,
    /// Most time between two `decision log checkpoint` lines in keygate's own log (one is
    /// written only when lines were added since the last; also at start and at shutdown).
    pub checkpoint_interval: Duration,
    /// Signed digests (`None`: none are written).
    pub digest: Option<DigestConfig>,
    /// Shipping to an OPA decision-log collector (`None`: the local file only).
    pub upload: Option<settings::UploadSettings>,
    /// Masking rules applied to every record when it is made (`None`: none).
    pub mask: Option<Arc<mask::Masking>>,
}

impl DecisionLogConfig {
    /// Defaults for `path`: rotation at [`DEFAULT_ROTATE_BYTES`] or [`DEFAULT_ROTATE_INTERVAL`],
    /// whichever comes first; rotated files compressed with zstd; the default retention
    /// limits; fail open, 8192 queued lines, retry every second, the default free-space
    /// thresholds.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            fail_closed: false,
            rotate_bytes: Some(DEFAULT_ROTATE_BYTES),
            rotate_interval: Some(DEFAULT_ROTATE_INTERVAL),
            lifecycle: LifecycleConfig::default(),
            instance_id: uuid::Uuid::new_v4().to_string(),
            queue_capacity: DEFAULT_QUEUE_LINES,
            space: SpaceLimits::default(),
            retry_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(60),
            digest: None,
            upload: None,
            mask: None,
        }
    }
}

/// Errors of the decision log.
#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    /// The log file could not be opened or resumed at start-up.
    #[error("cannot open decision log {path}: {reason}")]
    Open {
        /// The log file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The log cannot be written right now (fail-closed mode refuses the request).
    #[error("the decision log cannot be written")]
    Unwritable,
    /// The queue to the writer is full; the line is lost (fail-closed mode refuses the request).
    #[error("the decision log queue is full; the line was lost")]
    QueueFull,
    /// The writer thread is gone.
    #[error("the decision log writer has stopped")]
    Stopped,
}

/// Counters and health shared with the writer thread.
#[derive(Debug)]
pub(crate) struct Health {
    /// `seq` and hash of the last line written (0 and GENESIS for an empty log).
    head: std::sync::Mutex<(u64, String)>,
    writable: AtomicBool,
    written: AtomicU64,
    lost: AtomicU64,
    /// Lost lines not yet recorded in the log by a `lines_lost` line.
    losses: std::sync::Mutex<lost::Losses>,
    write_errors: AtomicU64,
    /// The writer's last look at the free space.
    space: space::SpaceGauges,
}

impl Health {
    /// Counts `count` lines lost now, for the writer's next `lines_lost` line; returns the
    /// total lost since start. The span is recorded before the counter moves, so a writer that
    /// sees the counter move finds the span.
    fn lose(&self, reason: lost::LossReason, count: u64) -> u64 {
        self.losses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add(reason, count, SystemTime::now());
        self.lost.fetch_add(count, Ordering::Relaxed) + count
    }
}

/// Messages to the writer thread.
pub(crate) enum Message {
    Record(Box<DecisionRecord>),
    Flush(mpsc::Sender<()>),
    /// Write everything queued, write the shutdown checkpoint, acknowledge, and stop.
    Close(mpsc::Sender<()>),
    /// Write a retention line (synced to disk) and answer with its seq, before any file it
    /// names is removed.
    Retention(Box<retention::Evidence>, mpsc::Sender<Result<u64, String>>),
}

/// Handle to the decision log; clones share one writer.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    sender: SyncSender<Message>,
    health: Arc<Health>,
    fail_closed: bool,
    /// The writer thread, taken by the first [`DecisionLog::close`].
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// The notary (digest) thread, joined after the writer at close.
    notary: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    digests: Option<Arc<DigestStats>>,
    /// The uploader, given a last flush after the writer at close.
    uploader: Arc<std::sync::Mutex<Option<upload::Uploader>>>,
    uploads: Option<Arc<UploadStats>>,
    /// Refuse requests while the collector cannot take the log.
    require_upload: bool,
    /// Masking rules, applied where records are made ([`DecisionLog::masking`]).
    mask: Option<Arc<mask::Masking>>,
    /// The lifecycle thread (compression, retention), stopped first at close.
    lifecycle: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    notice: Arc<Notice>,
    lifecycle_stats: Arc<LifecycleStats>,
    /// The lifecycle thread's way to the writer, held weakly by it: once every handle is
    /// dropped, the writer sees its channel close and the lifecycle thread stops.
    _lifecycle_sender: Arc<SyncSender<Message>>,
}

impl DecisionLog {
    /// Open (or resume the chain of) the log file and start the writer thread.
    pub fn open(config: DecisionLogConfig) -> Result<Self, DecisionLogError> {
        let health = Arc::new(Health {
            head: std::sync::Mutex::new((0, chain::GENESIS.to_owned())),
            writable: AtomicBool::new(true),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            losses: std::sync::Mutex::default(),
            write_errors: AtomicU64::new(0),
            space: space::SpaceGauges::default(),
        });
        let (sender, receiver) = mpsc::sync_channel(config.queue_capacity.max(1));
        let fail_closed = config.fail_closed;
        let (digests, feed, notary) = match &config.digest {
            Some(d) => {
                let stats = Arc::new(DigestStats::default());
                let log_name = chain::file_name(&config.path.display().to_string());
                let (feed, thread) = digest::Notary::start(
                    d.clone(),
                    log_name,
                    config.instance_id.clone(),
                    stats.clone(),
                )
                .map_err(|reason| DecisionLogError::Open {
                    path: d.dir.clone(),
                    reason,
                })?;
                (Some(stats), Some(feed), Some(thread))
            }
            None => (None, None, None),
        };
        let path = config.path.clone();
        let require_upload = config.upload.as_ref().is_some_and(|u| u.require_upload);
        let mask = config.mask.clone();
        let open_err = |reason| DecisionLogError::Open {
            path: path.clone(),
            reason,
        };
        let upload = match config.upload.clone() {
            Some(settings) => Some(upload::Uploader::prepare(settings).map_err(open_err)?),
            None => None,
        };
        let notice = Arc::new(Notice::default());
        let lifecycle_stats = Arc::new(LifecycleStats::default());
        let lifecycle_config = config.lifecycle;
        let thread = writer::spawn(
            config,
            receiver,
            Arc::clone(&health),
            feed,
            (Arc::clone(&notice), Arc::clone(&lifecycle_stats)),
        )?;
        // The writer has resumed the log and published its head: the uploader may read.
        let (uploads, uploader) = match upload {
            Some(prepared) => {
                let stats = Arc::new(UploadStats::default());
                let uploader =
                    upload::Uploader::start(prepared, path.clone(), health.clone(), stats.clone())
                        .map_err(open_err)?;
                (Some(stats), Some(uploader))
            }
            None => (None, None),
        };
        let owner = Arc::new(sender.clone());
        let lifecycle = lifecycle::spawn(lifecycle::Parts {
            path: path.clone(),
            config: lifecycle_config,
            uploads: uploads.clone(),
            digests: digests.clone(),
            stats: Arc::clone(&lifecycle_stats),
            notice: Arc::clone(&notice),
            owner: Arc::downgrade(&owner),
        })
        .map_err(|e| open_err(format!("cannot start the lifecycle thread: {e}")))?;
        Ok(Self {
            sender,
            health,
            fail_closed,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            notary: Arc::new(std::sync::Mutex::new(notary)),
            digests,
            uploader: Arc::new(std::sync::Mutex::new(uploader)),
            uploads,
            require_upload,
            mask,
            lifecycle: Arc::new(std::sync::Mutex::new(Some(lifecycle))),
            notice,
            lifecycle_stats,
            _lifecycle_sender: owner,
        })
    }

    /// Stop the log at shutdown: every line queued before this call is written (or counted
    /// lost when the file cannot take it), the shutdown checkpoint is logged, the shutdown
    /// digest is signed and written after them, and the threads are joined. Lines offered
    /// afterwards are refused ([`DecisionLogError::Stopped`]). Returns `false` when they did
    /// not finish within `timeout` (they are then left running; nothing more can be done).
    pub fn close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // The lifecycle thread first: it may be waiting for the writer to log a retention.
        self.notice.stop();
        let lifecycle_done = take(&self.lifecycle).is_none_or(|t| join_by(t, deadline));
        let writer_done = match take(&self.thread) {
            None => true,
            Some(thread) => {
                let (ack, done) = mpsc::channel();
                // `send` waits for room in a full queue: the writer is draining it.
                if self.sender.send(Message::Close(ack)).is_err() {
                    thread.join().is_ok()
                } else {
                    match done.recv_timeout(timeout) {
                        Ok(()) => thread.join().is_ok(),
                        Err(_) => false,
                    }
                }
            }
        };
        // The writer has handed over the shutdown digest and let go of the notary.
        let notary_done = take(&self.notary).is_none_or(|t| join_by(t, deadline));
        // Every line is on disk: the uploader gets a bounded chance to ship the rest.
        let uploader = self
            .uploader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let flush_by = deadline.min(Instant::now() + upload::FLUSH_AT_SHUTDOWN);
        let uploader_done = uploader.is_none_or(|u| u.finish(flush_by));
        lifecycle_done && writer_done && notary_done && uploader_done
    }

    /// Counters of rotations, compressions and retention.
    pub fn lifecycle_stats(&self) -> &LifecycleStats {
        &self.lifecycle_stats
    }

    /// Apply retention now (see [`Notice::enforce_retention`]); never blocks.
    pub fn enforce_retention(&self, urgent: bool) {
        self.notice.enforce_retention(urgent);
    }

    /// Where `file` (one of this log's files) stands: has every line of it been shipped to
    /// the collector, and is it covered by a signed digest? A step that compresses or deletes
    /// rotated files asks this first (see [`Settled::retirable`]).
    pub fn settled(&self, file: &Path) -> std::io::Result<Settled> {
        progress::settled(file, self.uploads.as_deref(), self.digests.as_deref())
    }

    /// The masking rules every record must be made with (see [`DecisionRecord::new`]).
    pub fn masking(&self) -> Option<&mask::Masking> {
        self.mask.as_deref()
    }

    /// The uploader's counters, when `[decision_log.upload]` is configured.
    pub fn upload_stats(&self) -> Option<&UploadStats> {
        self.uploads.as_deref()
    }

    /// The notary's counters, when digests are configured.
    pub fn digest_stats(&self) -> Option<&DigestStats> {
        self.digests.as_deref()
    }

    /// Whether the last write (or reopen attempt) succeeded.
    pub fn writable(&self) -> bool {
        self.health.writable.load(Ordering::Acquire)
    }

    /// Whether requests must be refused now: fail-closed mode and the log cannot be written,
    /// or `require_upload` and the collector cannot take the log.
    pub fn refuses_requests(&self) -> bool {
        (self.fail_closed && !self.writable())
            || (self.require_upload && self.uploads.as_ref().is_some_and(|u| u.failing()))
    }

    /// Whether the log is in fail-closed mode.
    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// Queue one line. Never blocks. In fail-closed mode an error means: refuse the request (the
    /// line is still written later if it could be queued); otherwise losses are only counted.
    pub fn record(&self, record: DecisionRecord) -> Result<(), DecisionLogError> {
        self.record_as(record, None)
    }

    /// As [`DecisionLog::record`], for the line of a request about to be answered: when
    /// fail-closed mode refuses it (the log cannot be written now), the line carries
    /// `refused_as`, the error the front door answers instead. Whether the log is writable is
    /// read once, before the line is queued, so the line and the answer always agree.
    pub fn record_as(
        &self,
        mut record: DecisionRecord,
        refused_as: Option<&str>,
    ) -> Result<(), DecisionLogError> {
        let refused = self.fail_closed && !self.writable();
        if refused && let Some(name) = refused_as {
            record.error_name = Some(name.to_owned());
        }
        let outcome = match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) if refused => Err(DecisionLogError::Unwritable),
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let lost = self.health.lose(lost::LossReason::QueueFull, 1);
                if lost.is_power_of_two() || lost.is_multiple_of(1000) {
                    tracing::warn!(lost, "decision log queue full: line lost");
                }
                Err(DecisionLogError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.health.lost.fetch_add(1, Ordering::Relaxed);
                Err(DecisionLogError::Stopped)
            }
        };
        match outcome {
            Err(err) if self.fail_closed => Err(err),
            _ => Ok(()),
        }
    }

    /// Wait (up to `timeout`) until every line queued before this call has been handled.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        if self.sender.send(Message::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// `seq` and hash of the last line written: what an outside record of the log's head
    /// holds (see [`chain::Checkpoint`]).
    pub fn head(&self) -> (u64, String) {
        self.health
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Lines written since start.
    pub fn written(&self) -> u64 {
        self.health.written.load(Ordering::Relaxed)
    }

    /// Lines lost (queue full, writer gone, or dropped after a long write failure).
    pub fn lost(&self) -> u64 {
        self.health.lost.load(Ordering::Relaxed)
    }

    /// Failed write or reopen attempts.
    pub fn write_errors(&self) -> u64 {
        self.health.write_errors.load(Ordering::Relaxed)
    }

    /// The free space the writer last found on the log's filesystem, and where it stands.
    pub fn space(&self) -> SpaceStatus {
        self.health.space.status()
    }
}

/// Takes the thread out of its slot (once).
fn take(
    slot: &std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
) -> Option<std::thread::JoinHandle<()>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// Joins `thread` if it finishes by `deadline`; otherwise leaves it running.
fn join_by(thread: std::thread::JoinHandle<()>, deadline: Instant) -> bool {
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.join().is_ok()
}

/// `SystemTime` as RFC 3339 (UTC, nanoseconds).
pub(crate) fn timestamp(at: SystemTime) -> String {
    super::input::rfc3339(at)
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod lost_tests;
#[cfg(test)]
mod tests;
