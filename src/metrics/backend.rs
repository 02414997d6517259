//! `MeteredBackend`: wraps any key backend and records each call's latency and failures,
//! so every backend is measured the same way without knowing about metrics.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::Metrics;
use crate::keys::{EkmInstance, HealthStatus, KeyBackend, KeyError, KeyInfo, Sealed, SealedRef};

/// A key backend whose calls are timed into [`Metrics`].
pub struct MeteredBackend {
    inner: Arc<dyn KeyBackend>,
    metrics: Arc<Metrics>,
}

impl MeteredBackend {
    pub fn new(inner: Arc<dyn KeyBackend>, metrics: Arc<Metrics>) -> Self {
        MeteredBackend { inner, metrics }
    }

    fn record<T>(&self, operation: &str, started: Instant, r: &Result<T, KeyError>) {
        let error = r.as_ref().err().map(error_kind);
        self.metrics
            .record_backend(operation, started.elapsed(), error);
    }
}

impl fmt::Debug for MeteredBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A short, bounded label for a backend failure.
pub fn error_kind(e: &KeyError) -> &'static str {
    match e {
        KeyError::NotFound => "not_found",
        KeyError::UsageNotPermitted(_) => "usage_not_permitted",
        KeyError::Disabled => "disabled",
        KeyError::Authentication => "authentication",
        KeyError::InvalidCiphertext(_) => "invalid_ciphertext",
        KeyError::Busy(_) => "busy",
        KeyError::Timeout(_) => "timeout",
        KeyError::Unavailable(_) => "unavailable",
        KeyError::Unsupported(_) => "unsupported",
    }
}

#[async_trait]
impl KeyBackend for MeteredBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn ekm_vendor(&self) -> String {
        self.inner.ekm_vendor()
    }

    fn hardware_protected(&self) -> bool {
        self.inner.hardware_protected()
    }

    async fn key_info(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let started = Instant::now();
        let r = self.inner.key_info(key_id).await;
        self.record("key_info", started, &r);
        r
    }

    async fn key_info_for_use(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let started = Instant::now();
        let r = self.inner.key_info_for_use(key_id).await;
        self.record("key_info", started, &r);
        r
    }

    async fn encrypt(
        &self,
        key_id: &str,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyError> {
        let started = Instant::now();
        let r = self.inner.encrypt(key_id, version, plaintext, aad).await;
        self.record("encrypt", started, &r);
        r
    }

    async fn decrypt(
        &self,
        key_id: &str,
        version: u32,
        sealed: SealedRef<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let started = Instant::now();
        let r = self.inner.decrypt(key_id, version, sealed, aad).await;
        self.record("decrypt", started, &r);
        r
    }

    fn current_versions_created(&self) -> Vec<(String, std::time::SystemTime)> {
        self.inner.current_versions_created()
    }

    async fn health(&self, health_key: &str) -> Vec<EkmInstance> {
        let started = Instant::now();
        let v = self.inner.health(health_key).await;
        let failed = v.iter().any(|i| i.status == HealthStatus::Unavailable);
        self.metrics
            .record_backend("health", started.elapsed(), failed.then_some("unavailable"));
        v
    }
}
