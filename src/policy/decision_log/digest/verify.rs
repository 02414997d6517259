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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{Digest, Reason, unb64};
use crate::policy::decision_log::chain::{self, Break, Checkpoint, Verified, Verifier};
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
    let texts = read_files(files)?;
    let first_seq = texts.first().and_then(|(_, t)| first_seq(t)).unwrap_or(0);
    let mut all = checkpoints;
    for d in &digests {
        all.extend(checkpoints_of(d).filter(|c| c.seq >= first_seq));
    }
    let mut verifier = Verifier::with_checkpoints(all);
    for (path, text) in &texts {
        verifier.verify_text(&path.display().to_string(), text)?;
    }
    let verified = verifier.finish()?;
    check_files(&texts, &digests)?;
    let report = coverage(&texts, &digests, &verified, now)?;
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

fn read_files(files: &[&Path]) -> Result<Vec<(PathBuf, String)>, Break> {
    files
        .iter()
        .map(|p| {
            crate::policy::decision_log::segments::read_text(p)
                .map(|t| (p.to_path_buf(), t))
                .map_err(|e| whole(p, &format!("cannot read: {e}")))
        })
        .collect()
}

fn first_seq(text: &str) -> Option<u64> {
    chain::open_line(text.lines().next()?).ok().map(|l| l.seq)
}

/// Every file entry of every digest against the given file it names (found by first seq).
fn check_files(texts: &[(PathBuf, String)], digests: &[Loaded]) -> Result<(), Break> {
    let spans: Vec<(u64, u64)> = texts
        .iter()
        .map(|(_, t)| {
            let first = first_seq(t).unwrap_or(0);
            (first, first + t.lines().count() as u64)
        })
        .collect();
    let given_first = spans.first().map_or(0, |s| s.0);
    let mut by_file: BTreeMap<usize, Vec<(u64, &str, &Loaded)>> = BTreeMap::new();
    for d in digests {
        for entry in &d.digest.files {
            let at = spans.iter().position(|s| s.0 == entry.first_seq);
            match at {
                Some(i) => by_file
                    .entry(i)
                    .or_default()
                    .push((entry.bytes, &entry.sha256, d)),
                None if entry.last_seq < given_first => {} // an older file, not given
                None => {
                    let inside = spans.iter().zip(texts).find(|((a, b), _)| {
                        (*a..*b).contains(&entry.first_seq) || (*a..*b).contains(&entry.last_seq)
                    });
                    let why = format!(
                        "lists {} (seq {}..{}), but no file given starts at seq {}",
                        entry.name, entry.first_seq, entry.last_seq, entry.first_seq
                    );
                    return Err(match inside {
                        Some(((a, _), (path, _))) => brk(
                            path,
                            1,
                            &format!(
                                "this file starts at seq {a}, but digest {} recorded {} starting \
                                 at seq {}: its first lines were removed",
                                d.name, entry.name, entry.first_seq
                            ),
                        ),
                        None => whole(&d.path, &why),
                    });
                }
            }
        }
    }
    for (i, mut entries) in by_file {
        let Some((path, text)) = texts.get(i) else {
            continue;
        };
        entries.sort_by_key(|e| e.0);
        check_prefixes(path, text.as_bytes(), &entries)?;
    }
    Ok(())
}

/// The SHA-256 of each recorded prefix of one file, hashed in one pass.
fn check_prefixes(
    path: &Path,
    bytes: &[u8],
    entries: &[(u64, &str, &Loaded)],
) -> Result<(), Break> {
    let mut sha = Sha256::new();
    let mut done = 0usize;
    for (len, expected, d) in entries {
        let len = usize::try_from(*len).unwrap_or(usize::MAX);
        let Some(more) = bytes.get(done..len) else {
            return Err(brk(
                path,
                bytes.split(|b| *b == b'\n').count().saturating_sub(1),
                &format!(
                    "digest {} recorded {len} bytes of this file, but it has {}: it was cut",
                    d.name,
                    bytes.len()
                ),
            ));
        };
        sha.update(more);
        done = len;
        if hex::encode(sha.clone().finalize()) != *expected {
            let lines = bytes
                .get(..len)
                .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count());
            return Err(brk(
                path,
                lines,
                &format!(
                    "its first {len} bytes (lines 1-{lines}) do not have the SHA-256 digest {} \
                     recorded: the file was changed after that digest",
                    d.name
                ),
            ));
        }
    }
    Ok(())
}

/// Lines after the newest digest, and whether digests are missing at the end.
fn coverage(
    texts: &[(PathBuf, String)],
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
        let (path, line) = locate(texts, d.last_seq + 1);
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
fn locate(texts: &[(PathBuf, String)], seq: u64) -> (PathBuf, usize) {
    for (path, text) in texts {
        if let Some(first) = first_seq(text) {
            let count = text.lines().count() as u64;
            if (first..first + count).contains(&seq) {
                return (path.clone(), usize::try_from(seq - first + 1).unwrap_or(0));
            }
        }
    }
    (texts.last().map(|t| t.0.clone()).unwrap_or_default(), 0)
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
