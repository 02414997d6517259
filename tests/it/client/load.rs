//! `keygate load` (the real binary) against the real keygate server: every operation runs
//! without errors and reports a JSON summary; an impossible objective fails the run.

use std::process::Output;

use crate::support::process::BIN;
use crate::support::*;

async fn load(server: &TestServer, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("load")
        .arg("--url")
        .arg(format!("http://{}", server.addr))
        .args(["--prefix", PREFIX, "--access-key-id", AK, "--json"])
        .args(args)
        .env("KEYGATE_SECRET", SECRET);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_runs_clean() {
    let server = TestServer::fixture().await;
    for op in ["encrypt", "decrypt", "metadata", "health"] {
        let out = load(
            &server,
            &["--op", op, "--connections", "2", "--duration", "300ms"],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{op}: {stderr}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["op"], op);
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["requests"], r["ok"], "{r}");
        assert_eq!(r["slo_passed"], true, "{r}");
        let lat = &r["latency_ms"];
        assert!(
            lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap(),
            "{r}"
        );
        assert!(
            lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap(),
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_rate_is_respected_and_errors_are_named() {
    let server = TestServer::fixture().await;
    let args = [
        "--op",
        "encrypt",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--rate",
        "50",
    ];
    let out = load(&server, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 50/s for 1 s: exactly 50 requests are scheduled.
    assert_eq!(r["requests"], 50, "{r}");

    let out = load(
        &server,
        &[
            "--op",
            "metadata",
            "--key-id",
            "non_existing_key",
            "--duration",
            "200ms",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors"], r["requests"], "{r}");
    assert!(
        r["errors_by_name"]["404 KeyNotFoundException"]
            .as_u64()
            .unwrap()
            > 0,
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmet_objective_fails_the_run() {
    let server = TestServer::fixture().await;
    let args = [
        "--op",
        "health",
        "--connections",
        "1",
        "--duration",
        "200ms",
        "--slo-p99-ms",
        "0",
    ];
    let out = load(&server, &args).await;
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["slo_passed"], false, "{r}");
}
