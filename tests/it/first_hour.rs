//! The first hour with keygate, against the real binary: what a new operator runs first and
//! where it used to give way (a key no key store may use, a pasted URI path, an untrusted dev
//! certificate, a proxy that is not there, a policy input missing its fields).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::wait_until;

const KEYGATE: &str = env!("CARGO_BIN_EXE_keygate");

fn keygate(args: &[&str]) -> Output {
    keygate_with_secret(args, None)
}

fn keygate_with_secret(args: &[&str], secret: Option<&str>) -> Output {
    let mut cmd = Command::new(KEYGATE);
    cmd.args(args)
        .env_remove("KEYGATE_SECRET")
        .env_remove("KEYGATE_ACCESS_KEY_ID");
    if let Some(secret) = secret {
        cmd.env("KEYGATE_SECRET", secret);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `keygate serve --dev` on a free port in a temp dir, with what its banner says.
struct DevServer {
    server: crate::support::dev::DevServer,
    endpoint: String,
    uri_path: String,
    access_key_id: String,
    _root: tempfile::TempDir,
}

impl DevServer {
    fn start() -> DevServer {
        let root = tempfile::tempdir().unwrap();
        let server =
            crate::support::dev::DevServer::start(root.path(), Path::new("keygate-dev"), &[]);
        DevServer {
            endpoint: format!("https://127.0.0.1:{}", server.port),
            uri_path: format!("{}/kms/xks/v1", server.prefix),
            access_key_id: server.access_key_id.clone(),
            server,
            _root: root,
        }
    }

    fn config(&self) -> PathBuf {
        self.server.data("keygate.toml")
    }

    fn ca(&self) -> String {
        self.server.data("tls/ca.pem").to_str().unwrap().to_owned()
    }

    fn secret(&self) -> String {
        self.server.secret()
    }

    /// A short `keygate load --json` run of `op` on `key_id`, with `--prefix prefix`.
    fn load(&self, op: &str, key_id: &str, prefix: &str) -> (Output, Option<Value>) {
        let flags = self.server.client_flags(prefix);
        let mut args: Vec<&str> = vec!["load"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(["--op", op, "--key-id", key_id]);
        args.extend(["--connections", "1", "--duration", "200ms", "--json"]);
        let out = keygate_with_secret(&args, Some(&self.secret()));
        let report = serde_json::from_slice(&out.stdout).ok();
        (out, report)
    }

    /// `keygate conformance` with the connection flags given, and the dev server's secret.
    fn conformance(&self, flags: &[&str]) -> Output {
        conformance(&self.endpoint, &self.access_key_id, &self.secret(), flags)
    }
}

/// `keygate conformance --url url --access-key-id access_key_id` with `flags` and `secret`.
fn conformance(url: &str, access_key_id: &str, secret: &str, flags: &[&str]) -> Output {
    let mut args = vec![
        "conformance",
        "--url",
        url,
        "--access-key-id",
        access_key_id,
    ];
    args.extend_from_slice(flags);
    keygate_with_secret(&args, Some(secret))
}

/// A load report with at least one request and no error of any kind.
fn all_ok(report: &Option<Value>) -> bool {
    report
        .as_ref()
        .is_some_and(|r| r["errors"] == 0 && r["ok"].as_u64().unwrap_or(0) > 0)
}

/// `keygate keys --config config create key_id --keystore keystore`.
fn keys_create(config: &str, key_id: &str, keystore: &str) -> Output {
    keygate(&[
        "keys",
        "--config",
        config,
        "create",
        key_id,
        "--keystore",
        keystore,
    ])
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Item 7: `keys create bar` made a key no key store could use (KeyNotFoundException until
/// the config's `keys` was edited by hand). `--keystore` edits it, comments kept, and the
/// running server encrypts with the key after its config reload.
#[test]
fn keys_create_with_keystore_lets_the_running_server_use_the_key() {
    let server = DevServer::start();
    let config_path = server.config();
    let config_arg = config_path.to_str().unwrap();
    let config = keygate::config::Config::load(&config_path).unwrap();
    let keystore = config.keystores[0].name.clone();
    let prefix = config.keystores[0].uri_prefix.clone();
    let before = std::fs::read_to_string(&config_path).unwrap();
    let comments: Vec<&str> = before.lines().filter(|l| l.starts_with('#')).collect();
    assert!(!comments.is_empty(), "{before}");
    let mode_before = mode(&config_path);

    // An unknown key store: exit 64, and neither the key nor the file changed.
    let out = keys_create(config_arg, "bar", "no-such-store");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("no key store named \"no-such-store\"")
            && stderr.contains(&keystore)
            && stderr.contains("no key was created"),
        "{stderr}"
    );
    let list = keygate(&["keys", "--config", config_arg, "list"]);
    assert!(
        !text(&list.stdout).contains("bar"),
        "{}",
        text(&list.stdout)
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), before);

    let out = keys_create(config_arg, "bar", &keystore);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "added \"bar\" to the keys of key store \"{keystore}\""
        )),
        "{stdout}"
    );
    let after = std::fs::read_to_string(&config_path).unwrap();
    for comment in &comments {
        assert!(after.contains(comment), "lost {comment:?}:\n{after}");
    }
    let keys_line = after.lines().find(|l| l.starts_with("keys")).unwrap();
    assert!(
        keys_line.contains("\"foo\"") && keys_line.ends_with("\"bar\"]"),
        "{after}"
    );
    assert_eq!(mode(&config_path), mode_before);

    // The running server reloads its config (a 2 s poll) and then encrypts with `bar`.
    wait_until(Duration::from_secs(30), "an encrypt with bar", || {
        all_ok(&server.load("encrypt", "bar", &prefix).1)
    });

    // A key the key store already lists is not listed twice.
    let listed = after.replace("\"bar\"]", "\"bar\", \"qux\"]");
    std::fs::write(&config_path, &listed).unwrap();
    let out = keys_create(config_arg, "qux", &keystore);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("key store \"{keystore}\" already lists \"qux\"")),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), listed);
}

/// The lines of a conformance run that report a case.
fn case_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("SKIP "))
        .collect()
}

/// Item 9a: the dev banner prints the URI path (`/PREFIX/kms/xks/v1`); pasted as `--prefix`
/// it failed every case with 404. Both commands now take it as well as the prefix alone.
#[test]
fn conformance_and_load_take_the_uri_path_the_banner_prints() {
    let server = DevServer::start();
    assert!(
        server.uri_path.ends_with("/kms/xks/v1"),
        "{}",
        server.uri_path
    );
    let ca = server.ca();
    let out = server.conformance(&["--prefix", &server.uri_path, "--cacert", &ca]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        case_lines(&stdout).iter().all(|l| !l.starts_with("FAIL")),
        "{stdout}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    for prefix in [server.uri_path.clone(), format!("{}/", server.uri_path)] {
        let (out, report) = server.load("encrypt", "foo", &prefix);
        assert!(
            all_ok(&report),
            "{prefix}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Item 9b: a proxy that is not there printed one FAIL per case (67 of them). The run now
/// stops at the first transport failure with one message and exit 1: here a refused
/// connection, and a listener that accepts and never answers.
#[test]
fn conformance_stops_at_the_first_transport_failure() {
    let refused_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, why) in [
        (refused_port, "Connection refused"),
        (silent_port, "no response within 300ms"),
    ] {
        let url = format!("http://127.0.0.1:{port}");
        let out = conformance(
            &url,
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            &["--timeout", "300ms"],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(case_lines(&stdout).is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("cannot reach the proxy, stopped at case health.ok")
                && stderr.contains(why),
            "{stderr}"
        );
    }
    drop(silent);
}

/// Items 9b and 9c: against the dev server's certificate, no `--cacert` used to suggest the
/// system bundle; it now says to pass `--cacert` and names the dev CA file. A CA that does
/// not trust the certificate stops the run at the handshake with the same advice.
#[test]
fn an_untrusted_dev_certificate_names_the_dev_ca() {
    let server = DevServer::start();
    let out = server.conformance(&["--prefix", &server.uri_path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--cacert") && stderr.contains("keygate-dev/tls/ca.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("ca-certificates"), "{stderr}");

    let other = tempfile::tempdir().unwrap();
    let made = keygate(&["certs", "dev", other.path().to_str().unwrap()]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let other_ca = other.path().join("ca.pem");
    let out = server.conformance(&[
        "--prefix",
        &server.uri_path,
        "--cacert",
        other_ca.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(case_lines(&stdout).is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("TLS handshake")
            && stderr.contains(&format!("not trusted by --cacert {}", other_ca.display()))
            && stderr.contains("keygate-dev/tls/ca.pem"),
        "{stderr}"
    );
}

/// An input as keygate gives it to policies: every field of xks-spec/policy-input.schema.json.
fn complete_policy_input() -> Value {
    serde_json::json!({
        "interface": "xks", "operation": "Encrypt", "keystore": "dev", "uri_prefix": "/p",
        "key_id": "foo",
        "request_metadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:user/alice",
            "kmsOperation": "Encrypt", "kmsRequestId": "r-1"},
        "access_key_id": "AKIAIOSFODNN7EXAMPLE", "source_ip": "10.0.0.1",
        "client_subject": null, "time": "2026-11-22T05:46:02Z", "aad_length": 0,
        "request_uid": null, "peer": null
    })
}

/// A policy that denies what lacks a key store; an input without one must not slip past it.
const DENY_WITHOUT_KEYSTORE: &str = "package keygate\nimport rego.v1\n\
    default allow := false\nallow if input.keystore == \"dev\"\n\
    deny contains \"wrong key store\" if not allow\n";

/// Item 11: `policy eval` with an input lacking required fields silently answered allow. The
/// input is now checked against the schema, each problem named, exit 64; `--no-input-check`
/// evaluates it as before.
#[test]
fn policy_eval_names_missing_and_mistyped_fields() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let input_arg = input.to_str().unwrap();
    std::fs::write(
        &input,
        r#"{"operation": "Encrypt", "request_metadata": {}, "aad_length": "12"}"#,
    )
    .unwrap();
    let out = keygate(&["policy", "eval", "--input", input_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    for field in [
        "keystore",
        "key_id",
        "access_key_id",
        "source_ip",
        "client_subject",
        "time",
    ] {
        assert!(
            stderr.contains(&format!("missing field `{field}`")),
            "{field}: {stderr}"
        );
    }
    assert!(
        stderr.contains("`aad_length` must be a non-negative integer, not a string (\"12\")"),
        "{stderr}"
    );
    assert!(stderr.contains("--no-input-check"), "{stderr}");

    let out = keygate(&["policy", "eval", "--input", input_arg, "--no-input-check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allow"], true);

    // A complete input is judged, by the embedded policy and by one of the operator's.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("policy.rego"), DENY_WITHOUT_KEYSTORE).unwrap();
    let mut complete = complete_policy_input();
    std::fs::write(&input, complete.to_string()).unwrap();
    let out = keygate(&["policy", "eval", "--input", input_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allow"], true);
    complete["keystore"] = "other".into();
    std::fs::write(&input, complete.to_string()).unwrap();
    let policy_dir = policies.to_str().unwrap();
    let out = keygate(&[
        "policy",
        "eval",
        "--input",
        input_arg,
        "--policy-dir",
        policy_dir,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allow"], false);
    assert_eq!(decision["deny"], serde_json::json!(["wrong key store"]));
}

/// Item 11: `policy test policies/` printed `policies//default_test.rego`.
#[test]
fn policy_test_prints_one_slash_after_a_directory_given_with_a_trailing_one() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("policy.rego"), DENY_WITHOUT_KEYSTORE).unwrap();
    std::fs::write(
        policies.join("policy_test.rego"),
        "package keygate_test\nimport rego.v1\n\
         test_other_store_denied if not data.keygate.allow with input as {\"keystore\": \"x\"}\n",
    )
    .unwrap();
    let arg = format!("{}/", policies.display());
    let out = keygate(&["policy", "test", &arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let want = format!("PASS {}/policy_test.rego:3 ", policies.display());
    assert!(stdout.contains(&want), "{stdout}");
    assert!(!stdout.contains("//"), "{stdout}");
}
