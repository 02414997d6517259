//! The XKS front door's state: the key stores and limits in force (swapped by a reload),
//! admission (the in-flight cap and the key stores' rate limits), and the narrow handles the
//! four operations run with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::api;
use super::keystore::Keystores;
use crate::config::{Config, LimitSettings};
use crate::health::HealthMonitor;
use crate::keys::KeyBackend;
use crate::metrics::Metrics;
use crate::policy::Authorizer;
use crate::shed::{InFlight, InFlightGuard, Shed};

/// What the four operations need, and nothing more: testable without a server.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The key backend (metered).
    pub keys: Arc<dyn KeyBackend>,
    /// Judges Encrypt, Decrypt and GetKeyMetadata and records each decision.
    pub authorizer: Authorizer,
    /// The cached deep health check, for GetHealthStatus.
    pub health: Arc<HealthMonitor>,
}

/// The XKS door, shared by every connection.
#[derive(Debug)]
pub struct Service {
    keystores: ArcSwap<Keystores>,
    limits: ArcSwap<LimitSettings>,
    in_flight: InFlight,
    /// Request and shedding counters.
    pub metrics: Arc<Metrics>,
    /// What the operations run with.
    pub handles: Handles,
}

impl Service {
    /// The door for `config`'s key stores and limits.
    pub fn new(config: &Config, handles: Handles, metrics: Arc<Metrics>) -> Self {
        Service {
            keystores: ArcSwap::from_pointee(Keystores::from_config(config)),
            limits: ArcSwap::from_pointee(config.limits),
            in_flight: InFlight::new(metrics.in_flight()),
            metrics,
            handles,
        }
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

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.current()
    }

    /// Applies a reloaded configuration's key stores, credentials and limits at once.
    /// Requests already routed keep the key store they started with.
    pub fn apply(&self, config: &Config) {
        let keystores = Keystores::from_config_after(config, &self.keystores());
        self.keystores.store(Arc::new(keystores));
        self.limits.store(Arc::new(config.limits));
    }

    /// Admits a routed request under the server-wide in-flight cap, or says why it is shed.
    /// Runs before SigV4: it guards keygate as a whole and cannot be spent on one key store.
    /// A key store's own rate limit is charged only once the request authenticated
    /// ([`Keystore::charge`]).
    pub fn admit(&self) -> Result<InFlightGuard, Shed> {
        let cap = self.limits().max_in_flight;
        self.in_flight.try_enter(cap).ok_or(Shed::InFlight { cap })
    }
}
