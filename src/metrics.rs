//! Prometheus metrics: one registry per `App` (no globals), the handles other parts update,
//! and `encode` for the admin listener's `/metrics`.
//!
//! Handles for other parts of keygate (each is cheap to clone and shares the registry's
//! value, so a backend or the policy engine can keep its own copy):
//!
//! - [`Metrics::sessions_in_use`]: gauge the PKCS#11 backend sets (or `inc`/`dec`s).
//! - [`Metrics::set_certificate_not_after`]: the TLS layer calls it on every certificate
//!   (re)load; days to expiry are computed at each scrape, so the gauge never goes stale.
//! - [`Metrics::decision_log`]: counters of decision-log lines written and lost; or keep
//!   your own totals and copy them in at scrape time with [`Metrics::on_encode`] and
//!   [`DecisionLogCounters::set_totals`].
//! - [`Metrics::policy_decision`]: one call per policy evaluation (allow or deny).
//! - [`Metrics::set_tls_refusals`]: totals of mTLS client certificates refused, by reason
//!   (copied in at scrape time from the TLS layer's counters).
//! - [`Metrics::record_sigv4_refusal`], [`Metrics::record_policy_refusal`]: unauthorized
//!   requests by stage and reason (`metrics/unauthorized.rs`).
//! - [`Metrics::set_backend_health`], [`Metrics::set_key_versions`]: the key backend's
//!   instances by health status and its keys' version ages (`metrics/keys.rs`).
//! - [`Metrics::on_encode`]: a function run before every scrape, to sample values kept
//!   elsewhere.
//!
//! Families live in `metrics/*.rs` once they are more than a counter: credential ages,
//! the decision log, unauthorized requests, the key backend's state.
//! The KMS v2 door's calls, latency and refused connections: [`Metrics::kms_v2`].

mod audit;
pub mod backend;
mod credentials;
mod keys;
pub mod kms_v2;
mod unauthorized;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use audit::{DecisionLogCounters, DigestTotals, LifecycleTotals, SpaceTotals, UploadTotals};
pub use credentials::CredentialRecord;
pub use unauthorized::PolicyRefusal;

/// The Content-Type of [`Metrics::encode`]'s output (OpenMetrics text, ending in `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets (seconds): 50 µs to 1 s, resolving sub-millisecond HSM and software
/// operations and placing KMS's 250 ms deadline on a bucket boundary.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2,
    0.25, 0.5, 1.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    keystore: String,
    outcome: String,
    error_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendErrorLabels {
    operation: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccessKeyLabels {
    keystore: String,
    access_key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    keystore: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    keystore: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

/// What one served request contributes to the metrics.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// The XKS operation (`Encrypt`...), empty when the path matched nothing.
    pub operation: &'a str,
    pub keystore: &'a str,
    /// The spec's errorName, empty on success.
    pub error_name: &'a str,
    /// The SigV4 access key id that authenticated the request, if it got that far.
    pub access_key_id: Option<&'a str>,
    pub latency: Duration,
}

/// A function run before each scrape.
struct Sampler(Box<dyn Fn(&Metrics) + Send + Sync>);

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampler")
    }
}

/// All of keygate's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<OperationLabel>,
    by_access_key: Family<AccessKeyLabels, Counter>,
    backend_latency: HistogramFamily<OperationLabel>,
    backend_errors: Family<BackendErrorLabels, Counter>,
    sessions_in_use: Gauge,
    decision_log: DecisionLogCounters,
    policy: Family<PolicyLabels, Counter>,
    credentials: credentials::CredentialAges,
    unauthorized: unauthorized::Unauthorized,
    keys: keys::KeyState,
    cert_expiry_days: Gauge<f64, AtomicU64>,
    cert_not_after_ts: Family<ListenerLabel, Gauge>,
    cert_not_after: Mutex<Option<SystemTime>>,
    samplers: Mutex<Vec<Sampler>>,
    in_flight: Gauge,
    shed: Family<ShedLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    tls_refusals: Family<ReasonLabel, Counter>,
    connections_refused: Family<ReasonLabel, Counter>,
    kms_v2: kms_v2::KmsV2Metrics,
}

impl Metrics {
    /// A fresh registry. `backend` is the key backend's kind, reported in build info.
    pub fn new(backend: &str) -> Metrics {
        let mut registry = Registry::with_prefix("keygate");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            by_access_key: Family::default(),
            backend_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            backend_errors: Family::default(),
            sessions_in_use: Gauge::default(),
            decision_log: DecisionLogCounters::default(),
            policy: Family::default(),
            credentials: credentials::CredentialAges::default(),
            unauthorized: unauthorized::Unauthorized::default(),
            keys: keys::KeyState::default(),
            cert_expiry_days: Gauge::default(),
            cert_not_after_ts: Family::default(),
            cert_not_after: Mutex::new(None),
            samplers: Mutex::new(Vec::new()),
            in_flight: Gauge::default(),
            shed: Family::default(),
            reloads: Family::default(),
            tls_refusals: Family::default(),
            connections_refused: Family::default(),
            kms_v2: kms_v2::KmsV2Metrics::default(),
            registry: Registry::default(),
        };
        m.register(&mut registry, backend);
        for reason in ["connection_limit", "per_peer_limit"] {
            let _exported_from_zero = m.connections_refused.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            });
        }
        for r in ["applied", "refused"] {
            let _exported_from_zero = m.reloads.get_or_create(&result(r));
        }
        Metrics { registry, ..m }
    }

    fn register(&self, r: &mut Registry, backend: &str) {
        r.register(
            "requests",
            "XKS requests by operation, key store, outcome (ok|error) and errorName",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "XKS request latency from routing to response, by operation (KMS gives up at 0.25 s)",
            self.latency.clone(),
        );
        r.register(
            "requests_by_access_key",
            "Authenticated XKS requests by key store and SigV4 access key id (watch an old credential stop arriving)",
            self.by_access_key.clone(),
        );
        r.register(
            "backend_operation_duration_seconds",
            "Key backend call latency by operation (key_info, encrypt, decrypt, health)",
            self.backend_latency.clone(),
        );
        r.register(
            "backend_errors",
            "Key backend calls that failed, by operation and error kind",
            self.backend_errors.clone(),
        );
        r.register(
            "backend_sessions_in_use",
            "PKCS#11 sessions currently lent out by the backend's session pool",
            self.sessions_in_use.clone(),
        );
        self.decision_log.register(r);
        self.unauthorized.register(r);
        self.keys.register(r);
        r.register(
            "policy_decisions",
            "Policy decisions by key store and decision (allow|deny)",
            self.policy.clone(),
        );
        self.credentials.register(r);
        r.register(
            "tls_certificate_expiry_days",
            "Days until the XKS listener's server certificate expires (negative once expired; 0 until TLS is configured)",
            self.cert_expiry_days.clone(),
        );
        r.register(
            "tls_certificate_not_after_timestamp_seconds",
            "When the server certificate of each TLS listener expires, Unix time (no series for a listener without TLS)",
            self.cert_not_after_ts.clone(),
        );
        r.register(
            "in_flight_requests",
            "XKS requests admitted and not yet answered",
            self.in_flight.clone(),
        );
        r.register(
            "requests_shed",
            "Requests answered 429 ThrottlingException, by key store and reason (in_flight: keygate's in-flight cap, before authentication; rate_limit: the key store's rate limit, charged only to authenticated requests)",
            self.shed.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result (applied|refused)",
            self.reloads.clone(),
        );
        r.register(
            "tls_client_certificate_refusals",
            "mTLS client certificates refused during the handshake, by reason (no_certificate|expired|not_yet_valid|self_signed|unknown_ca|wrong_name|revoked|invalid)",
            self.tls_refusals.clone(),
        );
        r.register(
            "connections_refused",
            "XKS connections closed at accept, by reason (connection_limit|per_peer_limit)",
            self.connections_refused.clone(),
        );
        self.kms_v2.register(r);
        r.register(
            "build",
            "keygate build information",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("backend", backend.to_owned()),
            ]),
        );
    }

    /// Counts one served request.
    pub fn record_request(&self, r: RequestRecord<'_>) {
        let outcome = if r.error_name.is_empty() {
            "ok"
        } else {
            "error"
        };
        self.requests
            .get_or_create(&RequestLabels {
                operation: r.operation.to_owned(),
                keystore: r.keystore.to_owned(),
                outcome: outcome.to_owned(),
                error_name: r.error_name.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabel {
                operation: r.operation.to_owned(),
            })
            .observe(r.latency.as_secs_f64());
        if let Some(ak) = r.access_key_id {
            self.by_access_key
                .get_or_create(&AccessKeyLabels {
                    keystore: r.keystore.to_owned(),
                    access_key_id: ak.to_owned(),
                })
                .inc();
        }
    }

    /// Times one key backend call; `error` names the failure kind.
    pub fn record_backend(&self, operation: &str, latency: Duration, error: Option<&str>) {
        let op = OperationLabel {
            operation: operation.to_owned(),
        };
        self.backend_latency
            .get_or_create(&op)
            .observe(latency.as_secs_f64());
        if let Some(error) = error {
            self.backend_errors
                .get_or_create(&BackendErrorLabels {
                    operation: op.operation,
                    error: error.to_owned(),
                })
                .inc();
        }
    }

    /// Counts a request shed before authentication.
    pub fn record_shed(&self, keystore: &str, reason: &str) {
        self.shed
            .get_or_create(&ShedLabels {
                keystore: keystore.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a configuration reload that was applied (`true`) or refused.
    pub fn record_reload(&self, applied: bool) {
        let r = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&result(r)).inc();
    }

    /// Counts one policy decision (for the policy engine).
    pub fn policy_decision(&self, keystore: &str, allow: bool) {
        self.policy
            .get_or_create(&PolicyLabels {
                keystore: keystore.to_owned(),
                decision: if allow { "allow" } else { "deny" }.to_owned(),
            })
            .inc();
    }

    /// Counts a request whose SigV4 verification failed (`reason` from `SigV4Error::reason`).
    pub fn record_sigv4_refusal(&self, reason: &'static str) {
        self.unauthorized.sigv4(reason);
    }

    /// Counts a request the policy refused (denied, or could not be evaluated).
    pub fn record_policy_refusal(&self, refusal: PolicyRefusal) {
        self.unauthorized.policy(refusal);
    }

    /// Records one deep health check of the key backend: its instances by status.
    pub fn set_backend_health(&self, instances: &[crate::keys::EkmInstance]) {
        self.keys.set_health(instances);
    }

    /// Replaces the creation times of the keys' current versions (call from `on_encode`).
    pub fn set_key_versions(&self, created: &[(String, SystemTime)]) {
        self.keys.set_versions(created);
    }

    /// The decision-log counters (clone them into the decision-log writer).
    pub fn decision_log(&self) -> DecisionLogCounters {
        self.decision_log.clone()
    }

    /// The sessions-in-use gauge (clone it into the PKCS#11 session pool).
    pub fn sessions_in_use(&self) -> Gauge {
        self.sessions_in_use.clone()
    }

    /// Records the server certificate's expiry (`None`: no TLS). The days-to-expiry gauge
    /// is computed from it at every scrape.
    pub fn set_certificate_not_after(&self, not_after: Option<SystemTime>) {
        if let Ok(mut n) = self.cert_not_after.lock() {
            *n = not_after;
        }
    }

    /// Sets the totals of refused client certificates, one `(reason, count)` per reason (for
    /// the TLS layer's own counters; call from `on_encode`).
    pub fn set_tls_refusals(&self, totals: &[(&str, u64)]) {
        for (reason, count) in totals {
            self.tls_refusals
                .get_or_create(&ReasonLabel {
                    reason: (*reason).to_owned(),
                })
                .inner()
                .store(*count, Ordering::Relaxed);
        }
    }

    /// Counts one XKS connection refused at accept (`connection_limit` or `per_peer_limit`).
    pub fn record_connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Runs `f` before every scrape, e.g. to copy totals kept elsewhere into handles.
    /// `f` must not call `on_encode` or `encode`.
    pub fn on_encode(&self, f: impl Fn(&Metrics) + Send + Sync + 'static) {
        if let Ok(mut s) = self.samplers.lock() {
            s.push(Sampler(Box::new(f)));
        }
    }

    /// The KMS v2 door's metrics.
    pub fn kms_v2(&self) -> &kms_v2::KmsV2Metrics {
        &self.kms_v2
    }

    /// The in-flight requests gauge (the load shedder keeps it current).
    pub fn in_flight(&self) -> Gauge {
        self.in_flight.clone()
    }

    /// Replaces the set of configured credentials. One that stays keeps its age; a new one
    /// without `created` starts at zero now; a removed one disappears from the output.
    pub fn set_credentials(&self, creds: &[CredentialRecord]) {
        self.credentials.set(creds);
    }

    /// The text exposition format (OpenMetrics), for `GET /metrics`.
    pub fn encode(&self) -> String {
        // Held throughout, so concurrent scrapes do not see each other's half-refreshed values.
        let samplers = self.samplers.lock();
        if let Ok(samplers) = &samplers {
            samplers.iter().for_each(|s| (s.0)(self));
        }
        self.credentials.refresh();
        self.refresh_certificate_expiry();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        drop(samplers);
        out
    }

    fn refresh_certificate_expiry(&self) {
        let Ok(not_after) = self.cert_not_after.lock() else {
            return;
        };
        let days = not_after.map_or(0.0, |t| match t.duration_since(SystemTime::now()) {
            Ok(left) => left.as_secs_f64() / 86_400.0,
            Err(past) => -past.duration().as_secs_f64() / 86_400.0,
        });
        self.cert_expiry_days.set(days);
        match *not_after {
            Some(t) => {
                let xks = ListenerLabel { listener: "xks" };
                self.cert_not_after_ts
                    .get_or_create(&xks)
                    .set(keys::unix_seconds(t));
            }
            None => self.cert_not_after_ts.clear(),
        }
    }
}

fn result(r: &str) -> ResultLabel {
    ResultLabel {
        result: r.to_owned(),
    }
}

#[cfg(test)]
mod tests;
