//! The tests' XKS client: requests signed by aws-sigv4's signing side (independent of
//! keygate's verifier) over one keep-alive HTTP/1.1 connection, and hand-written requests
//! whose body can arrive in pieces.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fixtures::{AK, REGION, SECRET};

/// How a request is signed.
#[derive(Debug, Clone)]
pub struct Signing {
    pub access_key_id: String,
    pub secret: String,
    pub region: String,
    pub service: String,
    /// Added to the current time.
    pub skew: i64,
    /// Sign content-type too (curl and SDK style) instead of only host;x-amz-date (KMS style).
    pub sign_content_type: bool,
    /// Add x-amz-content-sha256 (SDK style).
    pub content_sha256: bool,
}

impl Default for Signing {
    fn default() -> Self {
        Signing {
            access_key_id: AK.into(),
            secret: SECRET.into(),
            region: REGION.into(),
            service: "kms-xks-proxy".into(),
            skew: 0,
            sign_content_type: false,
            content_sha256: false,
        }
    }
}

impl Signing {
    /// Default signing with another credential.
    pub fn with(access_key_id: &str, secret: &str) -> Signing {
        Signing {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            ..Signing::default()
        }
    }
}

/// Signs a POST and returns the headers to send.
pub fn sign_headers(host: &str, path: &str, body: &[u8], s: &Signing) -> Vec<(String, String)> {
    let mut settings = SigningSettings::default();
    if s.content_sha256 {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let at = if s.skew >= 0 {
        SystemTime::now() + Duration::from_secs(s.skew as u64)
    } else {
        SystemTime::now() - Duration::from_secs((-s.skew) as u64)
    };
    let identity =
        aws_credential_types::Credentials::new(&s.access_key_id, &s.secret, None, None, "test")
            .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&s.region)
        .name(&s.service)
        .time(at)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let mut headers = vec![("host".to_string(), host.to_string())];
    if s.sign_content_type {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let url = format!("http://{host}{path}");
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    if !s.sign_content_type {
        headers.push(("content-type".into(), "application/json".into()));
    }
    headers
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub raw: String,
    pub json: Value,
}

impl Reply {
    pub fn error_name(&self) -> &str {
        self.json["errorName"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, name: &str) {
        assert_eq!(
            (self.status, self.error_name()),
            (status, name),
            "body: {}",
            self.raw
        );
        let msg = self.json["errorMessage"].as_str().unwrap_or("");
        assert!(
            msg.len() < 512 && msg.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "bad errorMessage {msg:?}"
        );
    }

    #[track_caller]
    pub fn expect_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "body: {}", self.raw);
        &self.json
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    pub addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client::over(addr, stream).await
    }

    /// A client over an already connected stream (e.g. TLS) to the server at `addr`.
    pub async fn over<IO>(addr: SocketAddr, stream: IO) -> Client
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { addr, sender }
    }

    /// Sends `body` to `path`, signed per `s`. `tamper` replaces the body after signing.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        s: &Signing,
        tamper: Option<&[u8]>,
    ) -> Reply {
        self.try_send(method, path, body, s, tamper).await.unwrap()
    }

    /// `send`, with a connection the server closed or refused as an error.
    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        s: &Signing,
        tamper: Option<&[u8]>,
    ) -> Result<Reply, hyper::Error> {
        let host = self.addr.to_string();
        let headers = sign_headers(&host, path, body, s);
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let sent = tamper.unwrap_or(body).to_vec();
        let req = req.body(Full::new(Bytes::from(sent))).unwrap();
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let raw = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec()).unwrap();
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            content_type,
            raw,
            json,
        })
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Reply {
        self.send(
            "POST",
            path,
            body.to_string().as_bytes(),
            &Signing::default(),
            None,
        )
        .await
    }

    pub async fn post_signed(&mut self, path: &str, body: &Value, s: &Signing) -> Reply {
        self.send("POST", path, body.to_string().as_bytes(), s, None)
            .await
    }
}

/// A signed request written by hand, so the body can arrive in pieces.
pub struct RawRequest {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn new(addr: SocketAddr, path: &str, body: &Value, s: &Signing) -> RawRequest {
        let body = body.to_string().into_bytes();
        let mut head = format!("POST {path} HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in sign_headers(&addr.to_string(), path, &body, s) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        RawRequest {
            head: head.into_bytes(),
            body,
        }
    }

    /// Sends the head and all but the last `hold` bytes of the body; returns the stream.
    pub async fn send_partial(&self, addr: SocketAddr, hold: usize) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&self.head).await.unwrap();
        s.write_all(&self.body[..self.body.len() - hold])
            .await
            .unwrap();
        s.flush().await.unwrap();
        s
    }

    /// The rest of the body, then the response.
    pub async fn finish(&self, s: &mut TcpStream, hold: usize) -> (u16, String) {
        s.write_all(&self.body[self.body.len() - hold..])
            .await
            .unwrap();
        read_response(s).await
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            return (status, body);
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the peer has neither sent anything nor closed `stream` (a read would block).
pub fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
