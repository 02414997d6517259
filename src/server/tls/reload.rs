//! Certificate reload without restart: the configuration in force lives in an `ArcSwap`;
//! `reload()` rebuilds it from the files and swaps it in only if the new one is good. The
//! reload supervisor (`crate::reload`) calls it on SIGHUP and when a file changes.
//! Connections already open keep the configuration they were accepted with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::TlsError;
use super::build::server_config;
use super::material::leaf_not_after;
use super::settings::TlsSettings;
use super::verifier::Refusals;

/// Told the served certificate's expiry after the first load and every successful reload
/// (the metrics' days-to-expiry gauge).
pub type ExpiryObserver = Box<dyn Fn(Option<SystemTime>) + Send + Sync>;

struct Observer(Option<ExpiryObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
}

/// Holds the TLS configuration in force and replaces it on demand.
#[derive(Debug)]
pub struct TlsReloader {
    settings: TlsSettings,
    refusals: Arc<Refusals>,
    current: ArcSwap<ServerConfig>,
    reloaded: AtomicU64,
    rejected: AtomicU64,
    observer: Observer,
}

impl TlsReloader {
    /// Builds the first configuration; fails if the files are not usable.
    pub fn new(settings: TlsSettings, refusals: Arc<Refusals>) -> Result<TlsReloader, TlsError> {
        let first = server_config(&settings, &refusals)?;
        Ok(TlsReloader {
            settings,
            refusals,
            current: ArcSwap::new(first),
            reloaded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            observer: Observer(None),
        })
    }

    /// Sets the expiry observer and tells it the current certificate's expiry.
    pub fn observe_expiry(mut self, observer: ExpiryObserver) -> TlsReloader {
        observer(leaf_not_after(&self.settings.cert_chain));
        self.observer = Observer(Some(observer));
        self
    }

    /// The configuration new connections are accepted with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// An acceptor for the configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }

    /// The refusal counters the mTLS verifier records into.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloaded.load(Ordering::Relaxed)
    }

    /// Reloads refused so far (the old configuration stayed in force).
    pub fn rejected_reloads(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Re-reads certificate chain, key and client CA. On any problem the configuration in
    /// force is kept and the reason is logged and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.settings, &self.refusals) {
            Ok(config) => {
                self.current.store(config);
                self.reloaded.fetch_add(1, Ordering::Relaxed);
                if let Some(observe) = &self.observer.0 {
                    observe(leaf_not_after(&self.settings.cert_chain));
                }
                tracing::info!(cert = %self.settings.cert_chain.display(), "TLS configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "TLS reload refused; the previous certificate stays in force");
                Err(e)
            }
        }
    }
}
