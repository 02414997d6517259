//! Graceful shutdown and signals: an in-flight request finishes after shutdown begins while
//! new connections are refused and idle ones close; the real binary reloads on SIGHUP and
//! exits 0 on SIGTERM.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_after_shutdown_begins() {
    let mut s = TestServer::start(&config_with_limits("shutdown_grace_secs = 5")).await;
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = RawRequest::new(
        s.addr,
        &path("encrypt", "foo"),
        &encrypt_body(b"in flight", None, false),
        &Signing::default(),
    );
    let mut held = req.send_partial(s.addr, 7).await;
    s.wait_in_flight(1).await;

    s.begin_shutdown();
    // The listener closes: new connections are refused.
    let addr = s.addr;
    eventually(
        Duration::from_secs(5),
        "new connections refused",
        async || {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    // An idle keep-alive connection is closed at once.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("idle connection not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(!s.finished(), "drain ended with a request in flight");

    // Deliberate: the request stays in flight a while into the drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = req.finish(&mut held, 7).await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unb64(&j["ciphertext"]).len(), b"in flight".len());
    s.stopped(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_exits_0_on_sigterm() {
    let second = "[[keystore.credential]]\naccess_key_id = \"ROTATEDCREDENTIALKEYID2345\"\nsecret = \"AnotherSecretThatIsLongEnoughToBeValid1234567\"\n";
    let mut keygate = KeygateProcess::start(&config_with(&[(second, "")]), "info");
    let signing = Signing::with(AK2, SECRET2);
    let body = health_body();
    let mut c = Client::connect(keygate.addr).await;
    c.post_signed(&health_path(), &body, &signing)
        .await
        .expect_error(401, "AuthenticationFailedException");

    // The file poller may notice the change too; the SIGHUP log line shows the signal
    // itself was handled (by default SIGHUP would end the process).
    std::fs::write(&keygate.config_path, config("")).unwrap();
    let mark = keygate.log().len();
    keygate.signal("-HUP");
    let (_, mark) = keygate.wait_for_log_after(mark, "SIGHUP: reloading the configuration");
    keygate.wait_for_log_after(mark, "configuration reloaded");
    c.post_signed(&health_path(), &body, &signing)
        .await
        .expect_ok();
    assert!(keygate.running(), "SIGHUP ended keygate");

    let stopped = keygate.stop();
    assert_eq!(stopped.status.code(), Some(0));
    let log = String::from_utf8_lossy(&stopped.stderr);
    assert!(log.contains("keygate stopped"), "{log}");
}
