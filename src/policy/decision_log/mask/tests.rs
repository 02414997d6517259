//! Masking rules: what the config check refuses, what apply does, and the HMAC itself.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;

fn key_file(dir: &Path, hex: &str, mode: u32) -> PathBuf {
    let path = dir.join("mask.key");
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// RFC 4231 test case 6: a 131-byte key of 0xaa.
fn rfc4231_key(dir: &Path) -> PathBuf {
    key_file(dir, &"aa".repeat(131), 0o600)
}

fn toml(erase: &[&str], hmac: &[&str], key: Option<&Path>) -> MaskToml {
    let list = |l: &[&str]| Some(l.iter().map(|s| (*s).to_owned()).collect());
    MaskToml {
        erase: list(erase),
        hmac: list(hmac),
        hmac_key_file: key.map(Path::to_owned),
    }
}

fn masking(erase: &[&str], hmac: &[&str], key: Option<&Path>) -> Masking {
    let settings = toml(erase, hmac, key)
        .check(Path::new("/"), &mut Vec::new())
        .unwrap();
    Masking::new(&settings).unwrap()
}

#[test]
fn the_hmac_is_rfc_4231s() {
    let dir = tempfile::tempdir().unwrap();
    let key = MaskKey::read(&rfc4231_key(dir.path())).unwrap();
    assert_eq!(
        key.tag(&json!(
            "Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "hmac-sha256:60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
    // Anything but a string is its compact JSON text.
    assert_eq!(key.tag(&json!(31)), key.tag(&json!("31")));
    assert_eq!(
        key.tag(&json!({"b": 1, "a": [true]})),
        key.tag(&json!("{\"a\":[true],\"b\":1}"))
    );
    assert_eq!(format!("{key:?}"), "MaskKey(***)");
}

#[test]
fn bad_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("aa".repeat(32), 0o640, "readable by group or others"),
        ("zz".repeat(32), 0o600, "does not hold a hex key"),
        ("aa".repeat(31), 0o600, "31-byte key"),
    ];
    for (hex, mode, why) in cases {
        let err = MaskKey::read(&key_file(dir.path(), &hex, mode)).unwrap_err();
        assert!(err.contains(why), "{err}");
        assert!(
            !err.contains(&hex),
            "the key never shows in an error: {err}"
        );
    }
    assert!(MaskKey::read(&dir.path().join("none")).is_err());
}

#[test]
fn every_bad_rule_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let erase = [
        "input/source_ip",
        "/input/a~2b",
        "/seq",
        "/hash",
        "/prev_hash",
        "/result/allow",
        "/error",
        "/input",
        "/input/time",
        "/labels/id",
        "/input/request_metadata",
    ];
    let hmac = [
        "/input/request_metadata/awsPrincipalArn",
        "/input/source_ip",
    ];
    let problems = toml(&erase, &hmac, None)
        .check(dir.path(), &mut Vec::new())
        .unwrap_err();
    let want = [
        "must start with '/'",
        "'~' must be followed by 0 or 1",
        "/seq: it would touch seq, a chain member",
        "/hash: it would touch hash, a chain member",
        "/prev_hash: it would touch prev_hash, a chain member",
        "/result/allow: it would touch result, the decision itself",
        "/error: it would touch error, the decision itself",
        "/input: the whole input",
        "/input/time: the line holds no input.time",
        "/labels/id: only members under /input/ and /requested_by",
        "/input/request_metadata and /input/request_metadata/awsPrincipalArn overlap",
        "add \"/requested_by\"",
        "hmac_key_file is required for hmac rules",
    ];
    for w in want {
        assert!(problems.iter().any(|p| p.contains(w)), "{w}: {problems:#?}");
    }
    assert_eq!(problems.len(), want.len(), "{problems:#?}");
}

#[test]
fn a_good_table_checks_and_warns_of_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = rfc4231_key(dir.path());
    let mut warnings = Vec::new();
    let s = toml(
        &["/requested_by"],
        &["/input/source_ip", "/input/request_metadata/a~1b"],
        Some(&key),
    )
    .check(dir.path(), &mut warnings)
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let actions: Vec<_> = s.rules.iter().map(|(p, a)| (p.as_str(), *a)).collect();
    assert_eq!(
        actions,
        [
            ("/requested_by", Action::Erase),
            ("/input/source_ip", Action::Hmac),
            ("/input/request_metadata/a~1b", Action::Hmac)
        ]
    );
    let mut warnings = Vec::new();
    toml(&[], &[], Some(&key))
        .check(dir.path(), &mut warnings)
        .unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

#[test]
fn apply_erases_hmacs_and_lists_only_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let key = rfc4231_key(dir.path());
    let m = masking(
        &[
            "/requested_by",
            "/input/request_metadata/kmsViaService",
            "/input/list/1",
        ],
        &[
            "/input/request_metadata/awsPrincipalArn",
            "/input/source_ip",
            "/input/client_subject",
            "/input/peer",
            "/input/request_metadata/a~1b",
        ],
        Some(&key),
    );
    let mut event = json!({
        "input": {
            "request_metadata": {"awsPrincipalArn": "arn:aws:iam::1:role/A", "a/b": 7},
            "source_ip": "10.0.0.1", "client_subject": null, "list": ["x", "y", "z"]
        },
        "requested_by": "10.0.0.1:4000"
    });
    let applied = m.apply(&mut event);
    let k = MaskKey::read(&key).unwrap();
    assert_eq!(
        event,
        json!({
            "input": {
                "request_metadata": {
                    "awsPrincipalArn": k.tag(&json!("arn:aws:iam::1:role/A")),
                    "a/b": k.tag(&json!(7))
                },
                "source_ip": k.tag(&json!("10.0.0.1")), "client_subject": null,
                "list": ["x", "z"]
            }
        })
    );
    let list = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // kmsViaService and peer are absent, client_subject is null: none is listed.
    assert_eq!(list(&applied.erased), ["/requested_by", "/input/list/1"]);
    assert_eq!(
        list(&applied.masked),
        [
            "/input/request_metadata/awsPrincipalArn",
            "/input/source_ip",
            "/input/request_metadata/a~1b"
        ]
    );
}

#[test]
fn fields_of_the_request_log_are_masked_as_the_decision_line_is() {
    let dir = tempfile::tempdir().unwrap();
    let key = rfc4231_key(dir.path());
    let m = masking(
        &["/input/access_key_id", "/requested_by"],
        &["/input/source_ip", "/input/peer"],
        Some(&key),
    );
    let k = MaskKey::read(&key).unwrap();
    let mut event = json!({"input": {"source_ip": "10.0.0.1"}});
    m.apply(&mut event);
    // The request log's tag is the decision line's, so the two logs still join.
    assert_eq!(
        m.field("/input/source_ip", "10.0.0.1").as_deref(),
        event["input"]["source_ip"].as_str()
    );
    assert_eq!(
        m.field("/input/source_ip", "10.0.0.1").unwrap(),
        k.tag(&json!("10.0.0.1"))
    );
    assert_eq!(m.field("/input/access_key_id", "AKIA"), None);
    // Inside an HMAC'd object: its tag is of the whole object, so the part is erased.
    assert_eq!(m.field("/input/peer/uid", "1000"), None);
    // A sibling whose name starts the same is not inside it.
    assert_eq!(m.field("/input/peers", "x").as_deref(), Some("x"));
    assert_eq!(m.field("/input/key_id", "foo").as_deref(), Some("foo"));
    assert_eq!(m.field("/input/source_ip", "").as_deref(), Some(""));
}
