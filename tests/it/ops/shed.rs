//! Load shedding against the real server: a key store's rate limit answers 429 to what
//! exceeds it while other key stores are unaffected, and the in-flight cap answers 429 while
//! a request holds the only slot, then admits again. (The admitted rate against the
//! configured one is measured in `benches/wall_clock.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_sheds_what_exceeds_the_configured_rate() {
    let s = TestServer::start(&config_with(&[(
        "name = \"main\"\n",
        "name = \"main\"\nrate_limit_rps = 20\nburst = 5\n",
    )]))
    .await;
    let (ok, throttled, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    // Deliberate: four clients send as fast as they can for this long.
    let window = Duration::from_millis(2000);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (addr, ok, throttled, other) = (s.addr, ok.clone(), throttled.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while started.elapsed() < window {
                let r = c.post(&health_path(), &health_body()).await;
                match (r.status, r.error_name()) {
                    (200, _) => ok.fetch_add(1, Ordering::Relaxed),
                    (429, "ThrottlingException") => throttled.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // A key store without a limit is not throttled meanwhile.
    let mut root = Client::connect(s.addr).await;
    let root_signing = Signing::with(ROOT_AK, ROOT_SECRET);
    for _ in 0..10 {
        root.post_signed("/kms/xks/v1/health", &health_body(), &root_signing)
            .await
            .expect_ok();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, throttled) = (
        ok.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
    );
    assert_eq!(other.load(Ordering::Relaxed), 0);
    // The burst of 5 is admitted; beyond it the bucket refills at 20/s, so a fast client can
    // never get more than 5 + 20/s over the window (a slow one only gets fewer).
    assert!(ok >= 5, "{ok} admitted: the burst was refused");
    let most = 5.0 + 20.0 * elapsed + 1.0;
    assert!(
        (ok as f64) <= most,
        "{ok} admitted in {elapsed:.2} s, more than the bucket holds ({most:.0})"
    );
    assert!(throttled > 0, "the flood was not shed");
    let m = s.metrics();
    assert_eq!(
        metric(
            &m,
            "keygate_requests_shed_total{keystore=\"main\",reason=\"rate_limit\"}"
        ),
        throttled as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_answers_429_until_a_slot_frees() {
    let s = TestServer::start(&config_with_limits("max_in_flight = 1")).await;
    let slow = RawRequest::new(
        s.addr,
        &path("encrypt", "foo"),
        &encrypt_body(b"slow", None, false),
        &Signing::default(),
    );
    let mut held = slow.send_partial(s.addr, 10).await;
    s.wait_in_flight(1).await;

    let mut c = Client::connect(s.addr).await;
    c.post(&health_path(), &health_body())
        .await
        .expect_error(429, "ThrottlingException");

    let (status, body) = slow.finish(&mut held, 10).await;
    assert_eq!(status, 200, "{body}");
    s.wait_in_flight(0).await;
    // The throttled connection stayed usable and is admitted now.
    c.post(&health_path(), &health_body()).await.expect_ok();
    let m = s.metrics();
    assert_eq!(
        metric(
            &m,
            "keygate_requests_shed_total{keystore=\"main\",reason=\"in_flight\"}"
        ),
        1.0
    );
}
