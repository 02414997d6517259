//! The plain-HTTP admin listener for load balancers and orchestrators: `/ping`, `/healthz`
//! (liveness), `/readyz` (readiness) and `/metrics` (OpenMetrics), on its own port so an
//! mTLS-only XKS listener can still be health-checked. Never serves XKS requests. To add an
//! endpoint, add an arm to [`route`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::server::conn_cap::ConnectionCap;

/// Most admin connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Admin requests are tiny; a client that takes longer than this to send headers is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for admin connections to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Answers "may this instance take traffic?" for `/readyz`. The core supplies it: ready when
/// the XKS listener is accepting and the key backend is not UNAVAILABLE.
#[async_trait]
pub trait Readiness: Send + Sync + fmt::Debug {
    /// `Err(reason)` when not ready; the reason is shown in the 503 body.
    async fn ready(&self) -> Result<(), String>;
}

/// The proxy's readiness: the XKS listener is up (the admin listener starts after it is
/// bound) and the key backend is not UNAVAILABLE.
#[derive(Debug)]
pub struct AppReadiness {
    health: Arc<crate::health::HealthMonitor>,
}

impl AppReadiness {
    pub fn new(health: Arc<crate::health::HealthMonitor>) -> AppReadiness {
        AppReadiness { health }
    }
}

#[async_trait]
impl Readiness for AppReadiness {
    async fn ready(&self) -> Result<(), String> {
        if self.health.ready().await {
            Ok(())
        } else {
            Err("the key backend is UNAVAILABLE".into())
        }
    }
}

/// What the admin endpoints need.
#[derive(Debug, Clone)]
pub struct AdminState {
    version: String,
    readiness: Arc<dyn Readiness>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AdminState {
    pub fn new(version: impl Into<String>, readiness: Arc<dyn Readiness>) -> AdminState {
        AdminState {
            version: version.into(),
            readiness,
            metrics: None,
        }
    }

    /// Serves `metrics` at `/metrics` (404 without).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> AdminState {
        self.metrics = Some(metrics);
        self
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes, then lets open
/// connections finish (bounded).
pub async fn run(listener: TcpListener, state: AdminState, shutdown: impl Future<Output = ()>) {
    let state = Arc::new(state);
    let cap = ConnectionCap::new(MAX_CONNECTIONS);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = cap.acquire() => permit,
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(&req, &state).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after {DRAIN:?}; closing them");
    }
}

/// The admin router: one arm per endpoint.
pub async fn route(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here\n",
        );
    }
    match req.uri().path() {
        "/ping" => text(
            StatusCode::OK,
            &format!("pong from keygate {}\n", state.version),
        ),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => match &state.metrics {
            Some(m) => {
                let mut r = text(StatusCode::OK, &m.encode());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                r
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
