//! Every example policy through the real server: one allowed and one denied request each.
//! The examples are copied with small edits so they fit the test server (key store "main",
//! key "foo", the loopback network, any time of day).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::*;

struct Case {
    example: &'static str,
    /// (from, to) replacements applied to policy.rego.
    edits: &'static [(&'static str, &'static str)],
    allowed: Request,
    denied: Request,
    /// Text the denied request's errorMessage must contain.
    reason: &'static str,
}

#[derive(Clone, Copy)]
enum Op {
    Metadata,
    Encrypt,
    /// Encrypt (must succeed) then Decrypt with this metadata.
    Decrypt,
}

struct Request {
    op: Op,
    metadata: fn() -> Value,
}

fn md(principal: &str, kms_operation: &str, extra: Value) -> Value {
    let mut m = json!({
        "awsPrincipalArn": principal,
        "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d",
        "kmsOperation": kms_operation,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
    });
    if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
        m.extend(extra);
    }
    m
}

const ROLE: &str = "arn:aws:iam::111122223333:role/App";

fn cases() -> Vec<Case> {
    vec![
        Case {
            example: "principal-allowlist",
            edits: &[("\"payments\": [", "\"main\": [")],
            allowed: Request {
                op: Op::Metadata,
                metadata: || {
                    md(
                        "arn:aws:iam::111122223333:role/PaymentsApi",
                        "CreateKey",
                        json!({}),
                    )
                },
            },
            denied: Request {
                op: Op::Metadata,
                metadata: || {
                    md(
                        "arn:aws:iam::111122223333:role/Marketing",
                        "CreateKey",
                        json!({}),
                    )
                },
            },
            reason: "principal arn:aws:iam::111122223333:role/Marketing may not use key store main",
        },
        Case {
            example: "aws-services",
            edits: &[],
            allowed: Request {
                op: Op::Encrypt,
                metadata: || md("ec2.amazonaws.com", "Encrypt", json!({})),
            },
            denied: Request {
                op: Op::Encrypt,
                metadata: || md("lambda.amazonaws.com", "Encrypt", json!({})),
            },
            reason: "AWS service principal lambda.amazonaws.com is not allowed",
        },
        Case {
            example: "via-service",
            edits: &[(
                "service_only_keys := {\"ebs-volumes\", \"s3-buckets\"}",
                "service_only_keys := {\"foo\"}",
            )],
            allowed: Request {
                op: Op::Decrypt,
                metadata: || md(ROLE, "Decrypt", json!({"kmsViaService": "s3"})),
            },
            denied: Request {
                op: Op::Encrypt,
                metadata: || md(ROLE, "Encrypt", json!({"kmsViaService": "rds"})),
            },
            reason: "requests through rds are not allowed (only ebs and s3)",
        },
        Case {
            example: "vpc-endpoint",
            edits: &[],
            allowed: Request {
                op: Op::Encrypt,
                metadata: || {
                    md(
                        ROLE,
                        "Encrypt",
                        json!({"awsSourceVpce": "vpce-0a1b2c3d4e5f60718"}),
                    )
                },
            },
            denied: Request {
                op: Op::Encrypt,
                metadata: || {
                    md(
                        ROLE,
                        "Encrypt",
                        json!({"awsSourceVpce": "vpce-0999999999999999a"}),
                    )
                },
            },
            reason: "VPC endpoint vpce-0999999999999999a is not allowed",
        },
        Case {
            example: "kms-operations",
            edits: &[],
            allowed: Request {
                op: Op::Decrypt,
                metadata: || md(ROLE, "Decrypt", json!({})),
            },
            denied: Request {
                op: Op::Decrypt,
                metadata: || md(ROLE, "ReEncrypt", json!({})),
            },
            reason: "kmsOperation ReEncrypt may not lead to Decrypt",
        },
        Case {
            example: "time-window",
            edits: &[
                (
                    "keystore_windows := {\"batch\":",
                    "keystore_windows := {\"main\":",
                ),
                (
                    "\"days\": {\"Monday\", \"Tuesday\", \"Wednesday\", \"Thursday\", \"Friday\"}",
                    "\"days\": {\"Monday\", \"Tuesday\", \"Wednesday\", \"Thursday\", \"Friday\", \"Saturday\", \"Sunday\"}",
                ),
                ("\"to_hour\": 6", "\"to_hour\": 24"),
                (
                    "{\"results-2027\": \"2027-01-15T14:00:00Z\"}",
                    "{\"foo\": \"2099-01-01T00:00:00Z\"}",
                ),
            ],
            allowed: Request {
                op: Op::Encrypt,
                metadata: || md(ROLE, "Encrypt", json!({})),
            },
            denied: Request {
                op: Op::Decrypt,
                metadata: || md(ROLE, "Decrypt", json!({})),
            },
            reason: "key foo may not decrypt before 2099-01-01T00:00:00Z",
        },
        Case {
            example: "financial-report",
            edits: &[
                (
                    "report_keys := {\"financial-reports\", \"financial-reports-archive\"}",
                    "report_keys := {\"foo\"}",
                ),
                (
                    "finance_networks := [\"10.20.0.0/16\", \"192.0.2.0/24\"]",
                    "finance_networks := [\"10.20.0.0/16\", \"127.0.0.0/8\"]",
                ),
                (
                    "business_days := {\"Monday\", \"Tuesday\", \"Wednesday\", \"Thursday\", \"Friday\"}",
                    "business_days := {\"Monday\", \"Tuesday\", \"Wednesday\", \"Thursday\", \"Friday\", \"Saturday\", \"Sunday\"}",
                ),
                ("hour >= 8\n\thour < 18", "hour >= 0\n\thour < 24"),
            ],
            allowed: Request {
                op: Op::Decrypt,
                metadata: || {
                    md(
                        "arn:aws:sts::111122223333:assumed-role/FinanceAnalyst/alice",
                        "Decrypt",
                        json!({}),
                    )
                },
            },
            denied: Request {
                op: Op::Decrypt,
                metadata: || {
                    md(
                        "arn:aws:iam::111122223333:role/Intern",
                        "Decrypt",
                        json!({}),
                    )
                },
            },
            reason: "principal arn:aws:iam::111122223333:role/Intern may not decrypt financial reports",
        },
        Case {
            example: "legacy-v0",
            edits: &[(
                "disabled_keys := {\"compromised-2025\"}",
                "disabled_keys := {\"foo\"}",
            )],
            allowed: Request {
                op: Op::Metadata,
                metadata: || md(ROLE, "DescribeKey", json!({})),
            },
            denied: Request {
                op: Op::Encrypt,
                metadata: || md(ROLE, "Encrypt", json!({})),
            },
            reason: "key foo is disabled by policy",
        },
    ]
}

/// Copy an example into a fresh directory with `edits` applied (each must apply).
fn edited_example(example: &str, edits: &[(&str, &str)], into: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/examples")
        .join(example);
    let dir = into.join(example);
    std::fs::create_dir_all(&dir).unwrap();
    let mut policy = std::fs::read_to_string(source.join("policy.rego")).unwrap();
    for (from, to) in edits {
        assert!(
            policy.contains(from),
            "{example}: edit {from:?} does not apply"
        );
        policy = policy.replace(from, to);
    }
    std::fs::write(dir.join("policy.rego"), policy).unwrap();
    dir
}

async fn send(client: &mut Client, op: Op, metadata: Value) -> Reply {
    match op {
        Op::Metadata => {
            client
                .post(
                    &path("metadata", "foo"),
                    &json!({"requestMetadata": metadata}),
                )
                .await
        }
        Op::Encrypt => {
            let mut body = encrypt_body(b"quarterly numbers", Some(b"ctx"), false);
            body["requestMetadata"] = metadata;
            client.post(&path("encrypt", "foo"), &body).await
        }
        Op::Decrypt => {
            let mut enc_body = encrypt_body(b"quarterly numbers", Some(b"ctx"), false);
            enc_body["requestMetadata"] = md(ROLE, "Encrypt", json!({"kmsViaService": "s3"}));
            let enc = client.post(&path("encrypt", "foo"), &enc_body).await;
            let enc = enc.expect_ok().clone();
            let mut body = decrypt_body(&enc, Some(b"ctx"));
            body["requestMetadata"] = metadata;
            client.post(&path("decrypt", "foo"), &body).await
        }
    }
}

#[tokio::test]
async fn every_example_allows_and_denies_through_the_server() {
    let policies = tempfile::tempdir().unwrap();
    for case in cases() {
        let dir = edited_example(case.example, case.edits, policies.path());
        let config = config(&format!(
            "\n[policy]\ndir = {:?}\n",
            dir.display().to_string()
        ));
        let server = TestServer::start(&config).await;
        let mut client = server.client().await;
        let ok = send(&mut client, case.allowed.op, (case.allowed.metadata)()).await;
        assert_eq!(
            ok.status, 200,
            "{}: allowed request got {}",
            case.example, ok.raw
        );
        if matches!(case.allowed.op, Op::Decrypt) {
            assert_eq!(unb64(&ok.json["plaintext"]), b"quarterly numbers");
        }
        let denied = send(&mut client, case.denied.op, (case.denied.metadata)()).await;
        denied.expect_error(403, "AccessDeniedException");
        let message = denied.json["errorMessage"].as_str().unwrap();
        assert!(message.contains(case.reason), "{}: {message}", case.example);
        assert!(message.len() < 512 && message.bytes().all(|b| (0x20..0x7f).contains(&b)));
        let counts = server.policy_counts();
        assert!(
            counts.denied >= 1 && counts.allowed >= 1,
            "{}: {counts:?}",
            case.example
        );
        server.stop().await;
    }
}
