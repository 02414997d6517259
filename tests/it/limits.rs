//! Each configurable resource bound, against the real server: request head size (431 and a
//! close), connections in total and per peer address, the idle timeout, and the TLS handshake
//! timeout. Header and body read times are covered in `xks`
//! (`a_slow_client_does_not_block_others`). How long each timeout takes to fire is measured
//! in `benches/wall_clock.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

async fn start(limits: &str) -> TestServer {
    TestServer::start(&config_with_limits(limits)).await
}

/// Connects from a chosen loopback address (127.0.0.0/8 all reaches the server).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes; the text read, or `None` when it stayed open past `limit`.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

fn health_request(extra_header: &str) -> String {
    format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n{extra_header}\r\n{{}}",
        health_path()
    )
}

/// Connects from `from` and sends an (unsigned) request: the connection, if the server
/// answered it (so it holds one of the server's connection slots).
async fn answered(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let mut s = connect_from(from, to).await;
    let _ = s.write_all(health_request("").as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .starts_with("HTTP/1.1 401")
        .then_some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_a_close() {
    let s = start("max_header_bytes = 8192").await;
    // Just under the limit: an ordinary (unauthenticated, so 401) answer on an open connection.
    let mut ok = TcpStream::connect(s.addr).await.unwrap();
    let filler = format!("x-filler: {}\r\n", "a".repeat(6000));
    ok.write_all(health_request(&filler).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = ok.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // Over it: 431, then the connection is closed.
    let mut big = TcpStream::connect(s.addr).await.unwrap();
    let filler = format!("x-filler: {}\r\n", "a".repeat(10_000));
    let _ = big.write_all(health_request(&filler).as_bytes()).await;
    let text = read_until_closed(&mut big, Duration::from_secs(5))
        .await
        .expect("an oversized head left the connection open");
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // Many small headers add up the same way.
    let mut many = TcpStream::connect(s.addr).await.unwrap();
    let filler: String = (0..90)
        .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(100)))
        .collect();
    let _ = many.write_all(health_request(&filler).as_bytes()).await;
    let text = read_until_closed(&mut many, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_head_limit_is_16_kib() {
    let s = TestServer::fixture().await;
    assert_eq!(s.limits().max_header_bytes, 16 * 1024);
    let mut big = TcpStream::connect(s.addr).await.unwrap();
    let filler = format!("x-filler: {}\r\n", "a".repeat(20_000));
    let _ = big.write_all(health_request(&filler).as_bytes()).await;
    let text = read_until_closed(&mut big, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_total_cap_are_closed_until_one_ends() {
    let s = start("max_connections = 2").await;
    let mut a = s.client().await;
    a.post(&health_path(), &health_body()).await.expect_ok();
    let held = answered([127, 0, 0, 1], s.addr)
        .await
        .expect("the second connection was refused");
    let mut refused = TcpStream::connect(s.addr).await.unwrap();
    let _ = refused.write_all(health_request("").as_bytes()).await;
    let text = read_until_closed(&mut refused, Duration::from_secs(5))
        .await
        .expect("a connection over the cap stayed open");
    assert_eq!(text, "", "a connection over the cap was served");
    // The first connection still works; when one ends, a new one is served.
    a.post(&health_path(), &health_body()).await.expect_ok();
    drop(held);
    let body = health_body().to_string();
    let served = eventually(PATIENCE, "a new connection served", async || {
        let mut b = s.client().await;
        b.try_send(
            "POST",
            &health_path(),
            body.as_bytes(),
            &Signing::default(),
            None,
        )
        .await
        .ok()
    })
    .await;
    served.expect_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_connection() {
    let s = start("max_connections_per_peer = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(answered([127, 0, 0, 1], s.addr).await.unwrap());
    }
    let mut fourth = connect_from([127, 0, 0, 1], s.addr).await;
    let _ = fourth.write_all(health_request("").as_bytes()).await;
    let text = read_until_closed(&mut fourth, Duration::from_secs(5))
        .await
        .expect("a fourth connection from one peer stayed open");
    assert_eq!(text, "");
    // Another address is served, and the peer gets a slot back when one of its connections ends.
    let mut other = connect_from([127, 0, 0, 2], s.addr).await;
    other
        .write_all(health_request("").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = other.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));
    held.pop();
    eventually(PATIENCE, "the peer's slot freed", async || {
        answered([127, 0, 0, 1], s.addr).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let s = start("idle_timeout_secs = 1").await;
    // A connection that never sends a byte, and one that goes quiet after a request.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut used = TcpStream::connect(s.addr).await.unwrap();
    used.write_all(health_request("").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = used.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));
    assert!(still_open(&used), "closed at once, not after going idle");
    for conn in [&mut silent, &mut used] {
        read_until_closed(conn, Duration::from_secs(5))
            .await
            .expect("an idle connection outlived the idle timeout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_starts_is_cut_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let set = keygate::dev::certs::write_dev_set(dir.path(), &Default::default()).unwrap();
    let config = config(&format!(
        "\n[tls]\ncert_chain = {:?}\nkey = {:?}\n",
        set.server.cert, set.server.key
    ))
    .replace(
        "[limits]\n",
        "[limits]\nhandshake_timeout_ms = 300\nidle_timeout_secs = 60\n",
    );
    let s = TestServer::start(&config).await;
    // Connected, and silent: no ClientHello ever comes. Closed well before the 60 s idle
    // timeout, so by the handshake timeout.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    read_until_closed(&mut silent, Duration::from_secs(5))
        .await
        .expect("a connection without a handshake outlived handshake_timeout_ms");
}

#[test]
fn limits_are_checked_at_start() {
    use keygate::config::Config;
    for (bad, problem) in [
        ("max_header_bytes = 1024", "limits.max_header_bytes"),
        ("max_header_bytes = 2000000", "limits.max_header_bytes"),
        (
            "max_connections_per_peer = 0",
            "limits.max_connections_per_peer",
        ),
        ("max_connections = 0", "limits.max_connections"),
        ("handshake_timeout_ms = 50", "limits.handshake_timeout_ms"),
        (
            "handshake_timeout_ms = 100000",
            "limits.handshake_timeout_ms",
        ),
    ] {
        let text = config_with_limits(bad);
        let err = Config::parse(&text, std::path::Path::new("k.toml")).unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.contains(problem)),
            "{bad}: {err}"
        );
    }
}
