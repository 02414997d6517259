//! Lifecycle tests on real files: compression of rotated files, retention with its evidence
//! line, a file that cannot be removed, and a restart after a rotation whose file was
//! compressed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::chain::{GENESIS, Verified, Verifier};
use super::segments::{self, Codec};
use super::*;

const WAIT: Duration = Duration::from_secs(20);

fn record(n: u64) -> DecisionRecord {
    super::line::allowed_for_test(n, serde_json::json!({"operation": "Encrypt", "n": n}))
}

fn config(path: &Path, compression: Option<Codec>, keep_files: usize) -> DecisionLogConfig {
    let mut c = DecisionLogConfig::new(path.to_owned());
    c.retry_interval = Duration::from_millis(20);
    c.rotate_bytes = Some(1500);
    c.lifecycle.compression = compression;
    c.lifecycle.retention.keep_files = keep_files;
    c
}

fn write(log: &DecisionLog, range: std::ops::Range<u64>) {
    for n in range {
        log.record(record(n)).unwrap();
        assert!(log.flush(WAIT));
    }
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn verify_all(path: &Path) -> Verified {
    let files: Vec<PathBuf> = segments::all(path).into_iter().map(|s| s.path).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    Verifier::verify_files(&refs).unwrap()
}

fn retention_lines(path: &Path) -> Vec<serde_json::Value> {
    segments::all(path)
        .iter()
        .flat_map(|s| {
            segments::read_text(&s.path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|l| l["event"] == "retention")
        .collect()
}

#[test]
fn rotated_files_are_compressed_and_the_chain_verifies_across_them() {
    for codec in [Codec::Zstd, Codec::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let log = DecisionLog::open(config(&path, Some(codec), 50)).unwrap();
        write(&log, 0..30);
        // The counters move just after the files do: wait for both.
        until("compression", || {
            let rotated = segments::rotated(&path);
            rotated.len() >= 3
                && rotated.iter().all(|s| s.codec == Some(codec))
                && log.lifecycle_stats().compressed() >= 3
        });
        assert!(log.close(WAIT));
        let v = verify_all(&path);
        assert_eq!((v.lines, v.starts_from.as_str()), (30, GENESIS));
        // A stop right after a rotation renamed the live file, and its compression finished:
        // the restart continues the chain from that compressed file.
        let renamed = segments::next_rotation(&path);
        std::fs::rename(&path, &renamed).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        compress::compress(&renamed, codec, &stop).unwrap();
        let log = DecisionLog::open(config(&path, Some(codec), 50)).unwrap();
        write(&log, 30..31);
        assert!(log.close(WAIT));
        let first = segments::first_line(&path).unwrap().unwrap();
        let newest = segments::rotated(&path).pop().unwrap();
        assert!(first.contains(&format!("\"prev_file\":\"{}\"", newest.chain_name())));
        assert_eq!(verify_all(&path).lines, 31);
    }
}

#[test]
fn retention_drops_the_oldest_files_with_a_line_that_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.log");
    let log = DecisionLog::open(config(&path, Some(Codec::Zstd), 2)).unwrap();
    write(&log, 0..40);
    until("retention and compression", || {
        let rotated = segments::rotated(&path);
        rotated.len() <= 2
            && rotated.iter().all(|s| s.codec.is_some())
            && log.lifecycle_stats().deleted() >= 2
    });
    assert!(log.close(WAIT));
    let v = verify_all(&path);
    assert_ne!(v.starts_from, GENESIS, "the oldest files are gone");
    assert!(v.dropped_by_retention.is_some(), "{v:?}");
    // Older retention lines went with the files holding them; the newest dropped file is
    // always named by a line in a file still there.
    let evidence = retention_lines(&path);
    assert!(!evidence.is_empty());
    assert!(log.lifecycle_stats().retention_lines() >= evidence.len() as u64);
    for line in &evidence {
        assert_eq!(line["reason"], "keep_files");
        let d = &line["dropped"][0];
        assert!(d["first_seq"].as_u64().unwrap() <= d["last_seq"].as_u64().unwrap());
        assert!(d["stored_as"].as_str().unwrap().ends_with(".zst"), "{d}");
    }
}

#[test]
fn a_file_that_cannot_be_removed_is_counted_and_retried_without_a_second_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.log");
    let log = DecisionLog::open(config(&path, None, 1)).unwrap();
    let mut n = 0;
    while segments::rotated(&path).is_empty() {
        write(&log, n..n + 1);
        n += 1;
    }
    let oldest = segments::rotated(&path).remove(0).path;
    let chattr = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&oldest)
            .status()
            .expect("chattr (e2fsprogs) is needed for this test");
        assert!(ok.success(), "chattr {flag} failed");
    };
    chattr("+i");
    // One more rotation: retention drops the oldest file, and nothing rotates after it.
    while segments::rotated(&path).iter().all(|s| s.n == Some(1)) {
        write(&log, n..n + 1);
        n += 1;
    }
    until("a failed removal", || {
        log.lifecycle_stats().delete_failures() >= 1
    });
    assert!(oldest.exists());
    chattr("-i");
    // The file goes first, then the count: wait for both.
    until("the removal, retried", || {
        !oldest.exists() && log.lifecycle_stats().deleted() >= 1
    });
    assert_eq!(log.lifecycle_stats().retention_lines(), 1);
    assert!(log.close(WAIT));
    let named: Vec<String> = retention_lines(&path)
        .iter()
        .flat_map(|l| l["dropped"].as_array().unwrap().clone())
        .map(|d| d["file"].as_str().unwrap().to_owned())
        .collect();
    let name = segments::chain_name(&oldest.display().to_string());
    assert_eq!(
        named.iter().filter(|n| **n == name).count(),
        1,
        "recorded once: {named:?}"
    );
    assert!(verify_all(&path).dropped_by_retention.is_some());
}

#[test]
fn urgent_retention_drops_a_file_within_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.log");
    let log = DecisionLog::open(config(&path, None, 50)).unwrap();
    write(&log, 0..20);
    let before = segments::rotated(&path).len();
    assert!(before >= 2);
    log.enforce_retention(true);
    until("urgent retention", || log.lifecycle_stats().deleted() >= 1);
    assert!(log.close(WAIT));
    assert_eq!(retention_lines(&path)[0]["reason"], "disk_space");
    assert!(verify_all(&path).dropped_by_retention.is_some());
}
