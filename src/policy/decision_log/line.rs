//! One decision-log record and its JSON line: an OPA decision-log event (the fields and types
//! of OPA's `EventV1`: `decision_id`, `path`, `input`, `result`, `error` as `{code, message}`,
//! `requested_by`, `req_id`, `timestamp`, `labels`, `bundles`, `metrics` with OPA's timer
//! names, `erased` and `masked`) plus keygate's own members (`seq`, `error_name`, `prev_file`,
//! `prev_hash`, `hash`). xks-spec/decision-log-event.schema.json describes the line.
//!
//! Nothing is written twice: the input's `time` is the event's `timestamp` (the logged input
//! leaves it out), `requestMetadata.kmsRequestId` is under `input` only, and members with
//! nothing to say (`error_name` on success, `prev_file` but after a rotation, empty `erased`
//! and `masked`) are left out, as OPA leaves out its empty members.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use regorus::Value;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value as Json;
use serde_json::value::RawValue;

use super::mask::{Applied, Masking};
use super::timestamp;
use crate::policy::{Decision, PolicyError, PolicyInput};

/// The path of the document the `result` is, as OPA writes it: the package `keygate`, whose
/// decision is the object `{"allow": bool, "deny": [reasons]}` (OPA logs the package's
/// document for a query of `data.keygate`; keygate logs the two rules that decide).
pub const DECISION_PATH: &str = "keygate";

/// Everything logged about one evaluated request.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// When the request was judged.
    pub timestamp: SystemTime,
    /// The policy input (never plaintext, AAD or secrets), as the policy saw it but for
    /// `time` (which is `timestamp`), masked, in JSON serialized by the request's own
    /// thread: the writer thread then frees one string instead of the input's tree of small
    /// allocations (frees across threads contend on the allocator; see
    /// `request_path_encrypt` in benches/hot_paths.rs).
    pub input: Box<RawValue>,
    /// `allow` and `deny` when the evaluation succeeded.
    pub decision: Option<(bool, Vec<String>)>,
    /// The evaluation error, when it failed (the request was refused).
    pub error: Option<EvalError>,
    /// The caller's address (`requested_by`): `ip:port` of the peer, or the IP alone; `None`
    /// when masking erased it.
    pub requested_by: Option<String>,
    /// `req_id`: the judgement's number in this instance (1, 2, ...).
    pub req_id: u64,
    /// Evaluation time in nanoseconds.
    pub eval_ns: u64,
    /// Policy revision in force.
    pub revision: String,
    /// The response's `errorName`; `None` for a success.
    pub error_name: Option<String>,
    /// What masking erased and masked (OPA's `erased` and `masked`).
    pub mask: Applied,
}

/// An evaluation error as OPA logs it: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvalError {
    /// OPA's error code: `eval_cancel_error` (over the time limit), `eval_type_error` (a
    /// result that is not a boolean `allow` and a set of reasons), `eval_internal_error`.
    pub code: &'static str,
    /// The error's text.
    pub message: String,
}

impl EvalError {
    /// The OPA-shaped error for a policy error.
    pub fn of(e: &PolicyError) -> Self {
        let code = match e {
            PolicyError::Timeout(_) => "eval_cancel_error",
            PolicyError::BadResult(_) => "eval_type_error",
            _ => "eval_internal_error",
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// Who asked, as a record carries it into `requested_by` and `req_id`.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    /// The peer's address and port, when the front door knows it.
    pub peer: Option<SocketAddr>,
    /// The judgement's number in this instance.
    pub req_id: u64,
}

impl DecisionRecord {
    /// A record for `input` (whose [`PolicyInput::to_value`] is `prepared`) judged with
    /// `outcome` (`revision` is the engine's, used on errors), asked for by `who`, with the
    /// `masking` rules (if any) applied.
    pub fn new(
        input: &PolicyInput<'_>,
        prepared: &Value,
        outcome: &Result<Decision, PolicyError>,
        revision: &str,
        who: Requester,
        masking: Option<&Masking>,
    ) -> Self {
        let (decision, error, eval_ns, revision) = match outcome {
            Ok(d) => (
                Some((d.allow, d.reasons.clone())),
                None,
                d.eval_ns,
                d.revision.clone(),
            ),
            Err(e) => (None, Some(EvalError::of(e)), 0, revision.to_owned()),
        };
        let requested_by = requested_by(input, who.peer);
        let (input_json, requested_by, mask) = match masking {
            None => (logged(prepared), Some(requested_by), Applied::default()),
            Some(m) => masked(prepared, requested_by, m),
        };
        Self {
            timestamp: input.time,
            input: input_json,
            decision,
            error,
            requested_by,
            req_id: who.req_id,
            eval_ns,
            revision,
            error_name: None,
            mask,
        }
    }
}

/// The policy input as the line holds it: every member but `time` (the event's `timestamp`),
/// keys sorted as regorus writes them.
struct Logged<'a>(&'a Value);

impl Serialize for Logged<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Ok(object) = self.0.as_object() else {
            return self.0.serialize(serializer);
        };
        let time = Value::from("time");
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in object.iter_sorted() {
            if *k != time {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// The logged input in JSON. A policy value always serializes; keep a valid line (`null`
/// input) regardless.
fn logged(prepared: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&Logged(prepared))
        .unwrap_or_else(|_| Box::<RawValue>::default())
}

/// The logged input and `requested_by` with the masking rules applied (pointers are into the
/// event: `/input/...`, `/requested_by`). Should the input not convert, it is logged as
/// `null`: nothing unmasked passes.
fn masked(
    prepared: &Value,
    requested_by: String,
    masking: &Masking,
) -> (Box<RawValue>, Option<String>, Applied) {
    let input = serde_json::to_value(Logged(prepared)).unwrap_or(Json::Null);
    let mut event = Json::Object(serde_json::Map::from_iter([
        ("input".to_owned(), input),
        ("requested_by".to_owned(), Json::String(requested_by)),
    ]));
    let applied = masking.apply(&mut event);
    let input = event.get("input").unwrap_or(&Json::Null);
    let raw = serde_json::value::to_raw_value(input).unwrap_or_else(|_| Box::<RawValue>::default());
    let requested_by = match event.get_mut("requested_by").map(Json::take) {
        Some(Json::String(s)) => Some(s),
        _ => None,
    };
    (raw, requested_by, applied)
}

/// `requested_by`: the peer's `ip:port` (XKS), its IP, or a Unix-socket peer's credentials
/// (`unix:uid=0,gid=0,pid=1234`, KMS v2), as the front door knows the caller.
fn requested_by(input: &PolicyInput<'_>, peer: Option<SocketAddr>) -> String {
    if let Some(peer) = peer {
        return peer.to_string();
    }
    if let Some(ip) = input.source_ip {
        return ip.to_string();
    }
    match input.peer {
        Some(cred) => match cred.pid {
            Some(pid) => format!("unix:uid={},gid={},pid={pid}", cred.uid, cred.gid),
            None => format!("unix:uid={},gid={}", cred.uid, cred.gid),
        },
        None => "unknown".to_owned(),
    }
}

/// Where a line sits in the chain.
#[derive(Debug, Clone)]
pub(crate) struct Position<'a> {
    pub seq: u64,
    pub prev_hash: &'a str,
    pub prev_file: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    decision_id: String,
    seq: u64,
    timestamp: String,
    path: &'static str,
    input: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Outcome<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a EvalError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
    req_id: u64,
    labels: Labels<'a>,
    metrics: Metrics,
    bundles: Bundles<'a>,
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "pointers")]
    erased: &'a [Arc<str>],
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "pointers")]
    masked: &'a [Arc<str>],
    #[serde(skip_serializing_if = "Option::is_none")]
    error_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_file: Option<&'a str>,
    prev_hash: &'a str,
}

/// `erased` and `masked`: the pointers as strings.
fn pointers<S: Serializer>(list: &&[Arc<str>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(list.iter().map(|p| &**p))
}

#[derive(Serialize)]
struct Outcome<'a> {
    allow: bool,
    deny: &'a [String],
}

#[derive(Serialize)]
struct Labels<'a> {
    id: &'a str,
    version: &'static str,
}

#[derive(Serialize)]
struct Metrics {
    timer_rego_query_eval_ns: u64,
}

#[derive(Serialize)]
struct Bundles<'a> {
    keygate: Revision<'a>,
}

#[derive(Serialize)]
struct Revision<'a> {
    revision: &'a str,
}

/// The line body (JSON object without the hash member).
pub(crate) fn body(record: &DecisionRecord, instance_id: &str, at: &Position<'_>) -> String {
    let line = Line {
        // Without randomness the id is still unique: this instance and the line's place.
        decision_id: crate::random::uuid_v4()
            .map(|id| id.to_string())
            .unwrap_or_else(|_| format!("{instance_id}-{}", at.seq)),
        seq: at.seq,
        timestamp: timestamp(record.timestamp),
        path: DECISION_PATH,
        input: &record.input,
        result: record.decision.as_ref().map(|(allow, deny)| Outcome {
            allow: *allow,
            deny: deny.as_slice(),
        }),
        error: record.error.as_ref(),
        requested_by: record.requested_by.as_deref(),
        req_id: record.req_id,
        labels: Labels {
            id: instance_id,
            version: env!("CARGO_PKG_VERSION"),
        },
        metrics: Metrics {
            timer_rego_query_eval_ns: record.eval_ns,
        },
        bundles: Bundles {
            keygate: Revision {
                revision: &record.revision,
            },
        },
        erased: &record.mask.erased,
        masked: &record.mask.masked,
        error_name: record.error_name.as_deref(),
        prev_file: at.prev_file,
        prev_hash: at.prev_hash,
    };
    // Serializing plain structs and a JSON value cannot fail; keep a valid line regardless.
    serde_json::to_string(&line)
        .map(crate::sanitize::escape_line_separators_str)
        .unwrap_or_else(|e| {
            format!(
                "{{\"seq\":{},\"error\":{{\"code\":\"internal_error\",\"message\":{:?}}},\"prev_hash\":\"{}\"}}",
                at.seq,
                e.to_string(),
                at.prev_hash
            )
        })
}

/// An allowed decision numbered `n` on `input`, judged at 1,800,000,000 + `n` seconds: the
/// record the writer, digest, upload and lifecycle tests append.
#[cfg(test)]
pub(crate) fn allowed_for_test(n: u64, input: serde_json::Value) -> DecisionRecord {
    DecisionRecord {
        timestamp: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + n),
        input: serde_json::value::to_raw_value(&input).unwrap(),
        decision: Some((true, vec![])),
        error: None,
        requested_by: Some("127.0.0.1:1".into()),
        req_id: n,
        eval_ns: 1,
        revision: "rev".into(),
        error_name: None,
        mask: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Interface;

    fn input(metadata: &serde_json::Map<String, Json>) -> PolicyInput<'_> {
        PolicyInput {
            interface: Interface::Xks,
            operation: "Encrypt",
            keystore: "main",
            uri_prefix: "/p",
            key_id: "foo",
            request_metadata: metadata,
            access_key_id: Some("AKIA"),
            source_ip: Some("10.0.0.1".parse().unwrap()),
            client_subject: None,
            time: SystemTime::UNIX_EPOCH,
            aad_length: 3,
            request_uid: None,
            peer: None,
        }
    }

    #[test]
    fn the_logged_input_is_the_policy_input_but_its_time() {
        let metadata = serde_json::json!({"kmsRequestId": "r1", "awsPrincipalArn": "arn"});
        let Json::Object(metadata) = metadata else {
            panic!()
        };
        let input = input(&metadata);
        let outcome = Err(PolicyError::BadResult("x".into()));
        let who = Requester {
            peer: None,
            req_id: 1,
        };
        let record = DecisionRecord::new(&input, &input.to_value(), &outcome, "r", who, None);
        let mut want = input.to_json();
        want.as_object_mut().unwrap().remove("time");
        let got: Json = serde_json::from_str(record.input.get()).unwrap();
        assert_eq!(got, want);
        // The same bytes as serializing the tree: keys sorted, nothing else changed.
        assert_eq!(record.input.get(), want.to_string());
        assert_eq!(record.requested_by.as_deref(), Some("10.0.0.1"));
        assert_eq!(record.mask, Applied::default());
    }
}
