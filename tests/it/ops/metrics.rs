//! Metrics after known traffic against the real server: request counts by operation,
//! key store, outcome and errorName; latency histograms; backend calls; requests per access
//! key id; credential ages; build info; refused mTLS client certificates by reason;
//! unauthorized requests by stage and reason; the decision log's and key backend's state.

use std::time::Duration;

use serde_json::json;

use crate::support::tls;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_values_match_the_traffic_sent() {
    let s = TestServer::start(&config_with(&[(
        "access_key_id = \"ROTATEDCREDENTIALKEYID2345\"",
        "access_key_id = \"ROTATEDCREDENTIALKEYID2345\"\ncreated = \"2026-01-01T00:00:00Z\"",
    )]))
    .await;
    let mut c = Client::connect(s.addr).await;
    let mut last = json!(null);
    for _ in 0..3 {
        last = c
            .post(&path("encrypt", "foo"), &encrypt_body(b"hi", None, false))
            .await
            .expect_ok()
            .clone();
    }
    let second = Signing::with(AK2, SECRET2);
    c.post_signed(&path("decrypt", "foo"), &decrypt_body(&last, None), &second)
        .await
        .expect_ok();
    let wrong = Signing {
        secret: SECRET2.into(),
        ..Signing::default()
    };
    let body = json!({"requestMetadata": metadata("CreateKey")});
    c.post_signed(&path("metadata", "foo"), &body, &wrong)
        .await
        .expect_error(401, "AuthenticationFailedException");
    c.post(&path("metadata", "not-in-keystore"), &body)
        .await
        .expect_error(404, "KeyNotFoundException");
    c.post("/nowhere/kms/xks/v1/health", &body)
        .await
        .expect_error(404, "InvalidUriPathException");

    let m = s.metrics();
    let req = |op: &str, ks: &str, err: &str| {
        let outcome = if err.is_empty() { "ok" } else { "error" };
        metric(
            &m,
            &format!(
                "keygate_requests_total{{operation=\"{op}\",keystore=\"{ks}\",outcome=\"{outcome}\",error_name=\"{err}\"}}"
            ),
        )
    };
    assert_eq!(req("Encrypt", "main", ""), 3.0);
    assert_eq!(req("Decrypt", "main", ""), 1.0);
    assert_eq!(
        req("GetKeyMetadata", "main", "AuthenticationFailedException"),
        1.0
    );
    assert_eq!(req("GetKeyMetadata", "main", "KeyNotFoundException"), 1.0);
    assert_eq!(req("", "", "InvalidUriPathException"), 1.0);

    let by_key = |ak: &str| {
        metric(
            &m,
            &format!(
                "keygate_requests_by_access_key_total{{keystore=\"main\",access_key_id=\"{ak}\"}}"
            ),
        )
    };
    assert_eq!(by_key(AK), 4.0, "3 encrypts and the unknown key");
    assert_eq!(by_key(AK2), 1.0);

    let count = |series: &str| metric(&m, series);
    assert_eq!(
        count("keygate_request_duration_seconds_count{operation=\"Encrypt\"}"),
        3.0
    );
    assert_eq!(
        count("keygate_request_duration_seconds_bucket{le=\"+Inf\",operation=\"Encrypt\"}"),
        3.0
    );
    assert!(count("keygate_request_duration_seconds_sum{operation=\"Encrypt\"}") > 0.0);
    assert_eq!(
        count("keygate_backend_operation_duration_seconds_count{operation=\"encrypt\"}"),
        3.0
    );
    assert_eq!(
        count("keygate_backend_operation_duration_seconds_count{operation=\"decrypt\"}"),
        1.0
    );
    assert_eq!(
        count("keygate_backend_operation_duration_seconds_count{operation=\"key_info\"}"),
        4.0
    );
    assert_eq!(count("keygate_in_flight_requests"), 0.0);

    let loaded = metric(
        &m,
        &format!(
            "keygate_credential_age_seconds{{keystore=\"main\",access_key_id=\"{AK}\",since=\"loaded\"}}"
        ),
    );
    assert!((0.0..60.0).contains(&loaded), "{loaded}");
    let created = metric(
        &m,
        &format!(
            "keygate_credential_age_seconds{{keystore=\"main\",access_key_id=\"{AK2}\",since=\"created\"}}"
        ),
    );
    assert!(created > 30.0 * 86_400.0, "{created}");
    let build = format!(
        "keygate_build_info{{version=\"{}\",backend=\"software\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&m, &build), 1.0, "{m:?}");
}

/// mTLS refusals from the real server's handshakes, by reason, on the metrics endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_certificates_are_counted_by_reason() {
    let certs_dir = tempfile::tempdir().unwrap();
    let set = keygate::dev::certs::write_dev_set(certs_dir.path(), &Default::default()).unwrap();
    let tls = format!(
        "\n[tls]\ncert_chain = {:?}\nkey = {:?}\nclient_ca = {:?}\nclient_name = {:?}\n",
        set.server.cert,
        set.server.key,
        set.ca.cert,
        tls::CLIENT_NAME
    );
    let s = TestServer::start(&config(&tls)).await;
    let versions = [&rustls::version::TLS13];
    let ca = &set.ca.cert;
    // Accepted: counts nothing.
    let good = tls::client_config(ca, Some(&set.client), &versions);
    tls::connect(s.addr, good, "localhost").await.unwrap();
    for pair in [
        &set.client_other_ca,
        &set.client_other_ca,
        &set.client_expired,
    ] {
        let config = tls::client_config(ca, Some(pair), &versions);
        tls::refused(s.addr, config).await;
    }
    tls::refused(s.addr, tls::client_config(ca, None, &versions)).await;

    let m = s.metrics();
    let refusals = |reason: &str| {
        let series =
            format!("keygate_tls_client_certificate_refusals_total{{reason=\"{reason}\"}}");
        assert!(m.contains_key(&series), "{series} missing");
        metric(&m, &series)
    };
    assert_eq!(refusals("unknown_ca"), 2.0);
    assert_eq!(refusals("expired"), 1.0);
    assert_eq!(refusals("no_certificate"), 1.0);
    // Every reason is exported, at zero until it happens.
    assert_eq!(refusals("wrong_name"), 0.0);
    assert_eq!(refusals("revoked"), 0.0);
}

/// Refusals through the real server, counted by stage and reason; the decision log's state
/// (configured, fail-closed, writable, nothing pending once flushed); the key backend's
/// health from a GetHealthStatus and its keys' version creation times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_requests_and_audit_and_backend_state_are_exported() {
    let root = tempfile::tempdir().unwrap();
    let policies =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples/kms-operations");
    let log = root.path().join("decisions.log");
    let s = TestServer::start(&config(&format!(
        "\n[policy]\ndir = {:?}\n[decision_log]\npath = {:?}\nfail_closed = true\n",
        policies.display().to_string(),
        log.display().to_string()
    )))
    .await;
    let mut c = s.client().await;
    let body = json!({"requestMetadata": metadata("DescribeKey")});
    let metadata_path = path("metadata", "foo");
    let refused = [
        Signing::with(AK, SECRET2),
        Signing::with("UNKNOWNACCESSKEYID234567", SECRET),
        Signing {
            skew: 3600,
            ..Signing::default()
        },
        Signing {
            region: "eu-west-1".into(),
            ..Signing::default()
        },
        Signing::with(AK, SECRET2),
    ];
    for signing in &refused {
        c.post_signed(&metadata_path, &body, signing)
            .await
            .expect_error(401, "AuthenticationFailedException");
    }
    // The kms-operations example lets ReEncrypt lead to no XKS operation.
    let re_encrypt = json!({"requestMetadata": metadata("ReEncrypt")});
    c.post(&metadata_path, &re_encrypt)
        .await
        .expect_error(403, "AccessDeniedException");
    c.post(&metadata_path, &body).await.expect_ok();
    c.post(&health_path(), &health_body()).await.expect_ok();
    assert!(s.decision_log().flush(Duration::from_secs(10)));

    let m = s.metrics();
    let refusals = |stage: &str, reason: &str| {
        let series =
            format!("keygate_unauthorized_requests_total{{stage=\"{stage}\",reason=\"{reason}\"}}");
        assert!(m.contains_key(&series), "{series} missing");
        metric(&m, &series)
    };
    assert_eq!(refusals("sigv4", "signature_mismatch"), 2.0);
    assert_eq!(refusals("sigv4", "unknown_access_key"), 1.0);
    assert_eq!(refusals("sigv4", "clock_skew"), 1.0);
    assert_eq!(refusals("sigv4", "scope_mismatch"), 1.0);
    assert_eq!(refusals("sigv4", "missing_authorization"), 0.0);
    assert_eq!(refusals("policy", "denied"), 1.0);
    assert_eq!(refusals("policy", "evaluation_failed"), 0.0);

    assert_eq!(metric(&m, "keygate_decision_log_enabled"), 1.0);
    assert_eq!(metric(&m, "keygate_decision_log_fail_closed"), 1.0);
    assert_eq!(metric(&m, "keygate_decision_log_writable"), 1.0);
    assert_eq!(metric(&m, "keygate_decision_log_lines_written_total"), 2.0);
    assert_eq!(metric(&m, "keygate_decision_log_lines_pending"), 0.0);
    assert_eq!(metric(&m, "keygate_decision_log_refusals_total"), 0.0);
    assert_eq!(metric(&m, "keygate_decision_log_write_errors_total"), 0.0);

    assert_eq!(
        metric(&m, "keygate_backend_instances{status=\"ACTIVE\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "keygate_backend_instances{status=\"UNAVAILABLE\"}"),
        0.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let checked = metric(&m, "keygate_backend_health_checked_timestamp_seconds");
    assert!(
        (now - 60.0..=now + 1.0).contains(&checked),
        "{checked} vs {now}"
    );
    for (key, _, _) in KEYS {
        let series = format!("keygate_key_version_created_timestamp_seconds{{key_id=\"{key}\"}}");
        let created = metric(&m, &series);
        assert!(
            (now - 600.0..=now + 1.0).contains(&created),
            "{series}: {created}"
        );
    }
    s.stop().await;
}
