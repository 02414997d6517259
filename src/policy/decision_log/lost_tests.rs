//! The writer records lost lines in the chain (`lines_lost` lines, see `lost.rs`), and the
//! live file's age for rotation survives a restart; on real files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::tests::{WAIT, config, lines, record, verify, wait_until};
use super::*;

/// The lines_lost lines' counts, and whether each came before every decision after it.
fn recorded_losses(path: &Path) -> u64 {
    lines(path)
        .iter()
        .filter(|l| l["event"] == lost::EVENT)
        .map(|l| l["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn lines_lost_while_unwritable_are_recorded_before_the_next_decision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    // /dev/full accepts opens and fails every write with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let mut c = config(&path);
    c.queue_capacity = 2;
    let before = SystemTime::now();
    let log = DecisionLog::open(c).unwrap();
    for n in 0..12 {
        log.record(record(n)).unwrap();
        assert!(log.flush(WAIT));
    }
    assert!(!log.writable());
    // Two lines wait in memory; the others were dropped oldest first.
    assert_eq!(log.lost(), 10);
    let fresh = dir.path().join("fresh");
    std::fs::write(&fresh, "").unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    wait_until(|| log.writable());
    log.record(record(12)).unwrap();
    assert!(log.flush(WAIT));
    let after = SystemTime::now();

    let got = lines(&path);
    assert_eq!(got[0]["event"], "lines_lost", "{:?}", got[0]);
    assert_eq!(got[0]["reason"], "unwritable");
    assert_eq!(got[0]["count"], 10);
    assert_eq!(got[0]["seq"], 1);
    assert_eq!(got[0]["labels"]["id"], "test-instance");
    let at = |member: &str| crate::policy::parse_rfc3339(got[0][member].as_str().unwrap());
    let (first, last) = (at("first_lost_at").unwrap(), at("last_lost_at").unwrap());
    assert!(before <= first && first <= last && last <= after);
    // Then the two that waited (the newest of the twelve), and the one after recovery.
    let keys: Vec<_> = got[1..]
        .iter()
        .map(|l| l["input"]["key_id"].clone())
        .collect();
    assert_eq!(keys, ["k10", "k11", "k12"]);
    assert_eq!(recorded_losses(&path), log.lost());
    let v = verify(&[&path]).unwrap();
    assert_eq!(v.lines_lost, [(1, 10)]);
    assert_eq!(log.written(), 4);
}

#[test]
fn losses_just_before_shutdown_are_recorded_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let mut c = config(&path);
    c.queue_capacity = 1;
    let log = DecisionLog::open(c).unwrap();
    for n in 0..2000 {
        log.record(record(n)).unwrap();
    }
    assert!(
        log.lost() > 0,
        "a queue of one line loses some of 2000 lines"
    );
    assert!(log.close(WAIT));
    let got = lines(&path);
    let decisions = got.iter().filter(|l| l.get("event").is_none()).count() as u64;
    assert_eq!(decisions + log.lost(), 2000);
    assert_eq!(recorded_losses(&path), log.lost());
    assert!(
        got.iter()
            .filter(|l| l["event"] == lost::EVENT)
            .all(|l| l["reason"] == "queue_full")
    );
    let v = verify(&[&path]).unwrap();
    assert_eq!(v.lines_lost.iter().map(|l| l.1).sum::<u64>(), log.lost());
}

/// A log whose first line was written `age` ago, reopened with a rotation interval of an
/// hour: whether the next line rotates it.
fn rotates_after_restart(age: Duration) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let log = DecisionLog::open(config(&path)).unwrap();
    let mut old = record(0);
    old.timestamp = SystemTime::now() - age;
    log.record(old).unwrap();
    assert!(log.close(WAIT));

    let mut c = config(&path);
    c.rotate_interval = Some(Duration::from_secs(3600));
    let log = DecisionLog::open(c).unwrap();
    log.record(record(1)).unwrap();
    assert!(log.close(WAIT));
    verify(&[&dir.path().join("decisions.log.1"), &path])
        .map(|v| assert_eq!(v.lines, 2))
        .is_ok()
}

#[test]
fn the_rotation_age_counts_from_the_first_line_across_a_restart() {
    // Written two hours ago, by a keygate since restarted: rotated at the first line after.
    assert!(rotates_after_restart(Duration::from_secs(2 * 3600)));
    // Written a minute ago: the file lives on.
    assert!(!rotates_after_restart(Duration::from_secs(60)));
}
