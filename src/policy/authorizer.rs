//! The one way to judge a request and record the decision: [`Authorizer::judge`] evaluates
//! the policy and opens a [`Judgement`]; [`Judgement::record`] closes it with the outcome
//! the front door answered and writes the decision line. A judgement dropped unrecorded (the
//! request was cancelled, the connection cut at shutdown) still writes its line, marked
//! `RequestAbandoned`: a decision that was made is a decision that was recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::decision_log::{DecisionLog, DecisionLogError, DecisionRecord, Requester};
use super::{Decision, PolicyEngine, PolicyError, PolicyInput, PolicyStats};
use crate::metrics::{Metrics, PolicyRefusal};

/// The error name recorded for a judged request that never got an answer.
pub const ABANDONED: &str = "RequestAbandoned";

/// Policy engine, outcome counters and decision log, shared by every front door.
#[derive(Debug, Clone)]
pub struct Authorizer {
    engine: PolicyEngine,
    stats: Arc<PolicyStats>,
    decision_log: Option<DecisionLog>,
    metrics: Arc<Metrics>,
    /// Judgements opened so far: the next one's `req_id` is this plus one.
    judged: Arc<AtomicU64>,
}

/// What the policy said, as a front door acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the key operation.
    Allow,
    /// The policy denied the request, with its `deny` reasons (possibly none).
    Deny(Vec<String>),
    /// The policy could not be evaluated: refuse (fail closed).
    Failed(String),
    /// The policy allowed, but the decision log cannot be written and `fail_closed` is set,
    /// or cannot be shipped and `require_upload` is set.
    LogUnavailable,
}

/// An open judgement: the verdict, and the decision line still to be written.
#[derive(Debug)]
#[must_use = "a judgement is closed with Judgement::record"]
pub struct Judgement {
    verdict: Verdict,
    record: Option<DecisionRecord>,
    log: Option<DecisionLog>,
    stats: Arc<PolicyStats>,
}

/// The decision line of a successful request could not be written in fail-closed mode:
/// the front door must refuse the request.
#[derive(Debug, thiserror::Error)]
#[error("the decision log cannot be written and fail_closed is set; request refused")]
pub struct LogRefused(#[source] pub DecisionLogError);

impl Authorizer {
    /// Judges with `engine`, counting into `metrics`, logging to `decision_log` when any.
    pub fn new(
        engine: PolicyEngine,
        decision_log: Option<DecisionLog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            stats: Arc::new(PolicyStats::default()),
            decision_log,
            metrics,
            judged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The policy engine (its revision, origin and reloads).
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// Outcome counters (shared: clone the `Arc` to read them later).
    pub fn stats(&self) -> &Arc<PolicyStats> {
        &self.stats
    }

    /// The decision log, when one is configured.
    pub fn decision_log(&self) -> Option<&DecisionLog> {
        self.decision_log.as_ref()
    }

    /// Evaluates the policy on `input` and opens the judgement of the request; the decision
    /// line's `requested_by` is the input's `source_ip`.
    pub fn judge(&self, input: &PolicyInput<'_>) -> Judgement {
        self.judge_from(input, None)
    }

    /// As [`Authorizer::judge`], for a caller connected from `peer` (`requested_by` is then
    /// `ip:port`, as OPA logs its clients).
    pub fn judge_from(&self, input: &PolicyInput<'_>, peer: Option<SocketAddr>) -> Judgement {
        let req_id = self.judged.fetch_add(1, Ordering::Relaxed) + 1;
        let prepared = input.to_value();
        let outcome = self.engine.evaluate_prepared(&prepared);
        self.stats.count(&outcome);
        self.metrics
            .policy_decision(input.keystore, matches!(&outcome, Ok(d) if d.allow));
        let record = self.decision_log.as_ref().map(|log| {
            let revision = self.engine.revision();
            DecisionRecord::new(
                input,
                &prepared,
                &outcome,
                &revision,
                Requester { peer, req_id },
                log.masking(),
            )
        });
        let verdict = self.verdict(outcome, input.keystore);
        Judgement {
            verdict,
            record,
            log: self.decision_log.clone(),
            stats: self.stats.clone(),
        }
    }

    fn verdict(&self, outcome: Result<Decision, PolicyError>, keystore: &str) -> Verdict {
        match outcome {
            Ok(d) if d.allow => {
                if self
                    .decision_log
                    .as_ref()
                    .is_some_and(DecisionLog::refuses_requests)
                {
                    self.stats.count_log_refusal();
                    Verdict::LogUnavailable
                } else {
                    Verdict::Allow
                }
            }
            Ok(d) => {
                self.metrics.record_policy_refusal(PolicyRefusal::Denied);
                Verdict::Deny(d.reasons)
            }
            Err(e) => {
                self.metrics
                    .record_policy_refusal(PolicyRefusal::EvaluationFailed);
                tracing::error!(error = %e, keystore, "policy evaluation failed; request refused");
                Verdict::Failed(e.to_string())
            }
        }
    }

    /// Writes every queued decision line, the shutdown checkpoint, and stops the writer.
    /// Called once the front doors have drained; `false` if the writer did not finish in
    /// `timeout`.
    pub fn close(&self, timeout: Duration) -> bool {
        self.decision_log.as_ref().is_none_or(|l| l.close(timeout))
    }
}

impl Judgement {
    /// What the front door must do.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Closes the judgement with the answer the front door gives: `None` for a success, or
    /// the error's name (the XKS errorName, the gRPC status). `Err` means a success must be
    /// turned into a refusal: its line cannot be written and the log is fail-closed.
    pub fn record(mut self, error_name: Option<&str>) -> Result<(), LogRefused> {
        self.write(error_name, None)
    }

    /// As [`Judgement::record`], naming the error the front door answers when the log
    /// refuses a success: the line then carries `refused_as`, so it says what the caller got.
    pub fn record_or(
        mut self,
        error_name: Option<&str>,
        refused_as: &str,
    ) -> Result<(), LogRefused> {
        self.write(error_name, Some(refused_as))
    }

    fn write(
        &mut self,
        error_name: Option<&str>,
        refused_as: Option<&str>,
    ) -> Result<(), LogRefused> {
        let (Some(mut record), Some(log)) = (self.record.take(), self.log.as_ref()) else {
            return Ok(());
        };
        record.error_name = error_name.map(str::to_owned);
        let refused_as = refused_as.filter(|_| error_name.is_none());
        match log.record_as(record, refused_as) {
            Err(e) if error_name.is_none() => {
                self.stats.count_log_refusal();
                tracing::error!(error = %e, "decision log refused the line; request refused (fail_closed)");
                Err(LogRefused(e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Judgement {
    fn drop(&mut self) {
        if self.record.is_some() {
            let _ = self.write(Some(ABANDONED), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::decision_log::DecisionLogConfig;
    use crate::policy::{PolicyFile, PolicySet};

    const DENY_BOB: &str = "package keygate\n\
        allow if not input.access_key_id == \"BOB\"\n\
        deny contains \"bob may not\" if input.access_key_id == \"BOB\"\n";

    fn authorizer(log: &std::path::Path, fail_closed: bool) -> Authorizer {
        let files = vec![PolicyFile {
            name: "p.rego".into(),
            text: DENY_BOB.into(),
        }];
        let set = PolicySet::checked("test", files).unwrap();
        let engine = PolicyEngine::new(set, super::super::DEFAULT_EVAL_TIMEOUT);
        let mut c = DecisionLogConfig::new(log.to_owned());
        c.fail_closed = fail_closed;
        c.retry_interval = Duration::from_millis(20);
        let log = DecisionLog::open(c).unwrap();
        Authorizer::new(engine, Some(log), Arc::new(Metrics::new("software")))
    }

    fn input<'a>(
        ak: &'a str,
        metadata: &'a serde_json::Map<String, serde_json::Value>,
    ) -> PolicyInput<'a> {
        PolicyInput {
            interface: crate::policy::Interface::Xks,
            operation: "Encrypt",
            keystore: "main",
            uri_prefix: "/p",
            key_id: "foo",
            request_metadata: metadata,
            access_key_id: Some(ak),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            client_subject: None,
            time: std::time::SystemTime::now(),
            aad_length: 0,
            request_uid: None,
            peer: None,
        }
    }

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_judgement_writes_one_line_even_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let a = authorizer(&path, false);
        let md = serde_json::Map::new();
        let allowed = a.judge(&input("ALICE", &md));
        assert_eq!(allowed.verdict(), &Verdict::Allow);
        allowed.record(None).unwrap();
        let denied = a.judge(&input("BOB", &md));
        assert_eq!(denied.verdict(), &Verdict::Deny(vec!["bob may not".into()]));
        denied.record(Some("AccessDeniedException")).unwrap();
        drop(a.judge(&input("ALICE", &md)));
        assert!(a.close(Duration::from_secs(5)));
        let got = lines(&path);
        let names: Vec<_> = got.iter().map(|l| l["error_name"].clone()).collect();
        assert_eq!(
            names,
            [
                serde_json::Value::Null,
                "AccessDeniedException".into(),
                ABANDONED.into()
            ]
        );
        assert_eq!(a.stats().snapshot().allowed, 2);
        assert_eq!(a.stats().snapshot().denied, 1);
    }

    #[test]
    fn fail_closed_refuses_a_success_whose_line_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let a = authorizer(&logs.join("d.log"), true);
        let log = a.decision_log().unwrap().clone();
        let md = serde_json::Map::new();
        a.judge(&input("ALICE", &md)).record(None).unwrap();
        // On disk before the directory goes (with it).
        assert!(log.flush(Duration::from_secs(5)));
        // Judged while the log was fine, answered after it broke.
        let in_flight = a.judge(&input("ALICE", &md));
        std::fs::remove_dir_all(&logs).unwrap();
        a.judge(&input("ALICE", &md)).record(Some("X")).unwrap();
        assert!(log.flush(Duration::from_secs(5)));
        assert!(!log.writable());
        assert!(in_flight.record_or(None, "Refused").is_err());
        assert_eq!(
            a.judge(&input("ALICE", &md)).verdict(),
            &Verdict::LogUnavailable
        );
        assert!(a.stats().snapshot().log_refusals >= 2);
        std::fs::create_dir(&logs).unwrap();
        assert!(a.close(Duration::from_secs(5)));
        // The refused request's line says it was refused, as its caller was told.
        let names: Vec<serde_json::Value> = lines(&logs.join("d.log"))
            .iter()
            .map(|l| l["error_name"].clone())
            .collect();
        // (The judgement dropped unrecorded above is the third.)
        assert_eq!(
            names,
            [
                serde_json::Value::from("X"),
                "Refused".into(),
                ABANDONED.into()
            ],
            "{names:?}"
        );
    }
}
