//! End to end: the real binary serves HTTPS with a policy, a decision log and a rate-limited
//! key store; traffic with failures of many kinds flows; a real Prometheus scrapes keygate's
//! admin listener every second with keygate's rule files loaded. Then every recording rule
//! and every dashboard panel's expression must parse, run and return a number, and every
//! rule (alerts included) must evaluate without error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keygate::dev::certs::{self, DevOptions};
use serde_json::{Value, json};

use crate::support::process::QUIET;
use crate::support::prometheus::{Prometheus, deploy_dir, has_data};
use crate::support::tls;
use crate::support::*;

/// How long Prometheus gets to have every rule and panel evaluate to data (scrapes and rule
/// evaluations run every second; a rate needs two scrapes).
const EVALUATED: Duration = Duration::from_secs(90);

#[test]
fn prometheus_evaluates_every_rule_and_panel_against_the_real_binary() {
    let certs_dir = tempfile::tempdir().unwrap();
    let set = certs::write_dev_set(certs_dir.path(), &DevOptions::default()).unwrap();
    let server = KeygateProcess::start(&config_text(&set), QUIET);
    let admin = server.admin_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr, ca) = (stop.clone(), server.addr, set.ca.cert.clone());
        std::thread::spawn(move || drive_traffic(addr, &ca, &stop))
    };

    let prometheus = Prometheus::start(&[admin], &deploy_dir().join("prometheus/*.yml"));
    wait_until(EVALUATED, "prometheus scraping keygate", || {
        let targets = prometheus.targets();
        targets["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["health"] == "up"))
    });

    let queries = queries(&prometheus);
    let mut failing = Vec::new();
    let all_answer = || {
        failing = queries
            .iter()
            .filter_map(|(what, expr)| {
                let answer = prometheus.query(expr);
                (!has_data(&answer)).then(|| format!("{what}\n  {expr}\n  -> {answer}"))
            })
            .collect();
        failing.is_empty()
    };
    let answered = eventually_sync(EVALUATED, all_answer);
    assert!(
        answered,
        "{} of {} queries return no data:\n{}\n\nprometheus log:\n{}",
        failing.len(),
        queries.len(),
        failing.join("\n"),
        prometheus.log()
    );
    rules_evaluate_without_error(&prometheus);

    stop.store(true, Ordering::Relaxed);
    let sent = traffic.join().unwrap();
    assert!(sent > 0);
    assert!(server.stop().status.success());
}

/// keygate on HTTPS with the admin listener, the kms-operations example policy, a decision
/// log, and the `root` key store limited to one request a second.
fn config_text(set: &certs::DevSet) -> String {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples/kms-operations");
    let extra = format!(
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [tls]\ncert_chain = {:?}\nkey = {:?}\n\
         [policy]\ndir = {:?}\n\
         [decision_log]\npath = \"decisions.log\"\n",
        set.server.cert,
        set.server.key,
        policies.display().to_string()
    );
    let text = config(&extra);
    let limited = "uri_prefix = \"\"\nrate_limit_rps = 1\nburst = 1\n";
    assert!(text.contains("uri_prefix = \"\"\n"));
    text.replacen("uri_prefix = \"\"\n", limited, 1)
}

/// Every recording rule's expression (from Prometheus's own view of the rule files) and every
/// dashboard panel's expression: (what, expression).
fn queries(prometheus: &Prometheus) -> Vec<(String, String)> {
    let rules = prometheus.rules();
    let groups = rules["data"]["groups"].as_array().unwrap();
    let files: std::collections::BTreeSet<String> = groups
        .iter()
        .map(|g| g["file"].as_str().unwrap().to_owned())
        .collect();
    let expected: std::collections::BTreeSet<String> = super::rule_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(files, expected, "prometheus loaded other rule files");
    let mut out: Vec<(String, String)> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter(|r| r["type"] == "recording")
        .map(|r| {
            let name = r["name"].as_str().unwrap();
            (
                format!("recording rule {name}"),
                r["query"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(out.len() > 20, "only {} recording rules", out.len());
    for (file, title, expr) in super::panel_queries() {
        out.push((format!("panel {title:?} of {file}"), expr));
    }
    out
}

/// Every rule, alerts included, has been evaluated and is healthy; every alert is labelled
/// page or ticket and links its runbook section.
fn rules_evaluate_without_error(prometheus: &Prometheus) {
    let healthy =
        |r: &Value| r["health"] == "ok" && r["lastError"].as_str().unwrap_or("").is_empty();
    let mut rules = Vec::new();
    let all_healthy = || {
        let answer = prometheus.rules();
        rules = answer["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        rules.iter().all(healthy)
    };
    if !eventually_sync(EVALUATED, all_healthy) {
        let sick: Vec<_> = rules.iter().filter(|r| !healthy(r)).collect();
        panic!("rules not healthy: {sick:#?}");
    }
    let alerts: Vec<&Value> = rules.iter().filter(|r| r["type"] == "alerting").collect();
    assert_eq!(alerts.len(), super::alert_names().len());
    for a in alerts {
        let name = a["name"].as_str().unwrap();
        let severity = a["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["page", "ticket"].contains(&severity),
            "{name}: {severity:?}"
        );
        assert_eq!(
            a["annotations"]["runbook_url"].as_str(),
            Some(super::runbook_url(name).as_str())
        );
        for annotation in ["summary", "description"] {
            assert!(
                a["annotations"][annotation].is_string(),
                "{name}: {annotation}"
            );
        }
    }
}

/// Polls `condition` until it holds or `within` passes; whether it held.
fn eventually_sync(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Sends rounds of requests until `stop`: successes of every operation and failures of many
/// kinds (invalid ciphertext, unknown and disabled keys, a policy denial, a wrong signature,
/// throttling). Returns the number of rounds sent.
fn drive_traffic(addr: SocketAddr, ca: &Path, stop: &AtomicBool) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = tls::client_config(ca, None, &[&rustls::version::TLS13]);
        let stream = tls::connect(addr, config, "localhost").await.unwrap();
        let mut c = Client::over(addr, stream).await;
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            pace.tick().await;
            round(&mut c).await;
            rounds += 1;
        }
        rounds
    })
}

async fn round(c: &mut Client) {
    let enc = c
        .post(&path("encrypt", "foo"), &encrypt_body(b"kek", None, false))
        .await
        .expect_ok()
        .clone();
    c.post(&path("decrypt", "foo"), &decrypt_body(&enc, None))
        .await
        .expect_ok();
    let describe = json!({"requestMetadata": metadata("DescribeKey")});
    c.post(&path("metadata", "foo"), &describe)
        .await
        .expect_ok();
    c.post(&health_path(), &health_body()).await.expect_ok();
    let mut tampered = decrypt_body(&enc, None);
    tampered["authenticationTag"] = json!(b64(&[0u8; 16]));
    c.post(&path("decrypt", "foo"), &tampered)
        .await
        .expect_error(400, "InvalidCiphertextException");
    c.post(&path("metadata", "missing_in_backend"), &describe)
        .await
        .expect_error(404, "KeyNotFoundException");
    c.post(
        &path("encrypt", "disabled_key"),
        &encrypt_body(b"k", None, false),
    )
    .await
    .expect_error(400, "InvalidStateException");
    let re_encrypt = json!({"requestMetadata": metadata("ReEncrypt")});
    c.post(&path("metadata", "foo"), &re_encrypt)
        .await
        .expect_error(403, "AccessDeniedException");
    c.post_signed(
        &path("metadata", "foo"),
        &describe,
        &Signing::with(AK, SECRET2),
    )
    .await
    .expect_error(401, "AuthenticationFailedException");
    // The root key store admits one request a second: most of these are throttled.
    let root = Signing::with(ROOT_AK, ROOT_SECRET);
    let root_path = "/kms/xks/v1/keys/foo/metadata";
    for _ in 0..2 {
        let reply = c.post_signed(root_path, &describe, &root).await;
        assert!(
            reply.status == 200 || reply.error_name() == "ThrottlingException",
            "{reply:?}"
        );
    }
}
