//! The uploader's read position in the log's files, `(file, offset)`: it reads complete lines
//! the writer has published (never past the head, so a line the writer cuts back after a
//! failed write is never shipped), follows rotations (the open file keeps its inode across
//! the rename; the file after it is found by `seq`), and is saved after every acknowledged
//! upload so a restart resumes where the collector stopped.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::decision_log::chain;
use crate::policy::decision_log::files::rotations;

/// Most bytes read at once.
const READ: usize = 64 * 1024;
/// Longest line the cursor accepts before giving up on the file's framing.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One line read from the log.
#[derive(Debug, Clone)]
pub(super) struct Line {
    /// The exact bytes, without the newline.
    pub text: Vec<u8>,
    pub seq: u64,
    /// Where it ends (the offset after its newline) in its file.
    pub end: Position,
}

/// A place in the log: a file's name (in the log's directory) and a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Position {
    pub file: String,
    pub offset: u64,
    /// `seq` of the line that ends here (0: none yet).
    pub seq: u64,
}

/// The reader.
#[derive(Debug)]
pub(super) struct Cursor {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    name: String,
    read_at: u64,
    last_seq: u64,
    /// Lines skipped because their file was gone before they were read.
    pub skipped: u64,
}

impl Cursor {
    /// A cursor on the log at `path`, at `saved` (or the start of the oldest file).
    pub fn open(path: &Path, saved: Option<Position>) -> Self {
        let mut c = Self {
            path: path.to_owned(),
            file: None,
            name: String::new(),
            read_at: 0,
            last_seq: 0,
            skipped: 0,
        };
        let resumed = saved.as_ref().is_some_and(|p| c.resume_at(p));
        if !resumed {
            let from = saved.map_or(1, |p| p.seq + 1);
            c.last_seq = from.saturating_sub(1);
            c.seek_seq(from);
        }
        c
    }

    /// Reads complete lines with `seq <= head`, at most about `max_bytes` of them.
    pub fn read(&mut self, max_bytes: usize, head: u64) -> std::io::Result<Vec<Line>> {
        if self.last_seq > head {
            // The saved position is past the log's head: the log was replaced or rewound
            // since. Ship the log there is, from its start.
            tracing::warn!(
                saved = self.last_seq,
                head,
                "the decision-log upload position is past the log's head; shipping from the start"
            );
            self.file = None;
            self.last_seq = 0;
        }
        let mut lines = Vec::new();
        let mut taken = 0usize;
        // File switches in a row without a line read (a gap the files cannot fill).
        let mut switches = 0;
        while taken < max_bytes && self.last_seq < head && switches < 3 {
            if self.file.is_none() {
                switches += 1;
                self.seek_seq(self.last_seq + 1);
            }
            let Some((file, id)) = &self.file else {
                break;
            };
            // Renamed away before this read: what it holds now is all it will ever hold.
            let rotated = std::fs::metadata(&self.path)
                .map(|m| (m.dev(), m.ino()))
                .map_or(true, |now| now != *id);
            let got = read_lines(file, self.read_at, self.last_seq, head, max_bytes - taken)?;
            if got.is_empty() {
                if rotated && self.last_seq < head {
                    self.file = None;
                    continue;
                }
                break;
            }
            switches = 0;
            for (text, seq, len) in got {
                self.read_at += len;
                self.last_seq = seq;
                taken += text.len();
                lines.push(Line {
                    text,
                    seq,
                    end: Position {
                        file: self.name.clone(),
                        offset: self.read_at,
                        seq,
                    },
                });
            }
        }
        Ok(lines)
    }

    /// Continues at a saved position if its file still ends a line with that seq there.
    fn resume_at(&mut self, p: &Position) -> bool {
        let path = self.dir().join(&p.file);
        let Ok(file) = File::open(&path) else {
            return false;
        };
        let before = match p.offset {
            0 => p.seq == 0,
            at => line_before(&file, at).is_some_and(|seq| seq == p.seq),
        };
        if before {
            self.adopt(file, &p.file, p.offset);
            self.last_seq = p.seq;
        }
        before
    }

    /// Opens the file holding `seq` (or the first line after it), at that line.
    fn seek_seq(&mut self, seq: u64) {
        let mut candidates: Vec<PathBuf> = rotations(&self.path).into_iter().map(|r| r.1).collect();
        candidates.push(self.path.clone());
        let firsts: Vec<(PathBuf, Option<u64>)> = candidates
            .into_iter()
            .map(|p| {
                let first = File::open(&p).ok().and_then(|f| line_after(&f, 0));
                (p, first)
            })
            .collect();
        let chosen = firsts
            .iter()
            .rposition(|(_, f)| f.is_some_and(|f| f <= seq))
            .or_else(|| firsts.iter().position(|(_, f)| f.is_some()));
        let Some((path, first)) = chosen.and_then(|i| firsts.get(i)) else {
            // Nothing written yet: wait at the start of the live file.
            if let Ok(file) = File::open(&self.path) {
                let name = chain::file_name(&self.path.display().to_string());
                self.adopt(file, &name, 0);
            }
            return;
        };
        let Ok(file) = File::open(path) else {
            return;
        };
        let live = *path == self.path;
        let first = first.unwrap_or(seq);
        let (offset, found) = find(&file, seq.max(first));
        if !found && !live {
            // The line is not where it should be (files between were removed): go on with the
            // next file that has lines.
            let at = chosen.unwrap_or(0);
            let next = firsts
                .iter()
                .skip(at + 1)
                .find_map(|(p, f)| Some((p, (*f)?)));
            if let Some((next_path, next_first)) = next
                && let Ok(next_file) = File::open(next_path)
            {
                self.skip(seq, next_first);
                let name = chain::file_name(&next_path.display().to_string());
                self.adopt(next_file, &name, 0);
                return;
            }
        }
        self.skip(seq, first);
        let name = chain::file_name(&path.display().to_string());
        self.adopt(file, &name, offset);
    }

    /// Lines `seq..first` are gone: count them, and go on after them.
    fn skip(&mut self, seq: u64, first: u64) {
        if first > seq {
            self.skipped += first - seq;
            tracing::warn!(
                from = seq,
                to = first - 1,
                "decision-log lines gone before they were shipped"
            );
        }
        self.last_seq = seq.max(first) - 1;
    }

    fn adopt(&mut self, file: File, name: &str, offset: u64) {
        let id = file
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or_default();
        self.file = Some((file, id));
        self.name = name.to_owned();
        self.read_at = offset;
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        }
    }
}

/// Complete lines of `file` from `at` with `seq <= head`: (text, seq, bytes incl. newline).
/// A line whose `seq` cannot be read (a damaged line) is shipped as it is, numbered after the
/// line before it (`prev`): the collector's verifier will name it.
fn read_lines(
    file: &File,
    at: u64,
    mut prev: u64,
    head: u64,
    max: usize,
) -> std::io::Result<Vec<(Vec<u8>, u64, u64)>> {
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = at;
    let mut buf = vec![0u8; READ];
    let mut taken = 0usize;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            return Ok(out);
        };
        offset += n as u64;
        pending.extend_from_slice(chunk);
        // Each complete line is copied out once; the rest moves to the front once per read.
        let mut start = 0;
        while let Some(end) = pending
            .get(start..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
            .map(|at| start + at)
        {
            let text = pending.get(start..end).unwrap_or_default().to_vec();
            let seq = seq_of(&text).unwrap_or(prev + 1);
            if seq > head || taken >= max {
                return Ok(out);
            }
            prev = seq;
            taken += text.len();
            let len = text.len() as u64 + 1;
            out.push((text, seq, len));
            start = end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a decision-log line longer than 16 MiB",
            ));
        }
    }
}

/// The `seq` member of a line, found near its start (after `decision_id`); the hash is the
/// collector's verifier's business, not the uploader's.
fn seq_of(text: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b",\"seq\":";
    let head = text.get(..text.len().min(256))?;
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = text.get(at..)?;
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(digits.get(..len)?).ok()?.parse().ok()
}

/// `seq` of the line starting at `offset`.
fn line_after(file: &File, offset: u64) -> Option<u64> {
    let mut buf = vec![0u8; READ];
    let n = file.read_at(&mut buf, offset).ok()?;
    let text = buf.get(..n)?;
    let end = text.iter().position(|b| *b == b'\n')?;
    seq_of(text.get(..end)?)
}

/// `seq` of the line ending just before `offset` (which must follow a newline).
fn line_before(file: &File, offset: u64) -> Option<u64> {
    let start = offset.saturating_sub(READ as u64);
    let mut buf = vec![0u8; usize::try_from(offset - start).ok()?];
    file.read_exact_at(&mut buf, start).ok()?;
    let body = buf.strip_suffix(b"\n")?;
    let from = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    if from == 0 && start > 0 {
        return None;
    }
    seq_of(body.get(from..)?)
}

/// Offset of the first line with `seq` or more in `file` (reading it through), and whether
/// there is one (else: the end of the file).
fn find(file: &File, seq: u64) -> (u64, bool) {
    let mut offset = 0;
    loop {
        let lines = read_lines(file, offset, 0, u64::MAX, READ).unwrap_or_default();
        if lines.is_empty() {
            return (offset, false);
        }
        for (_, s, len) in lines {
            if s >= seq {
                return (offset, true);
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::decision_log::{DecisionLog, DecisionLogConfig, DecisionRecord};
    use std::time::Duration;

    fn record(n: u64) -> DecisionRecord {
        crate::policy::decision_log::line::allowed_for_test(n, serde_json::json!({"n": n}))
    }

    /// A log of `n` lines rotated every few lines.
    fn log(dir: &Path, n: u64) -> (PathBuf, DecisionLog) {
        let path = dir.join("d.log");
        let mut c = DecisionLogConfig::new(path.clone());
        c.rotate_bytes = Some(1500);
        c.lifecycle.compression = None;
        let log = DecisionLog::open(c).unwrap();
        for i in 1..=n {
            log.record(record(i)).unwrap();
            assert!(log.flush(Duration::from_secs(5)));
        }
        (path, log)
    }

    fn seqs(lines: &[Line]) -> Vec<u64> {
        lines.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn reads_across_rotations_up_to_the_head_and_resumes_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = log(dir.path(), 12);
        assert!(rotations(&path).len() >= 2);
        let mut c = Cursor::open(&path, None);
        let first = c.read(usize::MAX, 5).unwrap();
        assert_eq!(seqs(&first), [1, 2, 3, 4, 5], "never past the head");
        let rest = c.read(usize::MAX, 12).unwrap();
        assert_eq!(seqs(&rest), (6..=12).collect::<Vec<_>>());
        // A restart at a saved position goes on with the next line.
        let saved = first.last().unwrap().end.clone();
        let mut again = Cursor::open(&path, Some(saved));
        assert_eq!(
            seqs(&again.read(usize::MAX, 12).unwrap()),
            (6..=12).collect::<Vec<_>>()
        );
        // A position in a file renamed since (the live file rotated) is found again by seq.
        let live = rest.last().unwrap().end.clone();
        for i in 13..=20 {
            log.record(record(i)).unwrap();
        }
        assert!(log.flush(Duration::from_secs(5)));
        let stale = Position {
            file: "d.log".into(),
            offset: live.offset,
            seq: live.seq,
        };
        let mut moved = Cursor::open(&path, Some(stale));
        assert_eq!(
            seqs(&moved.read(usize::MAX, 20).unwrap()),
            (13..=20).collect::<Vec<_>>()
        );
        // The exact bytes of the file.
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        let mut fresh = Cursor::open(&path, None);
        let all = fresh.read(usize::MAX, 20).unwrap();
        assert_eq!(all.last().unwrap().text, last.as_bytes());
        assert!(log.close(Duration::from_secs(5)));
    }

    #[test]
    fn lines_whose_file_is_gone_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = log(dir.path(), 12);
        let oldest = rotations(&path).remove(0).1;
        let gone = std::fs::read_to_string(&oldest).unwrap().lines().count() as u64;
        std::fs::remove_file(&oldest).unwrap();
        let mut c = Cursor::open(&path, None);
        let got = c.read(usize::MAX, 12).unwrap();
        assert_eq!(got.first().unwrap().seq, gone + 1);
        assert_eq!(c.skipped, gone);
        assert!(log.close(Duration::from_secs(5)));
    }
}
