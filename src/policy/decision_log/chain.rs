//! The hash chain that makes decision logs tamper-evident, and its verifier.
//!
//! A line is `{...,"prev_hash":"<hex>","hash":"<hex>"}` where `hash` is
//! `sha256(prev_hash + "\n" + L)` and `L` is the exact line text with its `,"hash":"..."` member
//! removed. Editing a line breaks its hash; deleting or reordering lines breaks the `prev_hash`
//! link (and the `seq` counter). The first line of a rotated-to file chains to the last line of the
//! file before it and names that file in `prev_file`.
//!
//! The chain has no key, so on its own it cannot show that lines were cut off the end, or that
//! the tail was rewritten and sealed again. [`Checkpoint`]s close that gap: the writer reports
//! its head (`seq` and `hash`) outside the log (a `decision log checkpoint` line in keygate's
//! own log, the `keygate_decision_log_head_seq` metric), and the verifier checks that the log
//! still holds each checkpoint's line with that hash.

use std::path::Path;

use sha2::{Digest, Sha256};

/// `prev_hash` of the very first line of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_PREFIX: &str = ",\"hash\":\"";
const HASH_HEX_LEN: usize = 64;
/// `,"hash":"` + 64 hex + `"}`.
const HASH_SUFFIX_LEN: usize = HASH_PREFIX.len() + HASH_HEX_LEN + 2;

/// The hash of a line body (`body` ends with `}` and has no hash member).
pub fn line_hash(prev_hash: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    hex::encode(hasher.finalize())
}

/// Append the hash member to `body` (a JSON object text ending in `}`): the final line, no newline.
pub fn seal(prev_hash: &str, body: &str) -> (String, String) {
    let hash = line_hash(prev_hash, body);
    let open = body.strip_suffix('}').unwrap_or(body);
    (format!("{open}{HASH_PREFIX}{hash}\"}}"), hash)
}

/// What a sealed line says about its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The line's own hash.
    pub hash: String,
    /// The hash it claims to follow.
    pub prev_hash: String,
    /// The file it claims to follow, on the first line after a rotation.
    pub prev_file: Option<String>,
    /// Sequence number (1 for the first decision ever logged).
    pub seq: u64,
    /// On a retention line: the files it dropped.
    pub dropped: Vec<super::retention::Dropped>,
    /// On a lines-lost line: how many lines it records as lost.
    pub lost: Option<u64>,
}

/// Check one line on its own (its hash over its content) and read its link.
pub fn open_line(line: &str) -> Result<Link, String> {
    let split = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .filter(|at| line.is_char_boundary(*at))
        .ok_or("not a sealed decision-log line (too short)")?;
    let (head, suffix) = line.split_at(split);
    let hash = suffix
        .strip_prefix(HASH_PREFIX)
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|h| h.len() == HASH_HEX_LEN && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("not a sealed decision-log line (no trailing hash member)")?;
    let body = format!("{head}}}");
    let parsed: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not valid JSON: {e}"))?;
    let prev_hash = parsed
        .get("prev_hash")
        .and_then(serde_json::Value::as_str)
        .ok_or("no prev_hash member")?
        .to_owned();
    if line_hash(&prev_hash, &body) != hash {
        return Err("hash does not match the line's content (line edited)".into());
    }
    Ok(Link {
        hash: hash.to_owned(),
        prev_hash,
        prev_file: parsed
            .get("prev_file")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        seq: parsed
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or("no seq member")?,
        dropped: super::retention::dropped_in(&parsed).unwrap_or_default(),
        lost: super::lost::count_in(&parsed),
    })
}

/// A verification failure: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The file.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Break {
    /// `FILE:LINE: reason`, or `FILE: reason` for a problem with a whole file (a digest).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.reason),
            line => write!(f, "{}:{line}: {}", self.file, self.reason),
        }
    }
}

/// A line's place in the chain recorded outside the log: the log must hold the line with this
/// `seq`, and its hash must be this `hash`. Written `SEQ:HASH` on the command line; signed
/// digests record them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// Who recorded it, for the report: "a checkpoint", "digest digest-00000007-...json".
    pub recorded_by: String,
}

impl Checkpoint {
    /// A checkpoint given on the command line.
    pub fn new(seq: u64, hash: &str) -> Self {
        Self {
            seq,
            hash: hash.to_owned(),
            recorded_by: "a checkpoint".to_owned(),
        }
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("checkpoint {s:?}: expected SEQ:HASH (a line number and 64 hex digits)");
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        let seq = seq.parse::<u64>().map_err(|_| bad())?;
        if hash.len() != HASH_HEX_LEN
            || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad());
        }
        Ok(Checkpoint::new(seq, hash))
    }
}

/// Summary of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub lines: usize,
    /// `prev_hash` the first line starts from (GENESIS for a complete log).
    pub starts_from: String,
    /// `prev_file` named by the first line, if the first file continues an earlier one.
    pub continues: Option<String>,
    /// Hash of the last line.
    pub last_hash: String,
    /// `seq` of the last line (0 for an empty log).
    pub last_seq: u64,
    /// Checkpoints found in the log with the hash they recorded.
    pub checkpoints: usize,
    /// When the first file continues an earlier one: the seq of the retention line in these
    /// files that dropped that one (its name, last seq and final hash match), if any.
    pub dropped_by_retention: Option<u64>,
    /// Files the retention lines in these files record as dropped.
    pub dropped_files: usize,
    /// The lines-lost lines in these files: (seq, lines they record as lost).
    pub lines_lost: Vec<(u64, u64)>,
}

/// One verified file: its first line's seq (`None`: an empty file) and its number of lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub first_seq: Option<u64>,
    pub lines: usize,
}

/// Sees the bytes of each line as read (its newline included) once the line has been checked,
/// for checks over whole files (a digest's SHA-256 of a file's prefix).
pub trait Tap {
    fn line(&mut self, seq: u64, bytes: &[u8]);
}

/// No check over whole files.
impl Tap for () {
    fn line(&mut self, _: u64, _: &[u8]) {}
}

/// State carried from line to line (and file to file).
#[derive(Debug, Default)]
pub struct Verifier {
    last: Option<(Link, String)>,
    lines: usize,
    first: Option<Link>,
    /// Line number of the last line in its file.
    last_line: usize,
    /// Checkpoints not yet met, and how many were met.
    checkpoints: Vec<Checkpoint>,
    matched: usize,
    /// Files dropped by retention lines read so far, with the seq of their line.
    dropped: Vec<(u64, super::retention::Dropped)>,
    /// Lines-lost lines read so far: (seq, count).
    lost: Vec<(u64, u64)>,
}

impl Verifier {
    /// Verify each file in order (oldest first), continuing the chain across them.
    pub fn verify_files(paths: &[&Path]) -> Result<Verified, Break> {
        Self::verify_files_with(paths, Vec::new())
    }

    /// As `verify_files`, and every checkpoint's line must be in the files with its hash.
    pub fn verify_files_with(
        paths: &[&Path],
        checkpoints: Vec<Checkpoint>,
    ) -> Result<Verified, Break> {
        let mut verifier = Self {
            checkpoints,
            ..Self::default()
        };
        for path in paths {
            verifier.verify_path(path, &mut ())?;
        }
        verifier.finish()
    }

    /// A verifier that also requires every checkpoint's line to be in the files it reads.
    pub fn with_checkpoints(checkpoints: Vec<Checkpoint>) -> Self {
        Self {
            checkpoints,
            ..Self::default()
        }
    }

    /// Verify one file, plain or compressed, streamed line by line; `tap` sees each checked
    /// line's bytes.
    pub fn verify_path(&mut self, path: &Path, tap: &mut dyn Tap) -> Result<Span, Break> {
        let name = path.display().to_string();
        let cannot = |e: std::io::Error| brk(&name, 0, &format!("cannot read: {e}"));
        let reader = super::segments::reader(path).map_err(cannot)?;
        self.verify_reader(&name, reader, tap)
    }

    /// Verify the lines of one file (named `file` in reports).
    pub fn verify_text(&mut self, file: &str, text: &str) -> Result<(), Break> {
        self.verify_reader(file, text.as_bytes(), &mut ())
            .map(|_| ())
    }

    /// Verify the lines `reader` yields (one file, named `file` in reports), holding one line
    /// at a time.
    pub fn verify_reader(
        &mut self,
        file: &str,
        reader: impl std::io::BufRead,
        tap: &mut dyn Tap,
    ) -> Result<Span, Break> {
        let mut lines = super::segments::Lines::new(reader);
        let mut span = Span::default();
        loop {
            let number = span.lines + 1;
            let raw = match lines.next_line() {
                Ok(Some(raw)) => raw,
                Ok(None) => return Ok(span),
                Err(super::segments::LineError::Io(e)) => {
                    return Err(brk(file, 0, &format!("cannot read: {e}")));
                }
                Err(super::segments::LineError::TooLong(max)) => {
                    let why = format!("the line is longer than {max} bytes: not a decision log");
                    return Err(brk(file, number, &why));
                }
            };
            let Some(text) = raw.strip_suffix(b"\n") else {
                return Err(brk(
                    file,
                    number,
                    "the last line is incomplete (no newline)",
                ));
            };
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let line = std::str::from_utf8(text)
                .map_err(|e| brk(file, number, &format!("not valid UTF-8: {e}")))?;
            let link = open_line(line).map_err(|reason| brk(file, number, &reason))?;
            self.follow(file, number, &link)?;
            self.check_point(file, number, &link)?;
            tap.line(link.seq, raw);
            self.lines += 1;
            self.last_line = number;
            span.lines = number;
            span.first_seq.get_or_insert(link.seq);
            if self.first.is_none() {
                self.first = Some(link.clone());
            }
            let seq = link.seq;
            self.lost.extend(link.lost.map(|n| (seq, n)));
            self.dropped
                .extend(link.dropped.iter().map(|d| (seq, d.clone())));
            self.last = Some((link, file.to_owned()));
        }
    }

    /// A checkpoint at this line's seq must carry this line's hash.
    fn check_point(&mut self, file: &str, number: usize, link: &Link) -> Result<(), Break> {
        let before = self.checkpoints.len();
        let mut wrong = None;
        self.checkpoints.retain(|c| {
            if c.seq != link.seq {
                return true;
            }
            if c.hash != link.hash && wrong.is_none() {
                wrong = Some(c.clone());
            }
            false
        });
        if let Some(c) = wrong {
            let why = format!(
                "seq {} has hash {}, but {} recorded {}: the log was rewritten from here on",
                link.seq, link.hash, c.recorded_by, c.hash
            );
            return Err(brk(file, number, &why));
        }
        self.matched += before - self.checkpoints.len();
        Ok(())
    }

    fn follow(&self, file: &str, number: usize, link: &Link) -> Result<(), Break> {
        let Some((last, last_file)) = &self.last else {
            return Ok(());
        };
        if link.prev_hash != last.hash {
            let why = format!(
                "prev_hash does not match the hash of the line before (seq {} follows seq {}): \
                 a line was deleted, inserted or moved",
                link.seq, last.seq
            );
            return Err(brk(file, number, &why));
        }
        if link.seq != last.seq.saturating_add(1) {
            let why = format!("seq {} does not follow seq {}", link.seq, last.seq);
            return Err(brk(file, number, &why));
        }
        if last_file != file {
            let expected = super::segments::chain_name(last_file);
            if link.prev_file.as_deref() != Some(expected.as_str()) {
                let why = format!(
                    "first line of a rotated file names prev_file {:?}, expected {expected:?}",
                    link.prev_file
                );
                return Err(brk(file, number, &why));
            }
        }
        Ok(())
    }

    /// The summary, once every file has been read.
    pub fn finish(self) -> Result<Verified, Break> {
        let (last_file, last_seq) = self
            .last
            .as_ref()
            .map_or((String::new(), 0), |(l, f)| (f.clone(), l.seq));
        let first_seq = self.first.as_ref().map_or(0, |f| f.seq);
        if let Some(c) = self.checkpoints.iter().min_by_key(|c| c.seq) {
            let why = if c.seq > last_seq {
                format!(
                    "{} recorded seq {}, but the log ends at seq {last_seq}: lines were cut off \
                     the end",
                    c.recorded_by, c.seq
                )
            } else {
                format!(
                    "{} recorded seq {}, but the files start at seq {first_seq}: give the older \
                     files too",
                    c.recorded_by, c.seq
                )
            };
            return Err(brk(&last_file, self.last_line, &why));
        }
        let dropped_files = self.dropped.len();
        match (self.first, self.last) {
            (Some(first), Some((last, _))) => Ok(Verified {
                lines: self.lines,
                dropped_by_retention: self
                    .dropped
                    .iter()
                    .find(|(_, d)| {
                        first.prev_file.as_deref() == Some(d.file.as_str())
                            && d.last_hash == first.prev_hash
                            && d.last_seq.saturating_add(1) == first.seq
                    })
                    .map(|(seq, _)| *seq),
                dropped_files,
                lines_lost: self.lost,
                starts_from: first.prev_hash,
                continues: first.prev_file,
                last_hash: last.hash,
                last_seq,
                checkpoints: self.matched,
            }),
            _ => Ok(Verified {
                lines: 0,
                starts_from: GENESIS.to_owned(),
                continues: None,
                last_hash: GENESIS.to_owned(),
                last_seq: 0,
                checkpoints: 0,
                dropped_by_retention: None,
                dropped_files,
                lines_lost: self.lost,
            }),
        }
    }
}

fn brk(file: &str, line: usize, reason: &str) -> Break {
    Break {
        file: file.to_owned(),
        line,
        reason: reason.to_owned(),
    }
}

/// The last path component, as rotation records it in `prev_file`.
pub fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned())
}

#[cfg(test)]
#[path = "chain_stream_tests.rs"]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let body = format!("{{\"seq\":{seq},\"x\":\"v{seq}\",\"prev_hash\":\"{prev}\"}}");
                let (line, hash) = seal(&prev, &body);
                prev = hash;
                line
            })
            .collect()
    }

    fn verify(lines: &[String]) -> Result<Verified, Break> {
        let mut v = Verifier::default();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        v.verify_text("log", &text)?;
        v.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let ok = verify(&chain(5)).unwrap();
        assert_eq!((ok.lines, ok.starts_from.as_str()), (5, GENESIS));
    }

    #[test]
    fn edited_line_is_caught() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("\"v3\"", "\"v9\"");
        assert_eq!(verify(&lines).unwrap_err().line, 3);
    }

    #[test]
    fn deleted_line_is_caught() {
        let mut lines = chain(5);
        lines.remove(2);
        assert_eq!(verify(&lines).unwrap_err().line, 3);
    }

    #[test]
    fn reordered_lines_are_caught() {
        let mut lines = chain(5);
        lines.swap(1, 3);
        assert_eq!(verify(&lines).unwrap_err().line, 2);
    }

    #[test]
    fn truncated_line_is_caught() {
        let mut v = Verifier::default();
        let lines = chain(2);
        let text = format!("{}\n{}", lines[0], &lines[1][..20]);
        assert_eq!(v.verify_text("log", &text).unwrap_err().line, 2);
    }
}
