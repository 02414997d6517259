//! Criterion benchmarks of what operations add to every request: recording its metrics,
//! the rate-limit token and the in-flight slot, and encoding the metrics text.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::metrics::{Metrics, RequestRecord};
use keygate::shed::{InFlight, RateLimit, RateLimiter};

fn record(c: &mut Criterion) {
    let m = Metrics::new("software");
    c.bench_function("metrics record_request", |b| {
        b.iter(|| {
            m.record_request(RequestRecord {
                operation: "Encrypt",
                keystore: "payments",
                error_name: "",
                access_key_id: Some("BETWEEN2TENAND3TENCHARACTERS"),
                latency: Duration::from_micros(250),
            })
        })
    });
    c.bench_function("metrics record_backend", |b| {
        b.iter(|| m.record_backend("encrypt", Duration::from_micros(40), None))
    });
    c.bench_function("metrics encode", |b| b.iter(|| m.encode().len()));
}

fn shed(c: &mut Criterion) {
    let limiter = RateLimiter::new(RateLimit {
        rps: u32::MAX,
        burst: u32::MAX,
    });
    c.bench_function("rate limiter try_acquire", |b| {
        b.iter(|| limiter.try_acquire())
    });
    let in_flight = InFlight::new(Default::default());
    c.bench_function("in-flight enter+leave", |b| {
        b.iter(|| in_flight.try_enter(1024).is_some())
    });
}

criterion_group!(benches, record, shed);
criterion_main!(benches);
