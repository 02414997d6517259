//! mTLS: the client certificate must chain to the configured CA and carry the configured
//! name. Every refused kind fails the handshake with a `handshake_failure` alert (what KMS's
//! test kit looks for), is counted by reason, and the accepted subject reaches the request.

use keygate::dev::certs::Pair;
use keygate::server::tls::RefusalReason;
use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, Error};

use crate::support::tls::*;

#[tokio::test]
async fn a_valid_client_certificate_is_accepted_and_its_subject_reported() {
    let server = start(true).await;
    for version in [&TLS13, &TLS12] {
        let config = client_config(&server.set.ca.cert, Some(&server.set.client), &[version]);
        let mut stream = connect(server.addr, config, "localhost").await.unwrap();
        let body = get(&mut stream, "/").await.unwrap();
        assert!(
            body.starts_with(&format!("subject={CLIENT_NAME} ")),
            "{body}"
        );
    }
    for reason in RefusalReason::ALL {
        assert_eq!(server.reloader.refusals().count(reason), 0, "{reason}");
    }
}

#[tokio::test]
async fn each_refused_certificate_gets_handshake_failure_from_rustls_clients() {
    let server = start(true).await;
    for (kind, pair, reason) in refused_kinds(&server.set) {
        for version in [&TLS13, &TLS12] {
            let config = client_config(&server.set.ca.cert, Some(&pair), &[version]);
            let err = refused(server.addr, config).await;
            assert_eq!(
                err,
                Error::AlertReceived(AlertDescription::HandshakeFailure),
                "{kind} over {version:?}"
            );
        }
        assert_eq!(
            server.reloader.refusals().count(reason),
            2,
            "{kind} counted as {reason}"
        );
    }
}

#[tokio::test]
async fn no_client_certificate_is_refused_and_counted() {
    let server = start(true).await;
    for version in [&TLS13, &TLS12] {
        let config = client_config(&server.set.ca.cert, None, &[version]);
        let err = refused(server.addr, config).await;
        // rustls decides this before any verifier runs and always says certificate_required.
        assert_eq!(
            err,
            Error::AlertReceived(AlertDescription::CertificateRequired),
            "{version:?}"
        );
    }
    assert_eq!(
        server
            .reloader
            .refusals()
            .count(RefusalReason::NoCertificate),
        2
    );
}

async fn curl_with(server: &Server, pair: Option<&Pair>, flags: &[&str]) -> (bool, String, String) {
    let url = format!("https://localhost:{}/mtls", server.addr.port());
    curl_mtls(&url, &server.set.ca.cert, pair, flags).await
}

#[tokio::test]
async fn curl_sees_tls_alert_handshake_failure_for_each_refused_certificate() {
    let server = start(true).await;
    for flags in [&["--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
        let (ok, stdout, stderr) = curl_with(&server, Some(&server.set.client), flags).await;
        assert!(ok, "{stderr}");
        assert!(
            stdout.starts_with(&format!("subject={CLIENT_NAME} ")),
            "{stdout}"
        );
        for (kind, pair, _) in refused_kinds(&server.set) {
            let (ok, _, stderr) = curl_with(&server, Some(&pair), flags).await;
            assert!(!ok, "{kind} must be refused");
            assert!(
                stderr.contains("TLS alert, handshake failure"),
                "{kind} {flags:?}: {stderr}"
            );
        }
        let (ok, _, stderr) = curl_with(&server, None, flags).await;
        assert!(!ok, "no certificate must be refused: {stderr}");
    }
    assert_eq!(
        server
            .reloader
            .refusals()
            .count(RefusalReason::NoCertificate),
        2
    );
    assert_eq!(
        server.reloader.refusals().count(RefusalReason::WrongName),
        2
    );
}
