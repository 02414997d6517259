//! One upload over HTTP: `POST {url}{resource}` with `Content-Encoding: gzip`, an optional
//! bearer token read from its file before each upload (so it can be rotated), on a kept-alive
//! connection (TLS with the configured CA bundle), bounded by the timeout. Any 2xx is an
//! acknowledgement; anything else, or no answer in time, is a failure to retry.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use zeroize::Zeroizing;

use crate::client::conn::{Connection, Connector, Target};
use crate::client::tls::TlsOptions;
use crate::policy::decision_log::settings::UploadSettings;

/// Largest collector answer read (they are empty or tiny).
const MAX_ANSWER: usize = 64 * 1024;
/// Largest bearer token file.
const MAX_TOKEN: u64 = 16 * 1024;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum PostError {
    #[error("{0}")]
    Conn(#[from] crate::client::conn::ConnError),
    #[error("the collector answered {0}")]
    Status(http::StatusCode),
    #[error("bearer token {0}")]
    Token(String),
    #[error("cannot build the request: {0}")]
    Request(String),
}

/// The collector, and the connection kept to it.
#[derive(Debug)]
pub(super) struct Collector {
    connector: Connector,
    path: String,
    token_file: Option<std::path::PathBuf>,
    connection: Option<Connection>,
}

impl Collector {
    /// Checks the URL and builds the TLS configuration (a bad CA bundle fails here).
    pub fn new(settings: &UploadSettings) -> Result<Self, String> {
        let target = Target::parse(&settings.url, "").map_err(|e| e.to_string())?;
        let opts = TlsOptions {
            cacert: settings.ca_cert.clone(),
            ..TlsOptions::default()
        };
        let connector = Connector::new(target, &opts)
            .map_err(|e| e.to_string())?
            .with_timeout(settings.timeout);
        Ok(Self {
            connector,
            path: settings.path.clone(),
            token_file: settings.bearer_token_path.clone(),
            connection: None,
        })
    }

    /// Sends one gzip'd body; `Ok` once the collector answered 2xx.
    pub async fn post(&mut self, gzip: Vec<u8>) -> Result<(), PostError> {
        let request = self.request(gzip)?;
        let mut connection = match self.connection.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connector.connect().await?,
        };
        let reply = connection.send_bounded(request, MAX_ANSWER).await?;
        if !reply.status.is_success() {
            return Err(PostError::Status(reply.status));
        }
        self.connection = Some(connection);
        Ok(())
    }

    fn request(&self, gzip: Vec<u8>) -> Result<Request<Full<Bytes>>, PostError> {
        let mut builder = Request::post(self.path.as_str())
            .header(header::HOST, self.connector.target().authority())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .header(
                header::USER_AGENT,
                concat!("keygate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(file) = &self.token_file {
            let token = read_token(file)?;
            let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
                .map_err(|_| PostError::Token("holds characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder
            .body(Full::new(Bytes::from(gzip)))
            .map_err(|e| PostError::Request(e.to_string()))
    }
}

/// The token: the file's first line, trimmed; never logged.
fn read_token(file: &std::path::Path) -> Result<Zeroizing<String>, PostError> {
    use std::io::Read as _;
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_TOKEN).read_to_string(&mut text))
        .map_err(|e| PostError::Token(format!("{}: {e}", file.display())))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(PostError::Token(format!("{} is empty", file.display())));
    }
    Ok(Zeroizing::new(token.to_owned()))
}
