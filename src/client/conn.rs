//! HTTP/1.1 keep-alive connections to an XKS proxy, over TCP or TLS (hyper client + tokio-rustls).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tls::{DEV_CA, TlsOptions, TlsSetupError, client_config};

/// Why a connection or exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The URL or prefix is not usable.
    #[error("bad URL: {0}")]
    Url(String),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The TCP connection could not be opened (refused, unreachable, no such host).
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed; `hint` says what to do when the certificate was refused.
    #[error("TLS handshake with {addr}: {source}{hint}")]
    Handshake {
        /// host:port.
        addr: String,
        /// The I/O error (wrapping the rustls error).
        source: std::io::Error,
        /// Empty, or `; ` and what to do about it.
        hint: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The response body was larger than the caller allows.
    #[error("response body over {0} bytes")]
    BodyTooLarge(usize),
    /// The proxy did not finish connecting, or answering, in time.
    #[error("no {what} within {after:?}")]
    TimedOut {
        /// "connection" or "response".
        what: &'static str,
        /// The limit that passed.
        after: Duration,
    },
}

/// How long connecting (TCP, TLS handshake) and each request-response exchange may take,
/// unless `Connector::with_timeout` says otherwise: a proxy that accepts and never answers
/// fails the request instead of hanging the run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What follows the key store's prefix in every XKS URI path.
const API_PATH: &str = "/kms/xks/v1";

/// Where the proxy is: scheme, address, `Host` value and the API base path.
#[derive(Clone, Debug)]
pub struct Target {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    api_base: String,
}

impl Target {
    /// Parses `http[s]://host[:port][/path]` plus an XKS path prefix (`""`, `p` or `/p`), or
    /// the whole URI path (`/p/kms/xks/v1`, as the dev banner and the KMS console show it).
    pub fn parse(url: &str, prefix: &str) -> Result<Self, ConnError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ConnError::Url(format!("{url}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ConnError::Url(format!(
                    "{url}: scheme must be http or https"
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| ConnError::Url(format!("{url}: no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base = uri.path().trim_end_matches('/');
        let prefix = prefix.trim_end_matches('/');
        let prefix = match prefix.strip_suffix(API_PATH) {
            Some(p) => p,
            None if prefix == API_PATH.trim_start_matches('/') => "",
            None => prefix,
        };
        let prefix = match prefix {
            "" => String::new(),
            p if p.starts_with('/') => p.to_owned(),
            p => format!("/{p}"),
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            api_base: format!("{base}{prefix}{API_PATH}"),
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `[/path][/prefix]/kms/xks/v1`.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Whether the target speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// Opens connections to one target; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    target: Arc<Target>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The `--cacert` file, named when the server's certificate is refused.
    cacert: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// A connector for `target`, with TLS set up from `opts` when the target is https.
    pub fn new(target: Target, opts: &TlsOptions) -> Result<Self, ConnError> {
        let tls = if target.tls {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| ConnError::Url(format!("{}: {e}", target.host)))?;
            let config = Arc::new(client_config(opts)?);
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Self {
            target: Arc::new(target),
            tls,
            cacert: opts.cacert.clone(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Bounds connecting and every exchange on its connections by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The target this connector reaches.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Opens one keep-alive HTTP/1.1 connection (TCP_NODELAY; TLS handshake when https),
    /// within the connector's timeout.
    pub async fn connect(&self) -> Result<Connection, ConnError> {
        let timed_out = ConnError::TimedOut {
            what: "connection",
            after: self.timeout,
        };
        tokio::time::timeout(self.timeout, self.connect_now())
            .await
            .map_err(|_| timed_out)?
    }

    async fn connect_now(&self) -> Result<Connection, ConnError> {
        let addr = format!("{}:{}", self.target.host, self.target.port);
        let io_err = |source| ConnError::Connect {
            addr: addr.clone(),
            source,
        };
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| ConnError::Handshake {
                        hint: self.handshake_hint(&source),
                        addr: addr.clone(),
                        source,
                    })?;
                Connection::handshake(stream, self.timeout).await
            }
            None => Connection::handshake(tcp, self.timeout).await,
        }
    }
}

impl Connector {
    /// What to do when the handshake failed because the server's certificate was refused.
    fn handshake_hint(&self, error: &std::io::Error) -> String {
        let refused = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        match (&self.cacert, refused) {
            (Some(file), true) => format!(
                "; the proxy's certificate is not trusted by --cacert {}: pass --cacert with \
                 the CA that issued it ({DEV_CA} for `keygate serve --dev`)",
                file.display()
            ),
            _ => String::new(),
        }
    }
}

/// One open HTTP/1.1 connection; requests on it are sent one after another.
#[derive(Debug)]
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    timeout: Duration,
}

/// A fully read response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The whole body.
    pub body: Bytes,
}

impl Connection {
    /// HTTP/1.1 over `stream`; every exchange on it is bounded by `timeout`.
    async fn handshake<S>(stream: S, timeout: Duration) -> Result<Self, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection's own error (e.g. the peer closed) surfaces on the next send.
            let _closed = conn.await;
        });
        Ok(Self { sender, timeout })
    }

    /// Whether the peer (or an error) has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole response, within the connection's timeout.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, ConnError> {
        let timed_out = ConnError::TimedOut {
            what: "response",
            after: self.timeout,
        };
        tokio::time::timeout(self.timeout, self.exchange(req))
            .await
            .map_err(|_| timed_out)?
    }

    /// As `send`, reading at most `max_body` bytes of the response body (a larger one is an
    /// error): for peers whose answers keygate does not control.
    pub async fn send_bounded(
        &mut self,
        req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Reply, ConnError> {
        let timed_out = ConnError::TimedOut {
            what: "response",
            after: self.timeout,
        };
        tokio::time::timeout(self.timeout, self.exchange_bounded(req, max_body))
            .await
            .map_err(|_| timed_out)?
    }

    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, ConnError> {
        self.exchange_bounded(req, usize::MAX).await
    }

    async fn exchange_bounded(
        &mut self,
        req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Reply, ConnError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => ConnError::Http(*e),
                Err(_) => ConnError::BodyTooLarge(max_body),
            })?
            .to_bytes();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Reply {
            status: parts.status,
            content_type,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = Target::parse("https://xks.example.com", "/tenant-a").unwrap();
        assert!(t.is_tls());
        assert_eq!((t.host.as_str(), t.port), ("xks.example.com", 443));
        assert_eq!(t.authority(), "xks.example.com");
        assert_eq!(t.api_base(), "/tenant-a/kms/xks/v1");
        let t = Target::parse("http://127.0.0.1:8080/", "").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.authority(), "127.0.0.1:8080");
        assert_eq!(t.api_base(), "/kms/xks/v1");
        let t = Target::parse("http://[::1]:9/base", "p/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.api_base(), "/base/p/kms/xks/v1");
        assert!(Target::parse("ftp://x", "").is_err());
        assert!(Target::parse("/just/a/path", "").is_err());
    }

    /// The dev banner prints the URI path; pasting it as --prefix reaches the same key store.
    #[test]
    fn a_whole_uri_path_is_accepted_as_prefix() {
        for prefix in [
            "/kgd/kms/xks/v1",
            "/kgd/kms/xks/v1/",
            "kgd/kms/xks/v1",
            "/kgd",
        ] {
            let t = Target::parse("https://h", prefix).unwrap();
            assert_eq!(t.api_base(), "/kgd/kms/xks/v1", "{prefix}");
        }
        for prefix in ["/kms/xks/v1", "kms/xks/v1/", ""] {
            let t = Target::parse("https://h", prefix).unwrap();
            assert_eq!(t.api_base(), "/kms/xks/v1", "{prefix}");
        }
    }
}
