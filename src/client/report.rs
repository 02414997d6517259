//! Reports: conformance results (lines, summary, JSON) and load results (latency percentiles).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

/// How one case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Passed,
    /// It failed (why: `expected X got Y`).
    Failed(String),
    /// It was not run (why).
    Skipped(String),
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Outcome.
    pub verdict: Verdict,
}

/// All case results of one run.
#[derive(Clone, Debug, Default)]
pub struct ConformanceReport {
    /// In run order; the case the run stopped at is not among them.
    pub results: Vec<CaseResult>,
    /// Set when the run stopped because the proxy could not be reached.
    pub stopped: Option<Stopped>,
}

/// Where and why a conformance run stopped early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot reach the proxy, stopped at case {case} ({not_run} of {total} cases not run): {reason}"
)]
pub struct Stopped {
    /// The case that found the proxy unreachable.
    pub case: String,
    /// Cases not run, that one included.
    pub not_run: usize,
    /// Cases in the suite.
    pub total: usize,
    /// The transport error.
    pub reason: String,
}

impl ConformanceReport {
    fn count(&self, f: fn(&Verdict) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.verdict)).count()
    }

    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Passed))
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Failed(_)))
    }

    /// Cases not run.
    pub fn skipped(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Skipped(_)))
    }

    /// The summary line: `N passed, M failed` (plus `, K skipped` when cases were not run).
    pub fn summary(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            let _ = write!(line, ", {} skipped", self.skipped());
        }
        line
    }

    /// A line per case, then the summary line; nothing when the run stopped before any case
    /// finished (the caller reports why).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.results.is_empty() && self.stopped.is_some() {
            return out;
        }
        for r in &self.results {
            let _ = match &r.verdict {
                Verdict::Passed => writeln!(out, "PASS {}", r.name),
                Verdict::Failed(why) => writeln!(out, "FAIL {}: {why}", r.name),
                Verdict::Skipped(why) => writeln!(out, "SKIP {}: {why}", r.name),
            };
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// The machine-readable report.
    pub fn to_json(&self) -> String {
        let cases: Vec<_> = self
            .results
            .iter()
            .map(|r| match &r.verdict {
                Verdict::Passed => json!({"name": r.name, "result": "pass"}),
                Verdict::Failed(why) => json!({"name": r.name, "result": "fail", "detail": why}),
                Verdict::Skipped(why) => json!({"name": r.name, "result": "skip", "detail": why}),
            })
            .collect();
        json!({
            "passed": self.passed(), "failed": self.failed(), "skipped": self.skipped(),
            "summary": self.summary(), "cases": cases,
            "stopped": self.stopped.as_ref().map(ToString::to_string),
        })
        .to_string()
    }
}

/// The result of one load run.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Operation driven.
    pub op: String,
    /// Connections used.
    pub connections: usize,
    /// Requested open-loop rate (requests/s), if any.
    pub target_rate: Option<f64>,
    /// Measured wall time in seconds.
    pub seconds: f64,
    /// Responses received (any status).
    pub requests: u64,
    /// Requests sent before the run to prepare it (decrypt encrypts its ciphertext first);
    /// not in `requests` or the latencies, but judged and logged by the server all the same.
    pub setup_requests: u64,
    /// 200 responses.
    pub ok: u64,
    /// Responses per second.
    pub throughput: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Errors by errorName (or transport error kind).
    pub errors: BTreeMap<String, u64>,
    /// Objective: p99 below this many milliseconds.
    pub slo_p99_ms: f64,
    /// Whether the objective held.
    pub slo_passed: bool,
}

/// What a load run measured, before it becomes a report.
#[derive(Debug)]
pub struct LoadTotals {
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// 200 responses.
    pub ok: u64,
    /// Errors by name.
    pub errors: BTreeMap<String, u64>,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn ms(us: u64) -> f64 {
    // Microsecond counts fit f64 exactly far beyond any run length.
    (us as f64) / 1000.0
}

impl LoadReport {
    /// Builds the report; the objective fails when p99 >= `slo_p99_ms` or nothing succeeded.
    pub fn new(
        op: &str,
        connections: usize,
        rate: Option<f64>,
        slo_p99_ms: f64,
        t: &LoadTotals,
    ) -> Self {
        let h = &t.latency_us;
        let requests = h.len();
        let p99_ms = ms(h.value_at_quantile(0.99));
        Self {
            op: op.to_owned(),
            connections,
            target_rate: rate,
            seconds: t.seconds,
            requests,
            setup_requests: 0,
            ok: t.ok,
            throughput: if t.seconds > 0.0 {
                requests as f64 / t.seconds
            } else {
                0.0
            },
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms,
            max_ms: ms(h.max()),
            errors: t.errors.clone(),
            slo_p99_ms,
            slo_passed: t.ok > 0 && p99_ms < slo_p99_ms,
        }
    }

    /// Total errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "op {} | {} connections | {:.1} s | {} requests ({} ok){}",
            self.op,
            self.connections,
            self.seconds,
            self.requests,
            self.ok,
            match self.setup_requests {
                0 => String::new(),
                n => format!(" after {n} setup request(s)"),
            }
        );
        let _ = writeln!(out, "throughput {:.0} requests/s", self.throughput);
        let _ = writeln!(
            out,
            "latency ms: p50 {:.3} | p90 {:.3} | p99 {:.3} | max {:.3}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        );
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        }
        for (name, n) in &self.errors {
            let _ = writeln!(out, "errors: {name} {n}");
        }
        let verdict = if self.slo_passed { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "objective p99 < {} ms: {verdict} (p99 {:.3} ms)",
            self.slo_p99_ms, self.p99_ms
        );
        out
    }

    /// Machine-readable report: `errors` is the total, `errors_by_name` the breakdown.
    pub fn to_json(&self) -> String {
        json!({
            "op": self.op, "connections": self.connections, "target_rate": self.target_rate,
            "seconds": self.seconds, "requests": self.requests,
            "setup_requests": self.setup_requests, "ok": self.ok,
            "throughput": self.throughput,
            "latency_ms": {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "max": self.max_ms},
            "errors": self.error_count(), "errors_by_name": self.errors,
            "slo_p99_ms": self.slo_p99_ms, "slo_passed": self.slo_passed,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ConformanceReport {
        let r = |name: &str, verdict| CaseResult {
            name: name.into(),
            verdict,
        };
        ConformanceReport {
            results: vec![
                r("health.ok", Verdict::Passed),
                r(
                    "auth.wrong-secret",
                    Verdict::Failed("expected 401 AuthenticationFailedException got 200".into()),
                ),
                r(
                    "usage.no-usage.encrypt",
                    Verdict::Skipped("--no-usage-key-id not given".into()),
                ),
            ],
            stopped: None,
        }
    }

    #[test]
    fn a_stop_before_any_result_prints_no_lines() {
        let stopped = ConformanceReport {
            results: Vec::new(),
            stopped: Some(Stopped {
                case: "health.ok".into(),
                not_run: 67,
                total: 67,
                reason: "connect to 127.0.0.1:9: Connection refused".into(),
            }),
        };
        assert_eq!(stopped.to_text(), "");
        let v: serde_json::Value = serde_json::from_str(&stopped.to_json()).unwrap();
        assert_eq!(
            v["stopped"],
            "cannot reach the proxy, stopped at case health.ok (67 of 67 cases not run): \
             connect to 127.0.0.1:9: Connection refused"
        );
        assert!(report().to_json().contains("\"stopped\":null"));
    }

    #[test]
    fn text_lines_and_summary() {
        let text = report().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PASS health.ok");
        assert_eq!(
            lines[1],
            "FAIL auth.wrong-secret: expected 401 AuthenticationFailedException got 200"
        );
        assert_eq!(
            lines[2],
            "SKIP usage.no-usage.encrypt: --no-usage-key-id not given"
        );
        assert_eq!(lines[3], "1 passed, 1 failed, 1 skipped");
        let mut all_run = report();
        all_run.results.pop();
        assert_eq!(all_run.summary(), "1 passed, 1 failed");
    }

    #[test]
    fn json_report() {
        let v: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        assert_eq!(v["failed"], 1);
        assert_eq!(v["skipped"], 1);
        assert_eq!(v["cases"][1]["result"], "fail");
        assert_eq!(
            v["cases"][1]["detail"],
            "expected 401 AuthenticationFailedException got 200"
        );
    }

    fn totals(latencies_us: &[u64], errors: &[(&str, u64)]) -> LoadTotals {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &l in latencies_us {
            h.record(l).unwrap();
        }
        LoadTotals {
            latency_us: h,
            ok: latencies_us.len() as u64,
            errors: errors.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect(),
            seconds: 2.0,
        }
    }

    #[test]
    fn load_percentiles_and_objective() {
        let lat: Vec<u64> = (1..=1000).map(|i| i * 100).collect(); // 0.1 ms .. 100 ms
        let r = LoadReport::new("encrypt", 16, None, 250.0, &totals(&lat, &[]));
        assert_eq!(r.requests, 1000);
        assert!((r.throughput - 500.0).abs() < 1e-9);
        assert!((r.p50_ms - 50.0).abs() < 0.1, "{}", r.p50_ms);
        assert!((r.p99_ms - 99.0).abs() < 0.1, "{}", r.p99_ms);
        assert!((r.max_ms - 100.0).abs() < 0.1, "{}", r.max_ms);
        assert!(r.slo_passed);
        let strict = LoadReport::new("encrypt", 16, None, 50.0, &totals(&lat, &[]));
        assert!(!strict.slo_passed);
        assert!(strict.to_text().contains("objective p99 < 50 ms: FAIL"));
    }

    #[test]
    fn load_errors_are_listed() {
        let r = LoadReport::new(
            "decrypt",
            1,
            Some(100.0),
            250.0,
            &totals(&[500], &[("ThrottlingException", 3)]),
        );
        assert_eq!(r.error_count(), 3);
        assert!(r.to_text().contains("errors: ThrottlingException 3"));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["errors"], 3);
        assert_eq!(v["errors_by_name"]["ThrottlingException"], 3);
        assert_eq!(v["latency_ms"]["p99"], r.p99_ms);
        assert_eq!(v["target_rate"], 100.0);
    }
}
