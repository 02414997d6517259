//! Decision-log tests on real files: chaining, resume, rotation, failure and recovery.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::chain::{GENESIS, Verifier};
use super::*;

pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) fn record(n: u64) -> DecisionRecord {
    DecisionRecord {
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n),
        input: serde_json::value::to_raw_value(
            &serde_json::json!({"operation": "Encrypt", "key_id": format!("k{n}")}),
        )
        .unwrap(),
        decision: Some((n.is_multiple_of(2), vec![format!("reason {n}")])),
        error: None,
        requested_by: Some(format!("127.0.0.1:{}", 40000 + n)),
        req_id: n + 1,
        eval_ns: 1000 + n,
        revision: "rev".into(),
        error_name: n
            .is_multiple_of(3)
            .then(|| "AccessDeniedException".to_owned()),
        mask: Default::default(),
    }
}

pub(super) fn config(path: &Path) -> DecisionLogConfig {
    let mut c = DecisionLogConfig::new(path.to_owned());
    c.instance_id = "test-instance".into();
    c.retry_interval = Duration::from_millis(20);
    // These tests read rotated files as the writer left them (lifecycle_tests.rs: compressed).
    c.lifecycle.compression = None;
    c
}

pub(super) fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(super) fn verify(paths: &[&Path]) -> Result<chain::Verified, chain::Break> {
    Verifier::verify_files(paths)
}

#[test]
fn lines_have_opa_shape_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let log = DecisionLog::open(config(&path)).unwrap();
    for n in 0..5 {
        log.record(record(n)).unwrap();
    }
    assert!(log.flush(WAIT));
    let got = lines(&path);
    assert_eq!(got.len(), 5);
    let first = &got[0];
    // OPA's EventV1: the result is the document at `path` (package keygate's decision).
    assert_eq!(first["path"], "keygate");
    assert_eq!(
        first["result"],
        serde_json::json!({"allow": true, "deny": ["reason 0"]})
    );
    assert_eq!(first["requested_by"], "127.0.0.1:40000");
    assert_eq!(first["req_id"], 1);
    assert!(first.get("error").is_none(), "no error member on success");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev_hash"], GENESIS);
    assert_eq!(first["labels"]["id"], "test-instance");
    assert_eq!(first["labels"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(first["metrics"]["timer_rego_query_eval_ns"], 1000);
    assert_eq!(first["bundles"]["keygate"]["revision"], "rev");
    assert_eq!(first["result"]["allow"], true);
    assert_eq!(first["error_name"], "AccessDeniedException");
    // Members with nothing to say are left out, as OPA leaves out its empty members.
    for absent in [
        "error_name",
        "prev_file",
        "erased",
        "masked",
        "kms_request_id",
    ] {
        assert!(got[1].get(absent).is_none(), "{absent}");
    }
    assert_eq!(
        uuid::Uuid::parse_str(first["decision_id"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );
    assert_eq!(got[1]["prev_hash"], first["hash"]);
    assert_eq!(verify(&[&path]).unwrap().lines, 5);
    assert_eq!((log.written(), log.lost()), (5, 0));
    // The head is the last line written.
    assert_eq!(log.head(), (5, got[4]["hash"].as_str().unwrap().to_owned()));
}

#[test]
fn an_evaluation_error_is_an_opa_error_object_and_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let log = DecisionLog::open(config(&path)).unwrap();
    let mut r = record(1);
    r.decision = None;
    r.error = Some(EvalError::of(&crate::policy::PolicyError::Timeout(
        Duration::from_millis(50),
    )));
    log.record(r).unwrap();
    assert!(log.flush(WAIT));
    let line = &lines(&path)[0];
    assert!(line.get("result").is_none(), "{line}");
    assert_eq!(line["error"]["code"], "eval_cancel_error");
    assert!(
        line["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time limit"),
        "{line}"
    );
}

#[test]
fn checkpoints_parse_and_must_be_in_range() {
    let hash = "ab".repeat(32);
    let c: chain::Checkpoint = format!("7:{hash}").parse().unwrap();
    assert_eq!((c.seq, c.hash.as_str()), (7, hash.as_str()));
    for bad in [
        "7",
        "x:ab",
        "7:AB",
        "7:abc",
        &format!("7:{hash}0"),
        &format!("-1:{hash}"),
    ] {
        assert!(bad.parse::<chain::Checkpoint>().is_err(), "{bad}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let log = DecisionLog::open(config(&path)).unwrap();
    for n in 0..3 {
        log.record(record(n)).unwrap();
    }
    assert!(log.flush(WAIT));
    let (seq, hash) = log.head();
    let at = chain::Checkpoint::new;
    let v = Verifier::verify_files_with(
        &[&path],
        vec![
            at(seq, &hash),
            at(1, lines(&path)[0]["hash"].as_str().unwrap()),
        ],
    )
    .unwrap();
    assert_eq!((v.checkpoints, v.last_seq), (2, 3));
    let err = Verifier::verify_files_with(&[&path], vec![at(2, &hash)]).unwrap_err();
    assert_eq!(err.line, 2, "{}", err.reason);
    assert!(err.reason.contains("rewritten"), "{}", err.reason);
    let err = Verifier::verify_files_with(&[&path], vec![at(9, &hash)]).unwrap_err();
    assert!(err.reason.contains("cut off the end"), "{}", err.reason);
}

#[test]
fn restart_resumes_the_chain_and_cuts_a_partial_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let log = DecisionLog::open(config(&path)).unwrap();
    log.record(record(1)).unwrap();
    assert!(log.flush(WAIT));
    drop(log);
    // A crash in the middle of a write leaves half a line.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"decision_id\":\"half");
    std::fs::write(&path, text).unwrap();
    let log = DecisionLog::open(config(&path)).unwrap();
    log.record(record(2)).unwrap();
    assert!(log.flush(WAIT));
    let got = lines(&path);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["seq"], 2);
    verify(&[&path]).unwrap();
}

#[test]
fn size_rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut c = config(&path);
    c.rotate_bytes = Some(1500);
    let log = DecisionLog::open(c).unwrap();
    for n in 0..12 {
        log.record(record(n)).unwrap();
        assert!(log.flush(WAIT));
    }
    let rotated = files::rotations(&path);
    assert!(rotated.len() >= 2, "{rotated:?}");
    let mut files: Vec<&Path> = rotated.iter().map(|(_, p)| p.as_path()).collect();
    files.push(&path);
    assert_eq!(verify(&files).unwrap().lines, 12);
    let first_of_current = &lines(&path)[0];
    let newest_rotated = rotated
        .last()
        .unwrap()
        .1
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(first_of_current["prev_file"], newest_rotated);
    // A rotated file missing from the middle is caught.
    if files.len() >= 3 {
        let without_middle = [files[0], files[2]];
        assert!(verify(&without_middle).is_err());
    }
    // Restarting after a rotation, with an empty current file, continues from the newest rotation.
    drop(log);
    std::fs::remove_file(&path).unwrap();
    let log = DecisionLog::open(config(&path)).unwrap();
    log.record(record(99)).unwrap();
    assert!(log.flush(WAIT));
    assert_eq!(lines(&path)[0]["prev_file"], newest_rotated);
    files.pop();
    files.push(&path);
    verify(&files).unwrap();
}

#[test]
fn time_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut c = config(&path);
    c.rotate_interval = Some(Duration::from_millis(50));
    let log = DecisionLog::open(c).unwrap();
    log.record(record(1)).unwrap();
    assert!(log.flush(WAIT));
    std::thread::sleep(Duration::from_millis(120));
    log.record(record(2)).unwrap();
    assert!(log.flush(WAIT));
    // The writer's clock may rotate again after the second line: check every file, in order.
    let rotated = files::rotations(&path);
    assert!(!rotated.is_empty());
    let mut files: Vec<&Path> = rotated.iter().map(|(_, p)| p.as_path()).collect();
    files.push(&path);
    assert_eq!(verify(&files).unwrap().lines, 2);
}

#[test]
fn fail_closed_refuses_while_the_directory_is_gone_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("decisions.log");
    let mut c = config(&path);
    c.fail_closed = true;
    let log = DecisionLog::open(c).unwrap();
    log.record(record(1)).unwrap();
    assert!(log.flush(WAIT));
    std::fs::remove_dir_all(&dir).unwrap();
    // The first record after the removal finds the file gone and cannot reopen it.
    let _ = log.record(record(2));
    assert!(log.flush(WAIT));
    assert!(!log.writable());
    assert!(log.refuses_requests());
    assert!(matches!(
        log.record(record(3)),
        Err(DecisionLogError::Unwritable)
    ));
    std::fs::create_dir(&dir).unwrap();
    wait_until(|| log.writable());
    assert!(log.flush(WAIT));
    log.record(record(4)).unwrap();
    assert!(log.flush(WAIT));
    // Lines queued while the log was down were written after recovery, chained on.
    let got = lines(&path);
    let seqs: Vec<_> = got.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(got[0]["input"]["key_id"], "k2");
    assert!(log.write_errors() > 0);
}

#[test]
fn fail_closed_refuses_on_a_full_disk_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    // /dev/full accepts opens and fails every write with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let mut c = config(&path);
    c.fail_closed = true;
    let log = DecisionLog::open(c).unwrap();
    let _ = log.record(record(1));
    assert!(log.flush(WAIT));
    assert!(!log.writable());
    assert!(log.record(record(2)).is_err());
    // Space comes back: the path now names a real file. One rename swaps it in, so the
    // writer (retrying every 20 ms) never finds the path missing and creates a file of its
    // own that a second step would then truncate under it: removing the link and writing a
    // new file took two steps, and a writer retry between them lost both lines.
    let fresh = dir.path().join("fresh");
    std::fs::write(&fresh, "").unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    wait_until(|| log.writable());
    assert!(log.flush(WAIT));
    let got = lines(&path);
    let seqs: Vec<_> = got.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!((log.written(), log.lost()), (2, 0));
    verify(&[&path]).unwrap();
}

#[test]
fn below_the_reserve_nothing_is_written_and_fail_closed_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut c = config(&path);
    c.fail_closed = true;
    // No filesystem has u64::MAX - 1 bytes free: the log is below its reserve from the start.
    c.space = SpaceLimits {
        min_free_bytes: u64::MAX,
        min_free_percent: 0,
        min_free_inodes: 0,
        reserved_bytes: u64::MAX - 1,
    };
    let log = DecisionLog::open(c).unwrap();
    let space = log.space();
    assert_eq!(space.space, Space::Exhausted);
    assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes);
    assert!(space.early_retention_requests >= 1);
    assert!(!log.writable());
    assert!(log.refuses_requests());
    assert!(matches!(
        log.record(record(1)),
        Err(DecisionLogError::Unwritable)
    ));
    assert!(log.flush(WAIT));
    // The line waits in memory; nothing reached the file.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    assert_eq!((log.written(), log.lost()), (0, 0));
    // At shutdown the waiting line goes into the reserve rather than being lost.
    assert!(log.close(WAIT));
    assert_eq!(lines(&path).len(), 1);
    assert_eq!((log.written(), log.lost()), (1, 0));
}

#[test]
fn low_space_warns_but_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut c = config(&path);
    c.fail_closed = true;
    c.space = SpaceLimits {
        min_free_bytes: u64::MAX,
        ..SpaceLimits::default()
    };
    let log = DecisionLog::open(c).unwrap();
    assert_eq!(log.space().space, Space::Low);
    assert_eq!(log.space().early_retention_requests, 1);
    log.record(record(1)).unwrap();
    assert!(log.flush(WAIT));
    assert!(log.writable() && !log.refuses_requests());
    assert_eq!(lines(&path).len(), 1);
}

#[test]
fn fail_open_mode_never_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = DecisionLog::open(config(&path)).unwrap();
    log.record(record(1)).unwrap();
    assert!(log.flush(WAIT));
    assert!(!log.writable());
    assert!(!log.refuses_requests());
    log.record(record(2)).unwrap();
}

#[test]
fn a_full_queue_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut c = config(&path);
    c.queue_capacity = 1;
    c.fail_closed = true;
    let log = DecisionLog::open(c).unwrap();
    let mut refused = 0;
    for n in 0..2000 {
        if matches!(log.record(record(n)), Err(DecisionLogError::QueueFull)) {
            refused += 1;
        }
    }
    assert!(log.flush(WAIT));
    assert_eq!(log.lost(), refused);
    let got = lines(&path);
    let decisions = got.iter().filter(|l| l.get("event").is_none()).count() as u64;
    assert_eq!(decisions + log.lost(), 2000);
    assert_eq!(got.len() as u64, log.written());
    // Every loss is in the log: the lines_lost lines count them all.
    let recorded: u64 = verify(&[&path])
        .unwrap()
        .lines_lost
        .iter()
        .map(|l| l.1)
        .sum();
    assert_eq!(recorded, log.lost());
}

#[test]
fn a_foreign_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    std::fs::write(&path, "hello\n").unwrap();
    assert!(matches!(
        DecisionLog::open(config(&path)),
        Err(DecisionLogError::Open { .. })
    ));
}

pub(super) fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines as keygate wrote them before the line was slimmed (with `input.time`, a top-level
/// `kms_request_id`, `"error_name":null` and `"prev_file":null`): the log resumes after
/// them and the whole file verifies.
#[test]
fn a_log_of_the_earlier_line_shape_resumes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut prev = GENESIS.to_owned();
    let mut text = String::new();
    for seq in 1..=2 {
        let body = format!(
            "{{\"decision_id\":\"d{seq}\",\"seq\":{seq},\"timestamp\":\"2026-11-22T06:01:02Z\",\
             \"path\":\"keygate\",\"input\":{{\"request_metadata\":{{\"kmsRequestId\":\"r{seq}\"}},\
             \"time\":\"2026-11-22T06:01:02Z\"}},\"result\":{{\"allow\":true,\"deny\":[]}},\
             \"requested_by\":\"127.0.0.1:1\",\"req_id\":{seq},\"labels\":{{\"id\":\"old\",\
             \"version\":\"0.1.0\"}},\"metrics\":{{\"timer_rego_query_eval_ns\":1}},\
             \"bundles\":{{\"keygate\":{{\"revision\":\"r\"}}}},\"kms_request_id\":\"r{seq}\",\
             \"error_name\":null,\"prev_file\":null,\"prev_hash\":\"{prev}\"}}"
        );
        let (line, hash) = chain::seal(&prev, &body);
        text.push_str(&line);
        text.push('\n');
        prev = hash;
    }
    std::fs::write(&path, &text).unwrap();
    // Its first line is days old: with rotation by age the next line would start a new file.
    let mut c = config(&path);
    c.rotate_interval = None;
    let log = DecisionLog::open(c).unwrap();
    log.record(record(5)).unwrap();
    assert!(log.close(WAIT));
    let got = lines(&path);
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0]["kms_request_id"].clone(), got[2]["seq"].clone()),
        ("r1".into(), 3.into())
    );
    assert_eq!(got[2]["prev_hash"], prev.as_str());
    assert!(got[2].get("kms_request_id").is_none() && got[2].get("prev_file").is_none());
    assert_eq!(verify(&[&path]).unwrap().lines, 3);
}
