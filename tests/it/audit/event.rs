//! Real decision lines, written by the real server for allowed, denied and failed
//! evaluations, validated against xks-spec/decision-log-event.schema.json by an independent
//! validator (Python's `jsonschema`, draft 2020-12).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Encrypt is allowed, GetKeyMetadata denied with a reason, and Decrypt's `allow` is not a
/// boolean (an evaluation error, which refuses the request).
const POLICY: &str = r#"package keygate

import rego.v1

default allow := false

allow if input.operation == "Encrypt"

allow := "not a boolean" if input.operation == "Decrypt"

deny contains "metadata is closed" if input.operation == "GetKeyMetadata"
"#;

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
spec = sys.argv[1]
def load(name):
    with open(f"{spec}/{name}") as f:
        return json.load(f)
event, policy_input = load("decision-log-event.schema.json"), load("policy-input.schema.json")
retention = load("decision-log-retention.schema.json")
lines_lost = load("decision-log-lines-lost.schema.json")
registry = Registry().with_resources(
    [(s["$id"], Resource.from_contents(s)) for s in (event, policy_input, retention, lines_lost)])
for schema in (event, retention, lines_lost):
    Draft202012Validator.check_schema(schema)
validators = {kind: Draft202012Validator(schema, registry=registry)
              for kind, schema in (("decision", event), ("retention", retention),
                                   ("lines_lost", lines_lost))}
bad, kinds = 0, {"decision": 0, "retention": 0, "lines_lost": 0}
with open(sys.argv[2]) as f:
    for number, line in enumerate(f, 1):
        value = json.loads(line)
        kind = value.get("event", "decision")
        if kind not in validators:
            bad += 1
            print(f"line {number}: unknown event {kind!r}")
            continue
        kinds[kind] += 1
        for error in validators[kind].iter_errors(value):
            bad += 1
            print(f"line {number} ({kind}): {error.json_path}: {error.message}")
print(f"{number} lines ({kinds['decision']} decisions, {kinds['retention']} retention, "
      f"{kinds['lines_lost']} lines_lost), {bad} errors")
sys.exit(1 if bad else 0)
"#;

#[tokio::test]
async fn allowed_denied_and_failed_decisions_match_the_event_schema() {
    let root = tempfile::tempdir().unwrap();
    let policies = root.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("policy.rego"), POLICY).unwrap();
    let log = root.path().join("decisions.log");
    let server = TestServer::start(&config(&format!(
        "[policy]\ndir = {:?}\n[decision_log]\npath = {:?}\n",
        policies.display().to_string(),
        log.display().to_string()
    )))
    .await;
    let mut client = server.client().await;
    let mut body = encrypt_body(b"hello", Some(b"aad"), false);
    // A line separator in a string stays escaped: one event per line for every reader.
    body["requestMetadata"]["awsPrincipalArn"] = json!("arn:aws:iam::1:user/a\u{2028}b");
    let encrypted = client.post(&path("encrypt", "foo"), &body).await;
    let encrypted = encrypted.expect_ok().clone();
    client
        .post(
            &path("metadata", "foo"),
            &json!({"requestMetadata": metadata("DescribeKey")}),
        )
        .await
        .expect_error(403, "AccessDeniedException");
    client
        .post(
            &path("decrypt", "foo"),
            &decrypt_body(&encrypted, Some(b"aad")),
        )
        .await
        .expect_error(403, "AccessDeniedException");
    assert!(server.decision_log().flush(Duration::from_secs(10)));
    server.stop().await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{2028}') && text.contains("\\u2028"));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["result"], json!({"allow": true, "deny": []}));
    assert_eq!(
        lines[1]["result"],
        json!({"allow": false, "deny": ["metadata is closed"]})
    );
    assert!(lines[2].get("result").is_none());
    assert_eq!(lines[2]["error"]["code"], "eval_type_error");
    let req_ids: Vec<u64> = lines
        .iter()
        .map(|l| l["req_id"].as_u64().unwrap())
        .collect();
    assert_eq!(req_ids, [1, 2, 3]);
    assert!(lines.iter().all(|l| {
        l["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    }));
    // Nothing written twice: the input's time is `timestamp`, kmsRequestId is under input.
    for l in &lines {
        assert!(l["input"].get("time").is_none(), "{l}");
        assert!(l.get("kms_request_id").is_none(), "{l}");
        assert!(
            l["input"]["request_metadata"]["kmsRequestId"].is_string(),
            "{l}"
        );
        assert!(l["timestamp"].is_string(), "{l}");
    }
    assert!(lines[0].get("error_name").is_none());
    assert_eq!(lines[1]["error_name"], "AccessDeniedException");
    // A decision replays as docs/audit.md says: the input, with its time put back.
    for (l, allow) in [(&lines[0], true), (&lines[1], false)] {
        let mut input = l["input"].clone();
        input["time"] = l["timestamp"].clone();
        let file = root.path().join("replay.json");
        std::fs::write(&file, input.to_string()).unwrap();
        let out = crate::support::process::keygate(&[
            "policy",
            "eval",
            "--input",
            file.to_str().unwrap(),
            "--policy-dir",
            policies.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(decision["allow"], allow, "{decision}");
    }
    assert_eq!(file_mode(&log), 0o600);
    validate(&log);
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The interpreter with jsonschema: `$KEYGATE_PYTHON`, or the repository's `.venv` that
/// scripts/test.sh makes. Missing, or without jsonschema: the test fails.
fn python() -> std::path::PathBuf {
    let python = std::env::var_os("KEYGATE_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        std::path::PathBuf::from,
    );
    let ok = Command::new(&python)
        .args(["-c", "import jsonschema, referencing"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the event schema test needs Python with jsonschema at {} (run scripts/test.sh, which \
         makes .venv, or set KEYGATE_PYTHON)",
        python.display()
    );
    python
}

/// Validates every line of `log` with Python's jsonschema, the schema chosen by the `event`
/// member: decision events against the event schema, retention lines against
/// decision-log-retention.schema.json, lines_lost lines against
/// decision-log-lines-lost.schema.json. Returns the validator's summary
/// (`N lines (D decisions, R retention, L lines_lost), 0 errors`).
pub fn validate(log: &Path) -> String {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("xks-spec");
    let out = Command::new(python())
        .arg("-c")
        .arg(VALIDATE)
        .arg(&spec)
        .arg(log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
