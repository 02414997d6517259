//! A flood against the real binary: 5,000 idle or half-open connections from five addresses
//! plus a slow-loris client, while a legitimate client (its own address, fresh connections)
//! runs encrypt/decrypt/metadata. Every one of its requests must be served, the slow-loris
//! cut off, and keygate's memory bounded. (Its latency under the flood against without it is
//! measured in `benches/wall_clock.rs`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

const FLOOD: usize = 5_000;
const FLOOD_ADDRESSES: usize = 5;
const REQUESTS: usize = 1_000;

async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

fn nofile_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Opens the flood: half only connect (idle), half send part of a request head (half-open).
async fn open_flood(addr: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(FLOOD);
    for batch in 0..FLOOD / 250 {
        let opened = futures_join((0..250).map(|i| {
            let n = batch * 250 + i;
            let from = [127, 0, 1, (n % FLOOD_ADDRESSES) as u8 + 1];
            async move {
                let mut s = connect_from(from, addr).await.unwrap();
                if n % 2 == 1 {
                    let _ = s
                        .write_all(b"POST /kms/xks/v1/health HTTP/1.1\r\nhost: x\r\n")
                        .await;
                }
                s
            }
        }))
        .await;
        held.extend(opened);
    }
    held
}

async fn futures_join<F: std::future::Future<Output = TcpStream> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<TcpStream> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Sends a request head one byte at a time, reconnecting whenever keygate cuts it off.
async fn slow_loris(addr: SocketAddr, stop: Arc<AtomicBool>, cut: Arc<AtomicUsize>) {
    let head = b"POST /example/uri/path/prefix/kms/xks/v1/health HTTP/1.1\r\nhost: x\r\nx-slow: ";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_from([127, 0, 0, 3], addr).await else {
            continue;
        };
        for b in head.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if s.write_all(&[*b]).await.is_err() {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
            // Deliberate: a slow client is what this is.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Encrypt, decrypt and metadata requests on fresh connections; each must succeed.
async fn legitimate_client(addr: SocketAddr) {
    let mut client = None;
    let mut last_encrypt = None;
    for i in 0..REQUESTS {
        if i % 100 == 0 {
            let stream = connect_from([127, 0, 0, 2], addr).await.unwrap();
            client = Some(Client::over(addr, stream).await);
        }
        let c = client.as_mut().unwrap();
        match (i % 3, &last_encrypt) {
            (1, Some(enc)) => {
                let r = c
                    .post(&path("decrypt", "foo"), &decrypt_body(enc, Some(b"aad")))
                    .await;
                r.expect_ok();
            }
            (2, _) => {
                let r = c
                    .post(
                        &path("metadata", "foo"),
                        &serde_json::json!({"requestMetadata": metadata("DescribeKey")}),
                    )
                    .await;
                r.expect_ok();
            }
            _ => {
                let r = c
                    .post(
                        &path("encrypt", "foo"),
                        &encrypt_body(b"legitimate", Some(b"aad"), false),
                    )
                    .await;
                last_encrypt = Some(r.expect_ok().clone());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_half_open_connections_does_not_starve_a_real_client() {
    let needed = (FLOOD + 500) as u64;
    assert!(
        nofile_limit() >= needed,
        "this test needs an open-file limit of at least {needed} (ulimit -n)"
    );
    let config = config_with_limits("max_connections = 8192\nmax_connections_per_peer = 1024");
    let keygate = KeygateProcess::start(&config, process::QUIET);
    let addr = keygate.addr;
    legitimate_client(addr).await;
    let baseline_kib = keygate.rss_kib();

    let flood = open_flood(addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicUsize::new(0));
    let loris = tokio::spawn(slow_loris(addr, stop.clone(), cut.clone()));
    legitimate_client(addr).await;
    let flooded_kib = keygate.rss_kib();
    // The slow-loris goes on until the 2 s header deadline has cut it at least once.
    wait_for(PATIENCE, "the slow-loris client cut off", || {
        cut.load(Ordering::Relaxed) >= 1
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    loris.await.unwrap();
    drop(flood);

    let peak_kib = keygate.peak_rss_kib().max(flooded_kib);
    eprintln!(
        "flood: {FLOOD} connections; RSS baseline {baseline_kib} KiB, flooded {flooded_kib} KiB, peak {peak_kib} KiB; slow-loris cut {} times",
        cut.load(Ordering::Relaxed)
    );
    assert!(
        peak_kib < baseline_kib + 96 * 1024,
        "RSS grew from {baseline_kib} KiB to a peak of {peak_kib} KiB"
    );
}
