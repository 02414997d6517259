//! The KMS v2 door on the software backend, in this process, through a Rust gRPC client on
//! the real socket.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use crate::support::kms::*;
use crate::support::process::keygate;
use crate::support::{Client, encrypt_body, metric, path};

const DECISION_LOG: &str = "[decision_log]\npath = \"decisions.log\"\n";

#[tokio::test]
async fn status_encrypt_decrypt_round_trip() {
    let server = KmsServer::start("", DECISION_LOG).await;
    let mut client = server.client().await;
    let st = status(&mut client).await;
    assert_eq!(
        (st.version.as_str(), st.healthz.as_str(), st.key_id.as_str()),
        ("v2", "ok", "keygate/foo/v1")
    );
    let seed = [0x5a; 32];
    let (ct, key_id) = encrypt(&mut client, &seed, "enc-uid-1").await.unwrap();
    assert_eq!(
        key_id, st.key_id,
        "Encrypt returns the latest Status's key_id"
    );
    assert!(!ct.is_empty() && ct.len() < 1024, "{}", ct.len());
    assert_eq!(ct[0], 1, "format byte");
    assert!(
        !ct.windows(seed.len()).any(|w| w == seed),
        "plaintext in ciphertext"
    );
    // The uid differs between an Encrypt and the Decrypt of its result.
    let pt = decrypt(&mut client, &ct, &key_id, "dec-uid-2")
        .await
        .unwrap();
    assert_eq!(pt, seed);
    let (ct2, _) = encrypt(&mut client, &seed, "enc-uid-3").await.unwrap();
    assert_ne!(ct, ct2, "a fresh IV for every encryption");

    let lines = server.decisions();
    assert_eq!(
        lines.len(),
        3,
        "one line per judged call, Status never judged"
    );
    let me = std::fs::metadata(&server.socket).unwrap().uid();
    for (line, (op, uid)) in lines.iter().zip([
        ("Encrypt", "enc-uid-1"),
        ("Decrypt", "dec-uid-2"),
        ("Encrypt", "enc-uid-3"),
    ]) {
        let input = &line["input"];
        assert_eq!(input["interface"], "kms_v2");
        assert_eq!(input["operation"], op);
        assert_eq!(input["key_id"], "foo");
        assert_eq!(input["keystore"], "kubernetes");
        assert_eq!(input["request_uid"], uid);
        assert_eq!(input["peer"]["uid"], me);
        assert_eq!(input["peer"]["pid"], std::process::id());
        assert!(line["error_name"].is_null());
    }
    let m = server.metrics();
    assert_eq!(
        metric(
            &m,
            "keygate_kms_v2_requests_total{operation=\"Encrypt\",code=\"OK\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "keygate_kms_v2_requests_total{operation=\"Status\",code=\"OK\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "keygate_kms_v2_request_duration_seconds_count{operation=\"Decrypt\"}"
        ),
        1.0
    );
    server.stop().await;
}

fn code(r: Result<Vec<u8>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn tampered_or_malformed_input_is_invalid_argument() {
    let server = KmsServer::start("", DECISION_LOG).await;
    let mut c = server.client().await;
    let (ct, key_id) = encrypt(&mut c, b"seed-seed-seed-seed", "u").await.unwrap();
    // Every single byte altered: format, key name, version, IV, ciphertext, tag.
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        let got = code(decrypt(&mut c, &bad, &key_id, "u").await);
        assert_eq!(got, tonic::Code::InvalidArgument, "byte {i}");
    }
    for bad in [&ct[..ct.len() - 1], &ct[..10], &[][..]] {
        let got = code(decrypt(&mut c, bad, &key_id, "u").await);
        assert_eq!(got, tonic::Code::InvalidArgument, "{} bytes", bad.len());
    }
    let longer = [ct.as_slice(), b"x"].concat();
    assert_eq!(
        code(decrypt(&mut c, &longer, &key_id, "u").await),
        tonic::Code::InvalidArgument
    );
    // An annotation keygate did not issue, and annotations over 32 kB.
    let one = HashMap::from([("attacker.example.org/v".to_owned(), b"1".to_vec())]);
    let e = decrypt_with(&mut c, &ct, &key_id, "u", one)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("attacker.example.org/v"),
        "{}",
        e.message()
    );
    let big = HashMap::from([("big.example.org/v".to_owned(), vec![0; 33 * 1024])]);
    let e = decrypt_with(&mut c, &ct, &key_id, "u", big)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Oversized and empty fields; a message over the door's 64 KiB decoding limit.
    for (plaintext, uid) in [
        (vec![1; 513], "u".to_owned()),
        (vec![], "u".to_owned()),
        (vec![1; 100 * 1024], "u".to_owned()),
        (vec![1; 32], "u".repeat(129)),
        (vec![1; 32], "bad\nuid".to_owned()),
    ] {
        let e = encrypt(&mut c, &plaintext, &uid).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{} bytes: {}",
            plaintext.len(),
            e.message()
        );
    }
    let over = vec![1; 1025];
    assert_eq!(
        code(decrypt(&mut c, &over, &key_id, "u").await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(decrypt(&mut c, &ct, "", "u").await),
        tonic::Code::InvalidArgument
    );
    // The original still decrypts; the door still serves.
    assert_eq!(
        decrypt(&mut c, &ct, &key_id, "u").await.unwrap(),
        b"seed-seed-seed-seed"
    );
    // Judged calls refused by the key (tag, version) are logged with their code.
    let refused = server
        .decisions()
        .iter()
        .filter(|l| l["error_name"] == "INVALID_ARGUMENT")
        .count();
    assert!(refused > 0);
    server.stop().await;
}

#[tokio::test]
async fn rotation_changes_key_id_and_old_ciphertexts_still_decrypt() {
    let server = KmsServer::start("", "").await;
    let mut c = server.client().await;
    assert_eq!(status(&mut c).await.key_id, "keygate/foo/v1");
    let (old, old_id) = encrypt(&mut c, b"before", "u1").await.unwrap();
    server.rotate("foo");
    // Until the apiserver polls Status again, Encrypt keeps the key_id Status last said.
    let (_, id) = encrypt(&mut c, b"between", "u2").await.unwrap();
    assert_eq!(id, "keygate/foo/v1");
    let st = status(&mut c).await;
    assert_eq!(
        (st.healthz.as_str(), st.key_id.as_str()),
        ("ok", "keygate/foo/v2")
    );
    let (new, new_id) = encrypt(&mut c, b"after", "u3").await.unwrap();
    assert_eq!(new_id, "keygate/foo/v2");
    assert_eq!(
        new[5..9],
        2u32.to_be_bytes(),
        "the key version in the ciphertext"
    );
    assert_eq!(
        decrypt(&mut c, &old, &old_id, "u4").await.unwrap(),
        b"before"
    );
    assert_eq!(
        decrypt(&mut c, &new, &new_id, "u5").await.unwrap(),
        b"after"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_custom_key_id_format_and_previous_keys() {
    let server = KmsServer::start(
        "key_id_format = \"prod-eu1:{key}:{version}\"\nprevious_keys = [\"decrypt_only_key\"]",
        "",
    )
    .await;
    let mut c = server.client().await;
    let st = status(&mut c).await;
    assert_eq!(st.key_id, "prod-eu1:foo:1");
    let (ct, id) = encrypt(&mut c, b"x", "u").await.unwrap();
    assert_eq!(id, "prod-eu1:foo:1");
    // A ciphertext naming a key that is neither `key` nor a previous key is refused.
    let mut other = ct.clone();
    other.splice(2..5, *b"bar");
    let e = decrypt(&mut c, &other, &id, "u").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    server.stop().await;
}

#[tokio::test]
async fn a_disabled_key_makes_status_unhealthy_and_encrypt_fail() {
    let server = KmsServer::start("", "").await;
    let mut c = server.client().await;
    let (ct, id) = encrypt(&mut c, b"x", "u").await.unwrap();
    server.admin(|a| {
        keygate::keys::KeyAdmin::set_enabled(a, "foo", false).unwrap();
    });
    let st = status(&mut c).await;
    assert_ne!(st.healthz, "ok");
    assert!(st.healthz.contains("disabled"), "{}", st.healthz);
    assert_eq!(st.key_id, "keygate/foo/v1", "the last key_id stays");
    let e = encrypt(&mut c, b"x", "u").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    server.admin(|a| {
        keygate::keys::KeyAdmin::set_enabled(a, "foo", true).unwrap();
    });
    assert_eq!(status(&mut c).await.healthz, "ok");
    assert_eq!(decrypt(&mut c, &ct, &id, "u").await.unwrap(), b"x");
    let m = server.metrics();
    assert_eq!(
        metric(
            &m,
            "keygate_kms_v2_requests_total{operation=\"Status\",code=\"UNHEALTHY\"}"
        ),
        1.0
    );
    server.stop().await;
}

const ONLY_UID_4242_DECRYPTS: &str = r#"package keygate

import rego.v1

default allow := false

allow if input.operation == "Encrypt"

allow if {
	input.operation == "Decrypt"
	input.peer.uid == 4242
}

deny contains msg if {
	input.operation == "Decrypt"
	input.peer.uid != 4242
	msg := sprintf("only uid 4242 may decrypt, not uid %d", [input.peer.uid])
}
"#;

#[tokio::test]
async fn a_policy_that_denies() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("k8s.rego"), ONLY_UID_4242_DECRYPTS).unwrap();
    let extra = format!(
        "{DECISION_LOG}\n[policy]\ndir = {:?}\n",
        policies.path().display().to_string()
    );
    let server = KmsServer::start("", &extra).await;
    let mut c = server.client().await;
    let (ct, id) = encrypt(&mut c, b"seed", "u1").await.unwrap();
    let e = decrypt(&mut c, &ct, &id, "u2").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message()
            .contains("denied by policy: only uid 4242 may decrypt"),
        "{}",
        e.message()
    );
    let lines = server.decisions();
    let last = lines.last().unwrap();
    assert_eq!(last["error_name"], "PERMISSION_DENIED");
    assert_eq!(last["result"]["allow"], false);
    assert_eq!(last["input"]["operation"], "Decrypt");
    let m = server.metrics();
    assert_eq!(
        metric(
            &m,
            "keygate_kms_v2_requests_total{operation=\"Decrypt\",code=\"PERMISSION_DENIED\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "keygate_policy_decisions_total{keystore=\"kubernetes\",decision=\"deny\"}"
        ),
        1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn both_doors_write_one_chain() {
    let server = KmsServer::start("", DECISION_LOG).await;
    let mut kms = server.client().await;
    let mut xks = Client::connect(server.xks).await;
    for round in 0..3 {
        xks.post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
            .await
            .expect_ok();
        encrypt(&mut kms, b"seed", &format!("u{round}"))
            .await
            .unwrap();
    }
    let interfaces: Vec<_> = server
        .decisions()
        .iter()
        .map(|l| l["input"]["interface"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        interfaces,
        ["xks", "kms_v2", "xks", "kms_v2", "xks", "kms_v2"]
    );
    // decisions() flushed the writer: the file holds every line, chained.
    let log = server.dir.path().join("decisions.log");
    let out = keygate(&["audit", "verify", log.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("6 lines") || said.contains('6'), "{said}");
    // Both doors' lines are OPA events; a Unix-socket caller is named by its credentials.
    crate::audit::event::validate(&log);
    let callers: Vec<String> = server
        .decisions()
        .iter()
        .map(|l| l["requested_by"].as_str().unwrap().to_owned())
        .collect();
    assert!(callers[0].starts_with("127.0.0.1:"), "{callers:?}");
    assert!(callers[1].starts_with("unix:uid="), "{callers:?}");
    server.stop().await;
}
