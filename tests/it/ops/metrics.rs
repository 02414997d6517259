//! Metrics after known traffic against the real server: request counts by operation,
//! key store, outcome and errorName; latency histograms; backend calls; requests per access
//! key id; credential ages; build info; refused mTLS client certificates by reason.

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
