//! SIGHUP reloads the TLS configuration (its own test binary: the signal goes to the whole
//! process).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod tls_support;

use std::sync::Arc;
use std::time::Duration;

use tls_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    // Registering first installs tokio's handler, so no SIGHUP can end the test process even
    // if it arrives before the watcher has subscribed.
    let mut guard = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let server = start(false).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(Arc::clone(&server.reloader).watch(
        Duration::from_secs(3600),
        async {
            let _ = stopped.await;
        },
    ));
    let pid = std::process::id().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.reloader.reloads() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        let out = run("kill", &["-HUP", &pid]).await;
        assert!(out.status.success());
        guard.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    watcher.await.unwrap();
}
