//! The XKS API end to end against the real server: every operation, every error name keygate
//! produces without a policy or HSM, SigV4 styles and negatives, sizes and slow clients.
//! The same set runs for each key backend (see `xks_suites!`): the software backend in an
//! in-process server, a real SoftHSMv2 token and a real OpenBao server behind the real binary.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::process::QUIET;
use crate::support::*;

/// The one list of suite tests, run once per key backend; each gets the address of a fresh
/// server on the fixture config.
macro_rules! xks_suites {
    ([$($test:ident),* $(,)?]) => {
        mod software {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = TestServer::fixture().await;
                    super::$test(server.addr).await;
                }
            )*
        }
        mod pkcs11 {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = KeygateProcess::on_softhsm(&config(""), QUIET);
                    super::$test(server.addr).await;
                }
            )*
        }
        mod openbao {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = KeygateProcess::on_openbao(&config(""), "", QUIET);
                    super::$test(server.addr).await;
                }
            )*
        }
    };
}

xks_suites!([
    health_reports_fleet_and_backend,
    health_rejects_malformed_bodies,
    metadata_reports_spec_usage_and_status,
    round_trips_with_and_without_aad,
    cdiv_is_recomputable_and_self_checked,
    tampering_is_invalid_ciphertext,
    wrong_iv_and_tag_lengths_are_rejected,
    key_usage_is_enforced,
    disabled_keys_are_invalid_state,
    unknown_keys_are_not_found,
    paths_are_checked_before_authentication,
    other_methods_get_405,
    sigv4_styles_all_verify,
    sigv4_negatives_fail_authentication,
    second_credential_and_keystore_isolation,
    spec_minimum_sizes_work_and_the_cap_is_501,
    malformed_bodies_are_validation_errors,
    unknown_fields_and_operations_are_tolerated,
    responses_are_compact_json,
]);

async fn health_reports_fleet_and_backend(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let r = c
        .post(
            &health_path(),
            &json!({"requestMetadata": {"kmsRequestId": "h1", "kmsOperation": "KmsHealthCheck"}}),
        )
        .await;
    let j = r.expect_ok();
    assert_eq!(j["xksProxyFleetSize"], 1);
    assert_eq!(j["xksProxyVendor"], "keygate");
    assert!(j["xksProxyModel"].as_str().unwrap().starts_with("keygate "));
    assert!(!j["ekmVendor"].as_str().unwrap().is_empty());
    let fleet = j["ekmFleetDetails"].as_array().unwrap();
    assert!((1..=10).contains(&fleet.len()));
    assert_eq!(fleet[0]["healthStatus"], "ACTIVE");
}

async fn health_rejects_malformed_bodies(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    c.post(&health_path(), &json!({}))
        .await
        .expect_error(400, "ValidationException");
    c.post(&health_path(), &json!({"requestMetadata": {}}))
        .await
        .expect_error(400, "ValidationException");
}

async fn metadata_reports_spec_usage_and_status(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let body = json!({"requestMetadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice", "kmsOperation": "CreateKey", "kmsRequestId": "m1"}});
    for (key, usage, status) in [
        ("foo", json!(["ENCRYPT", "DECRYPT"]), "ENABLED"),
        ("encrypt_only_key", json!(["ENCRYPT"]), "ENABLED"),
        ("decrypt_only_key", json!(["DECRYPT"]), "ENABLED"),
        ("impotent_key", json!([]), "ENABLED"),
        ("disabled_key", json!(["ENCRYPT", "DECRYPT"]), "DISABLED"),
    ] {
        let r = c.post(&path("metadata", key), &body).await;
        let j = r.expect_ok();
        assert_eq!(
            j,
            &json!({"keySpec": "AES_256", "keyUsage": usage, "keyStatus": status}),
            "{key}"
        );
    }
}

async fn round_trips_with_and_without_aad(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    for (pt, aad) in [
        (&b"Hello World!"[..], None),
        (b"", None),
        (b"x", Some(&b"project=nile"[..])),
        (b"y", Some(&b""[..])),
    ] {
        let enc = c
            .post(&path("encrypt", "foo"), &encrypt_body(pt, aad, false))
            .await;
        let e = enc.expect_ok().clone();
        assert_eq!(unb64(&e["ciphertext"]).len(), pt.len());
        assert_eq!(unb64(&e["initializationVector"]).len(), 12);
        assert_eq!(unb64(&e["authenticationTag"]).len(), 16);
        assert!(unb64(&e["ciphertextMetadata"]).len() <= 20);
        assert!(e.get("ciphertextDataIntegrityValue").is_none());
        let dec = c
            .post(&path("decrypt", "foo"), &decrypt_body(&e, aad))
            .await;
        assert_eq!(unb64(&dec.expect_ok()["plaintext"]), pt);
    }
    // A missing AAD and an empty AAD are the same AAD.
    let e = c
        .post(&path("encrypt", "foo"), &encrypt_body(b"z", None, false))
        .await
        .expect_ok()
        .clone();
    let dec = c
        .post(&path("decrypt", "foo"), &decrypt_body(&e, Some(b"")))
        .await;
    assert_eq!(unb64(&dec.expect_ok()["plaintext"]), b"z");
}

async fn cdiv_is_recomputable_and_self_checked(addr: SocketAddr) {
    use sha2::{Digest, Sha256};
    let mut c = Client::connect(addr).await;
    let aad = b"project=nile,department=marketing";
    let e = c
        .post(
            &path("encrypt", "foo"),
            &encrypt_body(b"Hello World!", Some(aad), true),
        )
        .await
        .expect_ok()
        .clone();
    let mut h = Sha256::new();
    h.update(aad);
    for f in [
        "ciphertextMetadata",
        "initializationVector",
        "ciphertext",
        "authenticationTag",
    ] {
        h.update(unb64(&e[f]));
    }
    assert_eq!(
        unb64(&e["ciphertextDataIntegrityValue"]),
        h.finalize().to_vec()
    );
    // CDIV needs the self-check decrypt, which an encrypt-only key can't do.
    c.post(
        &path("encrypt", "encrypt_only_key"),
        &encrypt_body(b"x", None, true),
    )
    .await
    .expect_error(400, "InvalidKeyUsageException");
}

async fn tampering_is_invalid_ciphertext(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let aad = b"context";
    let e = c
        .post(
            &path("encrypt", "foo"),
            &encrypt_body(b"secret data", Some(aad), false),
        )
        .await
        .expect_ok()
        .clone();
    let flip = |v: &serde_json::Value| {
        let mut b = unb64(v);
        b[0] ^= 1;
        json!(b64(&b))
    };
    let mut cases = Vec::new();
    for field in [
        "ciphertext",
        "initializationVector",
        "authenticationTag",
        "ciphertextMetadata",
    ] {
        let mut d = decrypt_body(&e, Some(aad));
        d[field] = flip(&e[field]);
        cases.push((field.to_string(), d));
    }
    cases.push(("wrong aad".into(), decrypt_body(&e, Some(b"other"))));
    cases.push(("missing aad".into(), decrypt_body(&e, None)));
    let mut no_meta = decrypt_body(&e, Some(aad));
    no_meta
        .as_object_mut()
        .unwrap()
        .remove("ciphertextMetadata");
    cases.push(("missing metadata".into(), no_meta));
    let mut meta_as_aad = decrypt_body(&e, None);
    meta_as_aad["additionalAuthenticatedData"] = e["ciphertextMetadata"].clone();
    meta_as_aad
        .as_object_mut()
        .unwrap()
        .remove("ciphertextMetadata");
    cases.push(("metadata moved into aad".into(), meta_as_aad));
    for (what, body) in cases {
        let r = c.post(&path("decrypt", "foo"), &body).await;
        assert_eq!(
            (r.status, r.error_name()),
            (400, "InvalidCiphertextException"),
            "{what}: {}",
            r.raw
        );
    }
}

async fn wrong_iv_and_tag_lengths_are_rejected(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let e = c
        .post(&path("encrypt", "foo"), &encrypt_body(b"abc", None, false))
        .await
        .expect_ok()
        .clone();
    for (field, len) in [
        ("initializationVector", 8),
        ("initializationVector", 0),
        ("initializationVector", 16),
        ("authenticationTag", 12),
    ] {
        let mut d = decrypt_body(&e, None);
        d[field] = json!(b64(&vec![7u8; len]));
        let r = c.post(&path("decrypt", "foo"), &d).await;
        assert_eq!(r.status, 400, "{field} {len}: {}", r.raw);
        assert_eq!(
            r.error_name(),
            "InvalidCiphertextException",
            "{field} {len}"
        );
    }
}

async fn key_usage_is_enforced(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let e = c
        .post(
            &path("encrypt", "encrypt_only_key"),
            &encrypt_body(b"a", None, false),
        )
        .await
        .expect_ok()
        .clone();
    c.post(
        &path("decrypt", "encrypt_only_key"),
        &decrypt_body(&e, None),
    )
    .await
    .expect_error(400, "InvalidKeyUsageException");
    c.post(
        &path("encrypt", "decrypt_only_key"),
        &encrypt_body(b"a", None, false),
    )
    .await
    .expect_error(400, "InvalidKeyUsageException");
    c.post(
        &path("encrypt", "impotent_key"),
        &encrypt_body(b"a", None, false),
    )
    .await
    .expect_error(400, "InvalidKeyUsageException");
    c.post(&path("decrypt", "impotent_key"), &decrypt_body(&e, None))
        .await
        .expect_error(400, "InvalidKeyUsageException");
    // Ciphertext made under another key fails this key's tag check.
    c.post(
        &path("decrypt", "decrypt_only_key"),
        &decrypt_body(&e, None),
    )
    .await
    .expect_error(400, "InvalidCiphertextException");
}

async fn disabled_keys_are_invalid_state(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    c.post(
        &path("encrypt", "disabled_key"),
        &encrypt_body(b"a", None, false),
    )
    .await
    .expect_error(400, "InvalidStateException");
    let e = c
        .post(&path("encrypt", "foo"), &encrypt_body(b"a", None, false))
        .await
        .expect_ok()
        .clone();
    c.post(&path("decrypt", "disabled_key"), &decrypt_body(&e, None))
        .await
        .expect_error(400, "InvalidStateException");
}

async fn unknown_keys_are_not_found(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    for key in ["non_existing_key", "missing_in_backend", "keygate-health"] {
        c.post(&path("encrypt", key), &encrypt_body(b"a", None, false))
            .await
            .expect_error(404, "KeyNotFoundException");
    }
}

async fn paths_are_checked_before_authentication(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let bad = Signing {
        secret: "WrongSecretWrongSecretWrongSecretWrongSecret12".into(),
        ..Signing::default()
    };
    for p in [
        format!("{PREFIX}/invalid/kms/xks/v1/health"),
        "/unknown/kms/xks/v1/health".to_string(),
        format!("{PREFIX}/kms/xks/v1/keys/foo/sign"),
        format!("{PREFIX}/kms/xks/v2/health"),
        "/".to_string(),
    ] {
        for signing in [&Signing::default(), &bad] {
            c.send("POST", &p, b"{}", signing, None)
                .await
                .expect_error(404, "InvalidUriPathException");
        }
    }
}

async fn other_methods_get_405(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    for p in [
        health_path(),
        path("metadata", "foo"),
        path("encrypt", "foo"),
        path("decrypt", "foo"),
    ] {
        for m in ["GET", "PUT", "DELETE"] {
            let r = c.send(m, &p, b"", &Signing::default(), None).await;
            assert_eq!(r.status, 405, "{m} {p}");
        }
    }
}

async fn sigv4_styles_all_verify(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let body = encrypt_body(b"a", None, false);
    for signing in [
        Signing::default(),
        Signing {
            sign_content_type: true,
            ..Signing::default()
        },
        Signing {
            sign_content_type: true,
            content_sha256: true,
            ..Signing::default()
        },
        Signing {
            skew: 240,
            ..Signing::default()
        },
        Signing {
            skew: -240,
            ..Signing::default()
        },
    ] {
        c.post_signed(&path("encrypt", "foo"), &body, &signing)
            .await
            .expect_ok();
    }
}

async fn sigv4_negatives_fail_authentication(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let body = encrypt_body(b"a", None, false);
    let p = path("encrypt", "foo");
    for (what, signing) in [
        (
            "wrong secret",
            Signing {
                secret: "WrongSecretWrongSecretWrongSecretWrongSecret12".into(),
                ..Signing::default()
            },
        ),
        (
            "unknown access key",
            Signing {
                access_key_id: "UNKNOWNACCESSKEYID234567".into(),
                ..Signing::default()
            },
        ),
        (
            "wrong service",
            Signing {
                service: "kms".into(),
                ..Signing::default()
            },
        ),
        (
            "wrong region",
            Signing {
                region: "eu-west-1".into(),
                ..Signing::default()
            },
        ),
        (
            "6 minutes ahead",
            Signing {
                skew: 360,
                ..Signing::default()
            },
        ),
        (
            "6 minutes behind",
            Signing {
                skew: -360,
                ..Signing::default()
            },
        ),
    ] {
        let r = c.post_signed(&p, &body, &signing).await;
        assert_eq!(
            (r.status, r.error_name()),
            (401, "AuthenticationFailedException"),
            "{what}"
        );
    }
    let raw = body.to_string();
    let changed = raw.replace("AES_GCM", "AES_GCM ");
    c.send(
        "POST",
        &p,
        raw.as_bytes(),
        &Signing::default(),
        Some(changed.as_bytes()),
    )
    .await
    .expect_error(401, "AuthenticationFailedException");
    // A signed header missing from the request; and no Authorization at all.
    let headers = sign_headers(
        &addr.to_string(),
        &p,
        raw.as_bytes(),
        &Signing {
            sign_content_type: true,
            ..Signing::default()
        },
    );
    let without_ct: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != "content-type")
        .cloned()
        .collect();
    assert_eq!(raw_status(addr, &p, &without_ct, &raw).await, 401);
    let without_auth: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != "authorization")
        .cloned()
        .collect();
    assert_eq!(raw_status(addr, &p, &without_auth, &raw).await, 401);
}

/// Sends a request with exactly `headers` over a raw socket and returns the status.
async fn raw_status(addr: SocketAddr, path: &str, headers: &[(String, String)], body: &str) -> u16 {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    out.get(9..12).unwrap().parse().unwrap()
}

async fn second_credential_and_keystore_isolation(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let body = encrypt_body(b"a", None, false);
    let second = Signing::with(AK2, SECRET2);
    c.post_signed(&path("encrypt", "foo"), &body, &second)
        .await
        .expect_ok();
    // The root key store (empty prefix) has its own credential.
    let root = Signing::with(ROOT_AK, ROOT_SECRET);
    c.post_signed("/kms/xks/v1/keys/foo/encrypt", &body, &root)
        .await
        .expect_ok();
    c.post_signed(&path("encrypt", "foo"), &body, &root)
        .await
        .expect_error(401, "AuthenticationFailedException");
    c.post_signed("/kms/xks/v1/keys/foo/encrypt", &body, &Signing::default())
        .await
        .expect_error(401, "AuthenticationFailedException");
    // Keys are per key store: the root store does not list encrypt_only_key.
    c.post_signed("/kms/xks/v1/keys/encrypt_only_key/encrypt", &body, &root)
        .await
        .expect_error(404, "KeyNotFoundException");
}

async fn spec_minimum_sizes_work_and_the_cap_is_501(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    for (pt_len, aad_len) in [(4300, 8192), (4096, 8192), (8192, 16384)] {
        let pt = vec![0xa5u8; pt_len];
        let aad = vec![0x5au8; aad_len];
        let e = c
            .post(
                &path("encrypt", "foo"),
                &encrypt_body(&pt, Some(&aad), true),
            )
            .await
            .expect_ok()
            .clone();
        let d = c
            .post(&path("decrypt", "foo"), &decrypt_body(&e, Some(&aad)))
            .await;
        assert_eq!(unb64(&d.expect_ok()["plaintext"]), pt);
    }
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(&vec![1u8; 8193], None, false),
    )
    .await
    .expect_error(501, "UnsupportedOperationException");
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(b"a", Some(&vec![1u8; 16385]), false),
    )
    .await
    .expect_error(501, "UnsupportedOperationException");
    // Over the body cap: the excess is read and thrown away, the client gets its 501 (not a
    // reset while still writing) and the connection stays usable.
    let mut c2 = Client::connect(addr).await;
    for _ in 0..3 {
        c2.post(
            &path("encrypt", "foo"),
            &encrypt_body(&vec![1u8; 1 << 20], None, false),
        )
        .await
        .expect_error(501, "UnsupportedOperationException");
    }
    c2.post(&path("encrypt", "foo"), &encrypt_body(b"a", None, false))
        .await
        .expect_ok();
    // Far over it: refused from Content-Length alone, before a byte of body is sent.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
        path("encrypt", "foo"),
        addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf),
    )
    .await
    .expect("no answer to a 1 GiB Content-Length")
    .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 501"), "{text}");
    assert!(text.contains("UnsupportedOperationException"), "{text}");
}

async fn malformed_bodies_are_validation_errors(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let p = path("encrypt", "foo");
    let good = encrypt_body(b"a", None, false);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("not json".into(), b"{not json".to_vec()),
        ("empty".into(), b"".to_vec()),
        ("array".into(), b"[]".to_vec()),
    ];
    for (field, value) in [
        ("plaintext", json!("not base64!")),
        ("plaintext", json!(42)),
        ("encryptionAlgorithm", json!("AES_CBC")),
        ("ciphertextDataIntegrityValueAlgorithm", json!("SHA_1")),
        ("requestMetadata", json!({"kmsRequestId": "x"})),
    ] {
        let mut b = good.clone();
        b[field] = value;
        cases.push((field.to_string(), b.to_string().into_bytes()));
    }
    let mut no_pt = good.clone();
    no_pt.as_object_mut().unwrap().remove("plaintext");
    cases.push(("no plaintext".into(), no_pt.to_string().into_bytes()));
    for (what, body) in cases {
        let r = c.send("POST", &p, &body, &Signing::default(), None).await;
        assert_eq!(
            (r.status, r.error_name()),
            (400, "ValidationException"),
            "{what}: {}",
            r.raw
        );
        assert!(
            !r.json["errorMessage"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }
}

async fn unknown_fields_and_operations_are_tolerated(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let mut b = encrypt_body(b"a", None, false);
    b["requestMetadata"]["kmsOperation"] = json!("SomeFutureOperation");
    b["requestMetadata"]["kmsRecipientAttestationImageSha384"] = json!("abc");
    b["brandNewField"] = json!({"nested": [1, 2]});
    c.post(&path("encrypt", "foo"), &b).await.expect_ok();
    let md = json!({"requestMetadata": {"awsPrincipalArn": "AWS Internal", "kmsOperation": "DescribeKey", "kmsRequestId": "x", "kmsKeyArn": "arn", "kmsViaService": "ebs"}});
    c.post(&path("metadata", "foo"), &md).await.expect_ok();
}

async fn responses_are_compact_json(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    let ok = c
        .post(&path("encrypt", "foo"), &encrypt_body(b"a", None, true))
        .await;
    let err = c
        .post(&path("encrypt", "nope"), &encrypt_body(b"a", None, false))
        .await;
    for r in [ok, err] {
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(!r.raw.contains('\n') && !r.raw.contains(": "), "{}", r.raw);
    }
}

/// A client holding a half-sent request does not stop anyone else from being served, and is
/// cut off by the header deadline. (How long the others take meanwhile is measured in
/// `benches/wall_clock.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_block_others() {
    let s = TestServer::fixture().await;
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /example/uri/path/prefix/kms/xks/v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slow_body = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{",
        health_path()
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let mut c = s.client().await;
    for _ in 0..20 {
        c.post(&path("encrypt", "foo"), &encrypt_body(b"a", None, false))
            .await
            .expect_ok();
    }
    // The slow head is closed by the 2 s header deadline; the slow body gets an error.
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), slow.read_to_end(&mut buf))
        .await
        .expect("slow head was not cut off");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), slow_body.read_to_end(&mut out))
        .await
        .expect("slow body was not cut off");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

/// curl's own SigV4 signer (7.88 signs content-type;host;x-amz-date).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_aws_sigv4_requests_verify() {
    let s = TestServer::fixture().await;
    let url = format!("http://{}{}", s.addr, path("encrypt", "foo"));
    let body = encrypt_body(b"from curl", None, false).to_string();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--aws-sigv4",
            "aws:amz:us-east-1:kms-xks-proxy",
            "--user",
            &format!("{AK}:{SECRET}"),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            "-w",
            "\n%{http_code}",
            &url,
        ])
        .output()
        .await
        .expect("curl must be installed to run this test");
    let text = String::from_utf8(out.stdout).unwrap();
    let (json_text, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(
        code,
        "200",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_str(json_text).unwrap();
    let mut c = s.client().await;
    let d = c
        .post(&path("decrypt", "foo"), &decrypt_body(&e, None))
        .await;
    assert_eq!(unb64(&d.expect_ok()["plaintext"]), b"from curl");
    // And a wrong secret through curl is refused.
    let bad = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--aws-sigv4",
            "aws:amz:us-east-1:kms-xks-proxy",
            "--user",
            &format!("{AK}:{}", "x".repeat(44)),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(bad.stdout).unwrap(), "401");
}
