//! The decision log under disk pressure, on a real small filesystem: a size-limited tmpfs the
//! test mounts, the real binary serving XKS (HTTP) and KMS v2 (its Unix socket). Low space
//! warns (once, not per request), shows in the gauges and asks for early retention while
//! requests still flow; below `reserved_bytes`, or once the disk is really full, fail-closed
//! refuses on both doors with the spec's error (XKS 500 InternalException, gRPC UNAVAILABLE);
//! fail-open loses lines and counts every one; when the test frees space keygate serves and
//! writes again by itself; `keygate audit verify` passes on what was written.

use std::collections::HashMap;
use std::path::Path;

use crate::support::kms::{self, KmsClient, kms_table};
use crate::support::process::{http_get, keygate};
use crate::support::tmpfs::Tmpfs;
use crate::support::*;

/// keygate's own log: warnings, the listening lines and the decision log's INFO lines.
const LOG: &str = "warn,keygate::serve=info,keygate::policy::decision_log=info";
const MIB: u64 = 1024 * 1024;

/// The fixture config with an admin listener, the KMS v2 door and a decision log at `log`
/// (on the tmpfs) with `settings` in its table.
fn config_with_log(log: &Path, settings: &str) -> String {
    config(&format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n[decision_log]\npath = {:?}\n{settings}\n{}",
        log.display().to_string(),
        kms_table("")
    ))
}

/// The server's metrics.
fn metrics(server: &KeygateProcess) -> HashMap<String, f64> {
    parse_metrics(&http_get(server.admin_addr(), "/metrics"))
}

fn gauge(server: &KeygateProcess, name: &str) -> f64 {
    metric(&metrics(server), name)
}

async fn xks_encrypt(c: &mut Client) -> Reply {
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(b"pressure", None, false),
    )
    .await
}

async fn kms_encrypt(c: &mut KmsClient, uid: &str) -> Result<(Vec<u8>, String), tonic::Status> {
    kms::encrypt(c, b"pressure", uid).await
}

/// The KMS v2 client on the server's socket, once the door listens.
async fn kms_client(server: &KeygateProcess) -> KmsClient {
    server.wait_for_log("KMS v2 plugin listening");
    kms::connect(&server.dir.path().canonicalize().unwrap().join("kms.sock")).await
}

fn decision_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(log: &Path) -> String {
    let out = keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The refusal a fail-closed XKS door answers while its log cannot be written.
#[track_caller]
fn assert_xks_refusal(r: &Reply) {
    r.expect_error(500, "InternalException");
    let message = r.json["errorMessage"].as_str().unwrap();
    assert!(message.contains("decision log"), "{message}");
}

#[track_caller]
fn assert_kms_refusal(e: &tonic::Status) {
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("decision log"), "{}", e.message());
}

/// Neither door's answers nor keygate's log carry the fixture's secrets or the plaintext.
fn assert_no_secrets(server: &KeygateProcess) {
    let log = server.log();
    for secret in [SECRET, SECRET2, ROOT_SECRET, &b64(b"pressure")] {
        assert!(!log.contains(secret), "keygate's log holds {secret:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_refuses_on_a_full_disk_on_both_doors_and_recovers() {
    let fs = Tmpfs::mount(4 * MIB);
    let log = fs.path().join("decisions.log");
    let settings = "fail_closed = true\nmin_free_bytes = 1048576\nmin_free_percent = 0";
    let server = KeygateProcess::start(&config_with_log(&log, settings), LOG);
    let mut xks = Client::connect(server.addr).await;
    let mut kms = kms_client(&server).await;
    xks_encrypt(&mut xks).await.expect_ok();
    kms_encrypt(&mut kms, "before").await.unwrap();
    let mut answered = 2;
    assert_eq!(gauge(&server, "keygate_decision_log_low_space"), 0.0);

    // The disk fills to its last block. The log file's last page may still take a line or
    // two; requests go on until the writer finds the disk full, then are refused.
    let filler = fs.fill_up("filler");
    let refused = eventually(PATIENCE, "an XKS refusal on the full disk", async || {
        let reply = xks_encrypt(&mut xks).await;
        answered += 1;
        (reply.status != 200).then_some(reply)
    })
    .await;
    assert_xks_refusal(&refused);
    let e = kms_encrypt(&mut kms, "full").await.unwrap_err();
    answered += 1;
    assert_kms_refusal(&e);
    server.wait_for_log("decision log cannot be written");
    let m = metrics(&server);
    assert_eq!(metric(&m, "keygate_decision_log_writable"), 0.0);
    assert_eq!(metric(&m, "keygate_decision_log_free_bytes"), 0.0);
    assert!(metric(&m, "keygate_decision_log_low_space") >= 1.0);
    assert!(metric(&m, "keygate_decision_log_refusals_total") >= 2.0);
    assert!(metric(&m, "keygate_decision_log_early_retention_requests_total") >= 1.0);
    assert_eq!(metric(&m, "keygate_decision_log_lines_lost_total"), 0.0);

    // Space returns: keygate writes the waiting lines and serves again, without a restart.
    let mark = server.log().len();
    std::fs::remove_file(filler).unwrap();
    server.wait_for_log_after(mark, "decision log writable again");
    server.wait_for_log_after(mark, "decision log free space recovered");
    wait_until(PATIENCE, "the writable gauge back at 1", || {
        gauge(&server, "keygate_decision_log_writable") == 1.0
    });
    xks_encrypt(&mut xks).await.expect_ok();
    kms_encrypt(&mut kms, "after").await.unwrap();
    answered += 2;
    let m = metrics(&server);
    assert_eq!(metric(&m, "keygate_decision_log_low_space"), 0.0);
    assert_eq!(metric(&m, "keygate_decision_log_lines_lost_total"), 0.0);
    assert_no_secrets(&server);
    assert!(server.stop().status.success());

    // Fail-closed lost nothing: every judged request has its line, the refused ones with
    // the error they were answered.
    let lines = decision_lines(&log);
    assert_eq!(lines.len(), answered);
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["error_name"].as_str())
        .collect();
    assert!(names.contains(&"InternalException"), "{names:?}");
    assert!(names.contains(&"UNAVAILABLE"), "{names:?}");
    verify(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_counts_every_lost_line_and_recovers() {
    let fs = Tmpfs::mount(4 * MIB);
    let log = fs.path().join("decisions.log");
    // A queue of 4 lines: the full disk loses lines after a handful of requests.
    let settings = "queue_lines = 4\nmin_free_bytes = 1048576\nmin_free_percent = 0";
    let server = KeygateProcess::start(&config_with_log(&log, settings), LOG);
    let mut xks = Client::connect(server.addr).await;
    let mut kms = kms_client(&server).await;
    xks_encrypt(&mut xks).await.expect_ok();
    let mut answered = 1;

    let filler = fs.fill_up("filler");
    // Fail-open: every request is served while the lines find no room.
    for n in 0..40 {
        xks_encrypt(&mut xks).await.expect_ok();
        kms_encrypt(&mut kms, &format!("full-{n}")).await.unwrap();
        answered += 2;
    }
    let m = metrics(&server);
    assert_eq!(metric(&m, "keygate_decision_log_writable"), 0.0);
    let lost = metric(&m, "keygate_decision_log_lines_lost_total");
    assert!(lost >= 60.0, "{lost} lines lost of 80 with a queue of 4");
    // Losses are logged, but not one line per lost line.
    let loss_lines = server.log().matches("line lost").count();
    assert!(
        loss_lines > 0 && (loss_lines as f64) < lost,
        "{loss_lines} log lines for {lost} lost"
    );

    let mark = server.log().len();
    std::fs::remove_file(filler).unwrap();
    server.wait_for_log_after(mark, "decision log writable again");
    xks_encrypt(&mut xks).await.expect_ok();
    answered += 1;
    // Every judged request is now either a line in the file or counted lost.
    wait_until(PATIENCE, "no line pending", || {
        gauge(&server, "keygate_decision_log_lines_pending") == 0.0
    });
    let m = metrics(&server);
    let lines = decision_lines(&log);
    let decisions = lines.iter().filter(|l| l.get("event").is_none()).count();
    let lost = metric(&m, "keygate_decision_log_lines_lost_total");
    assert_eq!(
        lost,
        (answered - decisions) as f64,
        "lost = answered judged requests - decision lines in the file"
    );
    assert_eq!(
        metric(&m, "keygate_decision_log_lines_written_total"),
        lines.len() as f64
    );
    assert_eq!(metric(&m, "keygate_decision_log_writable"), 1.0);
    // The log itself records every loss: lines_lost lines, before the next decision, whose
    // counts add up to the counter.
    let records: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "lines_lost")
        .collect();
    let recorded: u64 = records.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(recorded as f64, lost, "{records:?}");
    assert_no_secrets(&server);
    assert!(server.stop().status.success());
    let report = verify(&log);
    let seqs: Vec<String> = records.iter().map(|l| l["seq"].to_string()).collect();
    let expected = format!(
        "{recorded} lines lost in {} episodes (lines_lost lines seq {})",
        records.len(),
        seqs.join(", ")
    );
    assert!(report.contains(&expected), "{report}");
    super::event::validate(&log);
    // An auditor who wants a loss to fail the check asks for it.
    let out = keygate(&["audit", "verify", "--fail-on-lost", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("LOST: the log records {recorded} lost lines")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn low_space_warns_before_the_reserve_refuses_and_recovers() {
    let fs = Tmpfs::mount(8 * MIB);
    let log = fs.path().join("decisions.log");
    let settings = "fail_closed = true\nmin_free_bytes = 4194304\nmin_free_percent = 0\n\
                    reserved_bytes = 2097152";
    let server = KeygateProcess::start(&config_with_log(&log, settings), LOG);
    let mut xks = Client::connect(server.addr).await;
    let mut kms = kms_client(&server).await;
    xks_encrypt(&mut xks).await.expect_ok();
    let mut answered = 1;
    let m = metrics(&server);
    assert_eq!(metric(&m, "keygate_decision_log_low_space"), 0.0);
    assert_eq!(
        metric(&m, "keygate_decision_log_low_space_threshold_bytes"),
        4.0 * MIB as f64
    );
    assert!(metric(&m, "keygate_decision_log_free_bytes") > 4.0 * MIB as f64);
    assert_eq!(
        metric(&m, "keygate_decision_log_filesystem_size_bytes"),
        8.0 * MIB as f64
    );

    // Below min_free_bytes, above the reserve: warned, counted, retention asked for, and
    // requests still served.
    let low = fs.fill_to("filler-low", 3 * MIB);
    let warning = server.wait_for_log("decision log free space low");
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    server.wait_for_log("decision log early retention requested");
    wait_until(PATIENCE, "the low-space gauge at 1", || {
        gauge(&server, "keygate_decision_log_low_space") == 1.0
    });
    for n in 0..20 {
        xks_encrypt(&mut xks).await.expect_ok();
        kms_encrypt(&mut kms, &format!("low-{n}")).await.unwrap();
        answered += 2;
    }
    let m = metrics(&server);
    assert!(metric(&m, "keygate_decision_log_free_bytes") < 4.0 * MIB as f64);
    assert!(metric(&m, "keygate_decision_log_early_retention_requests_total") >= 1.0);
    assert_eq!(metric(&m, "keygate_decision_log_writable"), 1.0);
    assert_eq!(
        server.log().matches("decision log free space low").count(),
        1,
        "one warning, not one per request"
    );

    // Below the reserve: refused on both doors, though the disk is not full.
    let mark = server.log().len();
    let reserve = fs.fill_to("filler-reserve", MIB);
    server.wait_for_log_after(mark, "below reserved_bytes");
    let refused = eventually(PATIENCE, "an XKS refusal below the reserve", async || {
        let reply = xks_encrypt(&mut xks).await;
        answered += 1;
        (reply.status != 200).then_some(reply)
    })
    .await;
    assert_xks_refusal(&refused);
    assert_kms_refusal(&kms_encrypt(&mut kms, "reserve").await.unwrap_err());
    answered += 1;
    let m = metrics(&server);
    assert_eq!(metric(&m, "keygate_decision_log_low_space"), 2.0);
    assert!(metric(&m, "keygate_decision_log_free_bytes") > 0.0);
    assert!(fs.free() > 0, "refused before the disk was full");

    // Space returns: keygate says so and serves again, without a restart.
    let mark = server.log().len();
    std::fs::remove_file(reserve).unwrap();
    std::fs::remove_file(low).unwrap();
    server.wait_for_log_after(mark, "decision log free space recovered");
    server.wait_for_log_after(mark, "decision log writable again");
    wait_until(PATIENCE, "the gauges back", || {
        let m = metrics(&server);
        metric(&m, "keygate_decision_log_low_space") == 0.0
            && metric(&m, "keygate_decision_log_writable") == 1.0
    });
    xks_encrypt(&mut xks).await.expect_ok();
    kms_encrypt(&mut kms, "after").await.unwrap();
    answered += 2;
    assert_eq!(gauge(&server, "keygate_decision_log_lines_lost_total"), 0.0);
    assert_no_secrets(&server);
    assert!(server.stop().status.success());
    assert_eq!(decision_lines(&log).len(), answered);
    verify(&log);
}

/// The rotated files of `log`, oldest first (`decisions.log.1`, `.2`, ...).
fn rotated_files(log: &Path) -> Vec<String> {
    let prefix = format!("{}.", log.file_name().unwrap().to_str().unwrap());
    let mut numbered: Vec<(u64, String)> = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let n = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    numbered.sort();
    numbered.into_iter().map(|(_, name)| name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn low_space_retires_the_oldest_files_early_until_space_is_ample_again() {
    let fs = Tmpfs::mount(8 * MIB);
    let log = fs.path().join("decisions.log");
    // Small plain rotated files, so each one dropped frees a known amount; retention's own
    // limits are far away: only the disk-space watch drops anything.
    let settings = "compression = \"none\"\nrotate_bytes = 131072\nmin_free_bytes = 3145728\n\
                    min_free_percent = 0";
    let server = KeygateProcess::start(&config_with_log(&log, settings), LOG);
    let mut xks = Client::connect(server.addr).await;
    let mut answered = 0;
    while rotated_files(&log).len() < 8 {
        xks_encrypt(&mut xks).await.expect_ok();
        answered += 1;
    }
    let before = rotated_files(&log);

    // 200 KiB short of min_free_bytes: two files of 128 KiB must go, oldest first, each
    // recorded in the chain before it is removed, and nothing else.
    let mark = server.log().len();
    let filler = fs.fill_to("filler", 3 * MIB - 200 * 1024);
    server.wait_for_log_after(mark, "decision log free space low");
    wait_until(
        PATIENCE,
        "space ample again by early retention alone",
        || gauge(&server, "keygate_decision_log_low_space") == 0.0,
    );
    server.wait_for_log_after(mark, "decision log free space recovered");
    let after = rotated_files(&log);
    let dropped = &before[..before.len() - after.len()];
    assert!(
        (2..=3).contains(&dropped.len()),
        "dropped {dropped:?}; left {after:?}"
    );
    assert_eq!(after, before[dropped.len()..], "the oldest go first");
    let m = metrics(&server);
    assert_eq!(
        metric(&m, "keygate_decision_log_retention_deletions_total"),
        dropped.len() as f64
    );
    assert!(metric(&m, "keygate_decision_log_early_retention_requests_total") >= 2.0);
    // Requests were served throughout, and are served now.
    xks_encrypt(&mut xks).await.expect_ok();
    answered += 1;
    assert_no_secrets(&server);
    assert!(server.stop().status.success());
    std::fs::remove_file(filler).unwrap();

    // Every dropped file is named by a retention line for disk space, and the log that is
    // left verifies as cut by the retention policy.
    let lines = decision_lines(&log);
    let named: Vec<String> = lines
        .iter()
        .filter(|l| l["event"] == "retention")
        .inspect(|l| assert_eq!(l["reason"], "disk_space", "{l}"))
        .flat_map(|l| l["dropped"].as_array().unwrap().clone())
        .map(|d| d["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(named, dropped, "one retention line per file, in order");
    let glob = format!("{}*", log.display());
    let out = keygate(&["audit", "verify", &glob]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("dropped by the retention policy"), "{said}");
    // Each judged request has its line in the files that are left or in those dropped.
    let decisions = lines.iter().filter(|l| l["event"].is_null()).count();
    assert!(decisions <= answered && decisions > 0);
}
