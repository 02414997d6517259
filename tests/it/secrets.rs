//! No secret leaks: the real binary at the most verbose log level runs every operation and
//! every error keygate produces here, with distinctive plaintext, AAD and credentials; no
//! plaintext, AAD, SigV4 secret, signature, derived signing key, PKCS#11 PIN or key material
//! may appear in its stdout, its stderr, its decision log or any error body. Debug output of
//! config and app prints `***`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::support::process::run_bounded;
use crate::support::softhsm::Token;
use crate::support::*;

const PLAINTEXT: &[u8] = b"PLAINTEXT-CANARY-q7Zx3w";
const AAD: &[u8] = b"AAD-CANARY-m4Kp9v";
const OTHER_AAD: &[u8] = b"AAD-CANARY-OTHER-r2Hs8n";

/// Everything that must never be printed, as text, and the raw key bytes.
struct Secrets {
    text: Vec<String>,
    raw: Vec<Vec<u8>>,
}

impl Secrets {
    fn collect(dir: &Path) -> Secrets {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut text = vec![
            SECRET.to_owned(),
            SECRET2.to_owned(),
            ROOT_SECRET.to_owned(),
            String::from_utf8(PLAINTEXT.to_vec()).unwrap(),
            b64(PLAINTEXT),
            String::from_utf8(AAD.to_vec()).unwrap(),
            b64(AAD),
            String::from_utf8(OTHER_AAD.to_vec()).unwrap(),
            b64(OTHER_AAD),
        ];
        let mut raw = Vec::new();
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("keys.json")).unwrap()).unwrap();
        for k in file["keys"].as_array().unwrap() {
            for v in k["versions"].as_array().unwrap() {
                let m = v["material"].as_str().unwrap();
                let bytes = base64::engine::general_purpose::STANDARD.decode(m).unwrap();
                text.push(m.to_owned());
                text.push(hex::encode(&bytes));
                text.push(
                    format!("{:?}", &bytes[..8])
                        .trim_end_matches(']')
                        .to_owned(),
                );
                raw.push(bytes);
            }
        }
        for secret in [SECRET, SECRET2, ROOT_SECRET] {
            let key = aws_sigv4::sign::v4::generate_signing_key(
                secret,
                SystemTime::now(),
                REGION,
                "kms-xks-proxy",
            );
            text.push(hex::encode(key.as_ref()));
            text.push(
                format!("{:?}", &key.as_ref()[..8])
                    .trim_end_matches(']')
                    .to_owned(),
            );
        }
        Secrets { text, raw }
    }

    #[track_caller]
    fn assert_absent(&self, what: &str, haystack: &[u8]) {
        let lossy = String::from_utf8_lossy(haystack);
        for t in &self.text {
            assert!(!lossy.contains(t.as_str()), "{what} contains {t:?}");
        }
        for r in &self.raw {
            assert!(
                !haystack.windows(r.len()).any(|w| w == r.as_slice()),
                "{what} contains raw key material"
            );
        }
    }
}

fn signature_of(headers: &[(String, String)]) -> String {
    let auth = &headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1;
    auth.rsplit_once("Signature=").unwrap().1.to_owned()
}

/// Sends and records the signature used and, for errors, the body.
async fn send(
    c: &mut Client,
    p: &str,
    body: &Value,
    s: &Signing,
    seen: &mut Vec<String>,
    error_bodies: &mut Vec<String>,
) -> Reply {
    let text = body.to_string();
    seen.push(signature_of(&sign_headers(
        &c.addr.to_string(),
        p,
        text.as_bytes(),
        s,
    )));
    let r = c.send("POST", p, text.as_bytes(), s, None).await;
    if r.status != 200 {
        error_bodies.push(r.raw.clone());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_error_bodies_at_trace_level() {
    // The decision log lives outside the server's directory so it can be read after the stop.
    let audit = tempfile::tempdir().unwrap();
    let decisions = audit.path().join("decisions.log");
    let (dir, config) = server_dir(&config(&format!(
        "\n[decision_log]\npath = \"{}\"\n",
        decisions.display()
    )));
    let secrets = Secrets::collect(dir.path());
    let keygate = KeygateProcess::serve(dir, &config, "trace", &[]);
    let mut c = Client::connect(keygate.addr).await;
    let ok = Signing::default();
    let (mut sigs, mut errors) = (Vec::new(), Vec::new());
    let health =
        json!({"requestMetadata": {"kmsRequestId": "h", "kmsOperation": "KmsHealthCheck"}});
    send(&mut c, &health_path(), &health, &ok, &mut sigs, &mut errors)
        .await
        .expect_ok();
    let meta = json!({"requestMetadata": metadata("DescribeKey")});
    send(
        &mut c,
        &path("metadata", "foo"),
        &meta,
        &ok,
        &mut sigs,
        &mut errors,
    )
    .await
    .expect_ok();
    let enc_body = encrypt_body(PLAINTEXT, Some(AAD), true);
    let enc = send(
        &mut c,
        &path("encrypt", "foo"),
        &enc_body,
        &ok,
        &mut sigs,
        &mut errors,
    )
    .await;
    let enc = enc.expect_ok().clone();
    let dec = send(
        &mut c,
        &path("decrypt", "foo"),
        &decrypt_body(&enc, Some(AAD)),
        &ok,
        &mut sigs,
        &mut errors,
    )
    .await;
    assert_eq!(unb64(&dec.expect_ok()["plaintext"]), PLAINTEXT);
    // Every error keygate produces with these parts, each carrying the canaries.
    let mut cases: Vec<(String, Value, Signing, u16)> = vec![
        (
            path("decrypt", "foo"),
            decrypt_body(&enc, Some(OTHER_AAD)),
            ok.clone(),
            400,
        ),
        (
            path("decrypt", "foo"),
            decrypt_body(&enc, None),
            ok.clone(),
            400,
        ),
        (
            path("encrypt", "foo"),
            encrypt_body(&PLAINTEXT.repeat(400), Some(AAD), false),
            ok.clone(),
            501,
        ),
        (
            path("encrypt", "foo"),
            encrypt_body(PLAINTEXT, Some(&AAD.repeat(1100)), false),
            ok.clone(),
            501,
        ),
        (
            path("encrypt", "nope"),
            encrypt_body(PLAINTEXT, Some(AAD), false),
            ok.clone(),
            404,
        ),
        (
            path("encrypt", "decrypt_only_key"),
            encrypt_body(PLAINTEXT, Some(AAD), false),
            ok.clone(),
            400,
        ),
        (
            path("encrypt", "disabled_key"),
            encrypt_body(PLAINTEXT, Some(AAD), false),
            ok.clone(),
            400,
        ),
        (
            path("decrypt", "encrypt_only_key"),
            decrypt_body(&enc, Some(AAD)),
            ok.clone(),
            400,
        ),
    ];
    let mut wrong_alg = encrypt_body(PLAINTEXT, Some(AAD), false);
    wrong_alg["encryptionAlgorithm"] = json!("RSA");
    cases.push((path("encrypt", "foo"), wrong_alg, ok.clone(), 400));
    let mut not_b64 = encrypt_body(PLAINTEXT, Some(AAD), false);
    not_b64["plaintext"] = json!(String::from_utf8(PLAINTEXT.to_vec()).unwrap() + "!");
    cases.push((path("encrypt", "foo"), not_b64, ok.clone(), 400));
    let mut wrong_type = encrypt_body(PLAINTEXT, Some(AAD), false);
    wrong_type["plaintext"] = json!([b64(PLAINTEXT)]);
    cases.push((path("encrypt", "foo"), wrong_type, ok.clone(), 400));
    let mut tampered = decrypt_body(&enc, Some(AAD));
    tampered["authenticationTag"] = json!(b64(&[0u8; 16]));
    cases.push((path("decrypt", "foo"), tampered, ok.clone(), 400));
    let wrong_secret = Signing {
        secret: SECRET2.into(),
        ..Signing::default()
    };
    cases.push((path("encrypt", "foo"), enc_body.clone(), wrong_secret, 401));
    let unknown_id = Signing {
        access_key_id: "UNKNOWNACCESSKEYID234567".into(),
        ..Signing::default()
    };
    cases.push((path("encrypt", "foo"), enc_body.clone(), unknown_id, 401));
    let skewed = Signing {
        skew: -3600,
        ..Signing::default()
    };
    cases.push((path("encrypt", "foo"), enc_body.clone(), skewed, 401));
    let other_keystore = Signing::with(ROOT_AK, ROOT_SECRET);
    cases.push((
        path("encrypt", "foo"),
        enc_body.clone(),
        other_keystore,
        401,
    ));
    for (p, body, signing, status) in &cases {
        let r = send(&mut c, p, body, signing, &mut sigs, &mut errors).await;
        assert_eq!(r.status, *status, "{p}: {}", r.raw);
    }
    // A truncated body with the canaries inside.
    let text = enc_body.to_string();
    let cut = &text[..text.len() - 20];
    let r = c
        .send("POST", &path("encrypt", "foo"), cut.as_bytes(), &ok, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);
    errors.push(r.raw);

    // A graceful stop writes the last of the log before the process ends.
    let stopped = keygate.stop();
    let (stdout, stderr) = (stopped.stdout, stopped.stderr);
    assert!(
        String::from_utf8_lossy(&stderr).contains("\"level\":\"DEBUG\"")
            || String::from_utf8_lossy(&stderr).contains("\"level\":\"TRACE\""),
        "the server did not log at debug level"
    );
    assert!(
        String::from_utf8_lossy(&stderr).contains("\"target\":\"keygate::request\""),
        "no request log lines"
    );
    let mut secrets = secrets;
    secrets.text.extend(sigs);
    secrets.assert_absent("stdout", &stdout);
    secrets.assert_absent("stderr", &stderr);
    let log = std::fs::read(&decisions).unwrap();
    assert!(
        String::from_utf8_lossy(&log).lines().count() >= 3,
        "the decision log has too few lines"
    );
    secrets.assert_absent("the decision log", &log);
    for body in &errors {
        secrets.assert_absent("an error body", body.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_of_config_and_app_hides_secrets() {
    let s = TestServer::fixture().await;
    let mut c = s.client().await;
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(PLAINTEXT, Some(AAD), false),
    )
    .await
    .expect_ok();
    let secrets = Secrets::collect(s.dir.path());
    let config = keygate::config::Config::load(&s.config_path).unwrap();
    let printed = format!("{config:?}");
    assert!(printed.contains("***"), "{printed}");
    secrets.assert_absent("Debug of Config", printed.as_bytes());
    secrets.assert_absent("Debug of App", s.app_debug(false).as_bytes());
    secrets.assert_absent("Debug of App (pretty)", s.app_debug(true).as_bytes());
}

/// The PKCS#11 user PIN never appears: not in the trace-level log of a server serving every
/// operation from a real SoftHSMv2 token, not in `keygate keys` output, and not when the PIN is
/// wrong (the token says CKR_PIN_INCORRECT; keygate must say so without echoing either PIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pkcs11_pin_never_reaches_logs_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::init(dir.path());
    let config_path = token.write_config(&config(""));
    token.create_test_keys(&config_path);
    let config = config_path.to_str().unwrap().to_owned();
    let mut printed = token.cli(&["keys", "-c", &config, "list"]);
    printed.push_str(&token.cli(&["keys", "-c", &config, "show", "foo"]));
    printed.push_str(&token.cli(&["config", "check", &config]));
    // The token directory outlives the server: the wrong-PIN checks below use it again.
    let keygate = KeygateProcess::serve(
        tempfile::tempdir().unwrap(),
        &config_path,
        "trace",
        &[("SOFTHSM2_CONF", &token.conf)],
    );
    let mut c = Client::connect(keygate.addr).await;
    let health =
        json!({"requestMetadata": {"kmsRequestId": "h", "kmsOperation": "KmsHealthCheck"}});
    c.post(&health_path(), &health).await.expect_ok();
    c.post(
        &path("metadata", "foo"),
        &json!({"requestMetadata": metadata("DescribeKey")}),
    )
    .await
    .expect_ok();
    let enc = c
        .post(
            &path("encrypt", "foo"),
            &encrypt_body(PLAINTEXT, Some(AAD), true),
        )
        .await
        .expect_ok()
        .clone();
    let dec = c
        .post(&path("decrypt", "foo"), &decrypt_body(&enc, Some(AAD)))
        .await;
    assert_eq!(unb64(&dec.expect_ok()["plaintext"]), PLAINTEXT);
    let stopped = keygate.stop();
    let (stdout, stderr) = (stopped.stdout, stopped.stderr);
    assert!(
        String::from_utf8_lossy(&stderr).contains("\"target\":\"keygate::request\""),
        "no request log lines"
    );

    // A wrong PIN: every command that logs in refuses, naming the problem but no PIN.
    let wrong = format!("{}x", token.pin);
    std::fs::write(token.dir.join("pin"), &wrong).unwrap();
    let conf = token.conf.to_str().unwrap();
    let mut refusals = String::new();
    for args in [
        vec!["keys", "-c", &config, "list"],
        vec!["serve", "-c", &config],
    ] {
        let envs = [("SOFTHSM2_CONF", conf), ("RUST_LOG", "trace")];
        let ran = run_bounded(&args, &envs, Duration::from_secs(30));
        let (code, out) = (ran.code, ran.stdout + &ran.stderr);
        assert!(
            code.is_some_and(|c| c != 0),
            "keygate {args:?} did not refuse a wrong PIN: {out}"
        );
        refusals.push_str(&out);
    }
    assert!(
        refusals.contains("CKR_PIN_INCORRECT") || refusals.to_lowercase().contains("pin"),
        "the refusal does not say the PIN is wrong: {refusals}"
    );

    for (what, text) in [
        ("keys/config output", printed.as_bytes()),
        ("server stdout", &stdout[..]),
        ("server stderr", &stderr[..]),
        ("wrong-PIN refusals", refusals.as_bytes()),
    ] {
        let text = String::from_utf8_lossy(text);
        for pin in [&token.pin, &wrong] {
            assert!(!text.contains(pin.as_str()), "{what} contains the PIN");
        }
        assert!(
            !text.contains(std::str::from_utf8(PLAINTEXT).unwrap()),
            "{what} contains plaintext"
        );
    }
}
