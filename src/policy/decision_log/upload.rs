//! Shipping the decision log to an OPA decision-log collector (`[decision_log.upload]`).
//!
//! The local file stays the source of truth: the uploader is its own thread (with its own
//! small runtime) that reads what the writer has written, by `(file, offset)`, into a bounded
//! buffer, and POSTs gzip'd JSON arrays of the exact lines. The writer never waits for it, and
//! a collector that is down, answers 500 or hangs delays nothing but the upload: nothing is
//! lost meanwhile, the uploader re-reads from the files (across rotations) once the collector
//! answers again, and its position survives restarts (`FILE.upload-state`). Uploads happen
//! at a random delay between `min_delay_seconds` and `max_delay_seconds` (OPA's schedule),
//! with exponential backoff after a failure; each cycle ships everything written so far. At
//! shutdown it gets a bounded chance to flush.

mod batch;
mod cursor;
mod post;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::batch::{Batcher, Chunk};
use self::cursor::{Cursor, Line, Position};
use self::post::Collector;
use super::Health;
use super::progress::UploadStats;
use super::settings::UploadSettings;

/// First wait after a failed upload; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff while `require_upload` refuses requests: recovery is noticed this soon.
const REQUIRED_BACKOFF: Duration = Duration::from_secs(5);
/// How long the uploader may keep flushing at shutdown.
pub(crate) const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// The running uploader.
#[derive(Debug)]
pub(crate) struct Uploader {
    /// Set to the shutdown deadline to make it flush and stop.
    stop: watch::Sender<Option<Instant>>,
    thread: std::thread::JoinHandle<()>,
}

impl Uploader {
    /// Checks the collector's URL and CA bundle: what can fail before the writer starts.
    pub fn prepare(settings: UploadSettings) -> Result<Prepared, String> {
        let collector = Collector::new(&settings)?;
        Ok(Prepared {
            settings,
            collector,
        })
    }

    /// Starts shipping the log at `path`, once the writer has resumed it (so its head is
    /// known).
    pub fn start(
        prepared: Prepared,
        path: PathBuf,
        health: Arc<Health>,
        stats: Arc<UploadStats>,
    ) -> Result<Self, String> {
        let Prepared {
            settings,
            collector,
        } = prepared;
        let state = state_path(&path);
        let saved = read_state(&state);
        if let Some(p) = &saved {
            stats.shipped_seq.store(p.seq, Ordering::Release);
        }
        let shipper = Shipper {
            cursor: Cursor::open(&path, saved),
            batcher: Batcher::new(settings.upload_size_limit),
            buffer: VecDeque::new(),
            buffered: 0,
            failures: 0,
            collector,
            settings,
            health,
            stats,
            state,
        };
        let (stop, stopped) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("decision-log-upload".into())
            .spawn(move || shipper.run(stopped))
            .map_err(|e| format!("cannot start the upload thread: {e}"))?;
        Ok(Self { stop, thread })
    }

    /// Asks for a last flush until `deadline` and waits for the thread until then.
    pub fn finish(self, deadline: Instant) -> bool {
        let _ = self.stop.send(Some(deadline));
        super::join_by(self.thread, deadline + Duration::from_millis(200))
    }
}

/// An uploader whose collector settings are checked, not yet started.
#[derive(Debug)]
pub(crate) struct Prepared {
    settings: UploadSettings,
    collector: Collector,
}

/// The uploader thread's state.
struct Shipper {
    settings: UploadSettings,
    collector: Collector,
    cursor: Cursor,
    batcher: Batcher,
    buffer: VecDeque<Line>,
    buffered: usize,
    failures: u32,
    health: Arc<Health>,
    stats: Arc<UploadStats>,
    state: PathBuf,
}

impl Shipper {
    fn run(mut self, stop: watch::Receiver<Option<Instant>>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => rt.block_on(self.serve(stop)),
            Err(e) => tracing::error!(error = %e, "decision-log upload cannot start its runtime"),
        }
    }

    async fn serve(&mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let mut ok = self.cycle(None).await;
        loop {
            let wait = self.wait(ok);
            let mut deadline = *stop.borrow();
            if deadline.is_none() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    changed = stop.changed() => {
                        // The log was dropped without `close`: flush briefly all the same.
                        deadline = match changed {
                            Ok(()) => *stop.borrow(),
                            Err(_) => Some(Instant::now() + FLUSH_AT_SHUTDOWN),
                        };
                    }
                }
            }
            ok = self.cycle(deadline).await;
            if deadline.is_some() {
                if !ok || !self.buffer.is_empty() {
                    tracing::warn!(
                        shipped_seq = self.stats.shipped_seq(),
                        head_seq = self.head(),
                        "decision log not fully shipped at shutdown; the rest is shipped after the next start"
                    );
                }
                return;
            }
        }
    }

    /// The pause before the next cycle: OPA's random delay, or the backoff after failures.
    fn wait(&self, ok: bool) -> Duration {
        let (min, max) = (self.settings.min_delay, self.settings.max_delay);
        if ok {
            return min + (max - min).mul_f64(jitter());
        }
        let cap = if self.settings.require_upload {
            max.min(REQUIRED_BACKOFF)
        } else {
            max
        };
        let doubled = FIRST_BACKOFF.saturating_mul(1 << self.failures.min(16).saturating_sub(1));
        doubled.min(cap).mul_f64(0.5 + jitter() / 2.0)
    }

    fn head(&self) -> u64 {
        self.health
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Ships everything written so far, chunk by chunk; `false` when an upload failed.
    async fn cycle(&mut self, deadline: Option<Instant>) -> bool {
        loop {
            if let Err(e) = self.fill() {
                tracing::error!(error = %e, "cannot read the decision log for upload");
                return false;
            }
            if self.buffer.is_empty() {
                return true;
            }
            let (count, gzip) = match self.batcher.next(&self.buffer) {
                Chunk::Body { count, gzip } => (count, gzip),
                Chunk::TooLarge => {
                    self.drop_front();
                    continue;
                }
            };
            let attempt = self.collector.post(gzip);
            let outcome = match deadline {
                None => attempt.await,
                Some(d) => {
                    match tokio::time::timeout(d.saturating_duration_since(Instant::now()), attempt)
                        .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => return false,
                    }
                }
            };
            match outcome {
                Ok(()) => self.acknowledged(count),
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
        }
    }

    /// Reads from the log until the buffer holds `buffer_size_limit` bytes or all there is.
    fn fill(&mut self) -> std::io::Result<()> {
        let head = self.head();
        let room = self
            .settings
            .buffer_size_limit
            .saturating_sub(self.buffered);
        if room == 0 {
            return Ok(());
        }
        let skipped = self.cursor.skipped;
        for line in self.cursor.read(room, head)? {
            self.buffered += line.text.len();
            self.buffer.push_back(line);
        }
        let lost = self.cursor.skipped - skipped;
        self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
        self.publish_buffer();
        Ok(())
    }

    fn acknowledged(&mut self, count: usize) {
        let mut last = None;
        for line in self.buffer.drain(..count.min(self.buffer.len())) {
            self.buffered -= line.text.len();
            last = Some(line.end);
        }
        self.stats
            .uploaded
            .fetch_add(count as u64, Ordering::Relaxed);
        if self.stats.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("decision-log collector reachable again");
        }
        self.failures = 0;
        if let Some(end) = last {
            self.settle(&end);
        }
        self.publish_buffer();
    }

    fn drop_front(&mut self) {
        if let Some(line) = self.buffer.pop_front() {
            self.buffered -= line.text.len();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                seq = line.seq,
                bytes = line.text.len(),
                limit = self.settings.upload_size_limit,
                "decision event larger than upload_size_limit_bytes gzip'd: not shipped (it stays in the local log)"
            );
            self.settle(&line.end);
        }
        self.publish_buffer();
    }

    fn failed(&mut self, e: &post::PostError) {
        self.failures = self.failures.saturating_add(1);
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        if !self.stats.failing.swap(true, Ordering::AcqRel) || self.failures.is_power_of_two() {
            tracing::warn!(error = %e, failures = self.failures, url = %self.settings.url, "decision-log upload failed; retrying with backoff (the local log keeps every line)");
        }
    }

    /// Everything up to `end` reached the collector (or was dropped): remember it.
    fn settle(&self, end: &Position) {
        self.stats.shipped_seq.store(end.seq, Ordering::Release);
        if let Err(e) = write_state(&self.state, end) {
            tracing::warn!(error = %e, "cannot save the decision-log upload position");
        }
    }

    fn publish_buffer(&self) {
        self.stats
            .buffer_bytes
            .store(self.buffered as u64, Ordering::Relaxed);
    }
}

/// A number in [0, 1) from the kernel's randomness (0.5 if there is none).
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    match crate::random::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// `FILE.upload-state`: where the collector's copy ends.
fn state_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".upload-state");
    PathBuf::from(name)
}

fn read_state(path: &Path) -> Option<Position> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(path: &Path, p: &Position) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let text = serde_json::to_string(p).map_err(std::io::Error::other)?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        // Mode 0600, as every file of the log.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, path)
}
