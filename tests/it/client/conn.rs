//! The client's connection code over real sockets: plain TCP, TLS (CA-verified and
//! `--insecure`), mTLS, keep-alive reuse, and signed requests on the wire. The server here is a
//! throwaway echo server, not an XKS proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate::client::conn::{Connector, Target};
use keygate::client::sign::{Secret, Signer};
use keygate::client::tls::TlsOptions;
use keygate::client::wire;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{AK, REGION, SECRET};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write_leaf(dir: &Path, name: &str, sans: &[&str], ca: &CertifiedIssuer<'_, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A CA, a server certificate for localhost/127.0.0.1, one for another name, a client certificate.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    write_leaf(dir.path(), "server", &["localhost", "127.0.0.1"], &ca);
    write_leaf(dir.path(), "other", &["other.example"], &ca);
    write_leaf(dir.path(), "client", &["client.example"], &ca);
    Pki { dir }
}

fn server_tls(pki: &Pki, cert: &str, require_client: bool) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.path(&format!("{cert}.pem")))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{cert}.key"))).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
            .unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Echoes method, path, Host, the SigV4 headers, body length and the connection number.
async fn echo(
    req: hyper::Request<hyper::body::Incoming>,
    conn_id: usize,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    let (host, auth, date) = (
        header("host"),
        header("authorization"),
        header("x-amz-date"),
    );
    let body = req.into_body().collect().await?.to_bytes();
    let reply = json!({"method": method, "path": path, "host": host, "authorization": auth,
        "date": date, "bodyLen": body.len(), "conn": conn_id});
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap())
}

/// Serves until the test ends; returns the port and the count of accepted connections.
async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let id = counter.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| echo(req, id));
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), svc).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(tcp), svc).await,
                };
            });
        }
    });
    (port, accepted)
}

fn signer() -> Signer {
    Signer::new(AK.into(), Secret::new(SECRET.into()), REGION.into())
}

/// Two signed requests on one connection; returns both echoes.
async fn two_requests(connector: &Connector) -> Result<(Value, Value), String> {
    let mut conn = connector.connect().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for _ in 0..2 {
        let path = wire::Op::Health.path(connector.target(), "");
        let req = wire::post(
            connector.target(),
            &signer(),
            &path,
            wire::to_bytes(&wire::health_body()),
        )
        .map_err(|e| e.to_string())?;
        let reply = conn.send(req).await.map_err(|e| e.to_string())?;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        out.push(serde_json::from_slice::<Value>(&reply.body).unwrap());
    }
    let second = out.pop().unwrap();
    Ok((out.pop().unwrap(), second))
}

fn assert_keep_alive_and_signed(first: &Value, second: &Value, host: &str) {
    assert_eq!(
        first["conn"], second["conn"],
        "both requests on one connection"
    );
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/tenant/kms/xks/v1/health");
    assert_eq!(first["host"], host);
    let auth = first["authorization"].as_str().unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=BETWEEN2TENAND3TENCHARACTERS/"));
    assert!(auth.contains("/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="));
    assert_ne!(
        first["authorization"], second["authorization"],
        "fresh signature per request"
    );
    assert!(first["bodyLen"].as_u64().unwrap() > 50);
}

#[tokio::test]
async fn plain_tcp_keeps_the_connection_alive() {
    let (port, accepted) = serve(None).await;
    let url = format!("http://127.0.0.1:{port}");
    let connector = Connector::new(
        Target::parse(&url, "tenant").unwrap(),
        &TlsOptions::default(),
    )
    .unwrap();
    let (a, b) = two_requests(&connector).await.unwrap();
    assert_keep_alive_and_signed(&a, &b, &format!("127.0.0.1:{port}"));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tls_with_ca_file_and_name_check() {
    let pki = pki();
    let (port, accepted) = serve(Some(server_tls(&pki, "server", false))).await;
    let opts = TlsOptions {
        cacert: Some(pki.path("ca.pem")),
        ..TlsOptions::default()
    };
    let url = format!("https://localhost:{port}");
    let connector = Connector::new(Target::parse(&url, "/tenant").unwrap(), &opts).unwrap();
    let (a, b) = two_requests(&connector).await.unwrap();
    assert_keep_alive_and_signed(&a, &b, &format!("localhost:{port}"));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // The same CA, but a certificate for another name: refused.
    let (port, _) = serve(Some(server_tls(&pki, "other", false))).await;
    let url = format!("https://localhost:{port}");
    let connector = Connector::new(Target::parse(&url, "/tenant").unwrap(), &opts).unwrap();
    let err = two_requests(&connector).await.unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("certificate"),
        "{err}"
    );

    // No trust configured at all: refused before connecting.
    let err = Connector::new(Target::parse(&url, "").unwrap(), &TlsOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--cacert"), "{err}");
}

#[tokio::test]
async fn insecure_accepts_any_certificate() {
    let pki = pki();
    let (port, _) = serve(Some(server_tls(&pki, "other", false))).await;
    let opts = TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    };
    let url = format!("https://127.0.0.1:{port}");
    let connector = Connector::new(Target::parse(&url, "tenant").unwrap(), &opts).unwrap();
    let (a, b) = two_requests(&connector).await.unwrap();
    assert_keep_alive_and_signed(&a, &b, &format!("127.0.0.1:{port}"));
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = pki();
    let (port, _) = serve(Some(server_tls(&pki, "server", true))).await;
    let url = format!("https://localhost:{port}");
    let target = Target::parse(&url, "tenant").unwrap();

    let without = TlsOptions {
        cacert: Some(pki.path("ca.pem")),
        ..TlsOptions::default()
    };
    let connector = Connector::new(target.clone(), &without).unwrap();
    assert!(
        two_requests(&connector).await.is_err(),
        "server demands a client certificate"
    );

    let with = TlsOptions {
        client_cert: Some(pki.path("client.pem")),
        client_key: Some(pki.path("client.key")),
        ..without.clone()
    };
    let connector = Connector::new(target.clone(), &with).unwrap();
    two_requests(&connector).await.unwrap();

    let half = TlsOptions {
        client_cert: Some(pki.path("client.pem")),
        ..without
    };
    assert!(Connector::new(target, &half).is_err());
}

/// A listener that accepts connections and never sends a byte, holding them open.
async fn silent_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}

/// The client's own timeout ends the wait, with the limit it was given; the 30 s bound here
/// only proves it does not hang. (How close to the limit it fires is measured in
/// `benches/wall_clock.rs`.)
#[tokio::test]
async fn a_proxy_that_never_answers_times_out_instead_of_hanging() {
    use keygate::client::conn::ConnError;
    use std::time::Duration;
    let port = silent_listener().await;
    let limit = Duration::from_millis(300);
    let not_hanging = Duration::from_secs(30);

    // Plain HTTP: the connection opens, the response never comes.
    let url = format!("http://127.0.0.1:{port}");
    let connector = Connector::new(Target::parse(&url, "").unwrap(), &TlsOptions::default())
        .unwrap()
        .with_timeout(limit);
    let mut conn = connector.connect().await.unwrap();
    let req = wire::post(
        connector.target(),
        &signer(),
        "/kms/xks/v1/health",
        Bytes::new(),
    )
    .unwrap();
    let err = tokio::time::timeout(not_hanging, conn.send(req))
        .await
        .expect("the request hung")
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnError::TimedOut {
                what: "response",
                after
            } if after == limit
        ),
        "{err}"
    );

    // HTTPS: the TLS handshake never completes.
    let pki = pki();
    let opts = TlsOptions {
        cacert: Some(pki.path("ca.pem")),
        ..TlsOptions::default()
    };
    let url = format!("https://localhost:{port}");
    let connector = Connector::new(Target::parse(&url, "").unwrap(), &opts)
        .unwrap()
        .with_timeout(limit);
    let err = tokio::time::timeout(not_hanging, connector.connect())
        .await
        .expect("the handshake hung")
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnError::TimedOut {
                what: "connection",
                after
            } if after == limit
        ),
        "{err}"
    );
}
