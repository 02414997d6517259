//! HTTP to the OpenBao server: a bounded pool of keep-alive HTTP/1.1 connections (TLS with
//! the configured CA bundle, sessions resumed), the token and namespace headers, and one
//! time limit over every request.
//!
//! At most `pool_size` requests run at once, each on its own connection; a request that
//! finds none free within `queue_wait` is refused (`Busy`), so nothing queues without bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use zeroize::Zeroize;

use super::settings::OpenBaoSettings;
use crate::client::conn::{ConnError, Connection, Connector, Target};
use crate::client::tls::TlsOptions;

/// The server's health endpoint (no token, no namespace).
pub const HEALTH_PATH: &str = "sys/health";

/// Why a request to the server did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("all {0} connections to OpenBao busy for {1:?}")]
    Busy(usize, Duration),
    #[error("OpenBao did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach OpenBao at {0}: {1}")]
    Connect(String, String),
    #[error("OpenBao at {0}: {1}")]
    Exchange(String, String),
}

/// The request methods keygate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
    /// `GET ?list=true`.
    List,
}

/// A whole answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// Overwrites the body when no one else holds it (it may carry plaintext).
    pub fn scrub(self) {
        scrub(self.body);
    }
}

/// Overwrites `b` if this is its only reference (best effort: plaintext and tokens).
pub fn scrub(b: Bytes) {
    if let Ok(mut m) = b.try_into_mut() {
        m.as_mut().zeroize();
    }
}

/// The connection pool to one server.
pub struct BaoHttp {
    connector: Connector,
    authority: String,
    address: String,
    namespace: Option<String>,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    pool_size: usize,
    queue_wait: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for BaoHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaoHttp")
            .field("address", &self.address)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl BaoHttp {
    /// Sets up TLS (when the address is https) and the pool; connects nothing yet.
    pub fn new(s: &OpenBaoSettings) -> Result<BaoHttp, String> {
        let target = Target::parse(&s.address, "").map_err(|e| format!("openbao.address: {e}"))?;
        let authority = target.authority().to_owned();
        let tls = TlsOptions {
            cacert: s.ca_file.clone(),
            ..TlsOptions::default()
        };
        let connector = Connector::new(target, &tls)
            .map_err(|e| format!("openbao TLS: {e}"))?
            .with_timeout(s.request_timeout);
        Ok(BaoHttp {
            connector,
            authority,
            address: s.address.clone(),
            namespace: s.namespace.clone(),
            idle: Mutex::new(Vec::with_capacity(s.pool_size)),
            permits: Arc::new(Semaphore::new(s.pool_size)),
            pool_size: s.pool_size,
            queue_wait: s.queue_wait,
            timeout: s.request_timeout,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request to `/v1/{path}` and reads the whole answer, within the timeout.
    /// `body` is JSON; it is overwritten afterwards (it may hold plaintext).
    pub async fn call(
        &self,
        verb: Verb,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        let permit = self.permit().await?;
        let body = Bytes::from(body.unwrap_or_default());
        let result = tokio::time::timeout(self.timeout, self.exchange(verb, path, token, &body))
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))
            .and_then(|r| r);
        drop(permit);
        scrub(body);
        result
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, HttpError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => return Ok(p),
            Err(TryAcquireError::Closed) => {
                return Err(HttpError::Busy(self.pool_size, Duration::ZERO));
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        match tokio::time::timeout(self.queue_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(HttpError::Busy(self.pool_size, self.queue_wait)),
        }
    }

    /// One exchange; a pooled connection the server closed meanwhile is retried once on a
    /// fresh one (every call keygate makes may be repeated safely).
    async fn exchange(
        &self,
        verb: Verb,
        path: &str,
        token: Option<&str>,
        body: &Bytes,
    ) -> Result<Answer, HttpError> {
        let (mut conn, reused) = match self.take_idle() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let request = self.request(verb, path, token, body.clone())?;
        let reply = match conn.send(request).await {
            Ok(r) => r,
            Err(ConnError::Http(_)) if reused => {
                conn = self.connect().await?;
                let again = self.request(verb, path, token, body.clone())?;
                conn.send(again).await.map_err(|e| self.exchange_error(e))?
            }
            Err(e) => return Err(self.exchange_error(e)),
        };
        if !conn.is_closed() {
            self.put_idle(conn);
        }
        Ok(Answer {
            status: reply.status.as_u16(),
            body: reply.body,
        })
    }

    async fn connect(&self) -> Result<Connection, HttpError> {
        self.connector.connect().await.map_err(|e| match e {
            ConnError::TimedOut { .. } => HttpError::Timeout(self.timeout),
            ConnError::Connect { source, .. } => {
                HttpError::Connect(self.address.clone(), source.to_string())
            }
            other => HttpError::Connect(self.address.clone(), other.to_string()),
        })
    }

    fn exchange_error(&self, e: ConnError) -> HttpError {
        match e {
            ConnError::TimedOut { .. } => HttpError::Timeout(self.timeout),
            other => HttpError::Exchange(self.address.clone(), other.to_string()),
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.pool_size {
            idle.push(conn);
        }
    }

    fn request(
        &self,
        verb: Verb,
        path: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let (method, uri) = match verb {
            Verb::Get => (http::Method::GET, format!("/v1/{path}")),
            Verb::Post => (http::Method::POST, format!("/v1/{path}")),
            Verb::Put => (http::Method::PUT, format!("/v1/{path}")),
            Verb::Delete => (http::Method::DELETE, format!("/v1/{path}")),
            Verb::List => (http::Method::GET, format!("/v1/{path}?list=true")),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            let mut value = http::HeaderValue::from_str(t).map_err(|_| {
                HttpError::Exchange(
                    self.address.clone(),
                    "the token is not a valid header value".into(),
                )
            })?;
            value.set_sensitive(true);
            b = b.header("x-vault-token", value);
        }
        // sys/health belongs to the root namespace and is refused inside another.
        if let Some(ns) = self.namespace.as_ref().filter(|_| path != HEALTH_PATH) {
            b = b.header("x-vault-namespace", ns);
        }
        b.body(Full::new(body))
            .map_err(|e| HttpError::Exchange(self.address.clone(), e.to_string()))
    }
}
