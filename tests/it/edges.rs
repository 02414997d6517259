//! The edges an attacker's test set found: a key store's quota spent by unsigned requests,
//! one WARN line per refused connection, lax HTTP/1.1 framing, raw Unicode line separators in
//! JSON logs.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{Signing, read_response};
use crate::support::fixtures::{self, config_with, encrypt_body, path};
use crate::support::process::KeygateProcess;
use crate::support::server::TestServer;
use crate::support::{metric, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_requests_cannot_spend_a_key_stores_rate_limit() {
    let s = TestServer::start(&config_with(&[(
        "name = \"main\"\n",
        "name = \"main\"\nrate_limit_rps = 1\nburst = 3\n",
    )]))
    .await;
    // Someone who knows the path and even the access key id, but not the secret.
    let forged = Signing::with(
        fixtures::AK,
        "NotTheSecretNotTheSecretNotTheSecretNotTheSecret1",
    );
    let mut attacker = s.client().await;
    for _ in 0..200 {
        attacker
            .post_signed(
                &path("encrypt", "foo"),
                &encrypt_body(b"x", None, false),
                &forged,
            )
            .await
            .expect_error(401, "AuthenticationFailedException");
    }
    let mut kms = s.client().await;
    for _ in 0..3 {
        kms.post_signed(
            &path("encrypt", "foo"),
            &encrypt_body(b"x", None, false),
            &Signing::default(),
        )
        .await
        .expect_ok();
    }
    // The limit itself still holds for the key store's own callers.
    kms.post_signed(
        &path("encrypt", "foo"),
        &encrypt_body(b"x", None, false),
        &Signing::default(),
    )
    .await
    .expect_error(429, "ThrottlingException");
    let m = s.metrics();
    assert_eq!(
        metric(
            &m,
            "keygate_requests_shed_total{keystore=\"main\",reason=\"rate_limit\"}"
        ),
        1.0
    );
}

#[test]
fn refused_connections_are_counted_and_summarised_not_logged_one_by_one() {
    let config = fixtures::config_with_limits("max_connections_per_peer = 2")
        + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let server = KeygateProcess::start(&config, "info");
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    for _ in 0..40 {
        let mut refused = std::net::TcpStream::connect(server.addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        // Closed at accept: EOF (or a reset), never an answer.
        assert!(matches!(
            std::io::Read::read(&mut refused, &mut buf),
            Ok(0) | Err(_)
        ));
    }
    let admin = server.admin_addr();
    let text = crate::support::process::http_get(admin, "/metrics");
    let m = crate::support::parse_metrics(&text);
    assert_eq!(
        metric(
            &m,
            "keygate_connections_refused_total{reason=\"per_peer_limit\"}"
        ),
        40.0
    );
    assert_eq!(
        metric(
            &m,
            "keygate_connections_refused_total{reason=\"connection_limit\"}"
        ),
        0.0
    );
    // keygate's log is written by a thread of its own: wait for the first summary.
    server.wait_for_log("connections refused since the last summary");
    let log = server.log();
    let lines = log
        .matches("connections refused since the last summary")
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} summary lines for 40 refusals"
    );
    assert!(
        !log.contains("connection refused: per-peer"),
        "one line per refusal"
    );
    drop(held);
}

/// Sends `raw` on a fresh connection; the status and whether the server closed it after.
async fn raw_exchange(addr: std::net::SocketAddr, raw: &str) -> (u16, String, bool) {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(raw.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut c).await;
    let mut rest = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), c.read(&mut rest)).await,
        Ok(Ok(0) | Err(_))
    );
    (status, body, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_framing_games_are_refused_and_the_connection_closed() {
    let s = TestServer::fixture().await;
    let health = fixtures::health_path();
    let cases = [
        (
            format!("POST {health} HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n"),
            400,
            "more than one Host",
        ),
        (
            format!(
                "POST http://other.example{health} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
                s.addr
            ),
            400,
            "another authority",
        ),
        (
            format!(
                "POST {health} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
            ),
            501,
            "lone chunked",
        ),
    ];
    for (raw, status, says) in cases {
        let (got, body, closed) = raw_exchange(s.addr, &raw).await;
        assert_eq!(got, status, "{raw:?}: {body}");
        assert!(body.contains(says), "{body}");
        assert!(closed, "{raw:?}: the connection stayed open");
    }
    // A lone chunked body is fine.
    let body = fixtures::health_body().to_string();
    let raw = format!(
        "POST {health} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let (got, text, _) = raw_exchange(s.addr, &raw).await;
    assert_eq!(got, 401, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_line_separators_are_escaped_in_every_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("d.log");
    let config = fixtures::config(&format!("[decision_log]\npath = \"{}\"\n", log.display()));
    let server = KeygateProcess::start(&config, "info");
    let id = "line\u{2028}break\u{2029}here";
    let mut body = encrypt_body(b"x", None, false);
    body["requestMetadata"]["kmsRequestId"] = json!(id);
    let mut c = crate::support::client::Client::connect(server.addr).await;
    c.post_signed(&path("encrypt", "foo"), &body, &Signing::default())
        .await
        .expect_ok();
    wait_for(Duration::from_secs(10), "the decision line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("break"))
    })
    .await;
    let stopped = server.stop();
    let stderr = String::from_utf8(stopped.stderr).unwrap();
    let decisions = std::fs::read_to_string(&log).unwrap();
    let places = [
        ("keygate's log", &stderr, "/kms_request_id"),
        (
            "the decision log",
            &decisions,
            "/input/request_metadata/kmsRequestId",
        ),
    ];
    for (what, text, id_at) in places {
        assert!(
            !text.contains('\u{2028}') && !text.contains('\u{2029}'),
            "{what} holds a raw line separator"
        );
        let line = text.lines().find(|l| l.contains("break")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.pointer(id_at).unwrap(), id, "{what}: {line}");
    }
    let verify = crate::support::process::keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(verify.status.success());
}
