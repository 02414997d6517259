//! The plain-HTTP admin listener: /ping, /healthz, /readyz (driven by the readiness the core
//! supplies), 404 and 405, over a real socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use keygate::admin::{self, AdminState, Readiness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct Switch(AtomicBool);

#[async_trait]
impl Readiness for Switch {
    async fn ready(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("backend UNAVAILABLE".into())
        }
    }
}

async fn call(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let switch = Arc::new(Switch::default());
    let state = AdminState::new("0.1.0", switch.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::run(listener, state, async {
        let _ = stopped.await;
    }));

    assert_eq!(
        call(addr, "GET", "/ping").await,
        (200, "pong from keygate 0.1.0\n".into())
    );
    assert_eq!(call(addr, "GET", "/healthz").await.0, 200);
    assert_eq!(
        call(addr, "GET", "/readyz").await,
        (503, "not ready: backend UNAVAILABLE\n".into())
    );
    switch.0.store(true, Ordering::SeqCst);
    assert_eq!(call(addr, "GET", "/readyz").await, (200, "ready\n".into()));
    assert_eq!(call(addr, "GET", "/kms/xks/v1/health").await.0, 404);
    assert_eq!(call(addr, "POST", "/ping").await.0, 405);

    stop.send(()).unwrap();
    server.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
