//! The software key backend (the embedded default): AES-256 keys with versions, usage and
//! status, kept in a JSON key file written atomically with 0600 permissions. The keys are
//! NOT protected by hardware; the server says so at start and in health.
//!
//! This file serves keys (`SoftwareBackend`); software/format.rs owns the key file and
//! software/admin.rs the `keygate keys ...` commands on it.

mod admin;
mod format;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use zeroize::Zeroizing;

pub use admin::SoftwareAdmin;

use self::format::{KeySet, load_keys, read_key_file};
use super::{
    EkmInstance, HealthStatus, IV_LEN, KeyBackend, KeyError, KeyInfo, KeyOp, Sealed, SealedRef,
};

const PROTECTION: &str = "software (not HSM-protected)";

/// The software backend, serving from an in-memory key set that follows the key file.
pub struct SoftwareBackend {
    path: PathBuf,
    keys: ArcSwap<KeySet>,
}

impl std::fmt::Debug for SoftwareBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SoftwareBackend {
    /// Loads the key file; any problem refuses the whole file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let keys = load_keys(&read_key_file(path)?)?;
        Ok(SoftwareBackend {
            path: path.to_path_buf(),
            keys: ArcSwap::from_pointee(keys),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the key file again (the reload supervisor calls this when it changed on disk).
    /// On a bad file the old keys stay in force.
    pub fn reload(&self) -> Result<(), String> {
        let keys = read_key_file(&self.path).and_then(|f| load_keys(&f))?;
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Ids of the loaded keys.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.load().keys().cloned().collect()
    }

    fn with_cipher<T>(
        &self,
        key_id: &str,
        version: u32,
        op: KeyOp,
        f: impl FnOnce(&Aes256Gcm) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let keys = self.keys.load();
        let key = keys.get(key_id).ok_or(KeyError::NotFound)?;
        if !key.enabled {
            return Err(KeyError::Disabled);
        }
        let permitted = match op {
            KeyOp::Encrypt => key.usage.encrypt,
            KeyOp::Decrypt => key.usage.decrypt,
        };
        if !permitted {
            return Err(KeyError::UsageNotPermitted(op));
        }
        let cipher = key.versions.get(&version).ok_or_else(|| {
            KeyError::InvalidCiphertext(format!("key {key_id} has no version {version}"))
        })?;
        f(cipher)
    }

    /// Encrypts synchronously (the work is a few microseconds).
    pub fn encrypt_now(
        &self,
        key_id: &str,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyError> {
        self.with_cipher(key_id, version, KeyOp::Encrypt, |cipher| {
            let mut iv = [0u8; IV_LEN];
            crate::random::fill(&mut iv)
                .map_err(|e| KeyError::Unavailable(format!("no randomness: {e}")))?;
            let mut ciphertext = plaintext.to_vec();
            let tag = cipher
                .encrypt_inout_detached(&Nonce::from(iv), aad, ciphertext.as_mut_slice().into())
                .map_err(|_| {
                    KeyError::Unsupported("plaintext or AAD too long for AES-GCM".into())
                })?;
            Ok(Sealed {
                iv,
                ciphertext,
                tag: tag.into(),
            })
        })
    }

    /// Decrypts synchronously.
    pub fn decrypt_now(
        &self,
        key_id: &str,
        version: u32,
        sealed: SealedRef<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.with_cipher(key_id, version, KeyOp::Decrypt, |cipher| {
            let iv: [u8; IV_LEN] = sealed.iv.try_into().map_err(|_| {
                KeyError::InvalidCiphertext(format!(
                    "keygate issues 12-byte IVs, got {} bytes",
                    sealed.iv.len()
                ))
            })?;
            let tag: [u8; 16] = sealed.tag.try_into().map_err(|_| {
                KeyError::InvalidCiphertext("authentication tag must be 16 bytes".into())
            })?;
            let mut buf = Zeroizing::new(sealed.ciphertext.to_vec());
            cipher
                .decrypt_inout_detached(
                    &Nonce::from(iv),
                    aad,
                    buf.as_mut_slice().into(),
                    &Tag::from(tag),
                )
                .map_err(|_| KeyError::Authentication)?;
            Ok(buf)
        })
    }
}

#[async_trait]
impl KeyBackend for SoftwareBackend {
    fn kind(&self) -> &'static str {
        "software"
    }

    fn ekm_vendor(&self) -> String {
        format!("keygate {PROTECTION}")
    }

    fn hardware_protected(&self) -> bool {
        false
    }

    async fn key_info(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        let keys = self.keys.load();
        let k = keys.get(key_id).ok_or(KeyError::NotFound)?;
        Ok(KeyInfo {
            key_spec: "AES_256",
            usage: k.usage,
            extra_usage: Vec::new(),
            enabled: k.enabled,
            current_version: k.current,
        })
    }

    async fn encrypt(
        &self,
        key_id: &str,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyError> {
        self.encrypt_now(key_id, version, plaintext, aad)
    }

    async fn decrypt(
        &self,
        key_id: &str,
        version: u32,
        sealed: SealedRef<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.decrypt_now(key_id, version, sealed, aad)
    }

    fn current_versions_created(&self) -> Vec<(String, std::time::SystemTime)> {
        let keys = self.keys.load();
        let known = keys
            .iter()
            .filter_map(|(id, k)| Some((id.clone(), k.current_created?)));
        known.collect()
    }

    async fn health(&self, health_key: &str) -> Vec<EkmInstance> {
        let check = || -> Result<(), KeyError> {
            let probe = b"keygate health probe";
            let info = self
                .keys
                .load()
                .get(health_key)
                .map(|k| k.current)
                .ok_or(KeyError::NotFound)?;
            let sealed = self.encrypt_now(health_key, info, probe, b"health")?;
            let back = self.decrypt_now(
                health_key,
                info,
                SealedRef {
                    iv: &sealed.iv,
                    ciphertext: &sealed.ciphertext,
                    tag: &sealed.tag,
                },
                b"health",
            )?;
            if back.as_slice() == probe {
                Ok(())
            } else {
                Err(KeyError::Authentication)
            }
        };
        let (status, detail) = match check() {
            Ok(()) => (HealthStatus::Active, None),
            Err(e) => (
                HealthStatus::Unavailable,
                Some(format!("health key {health_key}: {e}")),
            ),
        };
        vec![EkmInstance {
            id: "software".into(),
            model: format!(
                "keygate software AES-256-GCM, {PROTECTION}, {}",
                env!("CARGO_PKG_VERSION")
            ),
            status,
            detail,
        }]
    }
}

#[cfg(test)]
mod tests;
