//! The real binary with TLS: `certs dev`, `serve` with TLS flags and an admin listener, and
//! bad TLS flags exiting 64 before any port is bound.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::process::BIN;
use crate::support::{PATIENCE, wait_until};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(args)
        .output()
        .expect("curl is needed");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn certs_dev(dir: &Path) {
    let out = Command::new(BIN)
        .args([
            "certs",
            "dev",
            dir.to_str().unwrap(),
            "--client-name",
            "cks.kms.eu-west-1.amazonaws.com",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn certs_dev_writes_every_certificate_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_dev(&certs);
    for name in [
        "ca",
        "server",
        "client",
        "client-wrong-name",
        "client-expired",
        "client-self-signed",
        "client-other-ca",
        "other-ca",
    ] {
        assert!(certs.join(format!("{name}.pem")).is_file(), "{name}.pem");
        let mode = std::fs::metadata(certs.join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key");
    }
    let pem = std::fs::read_to_string(certs.join("client.pem")).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(pem.as_bytes())?;
            c.wait_with_output()
        })
        .expect("openssl is needed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cks.kms.eu-west-1.amazonaws.com"));
}

#[test]
fn serve_with_tls_flags_requires_mtls_while_the_admin_listener_answers() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_dev(&certs);
    let c = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--data-dir",
        ])
        .arg(dir.path().join("dev"))
        .args([
            "--tls-cert",
            &c("server.pem"),
            "--tls-key",
            &c("server.key"),
        ])
        .args([
            "--client-ca",
            &c("ca.pem"),
            "--client-name",
            "cks.kms.eu-west-1.amazonaws.com",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    let ping = format!("http://{admin}/ping");
    let mut pong = String::new();
    wait_until(PATIENCE, "the admin listener answering", || {
        let (ok, body, _) = curl(&["-sS", &ping]);
        pong = body;
        ok
    });
    assert!(pong.starts_with("pong from keygate "), "{pong}");
    let url = format!("https://{listen}/kms/xks/v1/health");
    let base = ["-sS", "-v", "-X", "POST", "--cacert", &c("ca.pem")];
    let (ok, _, stderr) = curl(
        &[
            &base[..],
            &[
                "--cert",
                &c("client-wrong-name.pem"),
                "--key",
                &c("client-wrong-name.key"),
                &url,
            ],
        ]
        .concat(),
    );
    assert!(
        !ok && stderr.contains("TLS alert, handshake failure"),
        "{stderr}"
    );
    // The right client certificate gets through TLS; the unsigned request then fails SigV4.
    let (_, body, stderr) = curl(
        &[
            &base[..],
            &["--cert", &c("client.pem"), "--key", &c("client.key"), &url],
        ]
        .concat(),
    );
    assert!(body.contains("\"errorName\""), "{body} {stderr}");
    let (ok, body, _) = curl(&["-sS", &format!("http://{admin}/healthz")]);
    assert!(ok && body == "ok\n", "{body}");
}

#[test]
fn bad_tls_flags_exit_64_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("dev"))
        .args([
            "--tls-cert",
            "/nonexistent/chain.pem",
            "--tls-key",
            "/nonexistent/key.pem",
            "--client-ca",
            "/nonexistent/ca.pem",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("client_ca is set but tls.client_name is not"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tls.cert_chain") || stderr.contains("chain.pem"),
        "{stderr}"
    );
}
