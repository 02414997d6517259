//! KMS v2 load generator for scripts/bench-kms-v2.sh: `CALLERS` concurrent callers send
//! Encrypt calls (a 32-byte seed, as the kube-apiserver does) over one gRPC connection (as the
//! apiserver's one channel) to the Unix socket at `KMS_SOCKET` for `DURATION_SECS`, then
//! print one JSON line: calls, errors, calls/s and latency percentiles. The script measures
//! the server's CPU around it.
//!
//!   KMS_SOCKET=/tmp/x/kms.sock CALLERS=16 DURATION_SECS=10 cargo bench --bench kms_v2

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keygate::kms_v2::proto::EncryptRequest;
use keygate::kms_v2::proto::key_management_service_client::KeyManagementServiceClient;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Ok(socket) = std::env::var("KMS_SOCKET") else {
        eprintln!("kms_v2 bench: set KMS_SOCKET (scripts/bench-kms-v2.sh does)");
        return;
    };
    let callers: usize = env("CALLERS", 1);
    let duration = Duration::from_secs(env("DURATION_SECS", 10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(socket, callers, duration));
}

async fn run(socket: String, callers: usize, duration: Duration) {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    let client = KeyManagementServiceClient::new(channel);
    let errors = Arc::new(AtomicU64::new(0));
    // Warm-up: connections, caches, the policy VM pool.
    for _ in 0..200 {
        let mut c = client.clone();
        c.encrypt(request()).await.unwrap();
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let (mut c, errors) = (client.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.encrypt(request()).await {
                    Ok(_) => {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latencies.record(us.max(1)).unwrap();
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "callers": callers,
            "calls": all.len(),
            "errors": errors.load(Ordering::Relaxed),
            "calls_per_s": all.len() as f64 / secs,
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": all.max() as f64 / 1000.0,
        })
    );
}

fn request() -> EncryptRequest {
    EncryptRequest {
        plaintext: vec![0x5a; 32],
        uid: "bench-0000-0000-0000-000000000000".into(),
    }
}
