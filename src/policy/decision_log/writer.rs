//! The decision-log writer thread: seals lines into the hash chain, appends them, rotates files,
//! and keeps retrying (with the lines kept in memory, up to a bound) while the file cannot be
//! written, so the log recovers by itself. With digests configured it also keeps the digest
//! feed (the SHA-256 of what it wrote) and asks the notary for a digest at start, every
//! interval, at rotation and at shutdown. It watches the free space of the log's filesystem
//! (see [`super::space`] and `writer/pressure.rs`).

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use super::chain;
use super::digest::{Feed, Job, Reason};
use super::files::{self, open_file, resume};
use super::lifecycle::{LifecycleStats, Notice};
use super::line::{self, Position};
use super::lost::{self, LossReason, Losses};
use super::retention::{self, Evidence};
use super::space::SpaceWatch;
use super::{DecisionLogConfig, DecisionLogError, DecisionRecord, Health, Message};

/// A line waiting to be written: a decision, or a retention record whose sender waits for it.
enum Entry {
    Decision(Box<DecisionRecord>),
    Retention(Box<Evidence>, Sender<Result<u64, String>>),
}
/// Longest wait between two checks of the rotation clock.
const TICK: Duration = Duration::from_secs(1);
/// Pause after writing a batch, so lines arriving meanwhile are sealed and written together.
/// While the writer pauses, request threads queue lines without waking it: one wake-up and
/// one write per batch instead of one per line (at 10,000 lines/s, per-line wake-ups cost
/// more CPU than sealing the lines). A line reaches the file at most this much later.
const LINGER: Duration = Duration::from_millis(2);

mod live_file;
mod pressure;

/// Open the log, resume its chain, and start the thread.
pub(super) fn spawn(
    config: DecisionLogConfig,
    receiver: Receiver<Message>,
    health: Arc<Health>,
    digests: Option<SyncSender<Job>>,
    lifecycle: (Arc<Notice>, Arc<LifecycleStats>),
) -> Result<std::thread::JoinHandle<()>, DecisionLogError> {
    let writer = Writer::open(config, health, digests, lifecycle)?;
    std::thread::Builder::new()
        .name("decision-log".into())
        .spawn(move || writer.run(&receiver))
        .map_err(|_| DecisionLogError::Stopped)
}

/// Why a checkpoint line is written.
#[derive(Debug, Clone, Copy)]
enum CheckpointAt {
    Start,
    Interval,
    Shutdown,
}

impl CheckpointAt {
    fn as_str(self) -> &'static str {
        match self {
            CheckpointAt::Start => "start",
            CheckpointAt::Interval => "interval",
            CheckpointAt::Shutdown => "shutdown",
        }
    }
}

struct Writer {
    config: DecisionLogConfig,
    health: Arc<Health>,
    file: Option<(File, (u64, u64))>,
    size: u64,
    opened_at: Instant,
    seq: u64,
    last_hash: String,
    prev_file: Option<String>,
    pending: VecDeque<Entry>,
    /// The last `decision log checkpoint`: when, and at which seq.
    checkpointed: (Instant, u64),
    /// What the next digest says (`None`: no digests configured).
    feed: Option<Feed>,
    /// Free space on the log's filesystem.
    space: SpaceWatch,
    /// When early retention was last asked for.
    retention_asked: Option<Instant>,
    /// Shutting down: the lines still waiting may use the reserve.
    closing: bool,
    /// Lost lines whose `lines_lost` line is still to be written, ahead of `pending`.
    unrecorded: Losses,
    /// `health.lost` when the losses were last taken from `health`.
    lost_seen: u64,
    /// Wakes the lifecycle thread: at every rotation (compression and retention follow in
    /// the background), and `notice.enforce_retention(true)` to apply retention early.
    notice: Arc<Notice>,
    lifecycle_stats: Arc<LifecycleStats>,
}

/// A run of pending lines sealed for one append.
struct Sealed {
    text: String,
    count: usize,
    first: Option<(u64, String)>,
    last: (u64, String),
}

impl Writer {
    fn open(
        config: DecisionLogConfig,
        health: Arc<Health>,
        digests: Option<SyncSender<Job>>,
        lifecycle: (Arc<Notice>, Arc<LifecycleStats>),
    ) -> Result<Self, DecisionLogError> {
        let open_err = |reason: String| DecisionLogError::Open {
            path: config.path.clone(),
            reason,
        };
        let (file, id) = open_file(&config.path).map_err(|e| open_err(e.to_string()))?;
        let (seq, last_hash, size, prev_file) = resume(&config.path, &file).map_err(open_err)?;
        let feed = match (digests, &config.digest) {
            (Some(sender), Some(d)) => Some(
                Feed::new(sender, d.interval, &config.path, &file, size, seq)
                    .map_err(|e| open_err(format!("cannot read it for its digest: {e}")))?,
            ),
            _ => None,
        };
        let mut writer = Self {
            space: SpaceWatch::new(&config.path, config.space),
            retention_asked: None,
            closing: false,
            unrecorded: Losses::default(),
            lost_seen: 0,
            health,
            file: Some((file, id)),
            size,
            opened_at: files::opened_at(&config.path, size),
            seq,
            last_hash,
            prev_file,
            pending: VecDeque::new(),
            checkpointed: (Instant::now(), 0),
            feed,
            config,
            notice: lifecycle.0,
            lifecycle_stats: lifecycle.1,
        };
        writer.publish_head();
        // The first look: a log that starts short of space says so at once.
        writer.watch_space();
        // The head found at start: lines cut off while keygate was stopped show against the
        // last checkpoint before the stop.
        writer.checkpoint(CheckpointAt::Start);
        writer.digest(Reason::Start);
        Ok(writer)
    }

    /// Asks the notary for a digest of the log as written now.
    fn digest(&mut self, reason: Reason) {
        if let Some(feed) = self.feed.as_mut() {
            feed.send(reason, (self.seq, &self.last_hash));
        }
    }

    /// Makes the head (last seq and hash written) visible to `DecisionLog::head`.
    fn publish_head(&self) {
        *self
            .health
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (self.seq, self.last_hash.clone());
    }

    /// Records the head in keygate's own log (shipped off the host in production), where
    /// `keygate audit verify --checkpoint SEQ:HASH` can check the decision log against it.
    /// At start and on the interval, only when lines were added since the last one; at
    /// shutdown always (the last word on the log's head).
    fn checkpoint(&mut self, at: CheckpointAt) {
        let unchanged = self.seq == self.checkpointed.1;
        if self.seq == 0 || (unchanged && !matches!(at, CheckpointAt::Shutdown)) {
            return;
        }
        tracing::info!(
            target: "keygate::decision_log",
            seq = self.seq,
            hash = %self.last_hash,
            file = %self.config.path.display(),
            at = at.as_str(),
            "decision log checkpoint"
        );
        self.checkpointed = (Instant::now(), self.seq);
    }

    fn run(mut self, receiver: &Receiver<Message>) {
        loop {
            let wait = self.config.retry_interval.min(TICK);
            let mut acks = Vec::new();
            let mut close = None;
            match receiver.recv_timeout(wait) {
                Ok(message) => {
                    self.accept(message, &mut acks, &mut close);
                    while close.is_none() && self.pending.len() < self.config.queue_capacity {
                        match receiver.try_recv() {
                            Ok(more) => self.accept(more, &mut acks, &mut close),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            }
            if let Some(ack) = close {
                self.finish();
                // Lines queued after the close: nobody is left to write them.
                let late = receiver
                    .try_iter()
                    .filter(|m| matches!(m, Message::Record(_)))
                    .count() as u64;
                if late > 0 {
                    self.health.lost.fetch_add(late, Ordering::Relaxed);
                    tracing::error!(
                        lost = late,
                        "decision lines offered after the log closed: lost"
                    );
                }
                for ack in acks {
                    let _ = ack.send(());
                }
                let _ = ack.send(());
                return;
            }
            self.watch_space();
            let wrote = self.write_pending();
            if self.checkpointed.0.elapsed() >= self.config.checkpoint_interval {
                self.checkpoint(CheckpointAt::Interval);
            }
            if self.feed.as_ref().is_some_and(Feed::due) {
                self.digest(Reason::Interval);
            }
            let flushing = !acks.is_empty();
            for ack in acks {
                let _ = ack.send(());
            }
            if wrote > 0 && !flushing {
                std::thread::sleep(LINGER);
            }
        }
    }

    /// The last write at shutdown: everything pending (tried once more after a failure, then
    /// counted lost), the shutdown checkpoint, and the shutdown digest (handed to the notary,
    /// which the writer then releases so it stops once it has written it).
    fn finish(&mut self) {
        self.closing = true;
        self.write_pending();
        if !self.pending.is_empty() {
            std::thread::sleep(self.config.retry_interval.min(TICK));
            self.write_pending();
        }
        if !self.pending.is_empty() {
            let lost = self
                .pending
                .drain(..)
                .filter(|e| match e {
                    Entry::Decision(_) => true,
                    Entry::Retention(_, ack) => {
                        let _ = ack.send(Err("the log is closing".into()));
                        false
                    }
                })
                .count() as u64;
            self.health.lose(LossReason::Unwritable, lost);
            tracing::error!(lost, path = %self.config.path.display(), "decision log cannot be written at shutdown: lines lost");
            self.pending.clear();
        } else {
            // Lines lost while the last ones were written: their record, if the file takes it.
            self.write_pending();
        }
        self.checkpoint(CheckpointAt::Shutdown);
        self.digest(Reason::Shutdown);
        self.feed = None;
    }

    fn accept(
        &mut self,
        message: Message,
        acks: &mut Vec<Sender<()>>,
        close: &mut Option<Sender<()>>,
    ) {
        match message {
            Message::Record(record) => {
                self.pending.push_back(Entry::Decision(record));
                if self.pending.len() > self.config.queue_capacity {
                    match self.pending.pop_front() {
                        Some(Entry::Retention(_, ack)) => {
                            let _ = ack.send(Err("the log cannot be written".into()));
                        }
                        _ => {
                            let lost = self.health.lose(LossReason::Unwritable, 1);
                            // Counted each; logged at 1, 2, 4, 8... and every 1000th, not per
                            // line.
                            if lost.is_power_of_two() || lost.is_multiple_of(1000) {
                                tracing::warn!(
                                    lost,
                                    "decision log unwritable for too long: line lost"
                                );
                            }
                        }
                    }
                }
            }
            Message::Retention(evidence, ack) => {
                self.pending.push_back(Entry::Retention(evidence, ack));
            }
            Message::Flush(ack) => acks.push(ack),
            Message::Close(ack) => *close = Some(ack),
        }
    }

    /// Write every pending line, rotating as needed; stop at the first failure. Returns the
    /// number of lines written.
    fn write_pending(&mut self) -> usize {
        let mut written = 0;
        self.take_losses();
        // Below `reserved_bytes` the log counts as full: nothing is written.
        // Below the reserve only retention lines are written (into the reserve): early
        // retention frees space only once its evidence is on disk.
        let held_back = self.held_back();
        let mut remaining = if held_back {
            self.evidence_first()
        } else {
            usize::MAX
        };
        // The record of lost lines goes before any further decision (not into the reserve).
        let mut losses = if held_back {
            0
        } else {
            self.unrecorded.spans().len()
        };
        if remaining == 0 || !self.ensure_file() {
            return written;
        }
        if self.rotation_due(0) {
            self.rotate();
        }
        while remaining > 0 && (losses > 0 || !self.pending.is_empty()) {
            let Sealed {
                text,
                count,
                first,
                last: (seq, hash),
            } = self.seal_batch(losses, remaining);
            remaining = remaining.saturating_sub(count);
            let Some(first) = first else {
                self.rotate();
                if self.file.is_none() {
                    return written;
                }
                continue;
            };
            match self.append(text.as_bytes()) {
                Ok(()) => {
                    // Written; a retention line must also be on disk before its files go.
                    let recorded = count.min(losses);
                    self.unrecorded.written(recorded);
                    losses -= recorded;
                    let count = count - recorded;
                    let synced = self.sync_evidence(count).map_err(|e| e.to_string());
                    if let Some(feed) = self.feed.as_mut() {
                        feed.appended(text.as_bytes(), (first.0, &first.1), seq);
                    }
                    let first_seq = first.0 + recorded as u64;
                    for (at, entry) in self.pending.drain(..count).enumerate() {
                        if let Entry::Retention(_, ack) = entry {
                            let _ = ack.send(synced.clone().map(|()| first_seq + at as u64));
                        }
                    }
                    self.seq = seq;
                    self.last_hash = hash;
                    self.prev_file = None;
                    self.publish_head();
                    self.health
                        .written
                        .fetch_add((count + recorded) as u64, Ordering::Relaxed);
                    self.set_writable(true, None);
                    written += count + recorded;
                    self.space.wrote(text.len() as u64);
                    // Looks again only when these bytes may have crossed a threshold.
                    self.watch_space();
                    if self.held_back() && remaining == usize::MAX {
                        return written;
                    }
                }
                Err(e) => {
                    self.set_writable(false, Some(&e));
                    self.write_failed(&e);
                    return written;
                }
            }
        }
        written
    }

    /// Moves the waiting retention lines ahead of the waiting decisions (a line's place in
    /// the chain is given when it is sealed); returns how many there are.
    fn evidence_first(&mut self) -> usize {
        let (evidence, decisions): (VecDeque<_>, VecDeque<_>) = self
            .pending
            .drain(..)
            .partition(|e| matches!(e, Entry::Retention(..)));
        let n = evidence.len();
        self.pending = evidence;
        self.pending.extend(decisions);
        n
    }

    /// Moves the losses counted since the last look into `unrecorded`, for a `lines_lost`
    /// line each (per reason) ahead of the next decision.
    fn take_losses(&mut self) {
        let lost = self.health.lost.load(Ordering::Acquire);
        if lost == self.lost_seen {
            return;
        }
        self.lost_seen = lost;
        let spans = self
            .health
            .losses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        for span in spans {
            self.unrecorded.merge(span);
        }
    }

    /// Seal as many lines as fit in the current file, at most `limit`: first the first
    /// `losses` records of lost lines, then pending lines.
    fn seal_batch(&self, losses: usize, limit: usize) -> Sealed {
        let mut batch = String::new();
        let (mut seq, mut hash) = (self.seq, self.last_hash.clone());
        let mut prev_file = self.prev_file.as_deref();
        let mut count = 0;
        let mut first = None;
        let now = SystemTime::now();
        let spans = self.unrecorded.spans().iter().take(losses).map(Err);
        for entry in spans.chain(self.pending.iter().map(Ok)).take(limit) {
            let at = Position {
                seq: seq + 1,
                prev_hash: &hash,
                prev_file,
            };
            let id = &self.config.instance_id;
            let body = match entry {
                Err(span) => lost::body(span, id, &at, now),
                Ok(Entry::Decision(record)) => line::body(record, id, &at),
                Ok(Entry::Retention(evidence, _)) => retention::body(evidence, id, &at),
            };
            let (sealed, new_hash) = chain::seal(&hash, &body);
            let grown = batch.len() as u64 + sealed.len() as u64 + 1;
            if self.size + batch.len() as u64 > 0 && self.rotation_due(grown) {
                break;
            }
            batch.push_str(&sealed);
            batch.push('\n');
            first.get_or_insert_with(|| (seq + 1, new_hash.clone()));
            (seq, hash, prev_file, count) = (seq + 1, new_hash, None, count + 1);
        }
        Sealed {
            text: batch,
            count,
            first,
            last: (seq, hash),
        }
    }
}
