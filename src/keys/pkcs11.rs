//! PKCS#11 key backend (cryptoki): keys live in an HSM token, found by CKA_LABEL = key id.
//!
//! Every HSM call holds one of `session_pool_size` permits. A request that finds no free
//! permit within `queue_wait` gets `KeyError::Busy`; nothing queues without bound. While the
//! module answers fast the call runs inline on the runtime worker (see `inline`); otherwise
//! on tokio's blocking pool, bounded by `operation_timeout` (`KeyError::Timeout`).

mod admin;
pub mod ckr;
mod engine;
mod facts;
mod gcm;
mod health;
mod inline;
mod settings;
mod sign;
mod token;
pub mod versions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use zeroize::Zeroizing;

pub use admin::Pkcs11Admin;
pub use facts::DISABLED_MARKER;
pub use settings::{IvMode, Pin, Pkcs11Settings, Pkcs11Toml, TokenSelector};
pub use sign::Pkcs11Signer;

use self::engine::Engine;
use crate::keys::{EkmInstance, KeyBackend, KeyError, KeyInfo, KeyOp, Sealed, SealedRef};

/// The PKCS#11 backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Pkcs11Backend {
    engine: Arc<Engine>,
    permits: Arc<Semaphore>,
    /// Whether calls run on the runtime worker or the blocking pool.
    inline: Arc<inline::Inline>,
    /// HSM calls in progress (sessions in use), for the metrics endpoint.
    in_use: Gauge,
}

impl Pkcs11Backend {
    /// Loads the module, finds the token and logs in. Blocking: call it before serving
    /// (or inside `spawn_blocking`).
    pub fn open(settings: Pkcs11Settings) -> Result<Pkcs11Backend, KeyError> {
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        let permits = Arc::new(Semaphore::new(settings.session_pool_size));
        let engine = Arc::new(Engine::open(settings)?);
        Ok(Pkcs11Backend {
            engine,
            permits,
            inline: Arc::default(),
            in_use: Gauge::default(),
        })
    }

    /// The signer of the decision log's digests: the key pair labelled `label` in this
    /// backend's token (a sensitive, non-extractable ECDSA P-256 or Ed25519 private key and
    /// its public key). Blocking: call it before serving.
    pub fn digest_signer(&self, label: &str) -> Result<Pkcs11Signer, KeyError> {
        Pkcs11Signer::open(self.engine.clone(), label)
    }

    /// Reports the number of HSM calls in progress through `gauge`.
    pub fn with_sessions_gauge(mut self, gauge: Gauge) -> Pkcs11Backend {
        self.in_use = gauge;
        self
    }

    /// Waits (up to `within`) until no HSM call is running, then closes the module.
    /// Returns false when calls were still running at the deadline.
    pub async fn shutdown(self, within: Duration) -> bool {
        let size = u32::try_from(self.engine.settings.session_pool_size).unwrap_or(u32::MAX);
        let all = tokio::time::timeout(within, self.permits.clone().acquire_many_owned(size));
        let drained = matches!(all.await, Ok(Ok(_)));
        drop(self);
        drained
    }

    fn timeout(&self) -> Duration {
        self.engine.settings.operation_timeout
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, KeyError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => return Ok(p),
            Err(TryAcquireError::Closed) => {
                return Err(KeyError::Unavailable("backend closed".to_owned()));
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        let wait = self.engine.settings.queue_wait;
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(KeyError::Unavailable("backend closed".to_owned())),
            Err(_) => Err(KeyError::Busy(format!(
                "all {} HSM sessions busy for {wait:?}",
                self.engine.settings.session_pool_size
            ))),
        }
    }

    /// Runs `job` under a permit: inline while the module answers fast and a worker may be
    /// lent, else on the blocking pool bounded by the operation timeout.
    async fn call<T, F>(&self, job: F) -> Result<T, KeyError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, KeyError> + Send + 'static,
    {
        let permit = self.permit().await?;
        if let Some(slot) = self.inline.slot().await {
            self.in_use.inc();
            let start = Instant::now();
            let result = job(&self.engine);
            self.inline.record(start.elapsed());
            self.in_use.dec();
            drop((slot, permit));
            return result;
        }
        let engine = self.engine.clone();
        let (in_use, inline) = (self.in_use.clone(), self.inline.clone());
        in_use.inc();
        let task = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let result = job(&engine);
            inline.record(start.elapsed());
            // Release the engine before the permit: once `shutdown` holds every permit, no
            // worker holds the module any more.
            drop(engine);
            in_use.dec();
            drop(permit);
            result
        });
        match tokio::time::timeout(self.timeout(), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(KeyError::Unavailable(format!("HSM worker failed: {e}"))),
            Err(_) => Err(KeyError::Timeout(self.timeout())),
        }
    }
}

/// The handle of `version` of the key whose (version 1) entry is `base`: the key's status
/// and usage are checked on `base`, a later version must exist and be acceptable itself.
fn version_handle(
    e: &Engine,
    t: &token::Token,
    s: &cryptoki::session::Session,
    (key_id, base): (&str, &engine::KeyEntry),
    version: u32,
    op: KeyOp,
) -> Result<cryptoki::object::ObjectHandle, engine::Fault> {
    base.facts.usable(key_id).map_err(engine::Fault::Key)?;
    if version == 1 {
        return Ok(base.handle);
    }
    let missing = || match op {
        KeyOp::Encrypt => KeyError::Unsupported(format!("key {key_id} has no version {version}")),
        KeyOp::Decrypt => KeyError::InvalidCiphertext(format!("unknown key version {version}")),
    };
    if version == 0 {
        return Err(engine::Fault::Key(missing()));
    }
    match e.key(t, s, &versions::label(key_id, version)) {
        Ok(v) => {
            v.facts.usable(key_id).map_err(engine::Fault::Key)?;
            Ok(v.handle)
        }
        Err(engine::Fault::Key(KeyError::NotFound)) => Err(engine::Fault::Key(missing())),
        Err(f) => Err(f),
    }
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn ekm_vendor(&self) -> String {
        self.engine.facts().vendor()
    }

    fn hardware_protected(&self) -> bool {
        true
    }

    async fn key_info(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let id = key_id.to_owned();
        self.call(move |e| {
            e.run(KeyOp::Encrypt, &id, |e, t, s| {
                Ok(e.fresh(t, s, &id)?.facts.info.clone())
            })
        })
        .await
    }

    /// Facts read within [`USE_FRESHNESS`](crate::keys::USE_FRESHNESS) come from the cache
    /// without a trip to the blocking pool; otherwise as `key_info`.
    async fn key_info_for_use(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        match self.engine.recent(key_id, crate::keys::USE_FRESHNESS) {
            Some(entry) => Ok(entry.facts.info.clone()),
            None => self.key_info(key_id).await,
        }
    }

    async fn encrypt(
        &self,
        key_id: &str,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyError> {
        let (id, pt, aad) = (
            key_id.to_owned(),
            Zeroizing::new(plaintext.to_vec()),
            aad.to_vec(),
        );
        self.call(move |e| {
            let mode = e.settings.iv_mode;
            e.run(KeyOp::Encrypt, &id, |e, t, s| {
                let key = e.key(t, s, &id)?;
                let handle = version_handle(e, t, s, (&id, &key), version, KeyOp::Encrypt)?;
                gcm::encrypt(s, handle, mode, &pt, &aad)
            })
        })
        .await
    }

    async fn decrypt(
        &self,
        key_id: &str,
        version: u32,
        sealed: SealedRef<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let id = key_id.to_owned();
        let (iv, ct, tag, aad) = (
            sealed.iv.to_vec(),
            sealed.ciphertext.to_vec(),
            sealed.tag.to_vec(),
            aad.to_vec(),
        );
        self.call(move |e| {
            e.run(KeyOp::Decrypt, &id, |e, t, s| {
                let key = e.key(t, s, &id)?;
                let handle = version_handle(e, t, s, (&id, &key), version, KeyOp::Decrypt)?;
                let sealed = SealedRef {
                    iv: &iv,
                    ciphertext: &ct,
                    tag: &tag,
                };
                gcm::decrypt(s, handle, sealed, &aad)
            })
        })
        .await
    }

    async fn health(&self, health_key: &str) -> Vec<EkmInstance> {
        health::check(self, health_key).await
    }
}
