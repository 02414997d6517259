//! Graceful shutdown and signals: an in-flight request finishes after shutdown begins while
//! new connections are refused and idle ones close; the real binary reloads on SIGHUP and
//! exits 0 on SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod ops_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ops_support::*;
use serde_json::json;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_after_shutdown_begins() {
    let mut s = OpsServer::start(&config_with(&[(
        "[limits]\n",
        "[limits]\nshutdown_grace_secs = 5\n",
    )]))
    .await;
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = RawRequest::new(
        s.addr,
        &path("encrypt", "foo"),
        &encrypt_body(b"in flight", None, false),
        &Signing::default(),
    );
    let mut held = send_partial(s.addr, &req, 7).await;
    s.wait_in_flight(1).await;

    s.begin_shutdown();
    // The listener closes: new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(s.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An idle keep-alive connection is closed at once.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("idle connection not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        !s.task.is_finished(),
        "drain ended with a request in flight"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = finish(&mut held, &req, 7).await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unb64(&j["ciphertext"]).len(), b"in flight".len());
    tokio::time::timeout(Duration::from_secs(3), &mut s.task)
        .await
        .expect("server did not stop after its last request")
        .unwrap();
}

/// Reads the child's stderr lines into a channel.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a log line containing `needle`; returns it.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

fn kill(signal: &str, pid: u32) {
    let st = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let config = dir.path().join("keygate.toml");
    let second = "[[keystore.credential]]\naccess_key_id = \"ROTATEDCREDENTIALKEYID2345\"\nsecret = \"AnotherSecretThatIsLongEnoughToBeValid1234567\"\n";
    std::fs::write(&config, config_with(&[(second, "")])).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let listening: serde_json::Value =
        serde_json::from_str(&wait_line(&rx, "keygate listening")).unwrap();
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let signing = Signing {
        access_key_id: AK2.into(),
        secret: SECRET2.into(),
        ..Signing::default()
    };
    let body = json!({"requestMetadata": {"kmsRequestId": "b", "kmsOperation": "KmsHealthCheck"}});
    let mut c = Client::connect(addr).await;
    c.post_signed(&health_path(), &body, &signing)
        .await
        .expect_error(401, "AuthenticationFailedException");

    // The file poller may notice the change too; the SIGHUP log line shows the signal
    // itself was handled (by default SIGHUP would end the process).
    std::fs::write(&config, config_with(&[])).unwrap();
    kill("-HUP", child.id());
    wait_line(&rx, "SIGHUP: reloading the configuration");
    wait_line(&rx, "configuration reloaded");
    c.post_signed(&health_path(), &body, &signing)
        .await
        .expect_ok();
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended keygate");

    kill("-TERM", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "keygate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    wait_line(&rx, "keygate stopped");
}
