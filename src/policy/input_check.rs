//! Checks a policy input written by hand (`keygate policy eval --input`) against the shape
//! keygate gives policies, as xks-spec/policy-input.schema.json describes it: every required
//! field present, each of its type, the front door and operation among the schema's, the key
//! id, time and peer well formed, no field the schema does not list. An input missing a field would otherwise be
//! judged as if the field were undefined, and a policy that never mentions it would allow.

use std::path::PathBuf;

use serde_json::{Map, Value as Json};

/// The operations a policy judges (GetHealthStatus never is).
const OPERATIONS: [&str; 3] = ["Encrypt", "Decrypt", "GetKeyMetadata"];

/// The front doors (`interface`).
const INTERFACES: [&str; 2] = ["xks", "kms_v2"];

/// What one field of the input must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    StringOrNull,
    /// A string of at most 128 characters, or null.
    UidOrNull,
    Interface,
    Operation,
    /// null, or `{uid, gid, pid}` (non-negative uid and gid, pid an integer or null).
    Peer,
    KeyId,
    Metadata,
    Time,
    Count,
}

/// The schema's `required` fields (which are also all of its `properties`), in its order.
const FIELDS: [(&str, Kind); 13] = [
    ("interface", Kind::Interface),
    ("operation", Kind::Operation),
    ("keystore", Kind::String),
    ("uri_prefix", Kind::String),
    ("key_id", Kind::KeyId),
    ("request_metadata", Kind::Metadata),
    ("access_key_id", Kind::StringOrNull),
    ("source_ip", Kind::StringOrNull),
    ("client_subject", Kind::StringOrNull),
    ("time", Kind::Time),
    ("aad_length", Kind::Count),
    ("request_uid", Kind::UidOrNull),
    ("peer", Kind::Peer),
];

/// The `request_metadata` fields the schema types (all strings); others are allowed.
const METADATA_STRINGS: [&str; 7] = [
    "awsPrincipalArn",
    "awsSourceVpc",
    "awsSourceVpce",
    "kmsKeyArn",
    "kmsOperation",
    "kmsRequestId",
    "kmsViaService",
];

/// An input file that does not have the policy input's shape: every problem found.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is not a policy input as keygate gives it (xks-spec/policy-input.schema.json; \
     --no-input-check evaluates it anyway):\n  - {}",
    .file.display(),
    .problems.join("\n  - ")
)]
pub struct InputProblems {
    /// The input file.
    pub file: PathBuf,
    /// One line each.
    pub problems: Vec<String>,
}

/// Every way `input` differs from the policy input schema; empty when it conforms.
pub fn problems(input: &Json) -> Vec<String> {
    let Json::Object(object) = input else {
        return vec![format!(
            "the input must be a JSON object, not {}",
            type_name(input)
        )];
    };
    let mut out = Vec::new();
    for (name, kind) in FIELDS {
        match object.get(name) {
            None => out.push(format!("missing field `{name}` ({})", expected(kind))),
            Some(value) => check_field(name, kind, value, &mut out),
        }
    }
    for name in object.keys() {
        if !FIELDS.iter().any(|(known, _)| known == name) {
            out.push(format!(
                "unknown field `{name}` (the schema allows no fields but its own)"
            ));
        }
    }
    out
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "a string",
        Kind::StringOrNull => "a string or null",
        Kind::UidOrNull => "a string of at most 128 characters or null",
        Kind::Interface => "\"xks\" or \"kms_v2\"",
        Kind::Peer => {
            "null or {\"uid\", \"gid\": non-negative integers, \"pid\": an integer or null}"
        }
        Kind::Operation => "\"Encrypt\", \"Decrypt\" or \"GetKeyMetadata\"",
        Kind::KeyId => "a string of 1-128 characters of A-Za-z0-9._-",
        Kind::Metadata => "an object, requestMetadata as KMS sends it",
        Kind::Time => "an RFC 3339 date-time string",
        Kind::Count => "a non-negative integer",
    }
}

fn check_field(name: &str, kind: Kind, value: &Json, out: &mut Vec<String>) {
    let fits = match (kind, value) {
        (Kind::String | Kind::StringOrNull, Json::String(_)) => true,
        (Kind::StringOrNull | Kind::UidOrNull | Kind::Peer, Json::Null) => true,
        (Kind::UidOrNull, Json::String(s)) => s.chars().count() <= 128,
        (Kind::Interface, Json::String(s)) => INTERFACES.contains(&s.as_str()),
        (Kind::Peer, Json::Object(p)) => valid_peer(p),
        (Kind::Operation, Json::String(s)) => OPERATIONS.contains(&s.as_str()),
        (Kind::KeyId, Json::String(s)) => valid_key_id(s),
        (Kind::Time, Json::String(s)) => is_rfc3339(s),
        (Kind::Count, Json::Number(n)) => n.as_u64().is_some(),
        (Kind::Metadata, Json::Object(m)) => {
            check_metadata(m, out);
            true
        }
        _ => false,
    };
    if !fits {
        out.push(format!(
            "`{name}` must be {}, not {}",
            expected(kind),
            describe(value)
        ));
    }
}

fn check_metadata(metadata: &Map<String, Json>, out: &mut Vec<String>) {
    for name in METADATA_STRINGS {
        match metadata.get(name) {
            None | Some(Json::String(_)) => {}
            Some(other) => out.push(format!(
                "`request_metadata.{name}` must be a string, not {}",
                describe(other)
            )),
        }
    }
}

/// `{uid, gid, pid}` and nothing else.
fn valid_peer(peer: &Map<String, Json>) -> bool {
    let id = |k: &str| peer.get(k).and_then(Json::as_u64).is_some();
    let pid = matches!(peer.get("pid"), Some(Json::Null))
        || peer.get("pid").and_then(Json::as_i64).is_some();
    peer.len() == 3 && id("uid") && id("gid") && pid
}

/// The schema's key id pattern `^[A-Za-z0-9._-]{1,128}$`.
fn valid_key_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_rfc3339(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The value's type, and the value itself when it is short enough to show.
fn describe(value: &Json) -> String {
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(_) | Json::Number(_) | Json::String(_) => {
            let shown = value.to_string();
            if shown.chars().count() <= 40 {
                format!("{} ({shown})", type_name(value))
            } else {
                type_name(value).to_owned()
            }
        }
        Json::Array(_) | Json::Object(_) => type_name(value).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Json {
        json!({
            "interface": "xks", "operation": "Encrypt", "keystore": "main", "uri_prefix": "/p",
            "key_id": "foo",
            "request_metadata": {"awsPrincipalArn": "arn:aws:iam::1:user/a", "extra": 1},
            "access_key_id": "AKIA", "source_ip": "10.0.0.1", "client_subject": null,
            "time": "2026-11-22T05:46:02.123Z", "aad_length": 0, "request_uid": null,
            "peer": null
        })
    }

    #[test]
    fn a_complete_input_has_no_problems() {
        assert!(problems(&good()).is_empty(), "{:?}", problems(&good()));
    }

    #[test]
    fn the_input_keygate_builds_conforms() {
        let metadata = Map::new();
        let xks = super::super::PolicyInput {
            interface: super::super::input::Interface::Xks,
            operation: "GetKeyMetadata",
            keystore: "main",
            uri_prefix: "",
            key_id: "k1",
            request_metadata: &metadata,
            access_key_id: Some("AKIA"),
            source_ip: Some("::1".parse().unwrap()),
            client_subject: Some("CN=kms"),
            time: std::time::SystemTime::now(),
            aad_length: 31,
            request_uid: None,
            peer: None,
        };
        let kms_v2 = super::super::PolicyInput {
            interface: super::super::input::Interface::KmsV2,
            access_key_id: None,
            source_ip: None,
            client_subject: None,
            request_uid: Some("a-uid"),
            peer: Some(super::super::input::PeerCred {
                uid: 0,
                gid: 0,
                pid: Some(7),
            }),
            ..xks
        };
        for input in [xks, kms_v2] {
            let json = input.to_json();
            assert!(problems(&json).is_empty(), "{:?}", problems(&json));
        }
    }

    #[test]
    fn every_missing_and_mistyped_field_is_named() {
        let input = json!({"operation": "encrypt", "request_metadata": {"kmsOperation": 7},
            "key_id": "no spaces", "aad_length": -1, "time": "yesterday", "extra": true});
        assert_eq!(
            problems(&input),
            vec![
                "missing field `interface` (\"xks\" or \"kms_v2\")",
                "`operation` must be \"Encrypt\", \"Decrypt\" or \"GetKeyMetadata\", not a string (\"encrypt\")",
                "missing field `keystore` (a string)",
                "missing field `uri_prefix` (a string)",
                "`key_id` must be a string of 1-128 characters of A-Za-z0-9._-, not a string (\"no spaces\")",
                "`request_metadata.kmsOperation` must be a string, not a number (7)",
                "missing field `access_key_id` (a string or null)",
                "missing field `source_ip` (a string or null)",
                "missing field `client_subject` (a string or null)",
                "`time` must be an RFC 3339 date-time string, not a string (\"yesterday\")",
                "`aad_length` must be a non-negative integer, not a number (-1)",
                "missing field `request_uid` (a string of at most 128 characters or null)",
                "missing field `peer` (null or {\"uid\", \"gid\": non-negative integers, \"pid\": an integer or null})",
                "unknown field `extra` (the schema allows no fields but its own)",
            ]
        );
        assert_eq!(
            problems(&json!([1])),
            vec!["the input must be a JSON object, not an array"]
        );
    }

    /// The checks follow the schema file: the same required fields, properties and types.
    #[test]
    fn the_fields_are_the_schema_fields() {
        let schema: Json =
            serde_json::from_str(include_str!("../../xks-spec/policy-input.schema.json")).unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
        assert_eq!(required, ours);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(properties.len(), FIELDS.len());
        assert_eq!(schema["additionalProperties"], false);
        for (name, kind) in FIELDS {
            let p = &properties[name];
            let want = match kind {
                Kind::String => json!({"type": "string"}),
                Kind::StringOrNull => json!({"type": ["string", "null"]}),
                Kind::UidOrNull => json!({"type": ["string", "null"], "maxLength": 128}),
                Kind::Interface => json!({"enum": INTERFACES}),
                Kind::Peer => json!({"oneOf": [
                    {"type": "null"},
                    {"type": "object", "additionalProperties": false,
                     "required": ["uid", "gid", "pid"],
                     "properties": {
                        "uid": {"type": "integer", "minimum": 0},
                        "gid": {"type": "integer", "minimum": 0},
                        "pid": {"type": ["integer", "null"]}}}
                ]}),
                Kind::Operation => json!({"enum": OPERATIONS}),
                Kind::KeyId => json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}),
                Kind::Metadata => json!({"type": "object"}),
                Kind::Time => json!({"type": "string", "format": "date-time"}),
                Kind::Count => json!({"type": "integer", "minimum": 0}),
            };
            for (key, value) in want.as_object().unwrap() {
                assert_eq!(&p[key], value, "{name}.{key}");
            }
        }
        let metadata = properties["request_metadata"]["properties"]
            .as_object()
            .unwrap();
        let names: Vec<&str> = metadata.keys().map(String::as_str).collect();
        let mut ours = METADATA_STRINGS.to_vec();
        ours.sort_unstable();
        let mut theirs = names.clone();
        theirs.sort_unstable();
        assert_eq!(theirs, ours);
        assert!(metadata.values().all(|p| p["type"] == "string"));
    }
}
