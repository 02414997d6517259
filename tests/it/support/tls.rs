//! The TLS layer on its own: a development certificate set, an echo server built from
//! keygate's TLS pieces (the accept loop the core's server runs, reduced to the TLS steps),
//! a rustls client, a tiny HTTP/1.1 client, and curl/openssl runners that fail when the tool
//! is missing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate::dev::certs::{self, DevOptions, DevSet, Pair};
use keygate::server::tls::{self, ClientName, ConnLimits, TlsReloader, TlsSettings, hygiene};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const CLIENT_NAME: &str = certs::DEFAULT_CLIENT_NAME;

/// A running TLS echo server and the certificates it was started with.
pub struct Server {
    pub addr: SocketAddr,
    pub reloader: Arc<TlsReloader>,
    pub set: DevSet,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    /// Follows the certificate files (looked at every `poll`) and SIGHUP until the returned
    /// watch is stopped.
    pub fn watch(&self, poll: Duration) -> Watch {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = keygate::reload::Supervisor::new(poll)
            .tls(Arc::clone(&self.reloader))
            .spawn(async {
                let _ = stopped.await;
            });
        Watch { stop, task }
    }
}

/// A running reload watch.
pub struct Watch {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

pub fn settings(set: &DevSet, mtls: bool) -> TlsSettings {
    let s = TlsSettings::new(set.server.cert.clone(), set.server.key.clone());
    if mtls {
        s.with_client_auth(set.ca.cert.clone(), ClientName::parse(CLIENT_NAME).unwrap())
    } else {
        s
    }
}

/// Starts a server on 127.0.0.1:0 with a fresh development set.
pub async fn start(mtls: bool) -> Server {
    start_with(mtls, ConnLimits::default()).await
}

pub async fn start_with(mtls: bool, limits: ConnLimits) -> Server {
    start_capped(mtls, limits, 64).await
}

pub async fn start_capped(mtls: bool, limits: ConnLimits, max_connections: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let set = certs::write_dev_set(dir.path(), &DevOptions::default()).unwrap();
    let reloader = Arc::new(TlsReloader::new(settings(&set, mtls), tls::Refusals::new()).unwrap());
    let (addr, stop) = serve_capped(reloader.clone(), limits, max_connections).await;
    Server {
        addr,
        reloader,
        set,
        dir,
        stop: Some(stop),
    }
}

/// Serves the certificate chain and key in these files on 127.0.0.1:0 until the sender is
/// dropped.
pub async fn serve(chain: &Path, key: &Path) -> (SocketAddr, oneshot::Sender<()>) {
    let settings = TlsSettings::new(chain.to_owned(), key.to_owned());
    let reloader = Arc::new(TlsReloader::new(settings, tls::Refusals::new()).unwrap());
    serve_capped(reloader, ConnLimits::default(), 64).await
}

async fn serve_capped(
    reloader: Arc<TlsReloader>,
    limits: ConnLimits,
    max_connections: usize,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(accept_loop(
        listener,
        reloader,
        limits,
        max_connections,
        stopped,
    ));
    (addr, stop)
}

/// The accept loop the core's server runs, reduced to the TLS steps: permit, keepalive,
/// bounded handshake, client subject, HTTP/1.1.
async fn accept_loop(
    listener: TcpListener,
    reloader: Arc<TlsReloader>,
    limits: ConnLimits,
    max_connections: usize,
    mut stopped: oneshot::Receiver<()>,
) {
    let cap = keygate::server::conn_cap::ConnectionCap::new(max_connections);
    loop {
        let permit = cap.acquire().await;
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => a.unwrap(),
        };
        hygiene::set_tcp_keepalive(&tcp, &limits).unwrap();
        let acceptor = reloader.acceptor();
        let refusals = reloader.refusals().clone();
        tokio::spawn(async move {
            let Ok(stream) =
                tls::handshake(&acceptor, tcp, limits.handshake_timeout, &refusals).await
            else {
                return;
            };
            let (_, conn) = stream.get_ref();
            let info = format!(
                "subject={} version={:?} suite={:?} alpn={} peer={}",
                tls::client_subject(conn).unwrap_or_else(|| "-".into()),
                conn.protocol_version().unwrap(),
                conn.negotiated_cipher_suite().unwrap().suite(),
                String::from_utf8_lossy(conn.alpn_protocol().unwrap_or(b"-")),
                peer,
            );
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = format!("{} path={}\n", info, req.uri().path());
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

pub fn read_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A rustls client trusting `ca`, optionally presenting `client`, limited to `versions`.
pub fn client_config(
    ca: &Path,
    client: Option<&Pair>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_config_with(ca, client, versions, tls::provider())
}

pub fn client_config_with(
    ca: &Path,
    client: Option<&Pair>,
    versions: &[&'static SupportedProtocolVersion],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca) {
        roots.add(c).unwrap();
    }
    let b = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => b
            .with_client_auth_cert(
                read_certs(&pair.cert),
                PrivateKeyDer::from_pem_file(&pair.key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects and runs the TLS handshake (for TLS 1.3 the server's verdict on a client
/// certificate only shows on the first read).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// One keep-alive GET; returns the body.
pub async fn get<S>(stream: &mut S, path: &str) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(body) = complete_body(&buf) {
            return Ok(body);
        }
    }
}

fn complete_body(buf: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse().unwrap())
    })?;
    (body.len() >= len).then(|| body[..len].to_owned())
}

/// The rustls error behind an I/O error from the TLS client.
pub fn rustls_error(err: &std::io::Error) -> rustls::Error {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err:?}"))
        .clone()
}

/// Connects and sends one request; returns the TLS-level error the client saw.
pub async fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> rustls::Error {
    let err = match connect(addr, config, "localhost").await {
        Err(e) => e,
        Ok(mut s) => get(&mut s, "/").await.expect_err("the server must refuse"),
    };
    rustls_error(&err)
}

/// Runs an external tool off the async threads (the server under test shares them); the
/// test fails if the tool is not installed.
pub async fn run(tool: &str, args: &[&str]) -> Output {
    let tool = tool.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(&tool)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} is required for this test: {e}"))
    })
    .await
    .unwrap()
}

pub async fn curl(args: &[&str]) -> Output {
    run("curl", args).await
}

/// The four client certificates an mTLS listener must refuse, each with the reason it is
/// counted under.
pub fn refused_kinds(set: &DevSet) -> [(&'static str, Pair, tls::RefusalReason); 4] {
    use tls::RefusalReason::{Expired, SelfSigned, UnknownCa, WrongName};
    [
        ("expired", set.client_expired.clone(), Expired),
        ("self-signed", set.client_self_signed.clone(), SelfSigned),
        ("other CA", set.client_other_ca.clone(), UnknownCa),
        ("wrong name", set.client_wrong_name.clone(), WrongName),
    ]
}

/// `curl -sS -v` to `url` trusting `ca`, with `client`'s certificate when given, then
/// `args` (request options, TLS version flags): (success, stdout, stderr).
pub async fn curl_mtls(
    url: &str,
    ca: &Path,
    client: Option<&Pair>,
    args: &[&str],
) -> (bool, String, String) {
    let mut all = vec![
        "-sS",
        "-v",
        "--max-time",
        "20",
        "--cacert",
        ca.to_str().unwrap(),
    ];
    if let Some(pair) = client {
        all.extend([
            "--cert",
            pair.cert.to_str().unwrap(),
            "--key",
            pair.key.to_str().unwrap(),
        ]);
    }
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}
