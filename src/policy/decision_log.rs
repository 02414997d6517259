//! Decision log: one JSON line per evaluated request, in OPA's decision-log shape plus keygate's
//! `kms_request_id` and `error_name`, hash-chained for tamper evidence (see [`chain`]).
//!
//! Requests hand their record to a bounded queue and never wait for the disk; a writer thread
//! seals and appends the lines, rotates files, and notices when the file cannot be written. A full
//! queue loses the line, counted and logged. In `fail_closed` mode [`DecisionLog::record`] returns
//! an error whenever the line may not reach the disk, so the request can be refused.

pub mod chain;
mod line;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

pub use line::{DECISION_PATH, DecisionRecord, EvalError, Requester};

/// Settings of the decision log.
#[derive(Debug, Clone)]
pub struct DecisionLogConfig {
    /// The log file; rotated files are `FILE.1`, `FILE.2`, ... (higher is newer).
    pub path: PathBuf,
    /// Refuse requests whenever their line may not be written.
    pub fail_closed: bool,
    /// Rotate when the file would grow past this many bytes.
    pub rotate_bytes: Option<u64>,
    /// Rotate when the file is older than this.
    pub rotate_interval: Option<Duration>,
    /// `labels.id`: this instance's id.
    pub instance_id: String,
    /// Records that may wait for the writer.
    pub queue_capacity: usize,
    /// How often a failed log is retried.
    pub retry_interval: Duration,
    /// Most time between two `decision log checkpoint` lines in keygate's own log (one is
    /// written only when lines were added since the last; also at start and at shutdown).
    pub checkpoint_interval: Duration,
}

impl DecisionLogConfig {
    /// Defaults for `path`: no rotation, fail open, 8192 queued lines, retry every second.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            fail_closed: false,
            rotate_bytes: None,
            rotate_interval: None,
            instance_id: uuid::Uuid::new_v4().to_string(),
            queue_capacity: 8192,
            retry_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(60),
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
    write_errors: AtomicU64,
}

/// Messages to the writer thread.
pub(crate) enum Message {
    Record(Box<DecisionRecord>),
    Flush(mpsc::Sender<()>),
    /// Write everything queued, write the shutdown checkpoint, acknowledge, and stop.
    Close(mpsc::Sender<()>),
}

/// Handle to the decision log; clones share one writer.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    sender: SyncSender<Message>,
    health: Arc<Health>,
    fail_closed: bool,
    /// The writer thread, taken by the first [`DecisionLog::close`].
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl DecisionLog {
    /// Open (or resume the chain of) the log file and start the writer thread.
    pub fn open(config: DecisionLogConfig) -> Result<Self, DecisionLogError> {
        let health = Arc::new(Health {
            head: std::sync::Mutex::new((0, chain::GENESIS.to_owned())),
            writable: AtomicBool::new(true),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let (sender, receiver) = mpsc::sync_channel(config.queue_capacity.max(1));
        let fail_closed = config.fail_closed;
        let thread = writer::spawn(config, receiver, Arc::clone(&health))?;
        Ok(Self {
            sender,
            health,
            fail_closed,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Stop the log at shutdown: every line queued before this call is written (or counted
    /// lost when the file cannot take it), the shutdown checkpoint is logged, and the writer
    /// thread is joined. Lines offered afterwards are refused ([`DecisionLogError::Stopped`]).
    /// Returns `false` when the writer did not finish within `timeout` (it is then left
    /// running; nothing more can be done for its lines).
    pub fn close(&self, timeout: Duration) -> bool {
        let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return true;
        };
        let (ack, done) = mpsc::channel();
        // `send` waits for room in a full queue: the writer is draining it.
        if self.sender.send(Message::Close(ack)).is_err() {
            return thread.join().is_ok();
        }
        match done.recv_timeout(timeout) {
            Ok(()) => thread.join().is_ok(),
            Err(_) => false,
        }
    }

    /// Whether the last write (or reopen attempt) succeeded.
    pub fn writable(&self) -> bool {
        self.health.writable.load(Ordering::Acquire)
    }

    /// Whether requests must be refused now (fail-closed mode and the log cannot be written).
    pub fn refuses_requests(&self) -> bool {
        self.fail_closed && !self.writable()
    }

    /// Whether the log is in fail-closed mode.
    pub fn fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// Queue one line. Never blocks. In fail-closed mode an error means: refuse the request (the
    /// line is still written later if it could be queued); otherwise losses are only counted.
    pub fn record(&self, record: DecisionRecord) -> Result<(), DecisionLogError> {
        let outcome = match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) if self.writable() => Ok(()),
            Ok(()) => Err(DecisionLogError::Unwritable),
            Err(TrySendError::Full(_)) => {
                let lost = self.health.lost.fetch_add(1, Ordering::Relaxed) + 1;
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
}

/// `SystemTime` as RFC 3339 (UTC, nanoseconds).
pub(crate) fn timestamp(at: SystemTime) -> String {
    super::input::rfc3339(at)
}

#[cfg(test)]
mod tests;
