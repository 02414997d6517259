//! HTTPS end to end through the real server: SigV4-signed XKS requests over TLS 1.2 and 1.3
//! (rustls client and `curl --aws-sigv4`) with mTLS, every refused client certificate, a
//! certificate reload under a live keep-alive connection, and the admin listener answering
//! while the XKS listener requires mTLS.

use keygate::dev::certs::{self, DevCa, DevOptions, DevSet, Pair};
use keygate::server::tls::RefusalReason;
use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, Error, SupportedProtocolVersion};

use crate::support::tls;
use crate::support::*;

fn health_body() -> serde_json::Value {
    serde_json::json!({ "requestMetadata": metadata("CreateCustomKeyStore") })
}

struct Fixture {
    server: TestServer,
    set: DevSet,
    _certs: tempfile::TempDir,
}

async fn start(mtls: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let set = certs::write_dev_set(dir.path(), &DevOptions::default()).unwrap();
    let mut tls = format!(
        "\n[tls]\ncert_chain = {:?}\nkey = {:?}\n",
        set.server.cert, set.server.key
    );
    if mtls {
        tls.push_str(&format!(
            "client_ca = {:?}\nclient_name = {:?}\n",
            set.ca.cert,
            certs::DEFAULT_CLIENT_NAME
        ));
    }
    let server = TestServer::start(&config(&tls)).await;
    Fixture {
        server,
        set,
        _certs: dir,
    }
}

async fn tls_client(
    f: &Fixture,
    client: Option<&Pair>,
    version: &'static SupportedProtocolVersion,
) -> Client {
    let config = tls::client_config(&f.set.ca.cert, client, &[version]);
    let stream = tls::connect(f.server.addr, config, "localhost")
        .await
        .unwrap();
    Client::over(f.server.addr, stream).await
}

#[tokio::test]
async fn signed_xks_requests_over_tls12_and_tls13_with_mtls() {
    let f = start(true).await;
    for version in [&TLS13, &TLS12] {
        let mut c = tls_client(&f, Some(&f.set.client), version).await;
        c.post(&health_path(), &health_body()).await.expect_ok();
        let enc = c
            .post(
                &path("encrypt", "foo"),
                &encrypt_body(b"over tls", Some(b"aad"), false),
            )
            .await;
        let enc = enc.expect_ok().clone();
        let dec = c
            .post(&path("decrypt", "foo"), &decrypt_body(&enc, Some(b"aad")))
            .await;
        assert_eq!(unb64(&dec.expect_ok()["plaintext"]), b"over tls");
    }
}

#[tokio::test]
async fn plain_http_is_not_served_when_tls_is_on() {
    let f = start(false).await;
    let out = tls::curl(&[
        "-sS",
        "--max-time",
        "10",
        "-X",
        "POST",
        &format!(
            "http://127.0.0.1:{}/kms/xks/v1/health",
            f.server.addr.port()
        ),
    ])
    .await;
    assert!(!out.status.success(), "plain HTTP must not get an answer");
}

async fn curl_sigv4(f: &Fixture, client: Option<&Pair>, flags: &[&str]) -> (bool, String, String) {
    let url = format!(
        "https://127.0.0.1:{}{}",
        f.server.addr.port(),
        health_path()
    );
    let user = format!("{AK}:{SECRET}");
    let body = health_body().to_string();
    let mut args = vec![
        "--aws-sigv4",
        "aws:amz:us-east-1:kms-xks-proxy",
        "--user",
        &user,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
    ];
    args.extend_from_slice(flags);
    tls::curl_mtls(&url, &f.set.ca.cert, client, &args).await
}

#[tokio::test]
async fn curl_aws_sigv4_over_tls12_and_tls13_and_each_refused_certificate() {
    let f = start(true).await;
    for flags in [&["--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
        let (ok, stdout, stderr) = curl_sigv4(&f, Some(&f.set.client), flags).await;
        assert!(ok, "{stderr}");
        assert!(stdout.contains("\"ekmFleetDetails\""), "{stdout}");
        let version = if flags.len() == 2 {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(
            stderr.contains(&format!("SSL connection using {version}")),
            "{stderr}"
        );
        for (kind, pair, _) in tls::refused_kinds(&f.set) {
            let (ok, _, stderr) = curl_sigv4(&f, Some(&pair), flags).await;
            assert!(!ok, "{kind}");
            assert!(
                stderr.contains("TLS alert, handshake failure"),
                "{kind} {flags:?}: {stderr}"
            );
        }
        let (ok, _, _) = curl_sigv4(&f, None, flags).await;
        assert!(!ok, "no client certificate must be refused");
    }
    let tls = f.server.tls();
    let refusals = tls.refusals();
    for (kind, _, reason) in tls::refused_kinds(&f.set) {
        assert_eq!(refusals.count(reason), 2, "{kind}");
    }
    assert_eq!(refusals.count(RefusalReason::NoCertificate), 2);
}

#[tokio::test]
async fn rustls_clients_with_refused_certificates_get_handshake_failure() {
    let f = start(true).await;
    for (kind, pair, _) in tls::refused_kinds(&f.set) {
        for version in [&TLS13, &TLS12] {
            let config = tls::client_config(&f.set.ca.cert, Some(&pair), &[version]);
            assert_eq!(
                tls::refused(f.server.addr, config).await,
                Error::AlertReceived(AlertDescription::HandshakeFailure),
                "{kind} {version:?}"
            );
        }
    }
}

#[tokio::test]
async fn certificate_reload_keeps_a_live_keep_alive_connection() {
    let f = start(true).await;
    let mut kept = tls_client(&f, Some(&f.set.client), &TLS13).await;
    kept.post(&health_path(), &health_body()).await.expect_ok();

    let ca = DevCa::generate("renewed CA").unwrap();
    let issued = ca.issue_server(&["localhost".to_owned()], 30).unwrap();
    certs::write_file(&f.set.server.key, issued.key_pem.as_bytes(), 0o600).unwrap();
    certs::write_file(
        &f.set.server.cert,
        format!("{}{}", issued.cert_pem, ca.cert_pem()).as_bytes(),
        0o644,
    )
    .unwrap();
    f.server.tls().reload().unwrap();

    kept.post(&health_path(), &health_body()).await.expect_ok();
    let new_ca = f._certs.path().join("renewed-ca.pem");
    std::fs::write(&new_ca, ca.cert_pem()).unwrap();
    let config = tls::client_config(&new_ca, Some(&f.set.client), &[&TLS13]);
    let stream = tls::connect(f.server.addr, config, "localhost")
        .await
        .unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(leaf, tls::read_certs(&f.set.server.cert)[0]);
    let mut fresh = Client::over(f.server.addr, stream).await;
    fresh.post(&health_path(), &health_body()).await.expect_ok();
}

#[tokio::test]
async fn the_admin_listener_answers_while_the_xks_listener_requires_mtls() {
    let f = start(true).await;
    let (admin_addr, stop) = f.server.admin_listener("test").await;
    for (path, want) in [
        ("/ping", "pong from keygate test\n"),
        ("/healthz", "ok\n"),
        ("/readyz", "ready\n"),
    ] {
        let out = tls::curl(&["-sS", "--fail", &format!("http://{admin_addr}{path}")]).await;
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    let config = tls::client_config(&f.set.ca.cert, None, &[&TLS13]);
    assert_eq!(
        tls::refused(f.server.addr, config).await,
        Error::AlertReceived(AlertDescription::CertificateRequired)
    );
    let out = tls::curl(&["-sS", "--fail", &format!("http://{admin_addr}/metrics")]).await;
    let metrics = String::from_utf8_lossy(&out.stdout);
    let days = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keygate_tls_certificate_expiry_days "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let days: f64 = days.trim().parse().unwrap();
    assert!(
        (360.0..=366.0).contains(&days),
        "the served certificate's expiry: {days}"
    );
    stop.send(()).unwrap();
}
