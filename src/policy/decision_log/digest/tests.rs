//! Digests on real files: the writer and notary threads, then the verifier against the attacks
//! a digest exists for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::verify::verify;
use super::*;
use crate::policy::decision_log::chain::{self, Break};
use crate::policy::decision_log::files::rotations;
use crate::policy::decision_log::{DecisionLog, DecisionLogConfig, DecisionRecord};
use crate::signing::Ed25519FileKey;

const WAIT: Duration = Duration::from_secs(10);

fn record(n: u64) -> DecisionRecord {
    crate::policy::decision_log::line::allowed_for_test(
        n,
        serde_json::json!({"operation": "Encrypt", "request_metadata": {"kmsRequestId": format!("req-{n}")}}),
    )
}

struct Setup {
    _root: tempfile::TempDir,
    log: PathBuf,
    digests: PathBuf,
    key: Arc<Ed25519FileKey>,
}

impl Setup {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let (_, key) = Ed25519FileKey::generate().unwrap();
        Self {
            log: root.path().join("decisions.log"),
            digests: root.path().join("digests"),
            _root: root,
            key: Arc::new(key),
        }
    }

    fn config(&self, interval: Duration) -> DecisionLogConfig {
        let mut c = DecisionLogConfig::new(self.log.clone());
        c.retry_interval = Duration::from_millis(20);
        // Rotated files stay plain here (lifecycle_tests.rs covers compressed ones).
        c.lifecycle.compression = None;
        c.digest = Some(DigestConfig {
            dir: self.digests.clone(),
            interval,
            signer: self.key.clone(),
        });
        c
    }

    /// Opens the log, writes `lines` records, closes it: digests at start and shutdown.
    fn run(&self, lines: std::ops::Range<u64>) {
        let log = DecisionLog::open(self.config(Duration::from_secs(3600))).unwrap();
        for n in lines {
            log.record(record(n)).unwrap();
        }
        assert!(log.close(WAIT));
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = rotations(&self.log).into_iter().map(|r| r.1).collect();
        files.push(self.log.clone());
        files
    }

    fn verify_now(&self) -> Result<super::verify::DigestReport, Break> {
        let files = self.files();
        let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let keys = [self.key.public_key().clone()];
        verify(&paths, Vec::new(), &self.digests, &keys, SystemTime::now()).map(|r| r.1)
    }

    fn digest_files(&self) -> Vec<PathBuf> {
        list(&self.digests)
            .unwrap()
            .into_iter()
            .map(|d| d.1)
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(&self, lines: &[String]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.log, text).unwrap();
    }
}

/// Rewrites `lines[from..]` into a valid chain again, numbered on from the line before (what
/// whoever can write the file can do).
fn reseal(lines: &mut [String], from: usize) {
    let (mut prev, mut seq) = match from {
        0 => (chain::GENESIS.to_owned(), 0),
        n => {
            let link = chain::open_line(&lines[n - 1]).unwrap();
            (link.hash, link.seq)
        }
    };
    for line in &mut lines[from..] {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = v.as_object_mut().unwrap();
        seq += 1;
        object.remove("hash");
        object.insert("seq".into(), seq.into());
        object.insert("prev_hash".into(), prev.clone().into());
        let (sealed, hash) = chain::seal(&prev, &v.to_string());
        *line = sealed;
        prev = hash;
    }
}

fn broken(setup: &Setup) -> Break {
    setup.verify_now().expect_err("the attack must be caught")
}

#[test]
fn digests_at_start_and_shutdown_verify_and_chain_across_restarts() {
    let s = Setup::new();
    s.run(0..3);
    s.run(3..5);
    let names = s.digest_files();
    assert_eq!(
        names.len(),
        4,
        "start, shutdown, start, shutdown: {names:?}"
    );
    let texts: Vec<String> = names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let (first, _, first_sig) = open(&texts[0]).unwrap();
    let (second, _, _) = open(&texts[1]).unwrap();
    let (last, _, _) = open(&texts[3]).unwrap();
    assert_eq!(
        (first.digest_seq, first.reason, first.last_seq),
        (1, Reason::Start, 0)
    );
    assert_eq!(first.previous_signature, None);
    assert_eq!(
        (second.reason, second.first_seq, second.last_seq),
        (Reason::Shutdown, Some(1), 3)
    );
    assert_eq!(
        second.previous_signature.as_deref(),
        Some(first_sig.as_str())
    );
    assert_eq!(second.start, first.end);
    assert_eq!(
        (last.digest_seq, last.first_seq, last.last_seq),
        (4, Some(4), 5)
    );
    let file = &last.files[0];
    assert_eq!(
        (file.first_seq, file.last_seq, file.complete),
        (1, 5, false)
    );
    assert_eq!(file.bytes, std::fs::metadata(&s.log).unwrap().len());
    let report = s.verify_now().unwrap();
    assert_eq!((report.digests, report.uncovered), (4, 0));
    assert!(
        texts
            .iter()
            .all(|t| t.ends_with("\"}\n") && t.lines().count() == 1)
    );
}

#[test]
fn heartbeats_are_written_when_nothing_happens() {
    let s = Setup::new();
    let log = DecisionLog::open(s.config(Duration::from_millis(300))).unwrap();
    log.record(record(1)).unwrap();
    let stats = log.digest_stats().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while stats.written() < 4 {
        assert!(std::time::Instant::now() < deadline, "no heartbeat");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.close(WAIT));
    let digests: Vec<Digest> = s
        .digest_files()
        .iter()
        .map(|p| open(&std::fs::read_to_string(p).unwrap()).unwrap().0)
        .collect();
    let heartbeats = digests
        .iter()
        .filter(|d| d.reason == Reason::Interval && d.first_seq.is_none())
        .count();
    assert!(heartbeats >= 1, "{digests:?}");
    assert!(
        digests
            .iter()
            .all(|d| d.last_seq == 1 || d.reason == Reason::Start)
    );
    s.verify_now().unwrap();
}

#[test]
fn an_edited_line_is_named() {
    let s = Setup::new();
    s.run(0..5);
    let mut lines = s.lines();
    lines[2] = lines[2].replace("req-2", "req-X");
    s.write_lines(&lines);
    let b = broken(&s);
    assert_eq!(b.line, 3, "{b}");
    assert!(b.reason.contains("line edited"), "{b}");
}

#[test]
fn a_deleted_middle_line_is_named() {
    let s = Setup::new();
    s.run(0..5);
    let mut lines = s.lines();
    lines.remove(2);
    s.write_lines(&lines);
    let b = broken(&s);
    assert_eq!(b.line, 3, "{b}");
    assert!(b.reason.contains("deleted"), "{b}");
}

#[test]
fn a_tail_cut_off_and_resealed_is_caught_by_the_signed_head() {
    let s = Setup::new();
    s.run(0..6);
    let mut lines = s.lines();
    lines.truncate(4);
    lines[3] = lines[3].replace("req-3", "req-forged");
    reseal(&mut lines, 3);
    s.write_lines(&lines);
    // The chain alone is intact ...
    chain::Verifier::verify_files(&[&s.log]).unwrap();
    // ... but the signed digests are not fooled.
    let b = broken(&s);
    assert!(b.reason.contains("digest digest-"), "{b}");
    assert_eq!(b.line, 4, "{b}");
    // Only cut off, not resealed: the digest's head is missing.
    lines.truncate(3);
    s.write_lines(&lines);
    let b = broken(&s);
    assert!(b.reason.contains("cut off the end"), "{b}");
}

#[test]
fn a_missing_digest_is_named() {
    let s = Setup::new();
    s.run(0..2);
    s.run(2..4);
    let names = s.digest_files();
    std::fs::remove_file(&names[1]).unwrap();
    let b = broken(&s);
    assert!(
        b.file
            .ends_with(names[2].file_name().unwrap().to_str().unwrap()),
        "{b}"
    );
    assert!(b.reason.contains("digest 2 is missing"), "{b}");
}

#[test]
fn a_digest_signed_by_another_key_or_edited_is_named() {
    let s = Setup::new();
    s.run(0..2);
    let names = s.digest_files();
    let text = std::fs::read_to_string(&names[1]).unwrap();
    // Re-signed by another key (whoever controls the files, but not the key).
    let (digest, _, _) = open(&text).unwrap();
    let (_, other) = Ed25519FileKey::generate().unwrap();
    let mut forged = digest.clone();
    forged.key_fingerprint = other.public_key().fingerprint();
    let body = forged.body();
    let signature = b64(&crate::signing::DigestSigner::sign(&other, body.as_bytes()).unwrap());
    std::fs::write(&names[1], seal(&body, &signature)).unwrap();
    let b = broken(&s);
    assert!(b.reason.contains("signed by another key"), "{b}");
    assert!(b.file.ends_with(".json"), "{b}");
    // Edited after signing.
    std::fs::write(&names[1], text.replace("\"shutdown\"", "\"interval\"")).unwrap();
    let b = broken(&s);
    assert!(b.reason.contains("changed after it was signed"), "{b}");
}

#[test]
fn lines_after_the_shutdown_digest_or_a_stale_newest_digest_are_caught() {
    let s = Setup::new();
    s.run(0..3);
    // Lines appended (and chained) after keygate stopped, with no digest for them.
    let mut lines = s.lines();
    lines.push(lines[2].replace("req-2", "req-late"));
    reseal(&mut lines, 3);
    s.write_lines(&lines);
    let b = broken(&s);
    assert!(b.reason.contains("follow the shutdown digest"), "{b}");
    assert_eq!(b.line, 4, "{b}");
    // A digest chain whose newest digest is not a shutdown and is old: later ones are missing.
    let s = Setup::new();
    s.run(0..2);
    let names = s.digest_files();
    std::fs::remove_file(names.last().unwrap()).unwrap();
    let files = s.files();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let keys = [s.key.public_key().clone()];
    let later = SystemTime::now() + Duration::from_secs(7200);
    let b = verify(&paths, Vec::new(), &s.digests, &keys, later).unwrap_err();
    assert!(b.reason.contains("digests after it are missing"), "{b}");
}

#[test]
fn rotation_writes_a_digest_of_the_complete_file_and_settles_it() {
    let s = Setup::new();
    let mut c = s.config(Duration::from_secs(3600));
    c.rotate_bytes = Some(1200);
    let log = DecisionLog::open(c).unwrap();
    for n in 0..8 {
        log.record(record(n)).unwrap();
        assert!(log.flush(WAIT));
    }
    let rotated = rotations(&s.log);
    assert!(!rotated.is_empty());
    let oldest = &rotated[0].1;
    let deadline = std::time::Instant::now() + WAIT;
    while !log.settled(oldest).unwrap().retirable() {
        assert!(std::time::Instant::now() < deadline, "never digested");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !log.settled(&s.log).unwrap().digested,
        "the live file's tail is not yet covered"
    );
    assert!(log.close(WAIT));
    let complete: Vec<FileEntry> = s
        .digest_files()
        .iter()
        .flat_map(|p| open(&std::fs::read_to_string(p).unwrap()).unwrap().0.files)
        .filter(|f| f.complete)
        .collect();
    assert_eq!(complete.len(), rotated.len());
    assert_eq!(complete[0].bytes, std::fs::metadata(oldest).unwrap().len());
    s.verify_now().unwrap();
    // A change the hash chain does not see (line ends rewritten as CRLF by some tool): the
    // file's SHA-256 in the digests does.
    let text = std::fs::read_to_string(oldest).unwrap();
    std::fs::write(oldest, text.replace('\n', "\r\n")).unwrap();
    let b = broken(&s);
    assert!(b.file.ends_with(".1"), "{b}");
    assert!(b.reason.contains("do not have the SHA-256"), "{b}");
}

#[test]
fn a_digest_that_cannot_be_written_is_counted_and_folded_into_the_next() {
    let s = Setup::new();
    let log = DecisionLog::open(s.config(Duration::from_millis(200))).unwrap();
    let stats = log.digest_stats().unwrap();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + WAIT;
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait("the start digest", &|| stats.written() >= 1);
    // The directory is replaced by a file: digests cannot be written.
    let aside = s.digests.with_extension("aside");
    std::fs::rename(&s.digests, &aside).unwrap();
    std::fs::write(&s.digests, "not a directory").unwrap();
    log.record(record(1)).unwrap();
    wait("a failed digest", &|| stats.failed() >= 1);
    let written = stats.written();
    std::fs::remove_file(&s.digests).unwrap();
    std::fs::rename(&aside, &s.digests).unwrap();
    wait("a digest again", &|| stats.written() > written);
    assert!(log.close(WAIT));
    // The digest after the failure still names the first line added while it failed, and the
    // chain has no gap: a failed digest takes no number.
    let digests: Vec<Digest> = s
        .digest_files()
        .iter()
        .map(|p| open(&std::fs::read_to_string(p).unwrap()).unwrap().0)
        .collect();
    assert!(
        digests.iter().any(|d| d.first_seq == Some(1)),
        "{digests:?}"
    );
    s.verify_now().unwrap();
}
