//! `App`: everything a request needs (key stores, key backend, health, limits), built once
//! from a checked `Config` and shared as `Arc<App>`. No globals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{BackendKind, Config, KeystoreSettings, LimitSettings};
use crate::health::HealthMonitor;
use crate::keys::KeyBackend;
use crate::keys::software::SoftwareBackend;
use crate::metrics::backend::MeteredBackend;
use crate::metrics::{CredentialRecord, Metrics};
use crate::policy::decision_log::{DecisionLog, DecisionLogConfig};
use crate::policy::reload::DirWatch;
use crate::policy::{PolicyEngine, PolicySet, PolicyStats};
use crate::server::tls::{Refusals, TlsReloader};
use crate::shed::{InFlight, InFlightGuard, RateLimiter, Shed};
use crate::sigv4::Credential;
use crate::xks::api;

/// One logical key store, ready to serve.
#[derive(Debug)]
pub struct Keystore {
    pub name: String,
    pub uri_prefix: String,
    pub region: String,
    pub keys: HashSet<String>,
    pub credentials: Vec<Credential>,
    /// The key store's request-rate limit, when configured.
    pub limiter: Option<Arc<RateLimiter>>,
}

impl Keystore {
    /// Builds a key store; a rate limiter with the same limit is carried over from
    /// `previous` so a reload does not refill its bucket.
    fn from_settings(s: &KeystoreSettings, previous: Option<&Keystore>) -> Self {
        let limiter = s.rate_limit.map(|limit| {
            previous
                .and_then(|p| p.limiter.clone())
                .filter(|l| l.limit() == limit)
                .unwrap_or_else(|| Arc::new(RateLimiter::new(limit)))
        });
        Keystore {
            limiter,
            name: s.name.clone(),
            uri_prefix: s.uri_prefix.clone(),
            region: s.region.clone(),
            keys: s.keys.iter().cloned().collect(),
            credentials: s
                .credentials
                .iter()
                .map(|(id, secret)| Credential::new(id.clone(), secret.clone()))
                .collect(),
        }
    }
}

/// The key stores by URI path prefix.
#[derive(Debug, Default)]
pub struct Keystores {
    by_prefix: HashMap<String, Arc<Keystore>>,
}

impl Keystores {
    pub fn from_config(config: &Config) -> Self {
        Self::from_config_after(config, &Keystores::default())
    }

    /// The key stores of `config`, keeping rate-limiter state from `previous` by name.
    pub fn from_config_after(config: &Config, previous: &Keystores) -> Self {
        let by_prefix = config
            .keystores
            .iter()
            .map(|s| {
                let prev = previous.iter().find(|p| p.name == s.name);
                let ks = Keystore::from_settings(s, prev.map(|p| p.as_ref()));
                (s.uri_prefix.clone(), Arc::new(ks))
            })
            .collect();
        Keystores { by_prefix }
    }

    pub fn by_prefix(&self, prefix: &str) -> Option<&Arc<Keystore>> {
        self.by_prefix.get(prefix)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Keystore>> {
        self.by_prefix.values()
    }
}

/// The running proxy's state.
#[derive(Debug)]
pub struct App {
    keystores: ArcSwap<Keystores>,
    pub backend: Arc<dyn KeyBackend>,
    /// Set when the backend is the software one, so its key file can be followed.
    software: Option<Arc<SoftwareBackend>>,
    pub health: HealthMonitor,
    limits: ArcSwap<LimitSettings>,
    pub metrics: Arc<Metrics>,
    in_flight: InFlight,
    /// Secondary authorization of Encrypt, Decrypt and GetKeyMetadata.
    pub policy: PolicyEngine,
    /// The policy directory followed for hot reload (`None`: the embedded policy).
    pub policy_dir: Option<std::path::PathBuf>,
    pub policy_stats: PolicyStats,
    /// One hash-chained line per judged request, when configured.
    pub decision_log: Option<DecisionLog>,
    /// HTTPS on the XKS listener (`None`: plain HTTP), reloadable.
    pub tls: Option<Arc<TlsReloader>>,
}

impl App {
    /// Opens the key backend and prepares every key store. Binds no port.
    pub fn build(config: &Config) -> Result<App, String> {
        // Metrics first, so a backend can take its handles (e.g. `metrics.sessions_in_use()`).
        let metrics = Arc::new(Metrics::new(backend_name(&config.backend.kind)));
        metrics.set_credentials(&credential_records(config));
        let (backend, software): (Arc<dyn KeyBackend>, _) = match &config.backend.kind {
            BackendKind::Software { key_file } => {
                let b = Arc::new(SoftwareBackend::open(key_file)?);
                (b.clone(), Some(b))
            }
            BackendKind::Pkcs11(settings) => {
                let b = crate::keys::pkcs11::Pkcs11Backend::open(settings.clone())
                    .map_err(|e| e.to_string())?
                    .with_sessions_gauge(metrics.sessions_in_use());
                (Arc::new(b), None)
            }
        };
        let backend: Arc<dyn KeyBackend> = Arc::new(MeteredBackend::new(backend, metrics.clone()));
        let health = HealthMonitor::new(
            backend.clone(),
            config.backend.health_key.clone(),
            config.server.fleet_size,
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
        let app = App {
            keystores: ArcSwap::from_pointee(Keystores::from_config(config)),
            backend,
            software,
            health,
            limits: ArcSwap::from_pointee(config.limits),
            in_flight: InFlight::new(metrics.in_flight()),
            metrics,
            policy: build_policy(config)?,
            policy_dir: config.policy.dir.clone(),
            policy_stats: PolicyStats::default(),
            decision_log: open_decision_log(config)?,
            tls,
        };
        if let Some(log) = app.decision_log.clone() {
            app.metrics.on_encode(move |m| {
                let counters = m.decision_log();
                counters.set_totals(log.written(), log.lost());
                counters
                    .head_seq
                    .set(i64::try_from(log.head().0).unwrap_or(i64::MAX));
            });
        }
        if let Some(tls) = app.tls.clone() {
            app.metrics.on_encode(move |m| {
                let totals: Vec<_> = tls
                    .refusals()
                    .snapshot()
                    .into_iter()
                    .map(|(reason, count)| (reason.as_str(), count))
                    .collect();
                m.set_tls_refusals(&totals);
            });
        }
        Ok(app)
    }

    /// The current key stores.
    pub fn keystores(&self) -> arc_swap::Guard<Arc<Keystores>> {
        self.keystores.load()
    }

    /// The limits in force (a reload may change them).
    pub fn limits(&self) -> LimitSettings {
        **self.limits.load()
    }

    /// Limits applied while decoding request bodies.
    pub fn api_limits(&self) -> api::Limits {
        let limits = self.limits();
        api::Limits {
            max_plaintext: limits.max_plaintext,
            max_aad: limits.max_aad,
        }
    }

    /// Applies a reloaded configuration's key stores, credentials and limits at once.
    /// Requests already routed keep the key store they started with.
    pub fn apply(&self, config: &Config) {
        let keystores = Keystores::from_config_after(config, &self.keystores());
        self.keystores.store(Arc::new(keystores));
        self.limits.store(Arc::new(config.limits));
        self.metrics.set_credentials(&credential_records(config));
    }

    /// Admits a routed request, or says why it is shed: the global in-flight cap first,
    /// then the key store's rate limit. Runs before SigV4 and before the backend.
    pub fn admit(&self, keystore: &Keystore) -> Result<InFlightGuard, Shed> {
        let cap = self.limits().max_in_flight;
        let guard = self
            .in_flight
            .try_enter(cap)
            .ok_or(Shed::InFlight { cap })?;
        match &keystore.limiter {
            Some(l) if !l.try_acquire() => Err(Shed::RateLimit { limit: l.limit() }),
            _ => Ok(guard),
        }
    }

    /// Work after the listener has drained and before the process exits (flushing logs).
    pub async fn finish(&self) {
        tracing::info!(in_flight = self.in_flight.current(), "keygate finishing");
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
        missing
    }

    /// Background work: refresh the health cache, follow the software key file and the policy
    /// directory (polled every 2 s, and on SIGHUP).
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = Arc::downgrade(self);
        let mut policy_watch = self.policy_dir.as_deref().map(DirWatch::new);
        tokio::spawn(async move {
            let mut health_tick = tokio::time::interval(crate::health::REFRESH_EVERY);
            let mut keys_tick = tokio::time::interval(std::time::Duration::from_secs(2));
            let mut policy_tick = tokio::time::interval(std::time::Duration::from_secs(2));
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let sighup = async |h: &mut Option<tokio::signal::unix::Signal>| match h {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            };
            loop {
                tokio::select! {
                    _ = policy_tick.tick() => {
                        let Some(app) = app.upgrade() else { return };
                        if policy_watch.as_mut().is_some_and(DirWatch::changed) {
                            app.reload_policy().await;
                        }
                    }
                    _ = sighup(&mut hangup) => {
                        let Some(app) = app.upgrade() else { return };
                        tracing::info!("SIGHUP: reloading the policy");
                        app.reload_policy().await;
                    }
                    _ = health_tick.tick() => {
                        let Some(app) = app.upgrade() else { return };
                        app.health.refresh().await;
                    }
                    _ = keys_tick.tick() => {
                        let Some(app) = app.upgrade() else { return };
                        app.follow_key_file();
                    }
                }
            }
        })
    }

    /// Reload the policy directory (compiled and tested off the async threads); a policy that
    /// fails stays out and the one in force stays.
    pub async fn reload_policy(self: &Arc<Self>) {
        let Some(dir) = self.policy_dir.clone() else {
            return;
        };
        let app = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            crate::policy::reload::reload_dir(&app.policy, &dir)
        })
        .await;
        if !matches!(outcome, Ok(Ok(_))) {
            self.policy_stats.count_reload_failure();
        }
    }

    fn follow_key_file(&self) {
        let Some(sw) = &self.software else { return };
        match sw.reload_if_changed() {
            Ok(true) => tracing::info!(file = %sw.path().display(), "key file reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "key file changed but cannot be loaded; the previous keys stay in force")
            }
        }
    }
}

/// The backend's name for build info, known before the backend is opened.
fn backend_name(kind: &BackendKind) -> &'static str {
    match kind {
        BackendKind::Software { .. } => "software",
        BackendKind::Pkcs11(_) => "pkcs11",
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

fn open_decision_log(config: &Config) -> Result<Option<DecisionLog>, String> {
    let Some(s) = &config.decision_log else {
        return Ok(None);
    };
    let mut c = DecisionLogConfig::new(s.path.clone());
    c.fail_closed = s.fail_closed;
    c.rotate_bytes = s.rotate_bytes;
    c.rotate_interval = s.rotate_interval;
    DecisionLog::open(c).map(Some).map_err(|e| e.to_string())
}
