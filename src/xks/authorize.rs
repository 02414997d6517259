//! Secondary authorization at the XKS door: the policy judges Encrypt, Decrypt and
//! GetKeyMetadata after SigV4 and JSON parsing and before the key backend is touched (never
//! GetHealthStatus). The judgement is opened here and closed by `xks::handle` once the answer
//! is known; a verdict that refuses becomes the spec's error here.

use std::time::SystemTime;

use serde_json::{Map, Value};

use super::error::XksError;
use super::route::{ConnInfo, Route};
use crate::policy::{Authorizer, Interface, Judgement, PolicyInput, Verdict};

/// What the policy needs beyond the route and the connection.
pub(super) struct Caller<'a> {
    /// `requestMetadata` exactly as received, from the request's one parse.
    pub metadata: &'a Map<String, Value>,
    pub access_key_id: &'a str,
    pub aad_length: usize,
}

/// Judges the request: the open judgement, and the refusal to send when the verdict is not
/// allow.
pub(super) fn judge(
    authorizer: &Authorizer,
    route: &Route,
    conn: &ConnInfo,
    caller: &Caller<'_>,
) -> (Judgement, Result<(), XksError>) {
    let input = PolicyInput {
        interface: Interface::Xks,
        operation: route.operation.as_str(),
        keystore: &route.keystore.name,
        uri_prefix: &route.keystore.uri_prefix,
        key_id: route.key_id(),
        request_metadata: caller.metadata,
        access_key_id: Some(caller.access_key_id),
        source_ip: Some(conn.peer.ip()),
        client_subject: conn.client_subject.as_deref(),
        time: SystemTime::now(),
        aad_length: caller.aad_length,
        request_uid: None,
        peer: None,
    };
    let judgement = authorizer.judge_from(&input, Some(conn.peer));
    let refusal = refusal(judgement.verdict());
    (judgement, refusal)
}

fn refusal(verdict: &Verdict) -> Result<(), XksError> {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny(reasons) if reasons.is_empty() => {
            Err(XksError::AccessDenied("denied by policy".into()))
        }
        Verdict::Deny(reasons) => Err(XksError::AccessDenied(format!(
            "denied by policy: {}",
            reasons.join("; ")
        ))),
        Verdict::Failed(e) => Err(XksError::AccessDenied(format!(
            "policy evaluation failed, request refused: {e}"
        ))),
        Verdict::LogUnavailable => Err(log_unavailable()),
    }
}

/// Closes the judgement with the answer: a success whose line cannot be written in
/// fail-closed mode becomes a refusal.
pub(super) fn close<T>(judgement: Judgement, result: Result<T, XksError>) -> Result<T, XksError> {
    let error_name = result.as_ref().err().map(XksError::name);
    match judgement.record_or(error_name, log_unavailable().name()) {
        Ok(()) => result,
        Err(_) => Err(log_unavailable()),
    }
}

fn log_unavailable() -> XksError {
    XksError::Internal(
        "the decision log cannot be written (fail_closed) or shipped (require_upload); request \
         refused"
            .into(),
    )
}
