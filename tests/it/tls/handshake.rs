//! Real TLS handshakes against keygate's server configuration: TLS 1.2 and 1.3 with rustls
//! and curl, every cipher suite the XKS spec names, ALPN, the full chain, IP-address SNI.

use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::version::{TLS12, TLS13};
use rustls::{ProtocolVersion, SupportedCipherSuite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::tls::*;

#[tokio::test]
async fn rustls_client_speaks_tls12_and_tls13() {
    let server = start(false).await;
    for (version, want) in [
        (&TLS13, ProtocolVersion::TLSv1_3),
        (&TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let config = client_config(&server.set.ca.cert, None, &[version]);
        let mut stream = connect(server.addr, config, "localhost").await.unwrap();
        let (_, conn) = stream.get_ref();
        assert_eq!(conn.protocol_version(), Some(want));
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let chain = conn.peer_certificates().unwrap().to_vec();
        assert_eq!(
            chain,
            read_certs(&server.set.server.cert),
            "the full chain is served"
        );
        assert_eq!(chain.len(), 2);
        let body = get(&mut stream, "/one").await.unwrap();
        assert!(body.contains(&format!("version={want:?}")), "{body}");
        let body = get(&mut stream, "/two").await.unwrap();
        assert!(body.ends_with("path=/two\n"), "keep-alive: {body}");
    }
}

async fn negotiate(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    suite: SupportedCipherSuite,
) -> String {
    let mut provider = default_provider();
    provider.cipher_suites = vec![suite];
    let version = match suite {
        SupportedCipherSuite::Tls13(_) => &TLS13,
        SupportedCipherSuite::Tls12(_) => &TLS12,
    };
    let config = client_config_with(ca, None, &[version], Arc::new(provider));
    let mut stream = connect(addr, config, "localhost").await.unwrap();
    assert_eq!(stream.get_ref().1.negotiated_cipher_suite().unwrap(), suite);
    get(&mut stream, "/").await.unwrap()
}

#[tokio::test]
async fn every_suite_the_spec_names_is_negotiated_with_an_ecdsa_certificate() {
    let server = start(false).await;
    let ca = server.set.ca.cert.clone();
    for suite in [
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ] {
        let body = negotiate(server.addr, &ca, suite).await;
        assert!(
            body.contains(&format!("suite={:?}", suite.suite())),
            "{body}"
        );
    }
}

/// An RSA certificate made by openssl (PKCS#8 key), as a production CA would issue.
#[tokio::test]
async fn ecdhe_rsa_aes256_gcm_is_negotiated_with_an_openssl_rsa_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    std::fs::write(p("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-subj",
            "/CN=rsa test CA",
            "-days",
            "2",
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("srv.key"),
            "-out",
            &p("srv.csr"),
            "-subj",
            "/CN=localhost",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &p("srv.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("leaf.pem"),
            "-days",
            "2",
            "-extfile",
            &p("ext"),
        ],
    ] {
        let out = run("openssl", &args).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let chain = [
        std::fs::read_to_string(p("leaf.pem")).unwrap(),
        std::fs::read_to_string(p("ca.pem")).unwrap(),
    ];
    std::fs::write(p("chain.pem"), chain.concat()).unwrap();

    let (rsa, _stop) = serve(&dir.path().join("chain.pem"), &dir.path().join("srv.key")).await;
    let body = negotiate(
        rsa,
        &dir.path().join("ca.pem"),
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    )
    .await;
    assert!(
        body.contains("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
        "{body}"
    );
    let body = negotiate(
        rsa,
        &dir.path().join("ca.pem"),
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    )
    .await;
    assert!(body.contains("TLS13_AES_256_GCM_SHA384"), "{body}");
}

#[tokio::test]
async fn curl_speaks_tls12_and_tls13() {
    let server = start(false).await;
    let ca = server.set.ca.cert.to_str().unwrap();
    for (flags, version, suite) in [
        (
            &["--tls-max", "1.2"][..],
            "TLSv1.2",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
        (&["--tlsv1.3"][..], "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ] {
        for host in ["localhost", "127.0.0.1"] {
            let url = format!("https://{host}:{}/curl", server.addr.port());
            let mut args = vec!["-sS", "-v", "--max-time", "20", "--fail", "--cacert", ca];
            args.extend_from_slice(flags);
            args.push(&url);
            let out = curl(&args).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(
                stderr.contains(&format!("SSL connection using {version} / {suite}")),
                "{stderr}"
            );
            assert!(
                stderr.contains("ALPN: server accepted http/1.1"),
                "{stderr}"
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("path=/curl"));
        }
    }
}

/// Some load tools send an IP address as SNI, which RFC 6066 forbids; rustls must ignore it
/// rather than fail the handshake. A relay records the ClientHello to prove the IP was sent.
#[tokio::test]
async fn ip_address_sni_is_accepted() {
    let server = start(false).await;
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let target = server.addr;
    let hello = tokio::spawn(async move {
        let (mut client, _) = relay.accept().await.unwrap();
        let mut upstream = TcpStream::connect(target).await.unwrap();
        let mut first = vec![0u8; 4096];
        let n = client.read(&mut first).await.unwrap();
        first.truncate(n);
        upstream.write_all(&first).await.unwrap();
        tokio::spawn(
            async move { tokio::io::copy_bidirectional(&mut client, &mut upstream).await },
        );
        first
    });
    let connect = format!("127.0.0.1:{}", relay_addr.port());
    let ca = server.set.ca.cert.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "127.0.0.1",
                "-CAfile",
                &ca,
                "-verify_return_error",
                "-ign_eof",
                "-quiet",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl is required for this test");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /ip-sni HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("HTTP/1.1 200") && stdout.contains("path=/ip-sni"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hello = hello.await.unwrap();
    assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
    assert!(
        hello.windows(9).any(|w| w == b"127.0.0.1"),
        "the ClientHello carried the IP as SNI"
    );
}
