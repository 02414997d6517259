//! The metrics text after known events.

use super::*;

fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn requests_backend_and_handles_show_up_in_the_text() {
    let m = Metrics::new("software");
    m.record_request(RequestRecord {
        operation: "Encrypt",
        keystore: "main",
        error_name: "",
        access_key_id: Some("AKIDAKIDAKIDAKIDAKID"),
        latency: Duration::from_micros(300),
    });
    m.record_backend("encrypt", Duration::from_micros(40), Some("busy"));
    m.sessions_in_use().set(3);
    m.certificate_expiry_days().set(29.5);
    m.decision_log().written.inc();
    m.decision_log().lost.inc_by(2);
    m.policy_decision("main", false);
    let t = m.encode();
    let has = |p: &str, v: f64| assert_eq!(line_value(&t, p), Some(v), "{p} in\n{t}");
    has(
        r#"keygate_requests_total{operation="Encrypt",keystore="main",outcome="ok",error_name=""}"#,
        1.0,
    );
    has(
        r#"keygate_request_duration_seconds_bucket{le="0.0005",operation="Encrypt"}"#,
        1.0,
    );
    has(
        r#"keygate_request_duration_seconds_bucket{le="0.00025",operation="Encrypt"}"#,
        0.0,
    );
    has(
        r#"keygate_backend_errors_total{operation="encrypt",error="busy"}"#,
        1.0,
    );
    has("keygate_backend_sessions_in_use ", 3.0);
    has("keygate_tls_certificate_expiry_days ", 29.5);
    has("keygate_decision_log_lines_written_total ", 1.0);
    has("keygate_decision_log_lines_lost_total ", 2.0);
    has(
        r#"keygate_policy_decisions_total{keystore="main",decision="deny"}"#,
        1.0,
    );
    assert!(t.contains(r#"keygate_build_info{version=""#), "{t}");
}

#[test]
fn credential_ages_follow_the_configured_set() {
    let m = Metrics::new("software");
    let week_ago = SystemTime::now() - Duration::from_secs(7 * 86_400);
    let rec = |ak: &str, created| CredentialRecord {
        keystore: "main".into(),
        access_key_id: ak.into(),
        created,
    };
    m.set_credentials(&[rec("OLD", Some(week_ago)), rec("NEW", None)]);
    let t = m.encode();
    let age = line_value(
        &t,
        r#"keygate_credential_age_seconds{keystore="main",access_key_id="OLD",since="created"}"#,
    )
    .unwrap();
    assert!((604_790.0..=604_900.0).contains(&age), "{age}");
    assert!(
        t.contains(r#"access_key_id="NEW",since="loaded"} 0"#),
        "{t}"
    );
    m.set_credentials(&[rec("NEW", None)]);
    let t = m.encode();
    assert!(!t.contains(r#"access_key_id="OLD""#), "{t}");
}
