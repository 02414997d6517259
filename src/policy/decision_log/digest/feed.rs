//! The writer's side of the digests: what the next digest says about the files. The writer
//! thread hashes every batch it appends into the live file's running SHA-256 (so a digest
//! covers the bytes the writer wrote, not whatever is on disk later), moves a rotated file to
//! the finished list, and hands a [`Job`] to the notary thread at start, every interval, at
//! rotation and at shutdown. The writer never waits for the notary except at shutdown.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{FileEntry, Reason};
use crate::policy::decision_log::chain;

/// What the notary turns into one digest.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub reason: Reason,
    pub at: SystemTime,
    /// The log's head: last seq and hash written.
    pub head: (u64, String),
    /// The first line added since the previous job.
    pub first_added: Option<(u64, String)>,
    /// Files changed since the previous job.
    pub files: Vec<FileEntry>,
}

/// The live file as the writer wrote it.
#[derive(Debug, Clone)]
struct Live {
    first_seq: Option<u64>,
    last_seq: u64,
    bytes: u64,
    sha: Sha256,
}

impl Live {
    fn empty() -> Self {
        Self {
            first_seq: None,
            last_seq: 0,
            bytes: 0,
            sha: Sha256::new(),
        }
    }

    /// The live file as it is on disk (its first `size` bytes), read once at start or after
    /// the file was replaced. Reads at offsets: the writer's file position is not moved.
    fn read(file: &File, size: u64, last_seq: u64) -> std::io::Result<Self> {
        use std::os::unix::fs::FileExt;
        let mut live = Self::empty();
        let mut buf = vec![0u8; 64 * 1024];
        let mut first_line = Vec::new();
        while live.bytes < size {
            let want = usize::try_from(size - live.bytes).unwrap_or(buf.len());
            let room = buf.get_mut(..want.min(64 * 1024)).unwrap_or_default();
            let n = file.read_at(room, live.bytes)?;
            let Some(chunk) = room.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            if live.first_seq.is_none() {
                match chunk.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        first_line.extend_from_slice(chunk.get(..end).unwrap_or_default());
                        let text = String::from_utf8_lossy(&first_line);
                        live.first_seq = chain::open_line(&text).ok().map(|l| l.seq);
                        live.first_seq.get_or_insert(0);
                    }
                    None => first_line.extend_from_slice(chunk),
                }
            }
            live.sha.update(chunk);
            live.bytes += n as u64;
        }
        live.last_seq = last_seq;
        Ok(live)
    }

    fn entry(&self, name: &str, complete: bool) -> Option<FileEntry> {
        Some(FileEntry {
            name: name.to_owned(),
            first_seq: self.first_seq?,
            last_seq: self.last_seq,
            bytes: self.bytes,
            sha256: hex::encode(self.sha.clone().finalize()),
            complete,
        })
    }
}

/// The writer's digest state.
#[derive(Debug)]
pub(crate) struct Feed {
    sender: SyncSender<Job>,
    interval: Duration,
    live_name: String,
    live: Live,
    finished: Vec<FileEntry>,
    first_added: Option<(u64, String)>,
    last_job: Instant,
}

impl Feed {
    /// The feed of a log whose live file `file` (at `path`) holds `size` bytes ending at
    /// line `last_seq`.
    pub fn new(
        sender: SyncSender<Job>,
        interval: Duration,
        path: &Path,
        file: &File,
        size: u64,
        last_seq: u64,
    ) -> std::io::Result<Self> {
        Ok(Self {
            sender,
            interval,
            live_name: chain::file_name(&path.display().to_string()),
            live: Live::read(file, size, last_seq)?,
            finished: Vec::new(),
            first_added: None,
            last_job: Instant::now(),
        })
    }

    /// `bytes` (lines `first` to `last_seq`) were appended to the live file.
    pub fn appended(&mut self, bytes: &[u8], first: (u64, &str), last_seq: u64) {
        self.live.sha.update(bytes);
        self.live.bytes += bytes.len() as u64;
        self.live.first_seq.get_or_insert(first.0);
        self.live.last_seq = last_seq;
        if self.first_added.is_none() {
            self.first_added = Some((first.0, first.1.to_owned()));
        }
    }

    /// The live file was renamed to `rotated` (a path); a new, empty live file follows.
    pub fn rotated(&mut self, rotated: &Path) {
        let name = chain::file_name(&rotated.display().to_string());
        let done = std::mem::replace(&mut self.live, Live::empty());
        self.finished.extend(done.entry(&name, true));
    }

    /// The live file was replaced under the writer (moved or removed): start over from the
    /// file now at the path. What the old file held is in earlier digests.
    pub fn reopened(&mut self, file: &File, size: u64, last_seq: u64) {
        self.live = Live::read(file, size, last_seq).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the reopened decision log for its digest");
            Live::empty()
        });
    }

    /// Whether the interval since the last digest has passed.
    pub fn due(&self) -> bool {
        self.last_job.elapsed() >= self.interval
    }

    /// Hands a digest of the log at `head` to the notary. Only `Shutdown` waits for room;
    /// otherwise a busy notary (a slow HSM) means this digest is folded into the next one.
    pub fn send(&mut self, reason: Reason, head: (u64, &str)) {
        let mut files = self.finished.clone();
        files.extend(self.live.entry(&self.live_name, false));
        let job = Job {
            reason,
            at: SystemTime::now(),
            head: (head.0, head.1.to_owned()),
            first_added: self.first_added.clone(),
            files,
        };
        self.last_job = Instant::now();
        let sent = match reason {
            Reason::Shutdown => self.sender.send(job).is_ok(),
            _ => match self.sender.try_send(job) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        reason = ?reason,
                        "the digest thread is busy: this digest is folded into the next"
                    );
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
        };
        if sent {
            self.finished.clear();
            self.first_added = None;
        }
    }
}
