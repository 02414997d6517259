//! OpenBao / HashiCorp Vault Transit key backend: keys are Transit `aes256-gcm96` keys that
//! never leave the server; keygate sends the framed AAD as `associated_data` and splits the
//! ciphertext Transit returns into the XKS IV, ciphertext and tag (transit.rs).
//!
//! Key facts: spec and version from the key itself (`GET {mount}/keys/{id}`), status from
//! OpenBao's soft deletion (a soft-deleted key is DISABLED), usage from what keygate's own
//! token may do on `{mount}/encrypt/{id}` and `{mount}/decrypt/{id}` (`sys/capabilities-self`).
//!
//! ```text
//! openbao/settings.rs  the [backend.openbao] table
//! openbao/client.rs    bounded keep-alive connection pool, one timeout per request
//! openbao/auth.rs      keygate's token: renewal, AppRole re-login, revocation noticed
//! openbao/transit.rs   Transit wire types, ciphertext mapping, the error table
//! openbao/health.rs    sys/health plus the deep check on the health key
//! openbao/admin.rs     `keygate keys ...` (create, rotate, soft-delete as disable)
//! openbao/policy.rs    the ACL policy lines that grant keygate a key's usage
//! ```

mod admin;
mod auth;
mod client;
mod health;
mod policy;
mod settings;
mod transit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use zeroize::Zeroizing;

pub use admin::{OpenBaoAdmin, TOKEN_VARS};
pub use client::Verb;
pub use settings::{AuthMethod, OpenBaoSettings, OpenBaoToml, SecretSource};

use self::auth::Auth;
use self::client::BaoHttp;
use crate::keys::{EkmInstance, KeyBackend, KeyError, KeyInfo, KeyOp, KeyUsage, Sealed, SealedRef};

/// Facts kept for Encrypt and Decrypt (at most [`crate::keys::USE_FRESHNESS`] old).
const MAX_CACHED_KEYS: usize = 10_000;

/// The OpenBao backend. Cheap to share behind an `Arc`.
pub struct OpenBaoBackend {
    http: Arc<BaoHttp>,
    auth: Arc<Auth>,
    mount: String,
    facts: Mutex<HashMap<String, (Instant, KeyInfo)>>,
    /// What the last health check learnt about the server ("OpenBao 2.7.2").
    server: ArcSwap<String>,
    renewal: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for OpenBaoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBaoBackend")
            .field("address", &self.http.address())
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl Drop for OpenBaoBackend {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl OpenBaoBackend {
    /// Sets up the connection pool and starts keeping keygate's token alive (the first
    /// login or lookup starts at once). Must be called inside a tokio runtime; opens no
    /// connection itself.
    pub fn open(settings: &OpenBaoSettings) -> Result<OpenBaoBackend, String> {
        for w in &settings.warnings {
            tracing::warn!("{w}");
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the openbao backend must be opened inside the runtime".into());
        }
        let http = Arc::new(BaoHttp::new(settings)?);
        let auth = Auth::new(settings.auth.clone());
        let renewal = Auth::spawn(&auth, &http);
        Ok(OpenBaoBackend {
            http,
            auth,
            mount: settings.mount.clone(),
            facts: Mutex::new(HashMap::new()),
            server: ArcSwap::from_pointee("OpenBao or HashiCorp Vault".to_owned()),
            renewal,
        })
    }

    /// One Transit call with keygate's token, bounded by the request timeout as a whole
    /// (waiting for the first token included).
    async fn call(
        &self,
        verb: Verb,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<client::Answer, KeyError> {
        let limit = self.http.timeout();
        let run = async {
            let token = self.auth.token().await?;
            let answer = self
                .http
                .call(verb, path, Some(token.expose()), body)
                .await?;
            if answer.status == 403 {
                self.auth.refused();
            }
            Ok(answer)
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| KeyError::Timeout(limit))?
    }

    fn path(&self, what: &str, key_id: &str) -> String {
        format!("{}/{what}/{key_id}", self.mount)
    }

    /// Reads the key, then keygate's capabilities on it (one after the other: a request
    /// holds one connection at a time, so a pool of one still serves).
    /// Bounded as a whole by the request timeout.
    async fn read_facts(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let limit = self.http.timeout();
        tokio::time::timeout(limit, self.read_facts_now(key_id))
            .await
            .map_err(|_| KeyError::Timeout(limit))?
    }

    async fn read_facts_now(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let key_path = self.path("keys", key_id);
        let (enc, dec) = (self.path("encrypt", key_id), self.path("decrypt", key_id));
        let caps_body = serde_json::json!({ "paths": [enc, dec] })
            .to_string()
            .into_bytes();
        let key = self.call(Verb::Get, &key_path, None).await?;
        if key.status == 403 {
            return Err(self.unreadable(key_id).await);
        }
        let key: transit::KeyRead = transit::data(&key, KeyOp::Encrypt)?;
        if let Some(why) = key.refusal() {
            return Err(KeyError::Unsupported(format!("key {key_id}: {why}")));
        }
        let caps = self
            .call(Verb::Post, "sys/capabilities-self", Some(caps_body))
            .await?;
        let caps: HashMap<String, Vec<String>> = transit::data(&caps, KeyOp::Encrypt)?;
        let may = |p: &str| {
            caps.get(p)
                .is_some_and(|c| c.iter().any(|c| c == "update" || c == "root"))
        };
        let info = KeyInfo {
            key_spec: "AES_256",
            usage: KeyUsage {
                encrypt: may(&enc),
                decrypt: may(&dec),
            },
            extra_usage: Vec::new(),
            enabled: !key.soft_deleted,
            current_version: key.latest_version,
        };
        let mut facts = self
            .facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if facts.len() >= MAX_CACHED_KEYS {
            facts.clear();
        }
        facts.insert(key_id.to_owned(), (Instant::now(), info.clone()));
        Ok(info)
    }

    /// keygate's token may not read the key: when the token itself is good, the key is not
    /// one keygate was given (KeyNotFound); otherwise the token is the problem.
    async fn unreadable(&self, key_id: &str) -> KeyError {
        match self.call(Verb::Get, "auth/token/lookup-self", None).await {
            Ok(a) if a.status == 200 => KeyError::NotFound,
            Ok(a) => {
                tracing::debug!(
                    key_id,
                    status = a.status,
                    "token lookup after a refused key read"
                );
                transit::classify(403, &[], KeyOp::Encrypt)
            }
            Err(e) => e,
        }
    }

    fn forget(&self, key_id: &str) {
        self.facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key_id);
    }

    /// Runs a Transit encryption or decryption; a key found gone, disabled or refused drops
    /// its cached facts so the next request reads them afresh.
    async fn crypt<T: serde::de::DeserializeOwned>(
        &self,
        op: KeyOp,
        key_id: &str,
        body: Vec<u8>,
    ) -> Result<T, KeyError> {
        let path = self.path(&op.to_string(), key_id);
        let answer = self.call(Verb::Post, &path, Some(body)).await?;
        let result = transit::data(&answer, op);
        answer.scrub();
        if let Err(KeyError::Disabled | KeyError::NotFound | KeyError::Unavailable(_)) = &result {
            self.forget(key_id);
        }
        result
    }
}

#[async_trait]
impl KeyBackend for OpenBaoBackend {
    fn kind(&self) -> &'static str {
        "openbao"
    }

    fn ekm_vendor(&self) -> String {
        self.server.load().as_ref().clone()
    }

    /// The keys never leave the server; whether its seal is an HSM keygate cannot tell.
    fn hardware_protected(&self) -> bool {
        false
    }

    async fn key_info(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        self.read_facts(key_id).await
    }

    async fn key_info_for_use(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let recent = self
            .facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_id)
            .filter(|(at, _)| at.elapsed() < crate::keys::USE_FRESHNESS)
            .map(|(_, info)| info.clone());
        match recent {
            Some(info) => Ok(info),
            None => self.read_facts(key_id).await,
        }
    }

    async fn encrypt(
        &self,
        key_id: &str,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyError> {
        let body = transit::encrypt_body(plaintext, aad, version);
        let data: transit::EncryptData = self.crypt(KeyOp::Encrypt, key_id, body).await?;
        transit::split_ciphertext(&data.ciphertext, version)
    }

    async fn decrypt(
        &self,
        key_id: &str,
        version: u32,
        sealed: SealedRef<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let body = transit::decrypt_body(version, sealed, aad)?;
        let data: transit::DecryptData = self.crypt(KeyOp::Decrypt, key_id, body).await?;
        transit::plaintext(&data)
    }

    async fn health(&self, health_key: &str) -> Vec<EkmInstance> {
        health::check(self, health_key).await
    }
}
