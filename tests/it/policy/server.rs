//! The policy engine and decision log inside the real server, and the policy/audit commands of
//! the real binary.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::process::keygate;
use crate::support::*;

const ALLOW_ALL: &str = "package keygate\n\nimport rego.v1\n\ndefault allow := true\n";
const DENY_ALL: &str = "package keygate\n\nimport rego.v1\n\ndefault allow := false\n\ndeny contains \"closed for maintenance\"\n";

fn policy_dir(root: &Path, text: &str) -> std::path::PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.rego"), text).unwrap();
    dir
}

fn with_policy(dir: &Path, extra: &str) -> String {
    config(&format!(
        "\n[policy]\ndir = {:?}\n{extra}",
        dir.display().to_string()
    ))
}

fn metadata_body() -> Value {
    json!({"requestMetadata": metadata("CreateKey")})
}

#[tokio::test]
async fn health_is_never_judged_by_policy() {
    let root = tempfile::tempdir().unwrap();
    let dir = policy_dir(root.path(), DENY_ALL);
    let log = root.path().join("decisions.log");
    let config = with_policy(
        &dir,
        &format!("[decision_log]\npath = {:?}\n", log.display().to_string()),
    );
    let server = TestServer::start(&config).await;
    let mut client = server.client().await;
    let health = client
        .post(
            &health_path(),
            &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "h-1"}}),
        )
        .await;
    health.expect_ok();
    let denied = client
        .post(&path("metadata", "foo"), &metadata_body())
        .await;
    denied.expect_error(403, "AccessDeniedException");
    assert_eq!(
        denied.json["errorMessage"],
        "denied by policy: closed for maintenance"
    );
    let encrypt = client
        .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
        .await;
    encrypt.expect_error(403, "AccessDeniedException");
    assert!(server.decision_log().flush(Duration::from_secs(10)));
    let lines = std::fs::read_to_string(&log).unwrap();
    let ops: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["input"]["operation"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ops,
        ["GetKeyMetadata", "Encrypt"],
        "health must not be judged or logged"
    );
    server.stop().await;
}

#[tokio::test]
async fn hot_reload_takes_a_good_policy_and_refuses_a_broken_one_while_requests_flow() {
    let root = tempfile::tempdir().unwrap();
    let dir = policy_dir(root.path(), ALLOW_ALL);
    let server = TestServer::start(&with_policy(&dir, "")).await;
    let background = server.spawn_background();
    let addr = server.addr;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flow = tokio::spawn(async move {
        let mut client = Client::connect(addr).await;
        let mut statuses = Vec::new();
        while !*stop_rx.borrow() {
            let r = client
                .post(&path("metadata", "foo"), &metadata_body())
                .await;
            statuses.push(r.status);
            // Deliberate: a steady trickle of requests while the policy changes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        statuses
    });
    let first = server.policy_revision();
    std::fs::write(dir.join("policy.rego"), DENY_ALL).unwrap();
    wait_for(PATIENCE, "the policy reload", || {
        server.policy_revision() != first
    })
    .await;
    let deny_revision = server.policy_revision();
    // A broken policy (syntax error) is refused; the deny-all policy stays in force.
    std::fs::write(
        dir.join("policy.rego"),
        "package keygate\nimport rego.v1\nallow if {\n",
    )
    .unwrap();
    wait_for(PATIENCE, "the broken policy refused", || {
        server.policy_counts().reload_failures >= 1
    })
    .await;
    assert_eq!(server.policy_revision(), deny_revision);
    // A policy whose own tests fail is refused too.
    std::fs::write(dir.join("policy.rego"), ALLOW_ALL).unwrap();
    std::fs::write(
        dir.join("policy_test.rego"),
        "package keygate_test\nimport rego.v1\ntest_denies if not data.keygate.allow\n",
    )
    .unwrap();
    wait_for(PATIENCE, "the policy failing its tests refused", || {
        server.policy_counts().reload_failures >= 2
    })
    .await;
    assert_eq!(server.policy_revision(), deny_revision);
    stop_tx.send(true).unwrap();
    let statuses = flow.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(statuses.first(), Some(&200));
    assert_eq!(statuses.last(), Some(&403));
    let mut client = server.client().await;
    client
        .post(&path("metadata", "foo"), &metadata_body())
        .await
        .expect_error(403, "AccessDeniedException");
    drop(background);
    server.stop().await;
}

#[tokio::test]
async fn one_decision_log_line_per_request_under_concurrency() {
    let root = tempfile::tempdir().unwrap();
    let dir = policy_dir(
        root.path(),
        "package keygate\nimport rego.v1\ndefault allow := false\nallow if input.operation != \"Decrypt\"\n\
         deny contains \"no decrypt\" if input.operation == \"Decrypt\"\n",
    );
    let log = root.path().join("decisions.log");
    let config = with_policy(
        &dir,
        &format!("[decision_log]\npath = {:?}\n", log.display().to_string()),
    );
    let server = TestServer::start(&config).await;
    let (clients, per_client) = (16, 6);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut ids = Vec::new();
            for i in 0..per_client {
                let (p, body) = match i % 3 {
                    0 => (path("metadata", "foo"), metadata_body()),
                    1 => (path("encrypt", "foo"), encrypt_body(b"secret plaintext", Some(b"aad!"), false)),
                    _ => (path("decrypt", "foo"), json!({"requestMetadata": metadata("Decrypt"), "ciphertext": b64(b"c"), "encryptionAlgorithm": "AES_GCM", "initializationVector": b64(&[0; 12]), "authenticationTag": b64(&[0; 16])})),
                };
                let r = client.post(&p, &body).await;
                let expected = if i % 3 == 2 { 403 } else { 200 };
                assert_eq!(r.status, expected, "{}", r.raw);
                ids.push(body["requestMetadata"]["kmsRequestId"].as_str().unwrap().to_owned());
                client.post(&health_path(), &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "h"}})).await;
            }
            ids
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    let decision_log = server.decision_log();
    assert!(decision_log.flush(Duration::from_secs(10)));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("secret plaintext") && !text.contains(&b64(b"secret plaintext")));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), clients * per_client);
    let mut logged: Vec<String> = lines
        .iter()
        .map(|l| {
            l["input"]["request_metadata"]["kmsRequestId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    logged.sort();
    sent.sort();
    assert_eq!(logged, sent, "exactly one line per judged request");
    let mut req_ids = std::collections::BTreeSet::new();
    for l in &lines {
        let denied = l["input"]["operation"] == "Decrypt";
        // OPA's event: `result` is the document at `path`, the caller is `ip:port`.
        assert_eq!(l["path"], "keygate");
        assert_eq!(l["result"]["allow"], !denied);
        assert!(
            l["requested_by"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{l}"
        );
        assert!(req_ids.insert(l["req_id"].as_u64().unwrap()), "{l}");
        assert_eq!(
            l["error_name"],
            if denied {
                json!("AccessDeniedException")
            } else {
                Value::Null
            }
        );
        assert_eq!(
            l["bundles"]["keygate"]["revision"],
            server.policy_revision()
        );
        assert_eq!(
            l["input"]["aad_length"],
            if l["input"]["operation"] == "Encrypt" {
                4
            } else {
                0
            }
        );
    }
    assert_eq!(
        (decision_log.lost(), decision_log.written()),
        (0, (clients * per_client) as u64)
    );
    let verify = keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    server.stop().await;
}

#[tokio::test]
async fn fail_closed_log_refuses_requests_but_not_health() {
    let root = tempfile::tempdir().unwrap();
    let dir = policy_dir(root.path(), ALLOW_ALL);
    let log = root.path().join("decisions.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let config = with_policy(
        &dir,
        &format!(
            "[decision_log]\npath = {:?}\nfail_closed = true\n",
            log.display().to_string()
        ),
    );
    let server = TestServer::start(&config).await;
    let mut client = server.client().await;
    // The first line hits the full disk; from then on requests are refused until it recovers.
    let _ = client
        .post(&path("metadata", "foo"), &metadata_body())
        .await;
    wait_for(PATIENCE, "the decision log failing", || {
        !server.decision_log().writable()
    })
    .await;
    let refused = client
        .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
        .await;
    refused.expect_error(500, "InternalException");
    assert!(
        refused.json["errorMessage"]
            .as_str()
            .unwrap()
            .contains("decision log")
    );
    client
        .post(
            &health_path(),
            &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "h"}}),
        )
        .await
        .expect_ok();
    assert!(server.policy_counts().log_refusals >= 1);
    // What the KeygateDecisionLogFailClosedRefusing alert watches.
    let m = server.metrics();
    assert_eq!(metric(&m, "keygate_decision_log_writable"), 0.0);
    assert_eq!(metric(&m, "keygate_decision_log_fail_closed"), 1.0);
    assert!(metric(&m, "keygate_decision_log_refusals_total") >= 1.0);
    assert!(metric(&m, "keygate_decision_log_write_errors_total") >= 1.0);
    // Space comes back: requests flow again without a restart. One rename swaps a real file
    // in, so the writer never finds the path missing between two steps.
    let fresh = root.path().join("fresh");
    std::fs::write(&fresh, "").unwrap();
    std::fs::rename(&fresh, &log).unwrap();
    wait_for(PATIENCE, "the decision log writable again", || {
        server.decision_log().writable()
    })
    .await;
    client
        .post(&path("metadata", "foo"), &metadata_body())
        .await
        .expect_ok();
    assert_eq!(
        metric(&server.metrics(), "keygate_decision_log_writable"),
        1.0
    );
    server.stop().await;
}

#[test]
fn audit_verify_catches_edited_deleted_and_reordered_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = config(&format!(
            "\n[decision_log]\npath = {:?}\n",
            log.display().to_string()
        ));
        let server = TestServer::start(&config).await;
        let mut client = server.client().await;
        for _ in 0..5 {
            client
                .post(&path("metadata", "foo"), &metadata_body())
                .await
                .expect_ok();
        }
        assert!(server.decision_log().flush(Duration::from_secs(10)));
        server.stop().await;
    });
    let good = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    assert_eq!(lines.len(), 5);
    let ok = keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: 5 lines"));
    let edited = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                l.replace("\"allow\":true", "\"allow\":false")
            } else {
                (*l).to_owned()
            }
        })
        .collect::<Vec<_>>();
    let mut deleted: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    deleted.remove(1);
    let mut reordered: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    reordered.swap(2, 3);
    for (name, tampered, line) in [
        ("edited", edited, 3),
        ("deleted", deleted, 2),
        ("reordered", reordered, 3),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, tampered.join("\n") + "\n").unwrap();
        let out = keygate(&["audit", "verify", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        assert!(
            stdout.contains(&format!("BROKEN: {}:{line}:", file.display())),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn policy_test_passes_on_the_shipped_policies() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for args in [
        vec!["policy", "test"],
        vec!["policy", "test", policies.to_str().unwrap()],
    ] {
        let out = keygate(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout
                .lines()
                .last()
                .unwrap()
                .ends_with(" passed, 0 failed"),
            "{stdout}"
        );
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

#[test]
fn policy_check_and_test_report_failures() {
    let root = tempfile::tempdir().unwrap();
    let dir = policy_dir(
        root.path(),
        "package keygate\nimport rego.v1\nallow if {\n  input.x ==\n}\n",
    );
    let out = keygate(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy.rego:5"));
    std::fs::write(dir.join("policy.rego"), ALLOW_ALL).unwrap();
    std::fs::write(
        dir.join("policy_test.rego"),
        "package keygate_test\nimport rego.v1\ntest_denies if not data.keygate.allow\n",
    )
    .unwrap();
    let out = keygate(&["policy", "test", "-v", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("    | test_denies if not data.keygate.allow"),
        "{stdout}"
    );
    assert!(stdout.ends_with("0 passed, 1 failed\n"), "{stdout}");
    let input = root.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"operation": "Encrypt", "request_metadata": {}}"#,
    )
    .unwrap();
    // A partial input is refused unless the check is skipped on purpose.
    let refused = keygate(&["policy", "eval", "--input", input.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(64));
    let out = keygate(&[
        "policy",
        "eval",
        "--no-input-check",
        "--input",
        input.to_str().unwrap(),
    ]);
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allow"], true);
}

/// The head a restarted keygate reports in its own log (`decision log checkpoint`) lets
/// `audit verify --checkpoint` catch what the keyless chain alone cannot: lines cut off the
/// end, and a tail rewritten and sealed again.
#[test]
fn checkpoints_catch_a_cut_off_or_resealed_tail() {
    use keygate::policy::decision_log::chain;
    let audit = tempfile::tempdir().unwrap();
    let log = audit.path().join("decisions.log");
    let config = config(&format!(
        "\n[decision_log]\npath = {:?}\n",
        log.display().to_string()
    ));
    let first = KeygateProcess::start(&config, "info");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(first.addr).await;
        for _ in 0..4 {
            client
                .post(&path("metadata", "foo"), &metadata_body())
                .await
                .expect_ok();
        }
    });
    // The stop writes every queued line before the process exits.
    first.stop();
    let lines = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    assert_eq!(lines, 4);
    // A restart reports the head it resumes from.
    let second = KeygateProcess::start(&config, "info");
    second.wait_for_log("decision log checkpoint");
    let stderr = second.stop().stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    let line: Value = stderr
        .lines()
        .find(|l| l.contains("decision log checkpoint"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(line["seq"], 4, "{line}");
    let checkpoint = format!("4:{}", line["hash"].as_str().unwrap());
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", log.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = keygate(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = verify(&["--checkpoint", &checkpoint]);
    assert!(ok && out.contains("1 checkpoints matched"), "{out}");

    let good = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    // Cut off the last line: the chain alone still verifies; the checkpoint does not.
    std::fs::write(&log, format!("{}\n", lines[..3].join("\n"))).unwrap();
    assert!(verify(&[]).0);
    let (ok, out) = verify(&["--checkpoint", &checkpoint]);
    assert!(!ok && out.contains("cut off the end"), "{out}");
    // Rewrite the last line and seal it again: a valid chain, but not the recorded one.
    let third = chain::open_line(lines[2]).unwrap();
    let forged = lines[3].replacen("\"GetKeyMetadata\"", "\"Encrypt\"", 1);
    let body = forged.split(",\"hash\":\"").next().unwrap().to_owned() + "}";
    let (resealed, _) = chain::seal(&third.hash, &body);
    std::fs::write(&log, format!("{}\n{resealed}\n", lines[..3].join("\n"))).unwrap();
    assert!(verify(&[]).0, "the forged tail must be a valid chain");
    let (ok, out) = verify(&["--checkpoint", &checkpoint]);
    assert!(!ok && out.contains("rewritten"), "{out}");
    // A malformed checkpoint is a usage error, not a verdict.
    let out = keygate(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--checkpoint",
        "4:xyz",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEQ:HASH"));
}
