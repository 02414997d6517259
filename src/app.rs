//! `App`: everything a request needs (key stores, key backend, health, limits), built once
//! from a checked `Config` and shared as `Arc<App>`. No globals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{BackendKind, Config, KeystoreSettings, LimitSettings};
use crate::health::HealthMonitor;
use crate::keys::KeyBackend;
use crate::keys::software::SoftwareBackend;
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
}

impl Keystore {
    fn from_settings(s: &KeystoreSettings) -> Self {
        Keystore {
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
        let by_prefix = config
            .keystores
            .iter()
            .map(|s| (s.uri_prefix.clone(), Arc::new(Keystore::from_settings(s))))
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
    pub limits: LimitSettings,
}

impl App {
    /// Opens the key backend and prepares every key store. Binds no port.
    pub fn build(config: &Config) -> Result<App, String> {
        let (backend, software): (Arc<dyn KeyBackend>, _) = match &config.backend.kind {
            BackendKind::Software { key_file } => {
                let b = Arc::new(SoftwareBackend::open(key_file)?);
                (b.clone(), Some(b))
            }
        };
        let health = HealthMonitor::new(
            backend.clone(),
            config.backend.health_key.clone(),
            config.server.fleet_size,
        );
        let app = App {
            keystores: ArcSwap::from_pointee(Keystores::from_config(config)),
            backend,
            software,
            health,
            limits: config.limits,
        };
        Ok(app)
    }

    /// The current key stores.
    pub fn keystores(&self) -> arc_swap::Guard<Arc<Keystores>> {
        self.keystores.load()
    }

    /// Limits applied while decoding request bodies.
    pub fn api_limits(&self) -> api::Limits {
        api::Limits {
            max_plaintext: self.limits.max_plaintext,
            max_aad: self.limits.max_aad,
        }
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

    /// Background work: refresh the health cache and follow the software key file.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut health_tick = tokio::time::interval(crate::health::REFRESH_EVERY);
            let mut keys_tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tokio::select! {
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
