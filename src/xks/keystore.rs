//! The logical key stores the XKS door serves, one per URI path prefix, each with its SigV4
//! credentials, its key ids and its request-rate limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::{Config, KeystoreSettings};
use crate::shed::RateLimiter;
use crate::sigv4::Credential;

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
    /// Charges one authenticated request to the key store's rate limit, or says it is over.
    /// Called after SigV4, so only the key store's own callers can spend its quota.
    pub fn charge(&self) -> Result<(), crate::shed::Shed> {
        match &self.limiter {
            Some(l) if !l.try_acquire() => Err(crate::shed::Shed::RateLimit { limit: l.limit() }),
            _ => Ok(()),
        }
    }

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
