//! Helpers for the operations tests: a server whose shutdown the test triggers, raw HTTP/1.1
//! requests whose body can be sent slowly, config rewriting, and a metrics text parser.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::app::App;
use keygate::config::Config;
use keygate::keys::software::SoftwareAdmin;
use keygate::keys::{KeyAdmin, KeyUsage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Signing, sign_headers};

/// A running server whose shutdown the test triggers.
pub struct OpsServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub app: Arc<App>,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Writes the software key file the common config names.
pub fn write_keys(dir: &Path) {
    let mut admin = SoftwareAdmin::open(&dir.join("keys.json")).unwrap();
    for id in ["foo", "keygate-health"] {
        admin.create(id, KeyUsage::BOTH).unwrap();
    }
}

impl OpsServer {
    pub async fn start(config_text: &str) -> OpsServer {
        let dir = tempfile::tempdir().unwrap();
        write_keys(dir.path());
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
        OpsServer {
            addr,
            dir,
            config_path,
            app,
            shutdown: Some(tx),
            task,
        }
    }

    /// The config the server was started from, read again.
    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    /// Replaces the config file atomically (write, then rename over it).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("keygate.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn begin_shutdown(&mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
    }

    /// Waits until `n` requests are in flight (admitted, not answered).
    pub async fn wait_in_flight(&self, n: i64) {
        let gauge = self.app.metrics.in_flight();
        let deadline = Instant::now() + Duration::from_secs(5);
        while gauge.get() != n {
            assert!(
                Instant::now() < deadline,
                "in flight stayed {}",
                gauge.get()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// Sends the head and all but the last `hold` bytes of the body; returns the stream.
pub async fn send_partial(addr: SocketAddr, req: &RawRequest, hold: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&req.head).await.unwrap();
    s.write_all(&req.body[..req.body.len() - hold])
        .await
        .unwrap();
    s.flush().await.unwrap();
    s
}

/// The rest of the body, then the response.
pub async fn finish(s: &mut TcpStream, req: &RawRequest, hold: usize) -> (u16, String) {
    s.write_all(&req.body[req.body.len() - hold..])
        .await
        .unwrap();
    read_response(s).await
}

/// Parses the text exposition format into `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The value of one series, 0 when absent.
pub fn metric(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// The common config with `replace` applied (pairs of old -> new text).
pub fn config_with(replace: &[(&str, &str)]) -> String {
    let mut c = crate::common::base_config("");
    for (old, new) in replace {
        assert!(c.contains(old), "{old:?} not in the base config");
        c = c.replacen(old, new, 1);
    }
    c
}
