//! Wall-clock measurements against the real binary, printed as a table of ratios from one
//! run. The integration tests assert what these bounds protect (every request served, the
//! excess shed, the connection cut); how fast or how close to the configured value is
//! measured here.
//!
//! - flood: a client's latency (fresh connections every 100 requests; encrypt, decrypt,
//!   metadata) while 5,000 idle and half-open connections and a slow-loris client are held
//!   against the server, over the same client's latency without them.
//! - rate limit: what a key store limited to 20/s (burst 5) admits under four flooding
//!   clients, over what the limit allows in that time.
//! - timeouts: when the idle timeout, the header read deadline, the TLS handshake timeout
//!   and the client's own timeouts fire, over their configured values.
//!
//! `cargo bench --bench wall_clock` runs it in full; `cargo test --benches` (and so
//! `scripts/test.sh`) runs a small version to keep it working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keygate::client::conn::{Connector, Target};
use keygate::client::sign::{Secret, Signer};
use keygate::client::tls::TlsOptions;
use keygate::client::wire::{self, Op};
use keygate::keys::software::SoftwareAdmin;
use keygate::keys::{KeyAdmin, KeyUsage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const AK: &str = "BETWEEN2TENAND3TENCHARACTERS";
const SECRET: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";
const PREFIX: &str = "/bench";

/// How much of everything a run does.
struct Size {
    flood: usize,
    requests: usize,
    rate_window: Duration,
}

const FULL: Size = Size {
    flood: 5_000,
    requests: 1_000,
    rate_window: Duration::from_secs(2),
};

/// `cargo test --benches`: only show that every measurement still runs.
const SMOKE: Size = Size {
    flood: 200,
    requests: 60,
    rate_window: Duration::from_millis(500),
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        rows.extend(flood(&size).await);
        rows.push(rate_limit(&size).await);
        rows.extend(server_timeouts().await);
        rows.extend(client_timeouts().await);
    });
    println!(
        "\nkeygate wall clock ({}, {} CPUs, load on the same machine)\n",
        if full { "full run" } else { "smoke run" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| measurement | reference | measured | measured / reference |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} {unit} | {:.2} {unit} | {:.2} |",
            r.what,
            r.reference,
            r.measured,
            r.measured / r.reference,
            unit = r.unit
        );
    }
}

struct Row {
    what: String,
    unit: &'static str,
    reference: f64,
    measured: f64,
}

fn row(what: impl Into<String>, unit: &'static str, reference: f64, measured: f64) -> Row {
    Row {
        what: what.into(),
        unit,
        reference,
        measured,
    }
}

/// `keygate serve` in a fresh dir: key store `bench` (prefix /bench, key `foo`) with
/// `keystore` lines, `limits` lines in `[limits]`, and `extra` tables.
struct Keygate {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Keygate {
    fn start(limits: &str, keystore: &str, extra: &str) -> Keygate {
        let dir = tempfile::tempdir().unwrap();
        let mut admin = SoftwareAdmin::open(&dir.path().join("keys.json")).unwrap();
        for id in ["foo", "keygate-health"] {
            admin.create(id, KeyUsage::BOTH).unwrap();
        }
        let config = dir.path().join("keygate.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
[limits]
{limits}
[backend]
kind = "software"
health_key = "keygate-health"
[backend.software]
key_file = "keys.json"
[[keystore]]
name = "bench"
uri_prefix = "{PREFIX}"
keys = ["foo"]
{keystore}
[[keystore.credential]]
access_key_id = "{AK}"
secret = "{SECRET}"
{extra}"#
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn,keygate::serve=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("keygate exited").unwrap();
            if line.contains("keygate listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Keygate {
            addr,
            child,
            _dir: dir,
        }
    }

    fn connector(&self) -> Connector {
        let target = Target::parse(&format!("http://{}", self.addr), PREFIX).unwrap();
        Connector::new(target, &TlsOptions::default()).unwrap()
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signer() -> Signer {
    Signer::new(AK.into(), Secret::new(SECRET.into()), "us-east-1".into())
}

async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Latencies of `n` requests (encrypt, decrypt, metadata in turn) on fresh connections every
/// 100 requests; every one must succeed.
async fn client_latencies(keygate: &Keygate, n: usize) -> Vec<Duration> {
    let connector = keygate.connector();
    let target = connector.target().clone();
    let signer = signer();
    let mut conn = None;
    let mut sealed = None;
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        if i % 100 == 0 {
            conn = Some(connector.connect().await.unwrap());
        }
        let (op, body) = match (i % 3, &sealed) {
            (1, Some(s)) => (Op::Decrypt, wire::decrypt_body(s, Some(b"aad"))),
            (2, _) => (Op::Metadata, wire::metadata_body()),
            _ => (
                Op::Encrypt,
                wire::encrypt_body(b"legitimate", Some(b"aad"), false),
            ),
        };
        let path = op.path(&target, "foo");
        let req = wire::post(&target, &signer, &path, wire::to_bytes(&body)).unwrap();
        let reply = conn.as_mut().unwrap().send(req).await.unwrap();
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        if op == Op::Encrypt {
            sealed = Some(wire::Sealed::parse(&reply.body, b"legitimate".len()).unwrap());
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Half the flood only connects, half sends part of a request head; from five addresses.
async fn open_flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(250) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&i| {
                tokio::spawn(async move {
                    let mut s = connect_from([127, 0, 1, (i % 5) as u8 + 1], addr)
                        .await
                        .unwrap();
                    if i % 2 == 1 {
                        let _ = s
                            .write_all(b"POST /kms/xks/v1/health HTTP/1.1\r\nhost: x\r\n")
                            .await;
                    }
                    s
                })
            })
            .collect();
        for t in tasks {
            held.push(t.await.unwrap());
        }
    }
    held
}

/// Sends a request head a byte every 100 ms, reconnecting when cut off; records how long
/// each connection lasted.
async fn slow_loris(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    lasted: Arc<std::sync::Mutex<Vec<Duration>>>,
) {
    let head = b"POST /bench/kms/xks/v1/health HTTP/1.1\r\nhost: x\r\nx-slow: ";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_from([127, 0, 0, 3], addr).await else {
            continue;
        };
        let opened = Instant::now();
        for b in head.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if s.write_all(&[*b]).await.is_err() {
                lasted.lock().unwrap().push(opened.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The open-file limit of this process (the flood holds one descriptor per connection).
fn nofile_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

async fn flood(size: &Size) -> Vec<Row> {
    let n = size.flood.min(nofile_limit().saturating_sub(500));
    let keygate = Keygate::start(
        "max_connections = 8192\nmax_connections_per_peer = 2048\nheader_read_timeout_ms = 2000",
        "",
        "",
    );
    client_latencies(&keygate, size.requests / 10).await; // warm-up
    let quiet = client_latencies(&keygate, size.requests).await;
    let flood = open_flood(keygate.addr, n).await;
    let stop = Arc::new(AtomicBool::new(false));
    let lasted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let loris = tokio::spawn(slow_loris(keygate.addr, stop.clone(), lasted.clone()));
    let flooded = client_latencies(&keygate, size.requests).await;
    // The slow-loris runs until the header deadline has cut it once.
    let cut_by = Instant::now() + Duration::from_secs(10);
    while lasted.lock().unwrap().is_empty() && Instant::now() < cut_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    loris.await.unwrap();
    drop(flood);
    let mut rows = vec![
        row(
            format!("client p50 under a flood of {n} connections"),
            "ms",
            percentile(&quiet, 0.5),
            percentile(&flooded, 0.5),
        ),
        row(
            format!("client p99 under a flood of {n} connections"),
            "ms",
            percentile(&quiet, 0.99),
            percentile(&flooded, 0.99),
        ),
    ];
    if let Some(first) = lasted.lock().unwrap().first() {
        rows.push(row(
            "slow-loris cut by header_read_timeout_ms",
            "ms",
            2000.0,
            first.as_secs_f64() * 1000.0,
        ));
    }
    rows
}

async fn rate_limit(size: &Size) -> Row {
    let keygate = Keygate::start("", "rate_limit_rps = 20\nburst = 5", "");
    let admitted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let connector = keygate.connector();
        let (admitted, window) = (admitted.clone(), size.rate_window);
        tasks.push(tokio::spawn(async move {
            let target = connector.target().clone();
            let signer = signer();
            let mut conn = connector.connect().await.unwrap();
            let path = Op::Health.path(&target, "");
            while started.elapsed() < window {
                let body = wire::to_bytes(&wire::health_body());
                let req = wire::post(&target, &signer, &path, body).unwrap();
                let reply = conn.send(req).await.unwrap();
                if reply.status == 200 {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    row(
        format!("admitted by rate_limit_rps = 20, burst = 5 in {elapsed:.1} s"),
        "requests",
        5.0 + 20.0 * elapsed,
        admitted.load(Ordering::Relaxed) as f64,
    )
}

/// How long until the server closes `s` (read to its end).
async fn until_closed(mut s: TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut sink)).await;
    started.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn server_timeouts() -> Vec<Row> {
    let keygate = Keygate::start("idle_timeout_secs = 1", "", "");
    let idle = until_closed(TcpStream::connect(keygate.addr).await.unwrap()).await;
    drop(keygate);

    let certs = tempfile::tempdir().unwrap();
    let set = keygate::dev::certs::write_dev_set(certs.path(), &Default::default()).unwrap();
    let tls = format!(
        "[tls]\ncert_chain = {:?}\nkey = {:?}\n",
        set.server.cert, set.server.key
    );
    let keygate = Keygate::start(
        "handshake_timeout_ms = 300\nidle_timeout_secs = 60",
        "",
        &tls,
    );
    let handshake = until_closed(TcpStream::connect(keygate.addr).await.unwrap()).await;
    vec![
        row(
            "idle connection closed (idle_timeout_secs = 1)",
            "ms",
            1000.0,
            ms(idle),
        ),
        row(
            "silent TLS connection cut (handshake_timeout_ms = 300)",
            "ms",
            300.0,
            ms(handshake),
        ),
    ]
}

/// A listener that accepts connections and never sends a byte.
async fn silent_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

async fn client_timeouts() -> Vec<Row> {
    let limit = Duration::from_millis(300);
    let addr = silent_listener().await;
    let target = Target::parse(&format!("http://{addr}"), "").unwrap();
    let connector = Connector::new(target, &TlsOptions::default())
        .unwrap()
        .with_timeout(limit);
    let mut conn = connector.connect().await.unwrap();
    let req = wire::post(
        connector.target(),
        &signer(),
        "/kms/xks/v1/health",
        bytes::Bytes::new(),
    )
    .unwrap();
    let started = Instant::now();
    conn.send(req).await.unwrap_err();
    let response = started.elapsed();

    let certs = tempfile::tempdir().unwrap();
    let set = keygate::dev::certs::write_dev_set(certs.path(), &Default::default()).unwrap();
    let opts = TlsOptions {
        cacert: Some(set.ca.cert.clone()),
        ..TlsOptions::default()
    };
    let target = Target::parse(&format!("https://localhost:{}", addr.port()), "").unwrap();
    let connector = Connector::new(target, &opts).unwrap().with_timeout(limit);
    let started = Instant::now();
    connector.connect().await.unwrap_err();
    let handshake = started.elapsed();
    vec![
        row(
            "client: no response (--timeout 300ms)",
            "ms",
            ms(limit),
            ms(response),
        ),
        row(
            "client: no TLS handshake (--timeout 300ms)",
            "ms",
            ms(limit),
            ms(handshake),
        ),
    ]
}
