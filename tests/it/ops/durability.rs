//! No decision line lost at a stop: the real binary with a decision log, `keygate load` at 16
//! connections, SIGTERM in the middle of the run. Every judged request in keygate's own
//! request log has exactly one decision line, the chain verifies, and the shutdown checkpoint
//! names the last line. Five runs, so that a race shows.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::dev::DevServer;
use crate::support::process::keygate;
use crate::support::wait_until;

const RUNS: usize = 5;
/// Decision lines to wait for before the SIGTERM: the load is in full swing by then.
const LINES_BEFORE_STOP: usize = 1500;

fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// One run: serve, load, SIGTERM mid-run, then check the log against the request log.
fn one_run(run: usize) {
    let cwd = tempfile::tempdir().unwrap();
    let server = DevServer::start(cwd.path(), Path::new("dev"), &[]);
    let log = server.data("decisions.log");
    let mut load = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("load")
        .args(server.client_flags(&server.prefix))
        .args([
            "--op",
            "encrypt",
            "--connections",
            "16",
            "--duration",
            "60s",
        ])
        .env("KEYGATE_SECRET", server.secret())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "decision lines under load", || {
        line_count(&log) >= LINES_BEFORE_STOP
    });
    let stderr_path = server.stderr_path.clone();
    let status = server.stop();
    let _ = load.kill();
    let _ = load.wait();
    assert_eq!(status.code(), Some(0), "run {run}: exit status");

    let events = json_lines(&std::fs::read_to_string(&stderr_path).unwrap());
    // Judged requests: the ones whose body parsed (they carry a kmsRequestId) on an
    // operation the policy judges.
    let judged: Vec<&str> = events
        .iter()
        .filter(|e| e["target"] == "keygate::request")
        .filter(|e| {
            matches!(
                e["operation"].as_str(),
                Some("Encrypt" | "Decrypt" | "GetKeyMetadata")
            )
        })
        .filter_map(|e| e["kms_request_id"].as_str().filter(|id| !id.is_empty()))
        .collect();
    let answered = events
        .iter()
        .filter(|e| e["target"] == "keygate::request" && e["status"] == 200)
        .count();
    assert!(
        answered >= LINES_BEFORE_STOP,
        "run {run}: {answered} answered"
    );

    let decisions = json_lines(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(
        decisions.len(),
        line_count(&log),
        "run {run}: a line is not JSON"
    );
    let mut lines_per_request: HashMap<&str, usize> = HashMap::new();
    for d in &decisions {
        *lines_per_request
            .entry(
                d["input"]["request_metadata"]["kmsRequestId"]
                    .as_str()
                    .unwrap_or(""),
            )
            .or_default() += 1;
    }
    let missing = judged
        .iter()
        .filter(|id| !lines_per_request.contains_key(*id))
        .count();
    assert_eq!(
        missing,
        0,
        "run {run}: {missing} of {} judged requests have no decision line",
        judged.len()
    );
    assert!(
        judged
            .iter()
            .all(|id| lines_per_request.get(id) == Some(&1)),
        "run {run}: a request has more than one line"
    );
    assert_eq!(
        decisions.len(),
        judged.len(),
        "run {run}: decision lines without a request line"
    );

    let verify = keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(verify.status.success(), "run {run}: {verify:?}");

    let last = decisions.last().unwrap();
    let at = events
        .iter()
        .rposition(|e| e["message"] == "decision log checkpoint")
        .expect("no checkpoint in keygate's log");
    let checkpoint = &events[at];
    assert_eq!(checkpoint["at"], "shutdown", "run {run}: {checkpoint}");
    assert_eq!(checkpoint["seq"], last["seq"], "run {run}");
    assert_eq!(checkpoint["hash"], last["hash"], "run {run}");
    let stopped = events
        .iter()
        .position(|e| e["message"] == "keygate stopped")
        .expect("no 'keygate stopped' line");
    assert!(
        at < stopped,
        "run {run}: the checkpoint must come before the exit"
    );
}

#[test]
fn sigterm_under_load_loses_no_decision_line() {
    for run in 1..=RUNS {
        one_run(run);
    }
}
