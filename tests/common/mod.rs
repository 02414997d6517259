//! Test harness: starts the real keygate server on 127.0.0.1:0 with a fresh config and key
//! file in a temp dir, and talks to it over real sockets with requests signed by aws-sigv4's
//! signing side (independent of keygate's verifier).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use keygate::app::App;
use keygate::config::Config;
use keygate::keys::software::SoftwareAdmin;
use keygate::keys::{KeyAdmin, KeyUsage};
use serde_json::{Value, json};

pub mod pkcs11;
pub mod process;

pub const AK: &str = "BETWEEN2TENAND3TENCHARACTERS";
pub const SECRET: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";
pub const AK2: &str = "ROTATEDCREDENTIALKEYID2345";
pub const SECRET2: &str = "AnotherSecretThatIsLongEnoughToBeValid1234567";
pub const PREFIX: &str = "/example/uri/path/prefix";
pub const REGION: &str = "us-east-1";

/// Which key backend a test server uses.
#[derive(Debug, Clone, Copy)]
pub enum TestBackend {
    Software,
    /// A real SoftHSMv2 token; the server runs as a `keygate serve` child process because
    /// SoftHSMv2 reads SOFTHSM2_CONF at C_Initialize (see `pkcs11::server`).
    Pkcs11,
}

/// The in-process `App` of a test server. A pkcs11 server runs keygate as a child process
/// and has none; reaching for it there is a test bug and panics.
pub struct InProcess(Option<Arc<App>>);

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(app) => std::fmt::Debug::fmt(&**app, f),
            None => f.write_str("(keygate runs as a child process)"),
        }
    }
}

impl std::ops::Deref for InProcess {
    type Target = Arc<App>;
    fn deref(&self) -> &Arc<App> {
        self.0
            .as_ref()
            .expect("this test server runs keygate as a child process; it has no in-process App")
    }
}

/// A running keygate server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub app: InProcess,
    child: Option<std::process::Child>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `[backend]` section of `base_config`; the pkcs11 server swaps it for its own.
const SOFTWARE_BACKEND: &str = r#"[backend]
kind = "software"
health_key = "keygate-health"
[backend.software]
key_file = "keys.json"
"#;

/// The config every test server starts from; `extra` is appended (more key stores etc.).
pub fn base_config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
region = "{REGION}"

[limits]
body_read_timeout_ms = 2000
header_read_timeout_ms = 2000

{SOFTWARE_BACKEND}
[[keystore]]
name = "main"
uri_prefix = "{PREFIX}"
keys = ["foo", "encrypt_only_key", "decrypt_only_key", "impotent_key", "disabled_key", "missing_in_backend"]
[[keystore.credential]]
access_key_id = "{AK}"
secret = "{SECRET}"
[[keystore.credential]]
access_key_id = "{AK2}"
secret = "{SECRET2}"

[[keystore]]
name = "root"
uri_prefix = ""
keys = ["foo"]
[[keystore.credential]]
access_key_id = "ROOTKEYSTOREACCESSKEY234"
secret = "RootSecretRootSecretRootSecretRootSecret12345"
{extra}"#
    )
}

impl TestServer {
    pub async fn start(backend: TestBackend) -> TestServer {
        Self::start_with(backend, &base_config("")).await
    }

    pub async fn start_with(backend: TestBackend, config_text: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            TestBackend::Software => create_software_keys(&dir.path().join("keys.json")),
            TestBackend::Pkcs11 => {
                let text = config_text.to_owned();
                return tokio::task::spawn_blocking(move || pkcs11::server(dir, &text))
                    .await
                    .unwrap();
            }
        }
        let config_path = dir.path().join("keygate.toml");
        std::fs::write(&config_path, config_text).unwrap();
        let config = Config::load(&config_path).unwrap();
        let app = Arc::new(App::build(&config).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(keygate::server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            dir,
            config_path,
            app: InProcess(Some(app)),
            child: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops accepting and waits for the server to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .unwrap()
                .unwrap();
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

pub fn create_software_keys(path: &std::path::Path) {
    let mut admin = SoftwareAdmin::open(path).unwrap();
    for (id, e, d) in [
        ("foo", true, true),
        ("encrypt_only_key", true, false),
        ("decrypt_only_key", false, true),
        ("impotent_key", false, false),
        ("disabled_key", true, true),
        ("keygate-health", true, true),
    ] {
        admin
            .create(
                id,
                KeyUsage {
                    encrypt: e,
                    decrypt: d,
                },
            )
            .unwrap();
    }
    admin.set_enabled("disabled_key", false).unwrap();
}

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
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
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
        let host = self.addr.to_string();
        let headers = sign_headers(&host, path, body, s);
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let sent = tamper.unwrap_or(body).to_vec();
        let req = req.body(Full::new(Bytes::from(sent))).unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let raw = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            raw,
            json,
        }
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

pub fn path(op: &str, key: &str) -> String {
    format!("{PREFIX}/kms/xks/v1/keys/{key}/{op}")
}

pub fn health_path() -> String {
    format!("{PREFIX}/kms/xks/v1/health")
}

pub fn metadata(op: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d",
        "kmsOperation": op,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsViaService": "ebs",
    })
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

pub fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut b = json!({
        "requestMetadata": metadata("Encrypt"),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = json!(b64(a));
    }
    if cdiv {
        b["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    b
}

/// The Decrypt body for an Encrypt response.
pub fn decrypt_body(enc: &Value, aad: Option<&[u8]>) -> Value {
    let mut b = json!({
        "requestMetadata": metadata("Decrypt"),
        "ciphertext": enc["ciphertext"],
        "encryptionAlgorithm": "AES_GCM",
        "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"],
        "ciphertextMetadata": enc["ciphertextMetadata"],
    });
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = json!(b64(a));
    }
    b
}
