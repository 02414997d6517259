//! The decision log's files over time, against the real binary: rotation under load with the
//! chain verifying across compressed and plain files (by directory, glob and file list),
//! every file mode 0600; retention that records what it drops, so `audit verify` tells a
//! dropped file from one removed by hand; signed digests that still verify once the files
//! they cover are compressed; a restart after a stop in the middle of a rotation and of a
//! compression.

use std::path::Path;
use std::process::Command;

use crate::audit::digest::{openssl_key, verify as verify_with_digests};
use crate::support::process::{self, BIN, KeygateProcess, http_get};
use crate::support::*;

const ROTATIONS: &str = "keygate_decision_log_rotations_total";
const COMPRESSIONS: &str = "keygate_decision_log_compressions_total";
const DELETIONS: &str = "keygate_decision_log_retention_deletions_total";
const RETENTION_LINES: &str = "keygate_decision_log_retention_lines_total";

/// The fixture config with a decision log at `log` rotated every `rotate_bytes`, and an admin
/// listener for the metrics.
fn log_config(log: &Path, rotate_bytes: u64, extra: &str) -> String {
    config(&format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n[decision_log]\npath = {:?}\n\
         rotate_bytes = {rotate_bytes}\n{extra}\n",
        log.display().to_string()
    ))
}

/// `clients` connections sending `each` encrypts at once.
async fn load(addr: std::net::SocketAddr, clients: usize, each: usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..each {
                    client
                        .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
                        .await
                        .expect_ok();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn rotated(dir: &Path, suffix: &str) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with("decisions.log.") && n.ends_with(suffix))
        .filter(|n| !n.ends_with(".tmp"))
        .collect()
}

fn plain_rotated(dir: &Path) -> Vec<String> {
    rotated(dir, "")
        .into_iter()
        .filter(|n| {
            n.rsplit('.')
                .next()
                .is_some_and(|x| x.parse::<u64>().is_ok())
        })
        .collect()
}

/// `keygate audit verify args...`: (success, stdout + stderr).
fn audit_verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn metrics(server: &KeygateProcess) -> std::collections::HashMap<String, f64> {
    parse_metrics(&http_get(server.admin_addr(), "/metrics"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_compresses_and_the_chain_verifies_across_every_file() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("decisions.log");
    let server = KeygateProcess::start(&log_config(&log, 16384, ""), process::QUIET);
    load(server.addr, 4, 100).await;
    // The counters move just after the files do: wait for both.
    wait_until(PATIENCE, "3 compressed files, counted", || {
        rotated(&logs, ".zst").len() >= 3 && {
            let m = metrics(&server);
            metric(&m, ROTATIONS) >= 3.0 && metric(&m, COMPRESSIONS) >= 3.0
        }
    });
    assert!(server.stop().status.success());
    // Every file keygate made is 0600: live, rotated, compressed.
    for name in names(&logs) {
        assert_eq!(mode(&logs.join(&name)), 0o600, "{name}");
    }
    let dir = logs.to_str().unwrap();
    let (ok, out) = audit_verify(&[dir]);
    assert!(ok && out.starts_with("OK: 400 lines"), "{out}");
    assert!(out.contains("from the start of the log"), "{out}");
    let glob = format!("{dir}/decisions.log*");
    let (ok, out) = audit_verify(&[&glob]);
    assert!(ok && out.starts_with("OK: 400 lines"), "{out}");
    // Files as a shell expands a glob (by name, not chain order) are put in chain order.
    let mut files: Vec<String> = names(&logs).iter().map(|n| format!("{dir}/{n}")).collect();
    files.sort();
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let (ok, out) = audit_verify(&refs);
    assert!(ok && out.starts_with("OK: 400 lines"), "{out}");
    // zstd itself reads the files keygate compressed.
    let first = logs.join(&rotated(&logs, ".zst")[0]);
    let out = Command::new("zstd")
        .arg("-dc")
        .arg(&first)
        .output()
        .expect("zstd is needed for this test");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\"decision_id\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_records_what_it_drops_and_verify_tells_it_from_a_file_removed_by_hand() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("decisions.log");
    let extra = "compression = \"gzip\"\n[decision_log.retention]\nkeep_files = 3\n";
    let server = KeygateProcess::start(&log_config(&log, 8192, extra), process::QUIET);
    load(server.addr, 2, 80).await;
    // The counters move just after the files do: wait for both.
    wait_until(
        PATIENCE,
        "3 gzip'd files left by retention, counted",
        || {
            let gz = rotated(&logs, ".gz");
            gz.len() == 3 && plain_rotated(&logs).is_empty() && {
                let m = metrics(&server);
                metric(&m, DELETIONS) >= 3.0 && metric(&m, RETENTION_LINES) >= 1.0
            }
        },
    );
    assert!(server.stop().status.success());
    let dir = logs.to_str().unwrap();
    let (ok, out) = audit_verify(&[dir]);
    assert!(ok, "{out}");
    assert!(out.contains("dropped by the retention policy"), "{out}");
    // The newest retention line names the file the log now starts after.
    let gz = rotated(&logs, ".gz");
    let gunzip = |name: &str| {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(logs.join(name))
            .output()
            .expect("gzip is needed for this test");
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let first: serde_json::Value =
        serde_json::from_str(gunzip(&gz[0]).lines().next().unwrap()).unwrap();
    let everything: String =
        gz.iter().map(|n| gunzip(n)).collect::<String>() + &std::fs::read_to_string(&log).unwrap();
    let named = everything.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["event"] == "retention"
            && v["dropped"].as_array().unwrap().iter().any(|d| {
                d["file"] == first["prev_file"]
                    && d["last_hash"] == first["prev_hash"]
                    && d["last_seq"].as_u64().unwrap() + 1 == first["seq"].as_u64().unwrap()
            })
    });
    assert!(named, "a retention line names {}", first["prev_file"]);
    // Decision events and retention lines each match their schema.
    let all = root.path().join("all-lines.log");
    std::fs::write(&all, &everything).unwrap();
    let summary = super::event::validate(&all);
    assert!(!summary.contains(" 0 retention"), "{summary}");
    // A file removed by hand is missing, not dropped: one in the middle ...
    let copy = root.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for name in names(&logs) {
        std::fs::copy(logs.join(&name), copy.join(&name)).unwrap();
    }
    std::fs::remove_file(copy.join(&gz[1])).unwrap();
    let (ok, out) = audit_verify(&[copy.to_str().unwrap()]);
    assert!(
        !ok && out.contains("BROKEN") && out.contains("prev_hash does not match"),
        "{out}"
    );
    // ... or the oldest.
    std::fs::remove_file(logs.join(&gz[0])).unwrap();
    let (ok, out) = audit_verify(&[dir]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("missing") && out.contains("no retention line"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_verify_once_the_files_they_cover_are_compressed() {
    let (dir, config_path) = fixtures::server_dir(&config(
        "\n[decision_log]\npath = \"decisions.log\"\nrotate_bytes = 8192\n\
         [decision_log.digest]\ndir = \"digests\"\nkey_file = \"digest-key.pem\"\n\
         interval_secs = 1\n",
    ));
    openssl_key(dir.path());
    let root = dir.path().to_owned();
    let mut server = KeygateProcess::serve(dir, &config_path, process::QUIET, &[]);
    load(server.addr, 2, 40).await;
    // Compressed only once a digest covers them.
    wait_until(PATIENCE, "3 compressed files", || {
        names(&root)
            .iter()
            .filter(|n| n.starts_with("decisions.log.") && n.ends_with(".zst"))
            .count()
            >= 3
    });
    let _kept = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    assert!(server.stop().status.success());
    let (ok, out) = verify_with_digests(&root, &["decisions.log*"], "digest-pub.pem");
    assert!(ok && out.starts_with("OK: 80 lines"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_stop_in_the_middle_of_a_rotation_and_a_compression_resumes_the_chain() {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("decisions.log");
    let text = log_config(&log, 8192, "");
    let server = KeygateProcess::start(&text, process::QUIET);
    let addr = server.addr;
    // Killed while requests are still coming: some of them fail, which is fine.
    let busy = tokio::spawn(async move {
        let mut client = Client::connect(addr).await;
        for _ in 0..10_000 {
            let body = encrypt_body(b"x", None, false).to_string();
            let sent = client
                .try_send(
                    "POST",
                    &path("encrypt", "foo"),
                    body.as_bytes(),
                    &Signing::default(),
                    None,
                )
                .await;
            if sent.is_err() {
                return;
            }
        }
    });
    wait_until(PATIENCE, "3 compressed files", || {
        rotated(&logs, ".zst").len() >= 3
    });
    server.signal("-KILL");
    let _ = busy.await;
    drop(server);
    // What a stop can leave at each step of a compression and of a rotation:
    let zst = rotated(&logs, ".zst");
    // ... a compression's temporary file, before its rename;
    let plain_name = zst[0].trim_end_matches(".zst").to_owned();
    std::fs::write(logs.join(format!("{}.tmp", zst[1])), b"half a frame").unwrap();
    // ... both forms of one file, after the rename and before the plain file's removal;
    let out = Command::new("zstd")
        .args(["-dq", "-o"])
        .arg(logs.join(&plain_name))
        .arg(logs.join(&zst[0]))
        .output()
        .expect("zstd is needed for this test");
    assert!(out.status.success());
    // ... and a rotation's rename, before the new live file was made.
    let next = names(&logs)
        .iter()
        .filter_map(|n| {
            n.strip_prefix("decisions.log.")?
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap()
        + 1;
    // (A rotation renames the file between two writes: no partial line is left in it.)
    let live = std::fs::read(&log).unwrap();
    let whole = live
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    std::fs::write(&log, &live[..whole]).unwrap();
    std::fs::rename(&log, logs.join(format!("decisions.log.{next}"))).unwrap();
    // The chain goes on from the newest rotated file with a line.
    let continues = if whole > 0 {
        format!("decisions.log.{next}")
    } else {
        format!("decisions.log.{}", next - 1)
    };
    let dir = logs.to_str().unwrap();
    let (ok, before) = audit_verify(&[dir]);
    assert!(ok, "{before}");
    let lines_before: u64 = before
        .strip_prefix("OK: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();

    let server = KeygateProcess::start(&text, process::QUIET);
    // Fewer lines than fill a file: the first line after the restart stays in the live file.
    load(server.addr, 1, 3).await;
    wait_until(PATIENCE, "the restart's clean-up and compression", || {
        let n = names(&logs);
        !n.iter().any(|x| x.ends_with(".tmp")) && plain_rotated(&logs).is_empty()
    });
    assert!(server.stop().status.success());
    let (ok, out) = audit_verify(&[dir]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with(&format!("OK: {} lines", lines_before + 3))
            && out.contains("from the start of the log"),
        "{out}"
    );
    let first_after: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first_after["prev_file"], continues);
}
