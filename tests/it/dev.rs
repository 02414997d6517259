//! A new operator's first hour with `serve --dev`: its certificate survives restarts, its
//! config serves TLS on its own, mTLS works with the dev certificate, and it writes a decision
//! log the banner names.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::dev::DevServer;

/// curl against the dev server; `extra` adds client-certificate flags.
fn curl(server_port: u16, ca: &Path, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://127.0.0.1:{server_port}/nothing-here"))
        .output()
        .expect("curl is needed (scripts/test.sh installs it)")
}

#[test]
fn a_relative_data_dir_keeps_its_certificate_and_the_dev_config_serves_tls_on_its_own() {
    let cwd = tempfile::tempdir().unwrap();
    let first = DevServer::start(cwd.path(), Path::new("kd"), &[]);
    let ca = first.data("tls/ca.pem");
    let before = std::fs::read(&ca).unwrap();
    assert!(first.stop().success());
    let second = DevServer::start(cwd.path(), Path::new("kd"), &[]);
    assert_eq!(std::fs::read(&ca).unwrap(), before, "the dev CA was remade");
    let reply = curl(second.port, &ca, &[]);
    assert!(reply.status.success(), "{reply:?}");
    assert!(String::from_utf8_lossy(&reply.stdout).contains("InvalidUriPathException"));
    assert!(second.stop().success());

    // The dev config alone, without --dev: HTTPS with the dev certificate.
    let config = cwd.path().join("kd/keygate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("[tls]") && text.contains("[decision_log]"),
        "{text}"
    );
    let out = crate::support::process::run_bounded(
        &["config", "check", config.to_str().unwrap()],
        &[],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn dev_serves_mtls_with_only_client_ca_and_name() {
    let cwd = tempfile::tempdir().unwrap();
    let certs = cwd.path().join("certs");
    let made = crate::support::process::keygate(&["certs", "dev", certs.to_str().unwrap()]);
    assert!(made.status.success());
    let name = keygate::dev::certs::DEFAULT_CLIENT_NAME;
    let server = DevServer::start(
        cwd.path(),
        Path::new("kd"),
        &[
            "--client-ca",
            certs.join("ca.pem").to_str().unwrap(),
            "--client-name",
            name,
        ],
    );
    let ca = server.data("tls/ca.pem");
    let without = curl(server.port, &ca, &[]);
    assert!(
        !without.status.success(),
        "served without a client certificate"
    );
    let with = curl(
        server.port,
        &ca,
        &[
            "--cert",
            certs.join("client.pem").to_str().unwrap(),
            "--key",
            certs.join("client.key").to_str().unwrap(),
        ],
    );
    assert!(with.status.success(), "{with:?}");
    assert!(server.stop().success());
}

#[test]
fn dev_writes_a_decision_log_the_banner_names() {
    let cwd = tempfile::tempdir().unwrap();
    let server = DevServer::start(cwd.path(), Path::new("kd"), &[]);
    assert_eq!(server.decision_log, "kd/decisions.log");
    let flags = server.client_flags(&server.prefix);
    let mut args: Vec<&str> = vec!["load"];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--op", "encrypt", "--connections", "1", "--duration", "1s"]);
    let out = crate::support::process::run_bounded(
        &args,
        &[("KEYGATE_SECRET", &server.secret())],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let log = server.data("decisions.log");
    assert!(server.stop().success());
    let verify = crate::support::process::keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(verify.status.success(), "{verify:?}");
    assert!(std::fs::read_to_string(&log).unwrap().lines().count() > 0);
}
