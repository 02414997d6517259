//! Secondary authorization: the policy judges Encrypt, Decrypt and GetKeyMetadata after SigV4
//! and JSON parsing and before the key backend is touched (never GetHealthStatus); the judgement
//! goes to the decision log once the response is known.

use std::time::SystemTime;

use serde_json::{Map, Value};

use super::RequestFacts;
use super::error::XksError;
use crate::app::App;
use crate::policy::PolicyInput;
use crate::policy::decision_log::DecisionRecord;
use crate::router::Route;
use crate::server::ConnInfo;

/// What the policy needs beyond the route and the connection.
pub(super) struct Caller<'a> {
    /// `requestMetadata` exactly as received, from the request's one parse.
    pub metadata: &'a Map<String, Value>,
    pub access_key_id: &'a str,
    pub aad_length: usize,
}

/// Judge the request; `Err` is the refusal to send.
pub(super) fn authorize(
    app: &App,
    route: &Route,
    conn: &ConnInfo,
    caller: &Caller<'_>,
    facts: &mut RequestFacts,
) -> Result<(), XksError> {
    let input = PolicyInput {
        operation: route.operation.as_str(),
        keystore: &route.keystore.name,
        uri_prefix: &route.keystore.uri_prefix,
        key_id: route.key_id(),
        request_metadata: caller.metadata,
        access_key_id: caller.access_key_id,
        source_ip: conn.peer.ip(),
        client_subject: conn.client_subject.as_deref(),
        time: SystemTime::now(),
        aad_length: caller.aad_length,
    };
    let prepared = input.to_value();
    let outcome = app.policy.evaluate_prepared(&prepared);
    app.policy_stats.count(&outcome);
    app.metrics
        .policy_decision(&route.keystore.name, matches!(&outcome, Ok(d) if d.allow));
    if app.decision_log.is_some() {
        let revision = app.policy.revision();
        facts.decision = Some(DecisionRecord::new(
            &input, &prepared, &outcome, &revision, None,
        ));
    }
    match outcome {
        Ok(d) if d.allow => {
            if app
                .decision_log
                .as_ref()
                .is_some_and(|l| l.refuses_requests())
            {
                app.policy_stats.count_log_refusal();
                return Err(log_unavailable());
            }
            Ok(())
        }
        Ok(d) if d.reasons.is_empty() => Err(XksError::AccessDenied("denied by policy".into())),
        Ok(d) => Err(XksError::AccessDenied(format!(
            "denied by policy: {}",
            d.reasons.join("; ")
        ))),
        Err(e) => {
            tracing::error!(error = %e, keystore = %route.keystore.name, "policy evaluation failed; request refused");
            Err(XksError::AccessDenied(format!(
                "policy evaluation failed, request refused: {e}"
            )))
        }
    }
}

/// Hand the judgement, completed with the response's errorName, to the decision log. In
/// fail-closed mode a line that cannot be logged turns a success into a refusal.
pub fn log_decision(
    app: &App,
    facts: &mut RequestFacts,
    result: Result<String, XksError>,
) -> Result<String, XksError> {
    let (Some(mut record), Some(log)) = (facts.decision.take(), app.decision_log.as_ref()) else {
        return result;
    };
    record.error_name = result.as_ref().err().map(|e| e.name().to_owned());
    match log.record(record) {
        Err(e) if result.is_ok() => {
            app.policy_stats.count_log_refusal();
            tracing::error!(error = %e, "decision log refused the line; request refused (fail_closed)");
            Err(log_unavailable())
        }
        _ => result,
    }
}

fn log_unavailable() -> XksError {
    XksError::Internal(
        "the decision log cannot be written and fail_closed is set; request refused".into(),
    )
}
