//! `keygate conformance` (the real binary) against the real keygate server: every case passes
//! with all keys given, optional-key cases are skipped and counted when their flags are absent,
//! and a wrong secret makes the run fail.

use std::process::Output;

use crate::support::process::{BIN, QUIET};
use crate::support::*;

/// Runs `keygate conformance` with `args` against `server`, secret from the environment.
async fn conformance(server: &TestServer, prefix: &str, args: &[&str], secret: &str) -> Output {
    conformance_at(&format!("http://{}", server.addr), prefix, args, secret).await
}

async fn conformance_at(url: &str, prefix: &str, args: &[&str], secret: &str) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("conformance")
        .arg("--url")
        .arg(url)
        .arg("--prefix")
        .arg(prefix)
        .args(args)
        .env("KEYGATE_SECRET", secret);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ALL_KEYS: [&str; 8] = [
    "--encrypt-only-key-id",
    "encrypt_only_key",
    "--decrypt-only-key-id",
    "decrypt_only_key",
    "--no-usage-key-id",
    "impotent_key",
    "--key-id",
    "foo",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_passes_every_case() {
    let server = TestServer::fixture().await;
    let mut args = vec!["--access-key-id", AK];
    args.extend(ALL_KEYS);
    let out = conformance(&server, PREFIX, &args, SECRET).await;
    assert_every_case_passed(&out);
}

/// Exit 0, a PASS line per case (at least 60), no skips, and `N passed, 0 failed` last.
fn assert_every_case_passed(out: &Output) {
    let text = stdout(out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text.lines().last().unwrap();
    assert!(summary.ends_with(" passed, 0 failed"), "{summary}");
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 60, "{summary}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("PASS ")).count(),
        passed
    );
    assert!(!text.contains("SKIP "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_key_cases_are_skipped_and_counted_in_json() {
    let server = TestServer::fixture().await;
    let out = conformance(&server, PREFIX, &["--access-key-id", AK, "--json"], SECRET).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["skipped"], 8, "{report}");
    let skipped: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "skip")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        skipped.iter().all(|n| n.starts_with("usage.")),
        "{skipped:?}"
    );
    assert!(report["summary"].as_str().unwrap().ends_with(", 8 skipped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystore_without_prefix_passes() {
    let server = TestServer::fixture().await;
    let args = ["--access-key-id", ROOT_AK];
    let out = conformance(&server, "", &args, ROOT_SECRET).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().last().unwrap().contains(" passed, 0 failed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_the_run() {
    let server = TestServer::fixture().await;
    let wrong = "ThisIsNotTheSecretOfTheKeyStoreButLongEnough12";
    let out = conformance(&server, PREFIX, &["--access-key-id", AK], wrong).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL health.ok: expected 200 got 401 AuthenticationFailedException"),
        "{text}"
    );
    // Path checks come before authentication, so they still pass with a wrong secret.
    assert!(text.contains("PASS path.unknown-prefix-signed"), "{text}");
    let summary = text.lines().last().unwrap();
    assert!(!summary.contains(" 0 failed"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_url_is_a_usage_error() {
    let server = TestServer::fixture().await;
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "conformance",
        "--url",
        "https://127.0.0.1:1",
        "--access-key-id",
        AK,
    ]);
    cmd.env("KEYGATE_SECRET", SECRET);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cacert"));
    drop(server);
}

/// The deployment KMS sees: HTTPS with mTLS bound to KMS's client name, keys in a real
/// SoftHSMv2 token. Every case passes through `keygate conformance`'s own TLS client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_passes_every_case_over_mtls_on_softhsm2() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path().canonicalize().unwrap();
    let made = std::process::Command::new(BIN)
        .args(["certs", "dev"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let tls = format!(
        "\n[tls]\ncert_chain = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\n\
         client_ca = \"{0}/ca.pem\"\nclient_name = \"cks.kms.us-east-1.amazonaws.com\"\n",
        d.display()
    );
    let server = KeygateProcess::on_softhsm(&config(&tls), QUIET);
    let url = format!("https://{}", server.addr);
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let mut args = vec![
        "--access-key-id",
        AK,
        "--cacert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];
    args.extend(ALL_KEYS);
    let out = conformance_at(&url, PREFIX, &args, SECRET).await;
    assert_every_case_passed(&out);
    // Without the client certificate the handshake is refused, so nothing passes.
    let out = conformance_at(
        &url,
        PREFIX,
        &["--access-key-id", AK, "--cacert", &ca],
        SECRET,
    )
    .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains("PASS health.ok"), "{}", stdout(&out));
}
