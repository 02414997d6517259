//! The software key backend (the embedded default): AES-256 keys with versions, usage and
//! status, kept in a JSON key file written atomically with 0600 permissions. The keys are
//! NOT protected by hardware; the server says so at start and in health.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    EkmInstance, HealthStatus, IV_LEN, KeyAdmin, KeyBackend, KeyError, KeyInfo, KeyListing, KeyOp,
    KeyUsage, Sealed, SealedRef, valid_key_id,
};

const FORMAT: &str = "keygate-software-keys/1";
const PROTECTION: &str = "software (not HSM-protected)";

/// The key file as stored.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: String,
    encrypt: bool,
    decrypt: bool,
    enabled: bool,
    versions: Vec<StoredVersion>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct StoredVersion {
    version: u32,
    /// Base64 of the 32-byte key.
    material: Zeroizing<String>,
    created: String,
}

/// A loaded key: ciphers ready, material never kept in readable form.
struct LoadedKey {
    usage: KeyUsage,
    enabled: bool,
    current: u32,
    versions: BTreeMap<u32, Aes256Gcm>,
}

type KeySet = HashMap<String, LoadedKey>;

/// Reads the key file, refusing it whole on any problem.
fn read_key_file(path: &Path) -> Result<KeyFile, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "key file {} is accessible to other users (mode {:o}); run chmod 600 on it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?,
    );
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "key file {} is corrupt: {}",
            path.display(),
            e.classify_msg()
        )
    })?;
    if file.format != FORMAT {
        return Err(format!(
            "key file {} has format {:?}, expected {FORMAT:?}",
            path.display(),
            file.format
        ));
    }
    Ok(file)
}

/// serde_json errors name the position but, for data errors, may quote values: keep only
/// the category and position so no key material can reach a log.
trait ClassifyMsg {
    fn classify_msg(&self) -> String;
}

impl ClassifyMsg for serde_json::Error {
    fn classify_msg(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

fn load_keys(file: &KeyFile) -> Result<KeySet, String> {
    let mut set = KeySet::new();
    for k in &file.keys {
        if !valid_key_id(&k.id) {
            return Err(format!("key id {:?} is not valid", k.id));
        }
        let mut versions = BTreeMap::new();
        for v in &k.versions {
            let raw = Zeroizing::new(STANDARD.decode(v.material.as_bytes()).map_err(|_| {
                format!("key {} version {}: material is not Base64", k.id, v.version)
            })?);
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|_| {
                format!(
                    "key {} version {}: material is not 32 bytes",
                    k.id, v.version
                )
            })?;
            if versions.insert(v.version, cipher).is_some() || v.version == 0 {
                return Err(format!(
                    "key {} has a zero or repeated version {}",
                    k.id, v.version
                ));
            }
        }
        let current = *versions
            .keys()
            .next_back()
            .ok_or(format!("key {} has no versions", k.id))?;
        let usage = KeyUsage {
            encrypt: k.encrypt,
            decrypt: k.decrypt,
        };
        let loaded = LoadedKey {
            usage,
            enabled: k.enabled,
            current,
            versions,
        };
        if set.insert(k.id.clone(), loaded).is_some() {
            return Err(format!("key {} is listed twice", k.id));
        }
    }
    Ok(set)
}

/// Writes the key file atomically (temp file, fsync, rename) with 0600 permissions.
fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let err = |e: std::io::Error| format!("cannot write key file {}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    let text = Zeroizing::new(serde_json::to_string_pretty(file).map_err(|e| e.to_string())?);
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

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

/// `keygate keys ...` on the software key file.
pub struct SoftwareAdmin {
    path: PathBuf,
    file: KeyFile,
}

impl std::fmt::Debug for SoftwareAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareAdmin")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SoftwareAdmin {
    /// Opens the key file, or starts an empty one if it does not exist yet.
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = if path.exists() {
            let f = read_key_file(path)?;
            load_keys(&f)?;
            f
        } else {
            KeyFile {
                format: FORMAT.into(),
                keys: Vec::new(),
            }
        };
        Ok(SoftwareAdmin {
            path: path.to_path_buf(),
            file,
        })
    }

    fn listing(k: &StoredKey) -> KeyListing {
        KeyListing {
            id: k.id.clone(),
            usage: KeyUsage {
                encrypt: k.encrypt,
                decrypt: k.decrypt,
            },
            enabled: k.enabled,
            versions: u32::try_from(k.versions.len()).unwrap_or(u32::MAX),
            protection: PROTECTION.into(),
        }
    }

    fn key_mut(&mut self, key_id: &str) -> Result<&mut StoredKey, String> {
        self.file
            .keys
            .iter_mut()
            .find(|k| k.id == key_id)
            .ok_or_else(|| format!("no key {key_id:?}"))
    }

    fn save_and_list(&mut self, key_id: &str) -> Result<KeyListing, String> {
        write_key_file(&self.path, &self.file)?;
        self.file
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .map(Self::listing)
            .ok_or_else(|| format!("no key {key_id:?}"))
    }
}

fn new_version(version: u32) -> Result<StoredVersion, String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut()).map_err(|e| format!("no randomness: {e}"))?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    Ok(StoredVersion {
        version,
        material: Zeroizing::new(STANDARD.encode(raw.as_ref())),
        created,
    })
}

impl KeyAdmin for SoftwareAdmin {
    fn create(&mut self, key_id: &str, usage: KeyUsage) -> Result<KeyListing, String> {
        if !valid_key_id(key_id) {
            return Err(format!(
                "key id {key_id:?} must be 1-128 characters of A-Za-z0-9-._"
            ));
        }
        if self.file.keys.iter().any(|k| k.id == key_id) {
            return Err(format!("key {key_id:?} already exists"));
        }
        self.file.keys.push(StoredKey {
            id: key_id.to_owned(),
            encrypt: usage.encrypt,
            decrypt: usage.decrypt,
            enabled: true,
            versions: vec![new_version(1)?],
        });
        self.save_and_list(key_id)
    }

    fn list(&self) -> Result<Vec<KeyListing>, String> {
        Ok(self.file.keys.iter().map(Self::listing).collect())
    }

    fn set_enabled(&mut self, key_id: &str, enabled: bool) -> Result<KeyListing, String> {
        self.key_mut(key_id)?.enabled = enabled;
        self.save_and_list(key_id)
    }

    fn rotate(&mut self, key_id: &str) -> Result<KeyListing, String> {
        let key = self.key_mut(key_id)?;
        let next = key.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        key.versions.push(new_version(next)?);
        self.save_and_list(key_id)
    }
}

#[cfg(test)]
mod tests;
