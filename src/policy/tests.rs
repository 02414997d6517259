//! Engine tests: loading, the embedded library, VM/interpreter agreement, limits, bad results,
//! reload.

use std::path::Path;
use std::time::{Duration, SystemTime};

use regorus::Value;

use super::*;

fn metadata(principal: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("awsPrincipalArn".into(), principal.into());
    m.insert("kmsOperation".into(), "Decrypt".into());
    m.insert("kmsRequestId".into(), "r-1".into());
    m
}

fn input<'a>(m: &'a serde_json::Map<String, serde_json::Value>, key: &'a str) -> PolicyInput<'a> {
    PolicyInput {
        interface: crate::policy::Interface::Xks,
        operation: "Decrypt",
        keystore: "finance",
        uri_prefix: "/finance",
        key_id: key,
        request_metadata: m,
        access_key_id: Some("AKIAEXAMPLEEXAMPLE22"),
        source_ip: Some("10.20.3.4".parse().unwrap()),
        client_subject: Some("CN=cks.kms.us-east-1.amazonaws.com"),
        // Wednesday 2026-11-18 15:00 UTC (10:00 in New York).
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_014_000),
        aad_length: 0,
        request_uid: None,
        peer: None,
    }
}

fn example(name: &str) -> PolicySet {
    let set = embedded::EXAMPLES.iter().find(|s| s.name == name).unwrap();
    PolicySet::checked(name, set.to_files()).unwrap()
}

fn files(text: &str) -> Vec<PolicyFile> {
    vec![PolicyFile {
        name: "policy.rego".into(),
        text: text.into(),
    }]
}

#[test]
fn embedded_default_allows_everything() {
    let engine = PolicyEngine::embedded().unwrap();
    let m = metadata("arn:aws:iam::1:role/Anyone");
    let d = engine.evaluate(&input(&m, "k")).unwrap();
    assert!(d.allow);
    assert!(d.reasons.is_empty());
    assert_eq!(d.revision, engine.revision());
    assert_eq!(d.revision.len(), 64);
}

#[test]
fn every_embedded_set_compiles_and_passes_its_tests() {
    for set in embedded::all() {
        let checked = PolicySet::checked(set.name, set.to_files());
        assert!(checked.is_ok(), "{}: {:?}", set.name, checked.err());
    }
}

#[test]
fn financial_report_allows_and_denies_with_reasons() {
    let engine = PolicyEngine::new(example("financial-report"), DEFAULT_EVAL_TIMEOUT);
    let analyst = metadata("arn:aws:sts::111122223333:assumed-role/FinanceAnalyst/alice");
    assert!(
        engine
            .evaluate(&input(&analyst, "financial-reports"))
            .unwrap()
            .allow
    );
    let intern = metadata("arn:aws:iam::111122223333:role/Intern");
    let mut denied = input(&intern, "financial-reports");
    denied.source_ip = Some("203.0.113.9".parse().unwrap());
    let d = engine.evaluate(&denied).unwrap();
    assert!(!d.allow);
    assert_eq!(
        d.reasons,
        [
            "financial reports may not be decrypted from 203.0.113.9",
            "principal arn:aws:iam::111122223333:role/Intern may not decrypt financial reports",
        ]
    );
}

/// Production runs on the VM, tests on the interpreter: they must agree on every example.
#[test]
fn vm_and_interpreter_agree_on_the_examples() {
    let principals = [
        "arn:aws:sts::111122223333:assumed-role/FinanceAnalyst/alice",
        "arn:aws:iam::111122223333:role/PaymentsApi",
        "arn:aws:iam::999999999999:role/Other",
        "ec2.amazonaws.com",
        "AWS Internal",
    ];
    let keys = ["financial-reports", "card-vault", "ebs-volumes", "k1"];
    for set in embedded::all() {
        let policy = PolicySet::checked(set.name, set.to_files()).unwrap();
        let mut interpreter = policy.interpreter();
        let engine = PolicyEngine::new(policy, DEFAULT_EVAL_TIMEOUT);
        for principal in principals {
            for key in keys {
                for operation in ["Encrypt", "Decrypt", "GetKeyMetadata"] {
                    let m = metadata(principal);
                    let mut i = input(&m, key);
                    i.operation = operation;
                    let vm = engine.evaluate(&i).unwrap();
                    interpreter.set_input(Value::from(i.to_json()));
                    let tree = interpreter.eval_rule(DECISION_RULE.into()).unwrap();
                    let (allow, reasons) = read_decision(&tree).unwrap();
                    assert_eq!(
                        (vm.allow, &vm.reasons),
                        (allow, &reasons),
                        "{} {principal} {key}",
                        set.name
                    );
                }
            }
        }
    }
}

#[test]
fn slow_policy_times_out_and_fails_closed() {
    let set = PolicySet::compile(
        "slow",
        files(
            "package keygate\nimport rego.v1\n\
             allow if count([x | some x in numbers.range(1, 100000000)]) > 0\n",
        ),
    )
    .unwrap();
    let engine = PolicyEngine::new(set, Duration::from_millis(5));
    let m = metadata("p");
    match engine.evaluate(&input(&m, "k")) {
        Err(PolicyError::Timeout(limit)) => assert_eq!(limit, Duration::from_millis(5)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn non_boolean_allow_is_an_error() {
    let set = PolicySet::compile(
        "bad",
        files("package keygate\nimport rego.v1\nallow := \"yes\"\n"),
    )
    .unwrap();
    let engine = PolicyEngine::new(set, DEFAULT_EVAL_TIMEOUT);
    let m = metadata("p");
    assert!(matches!(
        engine.evaluate(&input(&m, "k")),
        Err(PolicyError::BadResult(_))
    ));
}

/// crate-notes pitfall: in v1, `deny[msg] if` builds an object, not a set. Refused at evaluation.
#[test]
fn deny_as_object_is_an_error() {
    let set = PolicySet::compile(
        "obj",
        files("package keygate\nimport rego.v1\ndefault allow := false\ndeny[msg] if { msg := \"x\" }\n"),
    )
    .unwrap();
    let engine = PolicyEngine::new(set, DEFAULT_EVAL_TIMEOUT);
    let m = metadata("p");
    let err = engine.evaluate(&input(&m, "k")).unwrap_err();
    assert!(err.to_string().contains("must be a set"), "{err}");
}

#[test]
fn undefined_allow_is_false() {
    let set = PolicySet::compile(
        "undef",
        files("package keygate\nimport rego.v1\nallow if input.operation == \"Nope\"\n"),
    )
    .unwrap();
    let engine = PolicyEngine::new(set, DEFAULT_EVAL_TIMEOUT);
    let m = metadata("p");
    assert!(!engine.evaluate(&input(&m, "k")).unwrap().allow);
}

#[test]
fn from_dir_refuses_failing_tests_and_fail_open_v0() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "policy.rego",
        "package keygate\nimport rego.v1\ndefault allow := false\n",
    );
    write(
        "policy_test.rego",
        "package keygate_test\nimport rego.v1\ntest_allows if data.keygate.allow\n",
    );
    let err = PolicyEngine::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::TestsFailed(_)), "{err}");
    std::fs::remove_file(dir.path().join("policy_test.rego")).unwrap();
    // v1 `allow if` mixed with a v0 body: only v0 parses it, and v0 would read `if` as a name.
    write(
        "policy.rego",
        "package keygate\ndefault allow = false\ndeny[msg] { msg := \"no\" }\nallow if {\n input.x == 1\n}\n",
    );
    let err = PolicyEngine::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, PolicyError::FailOpenV0 { line: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("policy.rego:4:7"), "{err}");
}

#[test]
fn from_dir_refuses_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        PolicyEngine::from_dir(dir.path()),
        Err(PolicyError::Empty(_))
    ));
    assert!(matches!(
        PolicyEngine::from_dir(Path::new("/nonexistent/keygate")),
        Err(PolicyError::Read { .. })
    ));
}

#[test]
fn reload_swaps_the_policy_for_every_clone() {
    let engine = PolicyEngine::embedded().unwrap();
    let clone = engine.clone();
    let m = metadata("p");
    assert!(clone.evaluate(&input(&m, "k")).unwrap().allow);
    let before = engine.revision();
    let deny_all = PolicySet::compile(
        "deny-all",
        files(
            "package keygate\nimport rego.v1\ndefault allow := false\ndeny contains \"closed\"\n",
        ),
    )
    .unwrap();
    engine.reload(deny_all);
    assert_ne!(engine.revision(), before);
    let d = clone.evaluate(&input(&m, "k")).unwrap();
    assert_eq!(
        (d.allow, d.reasons.as_slice()),
        (false, ["closed".to_owned()].as_slice())
    );
}

#[test]
fn revision_depends_on_content_not_order() {
    let a = PolicyFile {
        name: "a.rego".into(),
        text: "package keygate\nimport rego.v1\ndefault allow := true\n".into(),
    };
    let b = PolicyFile {
        name: "b.rego".into(),
        text: "package keygate\nimport rego.v1\nx := 1\n".into(),
    };
    let one = PolicySet::compile("1", vec![a.clone(), b.clone()]).unwrap();
    let two = PolicySet::compile("2", vec![b.clone(), a.clone()]).unwrap();
    assert_eq!(one.revision(), two.revision());
    let mut changed = b;
    changed.text.push('\n');
    let three = PolicySet::compile("3", vec![a, changed]).unwrap();
    assert_ne!(one.revision(), three.revision());
}
