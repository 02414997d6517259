//! The real keygate binary on a real `bao server -dev`: the XKS error names of the faults,
//! rotation (old ciphertexts still decrypt, new ones use the new version), `keygate keys`
//! (create with a usage, disable and enable by soft deletion), conformance, and
//! `serve --dev --backend openbao`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use crate::support::bao::Bao;
use crate::support::process::{BIN, QUIET};
use crate::support::*;

fn key_version(enc: &Value) -> u32 {
    let meta = unb64(&enc["ciphertextMetadata"]);
    u32::from_be_bytes(meta[2..6].try_into().unwrap())
}

/// `keygate keys -c CONFIG args` as the operator (BAO_TOKEN = root).
fn keys(server: &KeygateProcess, args: &[&str]) -> String {
    let bao = server.bao.as_ref().expect("an on_openbao server");
    let out = Command::new(BIN)
        .args(["keys", "-c"])
        .arg(&server.config_path)
        .args(args)
        .env("BAO_TOKEN", bao.root_token())
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keys {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_answer_the_spec_errors() {
    // A stuck request holds the connection for the whole timeout: 2 s leaves a loaded machine
    // ample time between seeing it stuck and sending the request that must be throttled.
    let extra = "request_timeout_ms = 2000\npool_size = 1\nqueue_wait_ms = 20\n";
    let mut server = KeygateProcess::on_openbao(&config(""), extra, QUIET);
    let mut c = Client::connect(server.addr).await;
    let body = encrypt_body(b"a", None, false);
    c.post(&path("encrypt", "foo"), &body).await.expect_ok();
    server.bao().pause();
    // The background health check may hold the one connection for a moment (429 then).
    // The error name says the configured timeout fired; how soon is measured, not asserted.
    eventually(PATIENCE, "DependencyTimeoutException", async || {
        let r = c.post(&path("encrypt", "foo"), &body).await;
        match (r.status, r.error_name()) {
            (503, "DependencyTimeoutException") => Some(()),
            (429, "ThrottlingException") => None,
            other => panic!("{other:?}: {}", r.raw),
        }
    })
    .await;
    // The one connection is stuck: a second request meanwhile is throttled. First nothing
    // in flight at the server, then one request on it (this one, or a health check: the
    // connection is taken either way).
    let bao = server.bao();
    wait_for(PATIENCE, "earlier requests to be dropped", || {
        bao.unread_requests() == 0
    })
    .await;
    let addr = server.addr;
    let stuck = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.post(&path("encrypt", "foo"), &encrypt_body(b"a", None, false))
            .await
            .status
    });
    wait_for(PATIENCE, "a request stuck on the paused server", || {
        bao.unread_requests() == 1
    })
    .await;
    c.post(&path("encrypt", "foo"), &body)
        .await
        .expect_error(429, "ThrottlingException");
    assert!(matches!(stuck.await.unwrap(), 503 | 429));
    server.bao().resume();
    eventually(PATIENCE, "keygate recovers after SIGCONT", async || {
        (c.post(&path("encrypt", "foo"), &body).await.status == 200).then_some(())
    })
    .await;
    server.bao.as_mut().unwrap().kill();
    // Refused, not timed out (that would be DependencyTimeoutException).
    let r = c.post(&path("encrypt", "foo"), &body).await;
    assert_eq!(
        (r.status, r.error_name()),
        (500, "InternalException"),
        "{}",
        r.raw
    );
    assert!(r.raw.contains("cannot reach OpenBao"), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_ciphertexts_and_moves_new_ones_on() {
    let server = KeygateProcess::on_openbao(&config(""), "", QUIET);
    let mut c = Client::connect(server.addr).await;
    let aad = Some(&b"ctx"[..]);
    let old = c
        .post(
            &path("encrypt", "foo"),
            &encrypt_body(b"before", aad, false),
        )
        .await
        .expect_ok()
        .clone();
    assert_eq!(key_version(&old), 1);
    let listed = keys(&server, &["rotate", "foo"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("foo ") && l.contains(" 2 ")),
        "{listed}"
    );
    let new = eventually(PATIENCE, "encryptions under version 2", async || {
        let e = c
            .post(&path("encrypt", "foo"), &encrypt_body(b"after", aad, false))
            .await
            .expect_ok()
            .clone();
        (key_version(&e) == 2).then_some(e)
    })
    .await;
    for (enc, pt) in [(&old, &b"before"[..]), (&new, b"after")] {
        let d = c
            .post(&path("decrypt", "foo"), &decrypt_body(enc, aad))
            .await;
        assert_eq!(unb64(&d.expect_ok()["plaintext"]), pt);
    }
    // The metadata names the version: claiming version 2 for the old ciphertext fails.
    let mut forged = decrypt_body(&old, aad);
    forged["ciphertextMetadata"] = serde_json::json!(b64(&[b'k', 1, 0, 0, 0, 2]));
    c.post(&path("decrypt", "foo"), &forged)
        .await
        .expect_error(400, "InvalidCiphertextException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_commands_create_disable_and_enable() {
    let server = KeygateProcess::on_openbao(
        &config_with(&[(
            "\"missing_in_backend\"",
            "\"missing_in_backend\", \"fresh\"",
        )]),
        "",
        QUIET,
    );
    let out = keys(&server, &["create", "fresh", "--usage", "encrypt"]);
    assert!(out.contains("fresh") && out.contains("encrypt "), "{out}");
    let list = keys(&server, &["list"]);
    for k in ["foo", "encrypt_only_key", "disabled_key", "fresh"] {
        assert!(list.contains(k), "{k}: {list}");
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with("disabled_key") && l.contains("DISABLED")),
        "{list}"
    );
    let mut c = Client::connect(server.addr).await;
    let md = serde_json::json!({"requestMetadata": metadata("DescribeKey")});
    let m = c
        .post(&path("metadata", "fresh"), &md)
        .await
        .expect_ok()
        .clone();
    assert_eq!(
        m,
        serde_json::json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT"], "keyStatus": "ENABLED"})
    );
    keys(&server, &["disable", "fresh"]);
    let m = c
        .post(&path("metadata", "fresh"), &md)
        .await
        .expect_ok()
        .clone();
    assert_eq!(m["keyStatus"], "DISABLED");
    eventually(PATIENCE, "a disabled key is refused", async || {
        let r = c
            .post(&path("encrypt", "fresh"), &encrypt_body(b"a", None, false))
            .await;
        (r.status == 400).then(|| assert_eq!(r.error_name(), "InvalidStateException"))
    })
    .await;
    keys(&server, &["enable", "fresh"]);
    eventually(PATIENCE, "an enabled key works again", async || {
        let r = c
            .post(&path("encrypt", "fresh"), &encrypt_body(b"a", None, false))
            .await;
        (r.status == 200).then_some(())
    })
    .await;
    let show = keys(&server, &["show", "fresh"]);
    assert!(
        show.contains("ENABLED") && show.contains("openbao transit"),
        "{show}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_passes_every_case() {
    let server = KeygateProcess::on_openbao(&config(""), "", QUIET);
    let url = format!("http://{}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "conformance",
                "--url",
                &url,
                "--prefix",
                PREFIX,
                "--access-key-id",
                AK,
            ])
            .args([
                "--encrypt-only-key-id",
                "encrypt_only_key",
                "--decrypt-only-key-id",
            ])
            .args(["decrypt_only_key", "--no-usage-key-id", "impotent_key"])
            .env("KEYGATE_SECRET", SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.trim_end().ends_with(" passed, 0 failed"), "{text}");
    assert!(!text.contains("SKIP"), "{text}");
}

#[test]
fn dev_openbao_sets_up_the_server_and_serves() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = crate::support::dev::DevServer::start_with_env(
        dir.path(),
        &data,
        &["--backend", "openbao"],
        &[
            ("BAO_ADDR", bao.url().as_str()),
            ("BAO_TOKEN", bao.root_token()),
        ],
    );
    let token_file = data.join("openbao.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    // The token may use exactly the dev keys, with their usage, and nothing else.
    let paths: Vec<String> = [
        "foo",
        "encrypt_only_key",
        "decrypt_only_key",
        "impotent_key",
        "keygate-health",
        "other",
    ]
    .iter()
    .flat_map(|k| ["encrypt", "decrypt"].map(|op| format!("keygate/{op}/{k}")))
    .chain([
        "keygate/keys/foo/rotate".to_owned(),
        "sys/mounts".to_owned(),
    ])
    .collect();
    let (_, caps) = bao.api(
        "POST",
        "sys/capabilities-self",
        Some(token.trim()),
        Some(serde_json::json!({"paths": paths})),
    );
    let may = |p: &str| {
        caps["data"][p]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "update")
    };
    for (k, e, d) in [
        ("foo", true, true),
        ("encrypt_only_key", true, false),
        ("decrypt_only_key", false, true),
        ("impotent_key", false, false),
        ("keygate-health", true, true),
        ("other", false, false),
    ] {
        assert_eq!(
            (
                may(&format!("keygate/encrypt/{k}")),
                may(&format!("keygate/decrypt/{k}"))
            ),
            (e, d),
            "{k}: {caps}"
        );
    }
    assert!(
        !may("keygate/keys/foo/rotate") && !may("sys/mounts"),
        "{caps}"
    );
    let config = std::fs::read_to_string(data.join("keygate.toml")).unwrap();
    assert!(
        config.contains("kind = \"openbao\"") && !config.contains(token.trim()),
        "{config}"
    );
    let health = dev_health(&dev);
    assert_eq!(
        health["ekmFleetDetails"][0]["healthStatus"], "ACTIVE",
        "{health}"
    );
}

/// GetHealthStatus on a dev server, through curl's SigV4 and the dev CA.
fn dev_health(dev: &crate::support::dev::DevServer) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dev.data("tls/ca.pem"))
        .args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy", "--user"])
        .arg(format!("{}:{}", dev.access_key_id, dev.secret()))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}"#)
        .arg(format!(
            "https://127.0.0.1:{}{}/kms/xks/v1/health",
            dev.port, dev.prefix
        ))
        .output()
        .expect("curl must be installed");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}
