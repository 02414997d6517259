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

/// Label sets known in advance are exported from 0: SigV4 refusal reasons, policy refusals,
/// backend instance statuses, reload results; the decision log reads as absent and writable.
#[test]
fn known_label_sets_are_exported_from_zero() {
    let t = Metrics::new("software").encode();
    let zero = |p: &str| assert_eq!(line_value(&t, p), Some(0.0), "{p} in\n{t}");
    for reason in crate::sigv4::REFUSAL_REASONS {
        zero(&format!(
            r#"keygate_unauthorized_requests_total{{stage="sigv4",reason="{reason}"}}"#
        ));
    }
    zero(r#"keygate_unauthorized_requests_total{stage="policy",reason="denied"}"#);
    zero(r#"keygate_unauthorized_requests_total{stage="policy",reason="evaluation_failed"}"#);
    for status in ["ACTIVE", "DEGRADED", "UNAVAILABLE"] {
        zero(&format!(
            r#"keygate_backend_instances{{status="{status}"}}"#
        ));
    }
    zero(r#"keygate_config_reloads_total{result="refused"}"#);
    zero(r#"keygate_config_reloads_total{result="applied"}"#);
    zero("keygate_decision_log_enabled ");
    zero("keygate_decision_log_lines_pending ");
    assert_eq!(line_value(&t, "keygate_decision_log_writable "), Some(1.0));
    assert!(
        !t.contains("keygate_tls_certificate_not_after_timestamp_seconds{"),
        "no TLS, no series: {t}"
    );
}

#[test]
fn refusals_health_key_versions_and_certificate_expiry_show_up() {
    let m = Metrics::new("software");
    m.record_sigv4_refusal("clock_skew");
    m.record_policy_refusal(PolicyRefusal::Denied);
    m.record_policy_refusal(PolicyRefusal::EvaluationFailed);
    m.record_policy_refusal(PolicyRefusal::EvaluationFailed);
    let instance = |status| crate::keys::EkmInstance {
        id: "hsm".into(),
        model: "m".into(),
        status,
        detail: None,
    };
    use crate::keys::HealthStatus::{Active, Unavailable};
    m.set_backend_health(&[
        instance(Active),
        instance(Unavailable),
        instance(Unavailable),
    ]);
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    m.set_key_versions(&[("foo".into(), created)]);
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    m.set_certificate_not_after(Some(not_after));
    let t = m.encode();
    let has = |p: &str, v: f64| assert_eq!(line_value(&t, p), Some(v), "{p} in\n{t}");
    has(
        r#"keygate_unauthorized_requests_total{stage="sigv4",reason="clock_skew"}"#,
        1.0,
    );
    has(
        r#"keygate_unauthorized_requests_total{stage="policy",reason="denied"}"#,
        1.0,
    );
    has(
        r#"keygate_unauthorized_requests_total{stage="policy",reason="evaluation_failed"}"#,
        2.0,
    );
    has(r#"keygate_backend_instances{status="ACTIVE"}"#, 1.0);
    has(r#"keygate_backend_instances{status="UNAVAILABLE"}"#, 2.0);
    has(r#"keygate_backend_instances{status="DEGRADED"}"#, 0.0);
    let checked = line_value(&t, "keygate_backend_health_checked_timestamp_seconds ").unwrap();
    assert!(checked > 1_700_000_000.0, "{checked}");
    has(
        r#"keygate_key_version_created_timestamp_seconds{key_id="foo"}"#,
        1_700_000_000.0,
    );
    has(
        r#"keygate_tls_certificate_not_after_timestamp_seconds{listener="xks"}"#,
        1_800_000_000.0,
    );
    m.set_key_versions(&[]);
    m.set_certificate_not_after(None);
    let t = m.encode();
    assert!(!t.contains("key_id=\"foo\""), "{t}");
    assert!(!t.contains("listener=\"xks\""), "{t}");
}
