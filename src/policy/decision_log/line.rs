//! One decision-log record and its JSON line (OPA's decision-log fields plus keygate's).

use std::time::SystemTime;

use regorus::Value;
use serde::Serialize;
use serde_json::Value as Json;
use serde_json::value::RawValue;

use super::timestamp;
use crate::policy::{Decision, PolicyError, PolicyInput};

/// The rule path a decision comes from, as OPA writes it.
const DECISION_PATH: &str = "keygate/allow";

/// Everything logged about one evaluated request.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// When the request was judged.
    pub timestamp: SystemTime,
    /// The policy input (never plaintext, AAD or secrets), as the policy saw it, in JSON
    /// serialized by the request's own thread: the writer thread then frees one string
    /// instead of the input's tree of small allocations (frees across threads contend on
    /// the allocator; see `request_path_encrypt` in benches/hot_paths.rs).
    pub input: Box<RawValue>,
    /// `allow` and `deny` when the evaluation succeeded.
    pub decision: Option<(bool, Vec<String>)>,
    /// The evaluation error, when it failed (the request was refused).
    pub error: Option<String>,
    /// Evaluation time in nanoseconds.
    pub eval_ns: u64,
    /// Policy revision in force.
    pub revision: String,
    /// `requestMetadata.kmsRequestId`, when present.
    pub kms_request_id: Option<String>,
    /// The response's `errorName`; `None` for a success.
    pub error_name: Option<String>,
}

impl DecisionRecord {
    /// A record for `input` (whose [`PolicyInput::to_value`] is `prepared`) judged with
    /// `outcome` (`revision` is the engine's, used on errors).
    pub fn new(
        input: &PolicyInput<'_>,
        prepared: &Value,
        outcome: &Result<Decision, PolicyError>,
        revision: &str,
        error_name: Option<&str>,
    ) -> Self {
        let (decision, error, eval_ns, revision) = match outcome {
            Ok(d) => (
                Some((d.allow, d.reasons.clone())),
                None,
                d.eval_ns,
                d.revision.clone(),
            ),
            Err(e) => (None, Some(e.to_string()), 0, revision.to_owned()),
        };
        // A policy value always serializes; keep a valid line (`null` input) regardless.
        let prepared = serde_json::value::to_raw_value(prepared)
            .unwrap_or_else(|_| Box::<RawValue>::default());
        Self {
            timestamp: input.time,
            input: prepared,
            decision,
            error,
            eval_ns,
            revision,
            kms_request_id: input
                .request_metadata
                .get("kmsRequestId")
                .and_then(Json::as_str)
                .map(str::to_owned),
            error_name: error_name.map(str::to_owned),
        }
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
    result: Option<Outcome<'a>>,
    error: Option<&'a str>,
    labels: Labels<'a>,
    metrics: Metrics,
    bundles: Bundles<'a>,
    kms_request_id: Option<&'a str>,
    error_name: Option<&'a str>,
    prev_file: Option<&'a str>,
    prev_hash: &'a str,
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
    timer_rego_eval_ns: u64,
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
        error: record.error.as_deref(),
        labels: Labels {
            id: instance_id,
            version: env!("CARGO_PKG_VERSION"),
        },
        metrics: Metrics {
            timer_rego_eval_ns: record.eval_ns,
        },
        bundles: Bundles {
            keygate: Revision {
                revision: &record.revision,
            },
        },
        kms_request_id: record.kms_request_id.as_deref(),
        error_name: record.error_name.as_deref(),
        prev_file: at.prev_file,
        prev_hash: at.prev_hash,
    };
    // Serializing plain structs and a JSON value cannot fail; keep a valid line regardless.
    serde_json::to_string(&line)
        .map(crate::sanitize::escape_line_separators_str)
        .unwrap_or_else(|e| {
            format!(
                "{{\"seq\":{},\"error\":{:?},\"prev_hash\":\"{}\"}}",
                at.seq,
                e.to_string(),
                at.prev_hash
            )
        })
}
