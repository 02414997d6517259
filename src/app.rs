//! `App`: the composition root. Built once from a checked `Config`, it opens the key backend,
//! the policy engine and the decision log, wires them into the [`Authorizer`], the XKS
//! door's [`xks::Service`] and the KMS v2 door's [`kms_v2::Door`], and hands each part out as
//! a narrow handle. No globals.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BackendKind, Config, LimitSettings};
use crate::health::HealthMonitor;
use crate::keys::KeyBackend;
use crate::keys::software::SoftwareBackend;
use crate::metrics::backend::MeteredBackend;
use crate::metrics::{
    CredentialRecord, DigestTotals, LifecycleTotals, Metrics, SpaceTotals, UploadTotals,
};
use crate::policy::decision_log::settings::DigestKey;
use crate::policy::decision_log::{DecisionLog, DecisionLogConfig, DigestConfig};
use crate::policy::{Authorizer, PolicyEngine, PolicySet};
use crate::server::tls::{Refusals, TlsReloader};
use crate::signing::{DigestSigner, Ed25519FileKey};
use crate::{kms_v2, xks};

pub use crate::xks::keystore::{Keystore, Keystores};

/// How long the decision-log writer may take to write what is queued at shutdown.
const LOG_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The running proxy's parts.
#[derive(Debug)]
pub struct App {
    /// The XKS front door: key stores, limits, admission and the operations' handles.
    pub xks: Arc<xks::Service>,
    /// The key backend, metered.
    pub backend: Arc<dyn KeyBackend>,
    /// Set when the backend is the software one, so its key file can be followed.
    pub software: Option<Arc<SoftwareBackend>>,
    pub health: Arc<HealthMonitor>,
    pub metrics: Arc<Metrics>,
    /// Judges every key operation and records each decision.
    pub authorizer: Authorizer,
    /// The policy directory followed for hot reload (`None`: the embedded policy).
    pub policy_dir: Option<PathBuf>,
    /// HTTPS on the XKS listener (`None`: plain HTTP), reloadable.
    pub tls: Option<Arc<TlsReloader>>,
    /// The Kubernetes KMS v2 door, when `[kms_v2]` is configured.
    pub kms_v2: Option<Arc<kms_v2::Door>>,
}

impl App {
    /// Opens the key backend and prepares every key store. Binds no port.
    pub fn build(config: &Config) -> Result<App, String> {
        // Metrics first, so a backend can take its handles (e.g. `metrics.sessions_in_use()`).
        let metrics = Arc::new(Metrics::new(backend_name(&config.backend.kind)));
        metrics.set_credentials(&credential_records(config));
        let mut token_signer = None;
        let (backend, software): (Arc<dyn KeyBackend>, _) = match &config.backend.kind {
            BackendKind::Software { key_file } => {
                let b = Arc::new(SoftwareBackend::open(key_file)?);
                (b.clone(), Some(b))
            }
            BackendKind::Pkcs11(settings) => {
                let b = crate::keys::pkcs11::Pkcs11Backend::open(settings.clone())
                    .map_err(|e| e.to_string())?
                    .with_sessions_gauge(metrics.sessions_in_use());
                token_signer = token_digest_signer(config, &b)?;
                (Arc::new(b), None)
            }
            BackendKind::OpenBao(settings) => {
                let b = crate::keys::openbao::OpenBaoBackend::open(settings)?;
                (Arc::new(b), None)
            }
        };
        let backend: Arc<dyn KeyBackend> = Arc::new(MeteredBackend::new(backend, metrics.clone()));
        let health = Arc::new(
            HealthMonitor::new(
                backend.clone(),
                config.backend.health_key.clone(),
                config.server.fleet_size,
            )
            .with_metrics(metrics.clone()),
        );
        let tls = match &config.tls {
            Some(t) => {
                let m = metrics.clone();
                let reloader = TlsReloader::new(t.clone(), Refusals::new())
                    .map_err(|e| e.to_string())?
                    .observe_expiry(Box::new(move |at| m.set_certificate_not_after(at)));
                Some(Arc::new(reloader))
            }
            None => None,
        };
        let decision_log = open_decision_log(config, token_signer)?;
        let authorizer = Authorizer::new(build_policy(config)?, decision_log, metrics.clone());
        let handles = xks::Handles {
            keys: backend.clone(),
            authorizer: authorizer.clone(),
            health: health.clone(),
        };
        let kms_v2 = config.kms_v2.clone().map(|settings| {
            let handles = kms_v2::Handles {
                keys: backend.clone(),
                authorizer: authorizer.clone(),
                health: health.clone(),
            };
            let grace = config.limits.shutdown_grace;
            Arc::new(kms_v2::Door::new(settings, handles, metrics.clone(), grace))
        });
        let app = App {
            xks: Arc::new(xks::Service::new(config, handles, metrics.clone())),
            kms_v2,
            backend,
            software,
            health,
            metrics,
            authorizer,
            policy_dir: config.policy.dir.clone(),
            tls,
        };
        app.export_gauges();
        Ok(app)
    }

    /// Copies the decision log's, the TLS layer's and the key backend's state into the
    /// metrics at each scrape.
    fn export_gauges(&self) {
        if let Some(log) = self.authorizer.decision_log().cloned() {
            // The stats, not the Authorizer: it holds the metrics, which hold this sampler.
            let stats = self.authorizer.stats().clone();
            self.metrics.on_encode(move |m| {
                let counters = m.decision_log();
                // Lines first: every line written was judged before, so judged >= done.
                let (written, lost) = (log.written(), log.lost());
                let stats = stats.snapshot();
                counters.set_totals(written, lost);
                counters.set_failures(log.write_errors(), stats.log_refusals);
                counters.head_seq.set(saturating_i64(log.head().0));
                counters.enabled.set(1);
                counters.fail_closed.set(i64::from(log.fail_closed()));
                counters.writable.set(i64::from(log.writable()));
                let space = log.space();
                counters.set_space(SpaceTotals {
                    free_bytes: space.free_bytes,
                    size_bytes: space.total_bytes,
                    free_inodes: space.free_inodes,
                    threshold_bytes: space.threshold_bytes,
                    low_space: space.space as u8,
                    early_retention: space.early_retention_requests,
                });
                let judged = stats.allowed + stats.denied + stats.errors;
                let pending = judged.saturating_sub(written + lost);
                counters.pending.set(saturating_i64(pending));
                if let Some(u) = log.upload_stats() {
                    counters.set_upload(UploadTotals {
                        uploaded: u.uploaded(),
                        failed: u.failed_requests(),
                        dropped: u.dropped(),
                        buffer_bytes: u.buffer_bytes(),
                        shipped_seq: u.shipped_seq(),
                        failing: u.failing(),
                    });
                }
                let l = log.lifecycle_stats();
                counters.set_lifecycle(LifecycleTotals {
                    rotations: l.rotations(),
                    compressions: l.compressed(),
                    compression_failures: l.compress_failures(),
                    retention_deletions: l.deleted(),
                    retention_failures: l.delete_failures(),
                    retention_lines: l.retention_lines(),
                });
                if let Some(d) = log.digest_stats() {
                    counters.set_digests(DigestTotals {
                        written: d.written(),
                        failed: d.failed(),
                        digested_seq: d.digested_seq(),
                        last_unix: d.last_unix(),
                        interval_secs: d.interval_secs(),
                    });
                }
            });
        }
        // Weak: the metered backend holds the metrics, which hold this sampler.
        let backend = Arc::downgrade(&self.backend);
        self.metrics.on_encode(move |m| {
            if let Some(b) = backend.upgrade() {
                m.set_key_versions(&b.current_versions_created());
            }
        });
        if let Some(tls) = self.tls.clone() {
            self.metrics.on_encode(move |m| {
                let totals: Vec<_> = tls
                    .refusals()
                    .snapshot()
                    .into_iter()
                    .map(|(reason, count)| (reason.as_str(), count))
                    .collect();
                m.set_tls_refusals(&totals);
            });
        }
    }

    /// The current key stores.
    pub fn keystores(&self) -> arc_swap::Guard<Arc<Keystores>> {
        self.xks.keystores()
    }

    /// The limits in force (a reload may change them).
    pub fn limits(&self) -> LimitSettings {
        self.xks.limits()
    }

    /// Applies a reloaded configuration's key stores, credentials and limits at once.
    pub fn apply(&self, config: &Config) {
        self.xks.apply(config);
        self.metrics.set_credentials(&credential_records(config));
    }

    /// The last step of a shutdown, once every front door has drained: write every queued
    /// decision line and the shutdown checkpoint, and stop the writer.
    pub fn finish(&self) {
        if !self.authorizer.close(LOG_CLOSE_TIMEOUT) {
            tracing::error!(
                timeout_secs = LOG_CLOSE_TIMEOUT.as_secs(),
                "the decision log did not finish writing at shutdown"
            );
        }
        tracing::info!(in_flight = self.xks.in_flight(), "keygate finishing");
    }

    /// Names of configured keys the backend does not have (warned about at start).
    pub async fn missing_keys(&self) -> Vec<(String, String)> {
        let mut missing = Vec::new();
        for ks in self.keystores().iter() {
            for k in &ks.keys {
                if self.backend.key_info(k).await.is_err() {
                    missing.push((ks.name.clone(), k.clone()));
                }
            }
        }
        if let Some(door) = &self.kms_v2 {
            let s = door.settings();
            for k in std::iter::once(&s.key).chain(&s.previous_keys) {
                if self.backend.key_info(k).await.is_err() {
                    missing.push((s.name.clone(), k.clone()));
                }
            }
        }
        missing
    }

    /// Refreshes the health cache every [`crate::health::REFRESH_EVERY`] until the app is gone.
    pub fn spawn_health_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let health = Arc::downgrade(&self.health);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::health::REFRESH_EVERY);
            loop {
                tick.tick().await;
                let Some(health) = health.upgrade() else {
                    return;
                };
                health.refresh().await;
            }
        })
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The backend's name for build info, known before the backend is opened.
fn backend_name(kind: &BackendKind) -> &'static str {
    match kind {
        BackendKind::Software { .. } => "software",
        BackendKind::Pkcs11(_) => "pkcs11",
        BackendKind::OpenBao(_) => "openbao",
    }
}

/// The configured credentials, for the credential-age metric.
fn credential_records(config: &Config) -> Vec<CredentialRecord> {
    config
        .keystores
        .iter()
        .flat_map(|ks| {
            ks.credentials.iter().map(|(id, _)| CredentialRecord {
                keystore: ks.name.clone(),
                access_key_id: id.to_string(),
                created: ks.credential_created.get(id.as_str()).copied(),
            })
        })
        .collect()
}

/// The configured policy directory (checked and tested), or the embedded default policy.
fn build_policy(config: &Config) -> Result<PolicyEngine, String> {
    let set = match &config.policy.dir {
        Some(dir) => {
            PolicySet::from_dir(dir).map_err(|e| format!("policy {}: {e}", dir.display()))?
        }
        None => PolicySet::embedded().map_err(|e| format!("embedded policy: {e}"))?,
    };
    tracing::info!(
        origin = set.origin(),
        revision = set.revision(),
        "policy loaded"
    );
    Ok(PolicyEngine::new(set, config.policy.eval_timeout))
}

/// The digest signer in the PKCS#11 token, when `[decision_log.digest]` names a key label.
fn token_digest_signer(
    config: &Config,
    backend: &crate::keys::pkcs11::Pkcs11Backend,
) -> Result<Option<Arc<dyn DigestSigner>>, String> {
    let label = config
        .decision_log
        .as_ref()
        .and_then(|d| d.digest.as_ref())
        .and_then(|d| match &d.key {
            DigestKey::Pkcs11Label(label) => Some(label),
            DigestKey::File(_) => None,
        });
    let Some(label) = label else {
        return Ok(None);
    };
    let signer = backend
        .digest_signer(label)
        .map_err(|e| format!("decision_log.digest.pkcs11_key_label {label:?}: {e}"))?;
    tracing::info!(label, fingerprint = %signer.public_key().fingerprint(), algorithm = signer.public_key().algorithm().as_str(), "decision log digests are signed in the PKCS#11 token");
    Ok(Some(Arc::new(signer)))
}

/// Opens the decision log, its digests signed by the key file or by `token_signer`.
fn open_decision_log(
    config: &Config,
    token_signer: Option<Arc<dyn DigestSigner>>,
) -> Result<Option<DecisionLog>, String> {
    let Some(s) = &config.decision_log else {
        return Ok(None);
    };
    let mut c = DecisionLogConfig::new(s.path.clone());
    c.fail_closed = s.fail_closed;
    c.rotate_bytes = s.rotate_bytes.or(c.rotate_bytes);
    c.rotate_interval = s.rotate_interval.or(c.rotate_interval);
    c.queue_capacity = s.queue_lines;
    c.space = s.space;
    c.lifecycle = s.lifecycle;
    c.upload = s.upload.clone();
    if let Some(m) = &s.mask {
        let masking = crate::policy::decision_log::mask::Masking::new(m)
            .map_err(|e| format!("decision_log.mask.hmac_key_file: {e}"))?;
        c.mask = Some(Arc::new(masking));
    }
    if let Some(d) = &s.digest {
        let signer: Arc<dyn DigestSigner> = match (&d.key, token_signer) {
            (DigestKey::File(path), _) => Arc::new(
                Ed25519FileKey::read(path)
                    .map_err(|e| format!("decision_log.digest.key_file: {e}"))?,
            ),
            (DigestKey::Pkcs11Label(_), Some(signer)) => signer,
            (DigestKey::Pkcs11Label(label), None) => {
                return Err(format!(
                    "decision_log.digest.pkcs11_key_label {label:?} needs the pkcs11 backend"
                ));
            }
        };
        c.digest = Some(DigestConfig {
            dir: d.dir.clone(),
            interval: d.interval,
            signer,
        });
    }
    DecisionLog::open(c).map(Some).map_err(|e| e.to_string())
}
