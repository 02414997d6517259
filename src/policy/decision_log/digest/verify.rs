//! `keygate audit verify --digests DIR --public-key PEM`: the decision log's files, its hash
//! chain and its signed digests checked together, reporting the first problem by file and
//! line (or by digest):
//!
//! 1. every digest is signed by one of the given keys (else: signed by another key, or
//!    edited after signing), and the digests form one chain: consecutive numbers, each naming
//!    the previous one's signature, each interval starting where the previous one ended (else:
//!    a digest is missing);
//! 2. the files' hash chain holds, and every digest's head (`last_seq`, `last_hash`) and first
//!    line added are in it with those hashes (else: a line edited, deleted, or a tail cut off
//!    and sealed again);
//! 3. every file a digest lists has, over its first `bytes` bytes, the SHA-256 it recorded;
//! 4. no line follows a shutdown digest without a later digest, and the newest digest is no
//!    older than its interval allows (else: the digests after it are missing).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{Digest, Reason, unb64};
use crate::policy::decision_log::chain::{self, Break, Checkpoint, Span, Verified, Verifier};
use crate::policy::decision_log::segments;
use crate::signing::PublicKey;

/// How late the newest digest may be beyond its interval before it counts as missing.
const GRACE: Duration = Duration::from_secs(60);

/// One digest as read from its file.
#[derive(Debug, Clone)]
struct Loaded {
    path: PathBuf,
    name: String,
    digest: Digest,
    signature: String,
}

/// What the digests showed, beside the chain's own summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestReport {
    /// Digests verified.
    pub digests: usize,
    /// Number of the first digest, and whether it continues an earlier (not given) one.
    pub first: Option<(u64, bool)>,
    /// The newest digest: its file name, reason, end and head seq.
    pub newest: Option<(String, Reason, String, u64)>,
    /// Lines after the newest digest's head (written since it).
    pub uncovered: u64,
    /// Fingerprints of the keys that signed them.
    pub keys: Vec<String>,
}

/// Verifies `files` (oldest first) with `checkpoints`, against the digests in `dir` signed by
/// one of `keys`; digests may be at most their interval (plus a minute) older than `now`.
pub fn verify(
    files: &[&Path],
    checkpoints: Vec<Checkpoint>,
    dir: &Path,
    keys: &[PublicKey],
    now: SystemTime,
) -> Result<(Verified, DigestReport), Break> {
    let digests = load(dir, keys)?;
    check_chain(&digests)?;
    let first_seq = match files.first() {
        Some(p) => first_seq(p)?,
        None => 0,
    };
    let mut all = checkpoints;
    for d in &digests {
        all.extend(checkpoints_of(d).filter(|c| c.seq >= first_seq));
    }
    let mut verifier = Verifier::with_checkpoints(all);
    // Each file's recorded prefixes are hashed as its lines stream past the chain check.
    let mut spans: Vec<(&Path, Span)> = Vec::with_capacity(files.len());
    let mut prefixes = Vec::with_capacity(files.len());
    for path in files {
        let taken: Vec<Option<u64>> = spans.iter().map(|(_, s)| s.first_seq).collect();
        let mut tap = Prefixes::new(path, &digests, taken);
        let span = verifier.verify_path(path, &mut tap)?;
        prefixes.push(tap.finish());
        spans.push((path, span));
    }
    let verified = verifier.finish()?;
    check_files(&spans, &prefixes, &digests)?;
    let report = coverage(&spans, &digests, &verified, now)?;
    Ok((verified, report))
}

/// Reads, parses and checks the signature of every digest in `dir`, in digest order.
fn load(dir: &Path, keys: &[PublicKey]) -> Result<Vec<Loaded>, Break> {
    let listed = super::list(dir).map_err(|e| whole(dir, &format!("cannot read: {e}")))?;
    let mut loaded = Vec::with_capacity(listed.len());
    for (seq, path) in listed {
        let bad = |why: &str| whole(&path, why);
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&format!("cannot read: {e}")))?;
        let (digest, body, signature) = super::open(&text).map_err(|e| bad(&e))?;
        if digest.digest_seq != seq {
            return Err(bad(&format!(
                "says it is digest {} but is named as digest {seq}",
                digest.digest_seq
            )));
        }
        let Some(key) = keys
            .iter()
            .find(|k| k.fingerprint() == digest.key_fingerprint)
        else {
            let given: Vec<String> = keys.iter().map(PublicKey::fingerprint).collect();
            return Err(bad(&format!(
                "signed by another key ({}), not by the given key(s) {}",
                digest.key_fingerprint,
                given.join(", ")
            )));
        };
        let signed = unb64(&signature).is_some_and(|s| key.verify(body.as_bytes(), &s));
        if !signed {
            return Err(bad(&format!(
                "its signature does not verify with key {}: the digest was changed after it was \
                 signed (or signed by another key)",
                digest.key_fingerprint
            )));
        }
        let name = chain::file_name(&path.display().to_string());
        loaded.push(Loaded {
            path,
            name,
            digest,
            signature,
        });
    }
    if loaded.is_empty() {
        return Err(whole(dir, "holds no digest (digest-*.json)"));
    }
    Ok(loaded)
}

/// Consecutive numbers, each naming the previous signature, intervals end to end.
fn check_chain(digests: &[Loaded]) -> Result<(), Break> {
    for pair in digests.windows(2) {
        let [prev, next] = pair else { continue };
        let (p, n) = (&prev.digest, &next.digest);
        let why = if n.digest_seq != p.digest_seq + 1 {
            format!(
                "follows digest {} ({}): digest {} is missing",
                p.digest_seq,
                prev.name,
                p.digest_seq + 1
            )
        } else if n.previous_signature.as_deref() != Some(prev.signature.as_str())
            || n.previous_digest.as_deref() != Some(prev.name.as_str())
        {
            format!(
                "does not chain to {} (previous_digest {:?}, and its previous_signature is not \
                 that digest's signature): a digest was removed or replaced",
                prev.name, n.previous_digest
            )
        } else if n.start != p.end {
            format!(
                "its interval starts at {} but {} ended at {}: a digest is missing",
                n.start, prev.name, p.end
            )
        } else {
            continue;
        };
        return Err(whole(&next.path, &why));
    }
    Ok(())
}

/// A digest's head and first line added, as checkpoints of the chain.
fn checkpoints_of(d: &Loaded) -> impl Iterator<Item = Checkpoint> + '_ {
    let by = format!("digest {}", d.name);
    let first = d
        .digest
        .first_seq
        .zip(d.digest.first_hash.clone())
        .map(|(seq, hash)| Checkpoint {
            seq,
            hash,
            recorded_by: by.clone(),
        });
    let head = (d.digest.last_seq > 0).then(|| Checkpoint {
        seq: d.digest.last_seq,
        hash: d.digest.last_hash.clone(),
        recorded_by: by,
    });
    first.into_iter().chain(head)
}

/// The seq of a file's first line (0 when it has none that opens), read without the rest.
fn first_seq(path: &Path) -> Result<u64, Break> {
    let reader = segments::reader(path).map_err(|e| whole(path, &format!("cannot read: {e}")))?;
    let line = match segments::Lines::new(reader).next_line() {
        Ok(line) => line.and_then(|l| std::str::from_utf8(l).ok().map(str::to_owned)),
        Err(segments::LineError::Io(e)) => return Err(whole(path, &format!("cannot read: {e}"))),
        Err(segments::LineError::TooLong(_)) => None,
    };
    Ok(line
        .and_then(|l| chain::open_line(l.trim_end_matches(['\n', '\r'])).ok())
        .map_or(0, |l| l.seq))
}

/// A file's first seq and the seq after its last line (`(0, 0)` for an empty file).
fn range(span: &Span) -> (u64, u64) {
    let first = span.first_seq.unwrap_or(0);
    (first, first + span.lines as u64)
}

/// Every file entry of every digest against the given file it names (found by first seq).
fn check_files(
    spans: &[(&Path, Span)],
    prefixes: &[Result<(), Break>],
    digests: &[Loaded],
) -> Result<(), Break> {
    let given_first = spans.first().map_or(0, |(_, s)| range(s).0);
    for d in digests {
        for entry in &d.digest.files {
            if spans.iter().any(|(_, s)| range(s).0 == entry.first_seq)
                || entry.last_seq < given_first
            {
                continue; // found, or an older file not given
            }
            let inside = spans.iter().find(|(_, s)| {
                let (a, b) = range(s);
                (a..b).contains(&entry.first_seq) || (a..b).contains(&entry.last_seq)
            });
            let why = format!(
                "lists {} (seq {}..{}), but no file given starts at seq {}",
                entry.name, entry.first_seq, entry.last_seq, entry.first_seq
            );
            return Err(match inside {
                Some((path, s)) => brk(
                    path,
                    1,
                    &format!(
                        "this file starts at seq {}, but digest {} recorded {} starting at seq \
                         {}: its first lines were removed",
                        range(s).0,
                        d.name,
                        entry.name,
                        entry.first_seq
                    ),
                ),
                None => whole(&d.path, &why),
            });
        }
    }
    prefixes.iter().cloned().collect()
}

/// The SHA-256 of each recorded prefix of one file, hashed in one pass as its lines are read:
/// the entries of every digest that name the file (by its first seq, unless an earlier file
/// given starts at that seq too), shortest first.
struct Prefixes<'a> {
    path: &'a Path,
    digests: &'a [Loaded],
    /// First seqs of the files before this one.
    taken: Vec<Option<u64>>,
    /// `None` until the first line: then this file's entries, sorted by length.
    entries: Option<Vec<(u64, &'a str, &'a Loaded)>>,
    next: usize,
    sha: Sha256,
    /// Bytes hashed, and newlines among them.
    done: u64,
    newlines: usize,
    failed: Option<Break>,
}

impl<'a> Prefixes<'a> {
    fn new(path: &'a Path, digests: &'a [Loaded], taken: Vec<Option<u64>>) -> Self {
        Self {
            path,
            digests,
            taken,
            entries: None,
            next: 0,
            sha: Sha256::new(),
            done: 0,
            newlines: 0,
            failed: None,
        }
    }

    fn begin(&mut self, first_seq: u64) -> Vec<(u64, &'a str, &'a Loaded)> {
        let earlier = self.taken.iter().any(|t| t.unwrap_or(0) == first_seq);
        let mut entries: Vec<(u64, &'a str, &'a Loaded)> = self
            .digests
            .iter()
            .flat_map(|d| d.digest.files.iter().map(move |e| (e, d)))
            .filter(|(e, _)| !earlier && e.first_seq == first_seq)
            .map(|(e, d)| (e.bytes, e.sha256.as_str(), d))
            .collect();
        entries.sort_by_key(|e| e.0);
        entries
    }

    /// Checks the entries that end where the bytes hashed so far end.
    fn check_reached(&mut self) {
        let Some(entries) = &self.entries else { return };
        while let Some((len, expected, d)) = entries.get(self.next) {
            if *len != self.done || self.failed.is_some() {
                return;
            }
            self.next += 1;
            if hex::encode(self.sha.clone().finalize()) != *expected {
                let lines = self.newlines;
                self.failed = Some(brk(
                    self.path,
                    lines,
                    &format!(
                        "its first {len} bytes (lines 1-{lines}) do not have the SHA-256 digest \
                         {} recorded: the file was changed after that digest",
                        d.name
                    ),
                ));
            }
        }
    }

    /// The first problem with this file's prefixes, once all of it was read.
    fn finish(mut self) -> Result<(), Break> {
        if self.entries.is_none() {
            self.entries = Some(self.begin(0)); // an empty file
        }
        self.check_reached();
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        match self.entries.as_ref().and_then(|e| e.get(self.next)) {
            Some((len, _, d)) => Err(brk(
                self.path,
                self.newlines,
                &format!(
                    "digest {} recorded {len} bytes of this file, but it has {}: it was cut",
                    d.name, self.done
                ),
            )),
            None => Ok(()),
        }
    }
}

impl chain::Tap for Prefixes<'_> {
    fn line(&mut self, seq: u64, mut bytes: &[u8]) {
        if self.entries.is_none() {
            self.entries = Some(self.begin(seq));
        }
        loop {
            self.check_reached();
            let pending = self.entries.as_ref().and_then(|e| e.get(self.next));
            let Some((len, _, _)) = pending.filter(|_| self.failed.is_none()) else {
                return; // nothing more to check in this file: no need to hash on
            };
            let want = usize::try_from(len.saturating_sub(self.done)).unwrap_or(usize::MAX);
            if bytes.is_empty() {
                return;
            }
            let (now, rest) = bytes.split_at(want.min(bytes.len()));
            self.sha.update(now);
            self.done += now.len() as u64;
            self.newlines += now.iter().filter(|b| **b == b'\n').count();
            bytes = rest;
        }
    }
}

/// Lines after the newest digest, and whether digests are missing at the end.
fn coverage(
    spans: &[(&Path, Span)],
    digests: &[Loaded],
    verified: &Verified,
    now: SystemTime,
) -> Result<DigestReport, Break> {
    let (Some(first), Some(newest)) = (digests.first(), digests.last()) else {
        return Err(Break {
            file: String::new(),
            line: 0,
            reason: "no digest".into(),
        });
    };
    let d = &newest.digest;
    let uncovered = verified.last_seq.saturating_sub(d.last_seq);
    if uncovered > 0 && d.reason == Reason::Shutdown {
        let (path, line) = locate(spans, d.last_seq + 1);
        return Err(brk(
            &path,
            line,
            &format!(
                "seq {}..{} follow the shutdown digest {} with no digest after them: a digest is \
                 missing (keygate writes one at start and at every stop)",
                d.last_seq + 1,
                verified.last_seq,
                newest.name
            ),
        ));
    }
    let ended = crate::policy::parse_rfc3339(&d.end);
    let allowed = Duration::from_secs(d.interval_secs) + GRACE;
    let late = ended.and_then(|t| now.duration_since(t).ok());
    if d.reason != Reason::Shutdown && late.is_some_and(|l| l > allowed) {
        return Err(whole(
            &newest.path,
            &format!(
                "is the newest digest, ended at {}, more than {} s ago; keygate writes one at \
                 least every {} s, even when idle: the digests after it are missing (or keygate \
                 stopped without its shutdown digest)",
                d.end,
                allowed.as_secs(),
                d.interval_secs
            ),
        ));
    }
    let mut keys: Vec<String> = digests
        .iter()
        .map(|l| l.digest.key_fingerprint.clone())
        .collect();
    keys.dedup();
    Ok(DigestReport {
        digests: digests.len(),
        first: Some((
            first.digest.digest_seq,
            first.digest.previous_signature.is_some(),
        )),
        newest: Some((newest.name.clone(), d.reason, d.end.clone(), d.last_seq)),
        uncovered,
        keys,
    })
}

/// The file and 1-based line holding `seq`.
fn locate(spans: &[(&Path, Span)], seq: u64) -> (PathBuf, usize) {
    for (path, span) in spans {
        let (first, end) = range(span);
        if span.first_seq.is_some() && (first..end).contains(&seq) {
            return (
                path.to_path_buf(),
                usize::try_from(seq - first + 1).unwrap_or(0),
            );
        }
    }
    (
        spans
            .last()
            .map(|(p, _)| p.to_path_buf())
            .unwrap_or_default(),
        0,
    )
}

fn brk(path: &Path, line: usize, reason: &str) -> Break {
    Break {
        file: path.display().to_string(),
        line,
        reason: reason.to_owned(),
    }
}

fn whole(path: &Path, reason: &str) -> Break {
    brk(path, 0, reason)
}
