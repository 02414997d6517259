//! Connection limits of the TLS layer: handshake time limit, TCP keepalive and the connection
//! cap, on real sockets.

use std::time::Duration;

use keygate::server::tls::{ConnLimits, hygiene};
use rustls::version::TLS13;
use socket2::SockRef;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::tls::*;

#[tokio::test]
async fn tcp_keepalive_probes_are_configured() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server_side, _) = listener.accept().await.unwrap();
    let limits = ConnLimits::default();
    hygiene::set_tcp_keepalive(&server_side, &limits).unwrap();
    let sock = SockRef::from(&server_side);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), limits.keepalive_time);
    assert_eq!(
        sock.tcp_keepalive_interval().unwrap(),
        limits.keepalive_interval
    );
    assert_eq!(
        sock.tcp_keepalive_retries().unwrap(),
        limits.keepalive_retries
    );
    drop(client);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_limit() {
    let limits = ConnLimits {
        handshake_timeout: Duration::from_millis(300),
        ..ConnLimits::default()
    };
    let server = start_with(false, limits).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
        .await
        .expect("the server must close the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a TLS answer");
}

#[tokio::test]
async fn the_connection_cap_holds_further_connections_until_one_ends() {
    let server = start_capped(false, ConnLimits::default(), 1).await;
    let config = client_config(&server.set.ca.cert, None, &[&TLS13]);
    let mut first = connect(server.addr, config.clone(), "localhost")
        .await
        .unwrap();
    get(&mut first, "/").await.unwrap();

    let second = tokio::spawn(connect(server.addr, config, "localhost"));
    // Deliberate: that the second handshake is still waiting after a while is the point.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second connection waits while the first is open"
    );
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("served once the first connection ended")
        .unwrap()
        .unwrap();
    get(&mut second, "/").await.unwrap();
}
