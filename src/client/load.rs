//! `keygate load`: a SigV4 load generator over keep-alive connections, with latency percentiles.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::time::Instant;

use super::ConnArgs;
use super::conn::{ConnError, Connection, Connector};
use super::expect;
use super::report::{LoadReport, LoadTotals};
use super::sign::Signer;
use super::wire::{self, Op, Sealed};

/// Flags of `keygate load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Connection and credentials.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Operation to drive.
    #[arg(long, value_enum)]
    pub op: Op,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub connections: u16,
    /// How long to run, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open-loop total request rate per second, spread over the connections (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Plaintext size for encrypt (and for the ciphertext decrypt reuses).
    #[arg(long, default_value_t = 32)]
    pub plaintext_bytes: usize,
    /// Key to use for metadata, encrypt and decrypt.
    #[arg(long, default_value = "foo")]
    pub key_id: String,
    /// Latency objective: p99 must stay below this many milliseconds.
    #[arg(long, default_value_t = 250.0)]
    pub slo_p99_ms: f64,
    /// Print a machine-readable JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {text:?}: {e}"))
}

/// Everything the workers share.
#[derive(Debug)]
struct Plan {
    connector: Connector,
    signer: Signer,
    path: String,
    op: Op,
    template: Value,
    start: Instant,
    deadline: Instant,
    interval: Option<Duration>,
    responses: AtomicU64,
    errors: AtomicU64,
    /// The first connection failure, printed once so a run of ConnectErrors says why.
    first_connect_error: std::sync::OnceLock<String>,
}

impl Plan {
    /// A fresh body: the template with a new `requestMetadata` (new kmsRequestId).
    fn body(&self) -> bytes::Bytes {
        let mut body = self.template.clone();
        let kms_op = match self.op {
            Op::Health => "KmsHealthCheck",
            Op::Metadata => "CreateKey",
            Op::Encrypt => "Encrypt",
            Op::Decrypt => "Decrypt",
        };
        wire::set(
            &mut body,
            "requestMetadata",
            wire::request_metadata(self.op, kms_op),
        );
        wire::to_bytes(&body)
    }
}

struct WorkerTotals {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// One connection's loop: send, measure, repeat until the deadline.
async fn worker(plan: Arc<Plan>, index: u32, connections: u32) -> anyhow::Result<WorkerTotals> {
    let mut totals = WorkerTotals {
        latency_us: histogram()?,
        ok: 0,
        errors: BTreeMap::new(),
    };
    let mut conn: Option<Connection> = None;
    let start = plan.start;
    let offset = plan.interval.map(|i| i / connections * index);
    let mut sent: u32 = 0;
    loop {
        let scheduled = match (plan.interval, offset) {
            (Some(interval), Some(offset)) => {
                let at = start + offset + interval * sent;
                tokio::time::sleep_until(at).await;
                at
            }
            _ => Instant::now(),
        };
        if scheduled >= plan.deadline {
            break;
        }
        sent = sent.saturating_add(1);
        let mut c = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => match plan.connector.connect().await {
                Ok(c) => c,
                Err(e) => {
                    let why = format!("{e:#}");
                    if plan.first_connect_error.set(why.clone()).is_ok() {
                        eprintln!("keygate load: cannot connect: {why}");
                    }
                    record_error(&plan, &mut totals, "ConnectError");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let req = wire::post(
            plan.connector.target(),
            &plan.signer,
            &plan.path,
            plan.body(),
        )?;
        // The connection bounds the exchange (`--timeout`, 10 s by default).
        match c.send(req).await {
            Ok(reply) => {
                let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                totals.latency_us.saturating_record(us.max(1));
                plan.responses.fetch_add(1, Ordering::Relaxed);
                conn = Some(c);
                if reply.status == http::StatusCode::OK {
                    totals.ok += 1;
                } else {
                    record_error(&plan, &mut totals, &expect::describe(&reply));
                }
            }
            Err(ConnError::TimedOut { .. }) => record_error(&plan, &mut totals, "Timeout"),
            Err(_) => record_error(&plan, &mut totals, "TransportError"),
        }
    }
    Ok(totals)
}

fn record_error(plan: &Plan, totals: &mut WorkerTotals, name: &str) {
    plan.errors.fetch_add(1, Ordering::Relaxed);
    *totals.errors.entry(name.to_owned()).or_default() += 1;
}

/// The body every request starts from; decrypt first encrypts one ciphertext to reuse.
async fn template(
    args: &LoadArgs,
    connector: &Connector,
    signer: &Signer,
) -> anyhow::Result<Value> {
    let mut plaintext = vec![0u8; args.plaintext_bytes];
    getrandom::fill(&mut plaintext).map_err(|e| anyhow::anyhow!("random bytes: {e}"))?;
    let aad = b"keygate-load";
    Ok(match args.op {
        Op::Health => wire::health_body(),
        Op::Metadata => wire::metadata_body(),
        Op::Encrypt => wire::encrypt_body(&plaintext, Some(aad), false),
        Op::Decrypt => {
            let mut conn = connector.connect().await?;
            let body = wire::to_bytes(&wire::encrypt_body(&plaintext, Some(aad), false));
            let path = Op::Encrypt.path(connector.target(), &args.key_id);
            let reply = conn
                .send(wire::post(connector.target(), signer, &path, body)?)
                .await?;
            expect::ok_json(&reply).map_err(|e| anyhow::anyhow!("preparing decrypt: {e}"))?;
            let sealed = Sealed::parse(&reply.body, plaintext.len()).map_err(anyhow::Error::msg)?;
            wire::decrypt_body(&sealed, Some(aad))
        }
    })
}

/// Prints progress to stderr once a second until aborted.
async fn progress(plan: Arc<Plan>) {
    let start = Instant::now();
    let mut last = 0u64;
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = plan.responses.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4}s] {now} responses, {}/s, {} errors",
            start.elapsed().as_secs(),
            now.saturating_sub(last),
            plan.errors.load(Ordering::Relaxed)
        );
        last = now;
    }
}

/// `keygate load`: exit 0 when the latency objective held and no request failed.
pub async fn run_load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let connector = args.conn.connector()?;
    let signer = args.conn.signer();
    let template = template(&args, &connector, &signer).await?;
    let connections = u32::from(args.connections);
    let interval = match args.rate {
        Some(r) if r > 0.0 && r.is_finite() => {
            Some(Duration::try_from_secs_f64(f64::from(connections) / r)?)
        }
        Some(r) => anyhow::bail!("--rate must be a positive number, got {r}"),
        None => None,
    };
    let start = Instant::now();
    let plan = Arc::new(Plan {
        path: args.op.path(connector.target(), &args.key_id),
        connector,
        signer,
        op: args.op,
        template,
        start,
        deadline: start + args.duration,
        interval,
        responses: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_connect_error: std::sync::OnceLock::new(),
    });
    let reporter = tokio::spawn(progress(plan.clone()));
    let workers: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(worker(plan.clone(), i, connections)))
        .collect();
    let mut totals = LoadTotals {
        latency_us: histogram()?,
        ok: 0,
        errors: BTreeMap::new(),
        seconds: 0.0,
    };
    for w in workers {
        let t = w.await??;
        totals.latency_us.add(&t.latency_us)?;
        totals.ok += t.ok;
        for (name, n) in t.errors {
            *totals.errors.entry(name).or_default() += n;
        }
    }
    totals.seconds = start.elapsed().as_secs_f64();
    reporter.abort();
    let op = serde_json::to_value(args.op)?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut report = LoadReport::new(
        &op,
        usize::from(args.connections),
        args.rate,
        args.slo_p99_ms,
        &totals,
    );
    report.setup_requests = u64::from(matches!(args.op, Op::Decrypt));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.slo_passed && report.error_count() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
