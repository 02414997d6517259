//! A small OPA decision-log collector on loopback, as the tests' independent receiver: it takes
//! `POST /logs` with a gzip'd JSON array, checks the encoding and the array, and keeps each
//! event's exact line once (by `seq`, as a collector deduplicating retries does), so the copy
//! can be checked with `keygate audit verify`. It can answer with an error status, or hang,
//! instead of storing; it speaks HTTPS with a development certificate when asked.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store the events and answer 200.
    Store,
    /// Answer this status without storing.
    Status(u16),
    /// Never answer.
    Hang,
}

#[derive(Debug)]
struct State {
    mode: Mutex<Mode>,
    lines: Mutex<Vec<String>>,
    requests: AtomicU64,
    hanging: AtomicU64,
    authorization: Mutex<Vec<String>>,
    problems: Mutex<Vec<String>>,
}

/// A running collector.
pub struct Collector {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// A collector on 127.0.0.1:0.
    pub async fn start() -> Collector {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// A collector on `addr` (a port reserved earlier, to come up where keygate points).
    pub async fn start_on(addr: SocketAddr) -> Collector {
        Self::serve(addr, None).await
    }

    /// An HTTPS collector on 127.0.0.1:0 with a development certificate set written to
    /// `dir`; returns it and the CA file clients must trust.
    pub async fn start_tls(dir: &Path) -> (Collector, std::path::PathBuf) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let set = keygate::dev::certs::write_dev_set(dir, &Default::default()).unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&set.server.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&set.server.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let collector = Self::serve("127.0.0.1:0".parse().unwrap(), Some(acceptor)).await;
        (collector, set.ca.cert)
    }

    /// HTTPS URL of a `start_tls` collector.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    async fn serve(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Collector {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Store),
            lines: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            hanging: AtomicU64::new(0),
            authorization: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Collector { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// The events stored, one exact line each, in order.
    pub fn lines(&self) -> Vec<String> {
        self.state.lines.lock().unwrap().clone()
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests it is not answering (mode `Hang`).
    pub fn hanging(&self) -> u64 {
        self.state.hanging.load(Ordering::SeqCst)
    }

    /// The `Authorization` headers received.
    pub fn authorization(&self) -> Vec<String> {
        self.state.authorization.lock().unwrap().clone()
    }

    /// Anything a well-behaved uploader would not send (must stay empty).
    pub fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }

    /// Writes the stored events as a log file.
    pub fn write_log(&self, path: &Path) {
        let text: String = self.lines().iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).unwrap();
    }
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let problem = |p: String| state.problems.lock().unwrap().push(p);
    if req.uri().path() != "/logs" || req.method() != hyper::Method::POST {
        problem(format!("{} {}", req.method(), req.uri()));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if header("content-encoding").as_deref() != Some("gzip") {
        problem("no Content-Encoding: gzip".into());
    }
    if header("content-type").as_deref() != Some("application/json") {
        problem("no Content-Type: application/json".into());
    }
    if let Some(auth) = header("authorization") {
        state.authorization.lock().unwrap().push(auth);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Hang => {
            state.hanging.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Mode::Status(code) => return answer(code),
        Mode::Store => {}
    }
    let mut text = String::new();
    if flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .is_err()
    {
        problem("the body is not gzip".into());
        return answer(400);
    }
    if serde_json::from_str::<Vec<serde_json::Value>>(&text).is_err() {
        problem("the body is not a JSON array".into());
        return answer(400);
    }
    let mut lines = state.lines.lock().unwrap();
    let parts: Vec<&str> = text.split('\n').collect();
    for line in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        let line = line.strip_suffix(',').unwrap_or(line);
        let seq = serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
            .as_u64()
            .unwrap();
        let last = lines.last().map_or(0, |l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        });
        if seq <= last {
            continue; // a retry of what is already stored
        }
        if seq != last + 1 {
            problem(format!("seq {seq} after {last}"));
        }
        lines.push(line.to_owned());
    }
    answer(200)
}

fn answer(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}
