//! The real `keygate` binary: exit codes, config checks, key management, console JSON, and
//! `serve --dev` answering the curl command it prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::BIN;
use crate::support::{AK, PATIENCE, SECRET, wait_until};

fn keygate(args: &[&str]) -> (i32, String, String) {
    let out = crate::support::process::keygate(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn write_config(dir: &Path, listen: &str) -> String {
    let path = dir.join("keygate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "{listen}"
[[keystore]]
name = "ks"
uri_prefix = "/ks"
keys = ["foo"]
[[keystore.credential]]
access_key_id = "{AK}"
secret = "{SECRET}"
"#
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn config_check_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "127.0.0.1:0");
    let (code, out, _) = keygate(&["config", "check", &good]);
    assert_eq!(code, 0);
    assert!(out.contains("OK"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"x\"\n[[keystore]]\nname = \"a\"\nuri_prefix = \"nope\"\n",
    )
    .unwrap();
    let (code, _, err) = keygate(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains("server.listen") && err.contains("uri_prefix") && err.contains("credential"),
        "{err}"
    );
    let (code, _, _) = keygate(&["no-such-command"]);
    assert_eq!(code, 64);
}

#[test]
fn a_bad_config_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\nregion = \"BAD REGION\"\n"),
    )
    .unwrap();
    let (code, _, err) = keygate(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port must still be free");
}

#[test]
fn keys_are_managed_in_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "127.0.0.1:0");
    assert_eq!(keygate(&["keys", "-c", &cfg, "create", "foo"]).0, 0);
    assert_eq!(
        keygate(&["keys", "-c", &cfg, "create", "enc", "--usage", "encrypt"]).0,
        0
    );
    assert_eq!(
        keygate(&["keys", "-c", &cfg, "create", "none", "--usage", "none"]).0,
        0
    );
    let (code, _, err) = keygate(&["keys", "-c", &cfg, "create", "foo"]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"));
    assert_eq!(keygate(&["keys", "-c", &cfg, "disable", "foo"]).0, 0);
    assert_eq!(keygate(&["keys", "-c", &cfg, "rotate", "enc"]).0, 0);
    let (_, out, _) = keygate(&["keys", "-c", &cfg, "list"]);
    let row = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("foo")[1..4], ["encrypt,decrypt", "DISABLED", "1"]);
    assert_eq!(row("enc")[1..4], ["encrypt", "ENABLED", "2"]);
    assert_eq!(row("none")[1], "none");
    let (_, out, _) = keygate(&["keys", "-c", &cfg, "enable", "foo"]);
    assert!(out.contains("ENABLED"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("keys.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn credentials_and_console_json_follow_the_spec() {
    let (code, out, _) = keygate(&["keystore", "new-credential"]);
    assert_eq!(code, 0);
    let value = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .split('"')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let (id, secret) = (value("access_key_id"), value("secret"));
    assert!(
        (20..=30).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    assert!((43..=64).contains(&secret.len()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "127.0.0.1:0");
    let (code, out, _) = keygate(&["keystore", "console-json", "-c", &cfg]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["XksProxyUriPath"], "/ks/kms/xks/v1");
    assert_eq!(
        j["XksProxyAuthenticationCredential"]["AccessKeyId"],
        "BETWEEN2TENAND3TENCHARACTERS"
    );
    assert_eq!(
        j["XksProxyAuthenticationCredential"]["RawSecretAccessKey"],
        "PleaseReplaceThisWithSomeSecretOfLength43To64"
    );
    assert_eq!(
        keygate(&["keystore", "console-json", "-c", &cfg, "--keystore", "nope"]).0,
        64
    );
}

#[test]
fn a_corrupt_or_exposed_key_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "127.0.0.1:0");
    keygate(&["keys", "-c", &cfg, "create", "foo"]);
    let keys = dir.path().join("keys.json");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = keygate(&["serve", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &keys,
        "{\"format\":\"keygate-software-keys/1\",\"keys\":[{\"id\":\"foo\"",
    )
    .unwrap();
    let (code, _, err) = keygate(&["serve", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("corrupt"), "{err}");
}

struct Server(Child);

impl Server {
    /// SIGTERM, then wait: a graceful stop flushes the log and exits 0.
    fn terminate(mut self) -> i32 {
        let pid = self.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill is needed");
        let mut status = None;
        wait_until(Duration::from_secs(15), "an exit after SIGTERM", || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `keygate serve --dev` and returns it with the banner it printed.
fn start_dev(data_dir: &Path) -> (Server, String, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    while !banner.contains("/encrypt") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no banner: {banner}"
        );
        banner.push_str(&lines.next().expect("server exited").unwrap());
        banner.push('\n');
    }
    // Dropping the pipe while the server still prints must not matter; keep reading it anyway.
    std::thread::spawn(move || lines.for_each(drop));
    (Server(child), banner, stderr)
}

#[test]
fn dev_mode_serves_the_curl_command_it_prints_and_logs_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let (server, banner, stderr) = start_dev(&data);
    let curl = &banner[banner.find("curl ").unwrap()..];
    let out = Command::new("bash")
        .args(["-c", curl])
        .output()
        .expect("bash and curl are needed");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(reply["ciphertext"].as_str().unwrap().len(), 16, "{reply}");
    assert_eq!(
        server.terminate(),
        0,
        "SIGTERM must stop the server cleanly"
    );
    // One structured line per request, keyed by kmsRequestId, without the plaintext.
    let log: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    let request_lines: Vec<_> = log
        .iter()
        .filter(|l| l.contains("\"keygate::request\""))
        .collect();
    assert_eq!(request_lines.len(), 1, "{log:?}");
    let line: serde_json::Value = serde_json::from_str(request_lines[0]).unwrap();
    assert_eq!(line["kms_request_id"], "dev-1");
    assert_eq!(line["operation"], "Encrypt");
    assert_eq!(line["key_id"], "foo");
    assert_eq!(line["status"], 200);
    assert!(line["latency_us"].as_u64().is_some());
    assert!(!request_lines[0].contains("SGVsbG8gV29ybGQh"));
    assert!(log.iter().any(|l| l.contains("NOT protected by an HSM")));
    // A second start reuses the same config and credential.
    let id = |b: &str| {
        b.lines()
            .find(|l| l.contains("access key id"))
            .unwrap()
            .to_string()
    };
    let (_again, banner2, _) = start_dev(&data);
    assert_eq!(id(&banner), id(&banner2));
}

/// Regression: the dev banner was written with println!, which panics when stdout is a closed
/// pipe, killing the server and resetting its connections.
#[test]
fn regression_closed_stdout_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["serve", "--dev", "--listen", &listen, "--data-dir"])
        .arg(dir.path().join("dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let server = Server(child);
    wait_until(PATIENCE, "the dev server listening", || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    // No wait for the banner: the listener is bound before it is written, but requests are
    // only served after it, so this request's answer comes after the write to the closed pipe.
    let ca = dir.path().join("dev/tls/ca.pem");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--cacert",
        ])
        .arg(&ca)
        .arg(format!("https://{listen}/kms/xks/v1/health"))
        .output()
        .expect("curl is needed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "404",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
}
