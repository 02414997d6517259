//! The writer's live file: when to rotate and the rotation itself, appending, syncing a
//! retention line before its files go, reopening a file that went away, and the writable
//! state with its log lines.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::chain;
use super::super::digest::Reason;
use super::super::files::open_file;
use super::super::segments::next_rotation;
use super::{Entry, Writer};

impl Writer {
    pub(super) fn rotation_due(&self, adding: u64) -> bool {
        if self.size == 0 && adding == 0 {
            return false;
        }
        let by_size = self
            .config
            .rotate_bytes
            .is_some_and(|limit| self.size + adding > limit);
        let by_time = self
            .config
            .rotate_interval
            .is_some_and(|every| self.size > 0 && self.opened_at.elapsed() >= every);
        by_size || by_time
    }

    /// Rename the current file to `FILE.<n>` and start a new one chained to it.
    pub(super) fn rotate(&mut self) {
        let target = next_rotation(&self.config.path);
        self.file = None;
        if let Err(e) = std::fs::rename(&self.config.path, &target) {
            self.set_writable(false, Some(&e));
            return;
        }
        self.prev_file = Some(chain::file_name(&target.display().to_string()));
        self.size = 0;
        self.opened_at = Instant::now();
        tracing::info!(rotated_to = %target.display(), "decision log rotated");
        if let Some(feed) = self.feed.as_mut() {
            feed.rotated(&target);
        }
        self.ensure_file();
        self.digest(Reason::Rotation);
        self.lifecycle_stats
            .rotations
            .fetch_add(1, Ordering::Relaxed);
        self.notice.rotated();
    }

    /// A batch holding a retention line reaches the disk before its files may be removed.
    pub(super) fn sync_evidence(&mut self, count: usize) -> std::io::Result<()> {
        let evidence = self
            .pending
            .iter()
            .take(count)
            .any(|e| matches!(e, Entry::Retention(..)));
        match self.file.as_ref() {
            Some((file, _)) if evidence => file.sync_data(),
            _ => Ok(()),
        }
    }

    /// Make sure `file` is open and still is the file at `path` (it may have been removed).
    pub(super) fn ensure_file(&mut self) -> bool {
        let on_disk = std::fs::metadata(&self.config.path).map(|m| (m.dev(), m.ino()));
        if let Some((_, id)) = &self.file
            && on_disk.as_ref().ok() == Some(id)
        {
            return true;
        }
        if self.file.take().is_some() {
            tracing::warn!(path = %self.config.path.display(), "decision log file was moved or removed; reopening");
        }
        match open_file(&self.config.path) {
            Ok((file, id)) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                if let Some(feed) = self.feed.as_mut() {
                    feed.reopened(&file, self.size, self.seq);
                }
                self.file = Some((file, id));
                // Opening proves little (a full disk opens fine): with lines waiting, the log
                // is writable again only once they are written.
                if self.pending.is_empty() {
                    self.set_writable(true, None);
                }
                true
            }
            Err(e) => {
                self.set_writable(false, Some(&e));
                false
            }
        }
    }

    pub(super) fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some((file, _)) = self.file.as_mut() else {
            return Err(std::io::Error::other("decision log file is not open"));
        };
        match file.write_all(bytes).and_then(|()| file.flush()) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Never leave half a line behind: cut back to the last complete line.
                let _ = file.set_len(self.size);
                self.file = None;
                Err(e)
            }
        }
    }

    pub(super) fn set_writable(&self, writable: bool, error: Option<&std::io::Error>) {
        if !writable {
            self.health.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        let was = self.health.writable.swap(writable, Ordering::AcqRel);
        match (was, writable, error) {
            (true, false, Some(e)) => {
                tracing::error!(path = %self.config.path.display(), error = %e, "decision log cannot be written");
            }
            (false, true, _) => {
                tracing::info!(path = %self.config.path.display(), "decision log writable again");
            }
            _ => {}
        }
    }
}
