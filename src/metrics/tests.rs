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
    m.set_certificate_not_after(Some(
        SystemTime::now() + Duration::from_secs(29 * 86_400 + 43_200),
    ));
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
    let days = line_value(&t, "keygate_tls_certificate_expiry_days ").unwrap();
    assert!((29.49..=29.5).contains(&days), "{days}");
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

#[test]
fn samplers_copy_outside_totals_in_at_each_scrape() {
    let m = Metrics::new("software");
    let outside = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(5));
    let seen = outside.clone();
    m.on_encode(move |m| {
        m.decision_log()
            .set_totals(seen.load(std::sync::atomic::Ordering::Relaxed), 1)
    });
    assert_eq!(
        line_value(&m.encode(), "keygate_decision_log_lines_written_total "),
        Some(5.0)
    );
    outside.store(9, std::sync::atomic::Ordering::Relaxed);
    let t = m.encode();
    assert_eq!(
        line_value(&t, "keygate_decision_log_lines_written_total "),
        Some(9.0)
    );
    assert_eq!(
        line_value(&t, "keygate_decision_log_lines_lost_total "),
        Some(1.0)
    );
    m.set_certificate_not_after(Some(SystemTime::now() - Duration::from_secs(2 * 86_400)));
    let days = line_value(&m.encode(), "keygate_tls_certificate_expiry_days ").unwrap();
    assert!((-2.01..=-1.99).contains(&days), "{days}");
}
