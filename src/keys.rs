//! Key backends: the one trait every key store implementation (software, PKCS#11, OpenBao
//! Transit) provides,
//! the key facts it reports, and its error type.
//!
//! Backends do raw AES-256-GCM with a fully built AAD; the XKS framing (AAD layout,
//! ciphertext metadata, CDIV) lives in `xks::envelope` and never reaches a backend.

pub mod openbao;
pub mod pkcs11;
pub mod software;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use zeroize::Zeroizing;

/// Length of the IV keygate generates for every encryption.
pub const IV_LEN: usize = 12;
/// Length of the GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// What a key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyUsage {
    pub encrypt: bool,
    pub decrypt: bool,
}

impl KeyUsage {
    pub const BOTH: KeyUsage = KeyUsage {
        encrypt: true,
        decrypt: true,
    };
    pub const ENCRYPT_ONLY: KeyUsage = KeyUsage {
        encrypt: true,
        decrypt: false,
    };
    pub const DECRYPT_ONLY: KeyUsage = KeyUsage {
        encrypt: false,
        decrypt: true,
    };
    pub const NONE: KeyUsage = KeyUsage {
        encrypt: false,
        decrypt: false,
    };

    /// The XKS `keyUsage` strings for this usage.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(2);
        if self.encrypt {
            v.push("ENCRYPT");
        }
        if self.decrypt {
            v.push("DECRYPT");
        }
        v
    }

    /// Parses a comma-separated list such as `encrypt,decrypt` (`none` for neither).
    pub fn parse_list(s: &str) -> Result<KeyUsage, String> {
        let mut usage = KeyUsage::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "encrypt" => usage.encrypt = true,
                "decrypt" => usage.decrypt = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown key usage {other:?} (expected encrypt, decrypt or none)"
                    ));
                }
            }
        }
        Ok(usage)
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.encrypt, self.decrypt) {
            (true, true) => f.write_str("encrypt,decrypt"),
            (true, false) => f.write_str("encrypt"),
            (false, true) => f.write_str("decrypt"),
            (false, false) => f.write_str("none"),
        }
    }
}

/// The cryptographic operation a request needs from a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOp {
    Encrypt,
    Decrypt,
}

impl fmt::Display for KeyOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
        })
    }
}

/// Facts about one key, as GetKeyMetadata reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Always `AES_256` for keys a backend accepts.
    pub key_spec: &'static str,
    pub usage: KeyUsage,
    /// Further usages the key manager reports (e.g. `WRAP`), shown after ENCRYPT/DECRYPT.
    pub extra_usage: Vec<&'static str>,
    pub enabled: bool,
    /// The version new encryptions use. Backends without versions report 1.
    pub current_version: u32,
}

impl KeyInfo {
    /// The `keyUsage` array: ENCRYPT/DECRYPT first, then extras, at most 10 values.
    pub fn usage_names(&self) -> Vec<&'static str> {
        let mut v = self.usage.names();
        v.extend(self.extra_usage.iter().copied());
        v.truncate(10);
        v
    }
}

/// The output of one AES-GCM encryption, tag split off.
#[derive(Debug)]
pub struct Sealed {
    pub iv: [u8; IV_LEN],
    pub ciphertext: Vec<u8>,
    pub tag: [u8; TAG_LEN],
}

/// The parts of a decryption request, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct SealedRef<'a> {
    pub iv: &'a [u8],
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8],
}

/// Health of one key-manager instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    Active,
    Degraded,
    Unavailable,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Active => "ACTIVE",
            HealthStatus::Degraded => "DEGRADED",
            HealthStatus::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One entry of `ekmFleetDetails`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EkmInstance {
    pub id: String,
    pub model: String,
    pub status: HealthStatus,
    /// Why the instance is not ACTIVE (logged, never sent to KMS).
    pub detail: Option<String>,
}

/// Failures a backend reports. `xks::error` maps each to the spec's error name.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("key not found")]
    NotFound,
    #[error("the key does not permit {0}")]
    UsageNotPermitted(KeyOp),
    #[error("the key is disabled")]
    Disabled,
    /// The tag did not verify: wrong key, AAD, IV, tag, ciphertext or metadata.
    #[error("ciphertext authentication failed")]
    Authentication,
    /// The ciphertext can't belong to this key (unknown version, bad IV or tag length...).
    #[error("invalid ciphertext: {0}")]
    InvalidCiphertext(String),
    /// Every session is in use; the caller should retry later.
    #[error("key backend busy: {0}")]
    Busy(String),
    #[error("key backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("key backend unavailable: {0}")]
    Unavailable(String),
    #[error("not supported by this key backend: {0}")]
    Unsupported(String),
}

/// How old key facts may be when an Encrypt or Decrypt uses them: a key disabled in the HSM
/// by another process is refused within this time (GetKeyMetadata always reads afresh).
pub const USE_FRESHNESS: std::time::Duration = std::time::Duration::from_secs(1);

/// A key store implementation. One instance serves every logical key store of the process.
#[async_trait]
pub trait KeyBackend: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics: `software`, `pkcs11`.
    fn kind(&self) -> &'static str;

    /// The `ekmVendor` value for GetHealthStatus.
    fn ekm_vendor(&self) -> String;

    /// Whether keys are protected by hardware (false for the software backend).
    fn hardware_protected(&self) -> bool;

    /// Looks a key up. `NotFound` when the backend has no such key.
    async fn key_info(&self, key_id: &str) -> Result<KeyInfo, KeyError>;

    /// The key's facts for an Encrypt or Decrypt about to run: a backend may answer from
    /// facts read within the last [`USE_FRESHNESS`] instead of asking the device again.
    async fn key_info_for_use(&self, key_id: &str) -> Result<KeyInfo, KeyError> {
        self.key_info(key_id).await
    }

    /// AES-256-GCM encryption under `version` of the key with a fresh IV.
    async fn encrypt(
        &self,
        key_id: &str,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, KeyError>;

    /// AES-256-GCM decryption; `Authentication` when the tag does not verify.
    async fn decrypt(
        &self,
        key_id: &str,
        version: u32,
        sealed: SealedRef<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError>;

    /// Deep check: an encrypt and a decrypt on the dedicated health key, never a customer key.
    /// One entry per key-manager instance (1 to 10).
    async fn health(&self, health_key: &str) -> Vec<EkmInstance>;

    /// When each key's current version was created (its creation or last rotation), for the
    /// keys whose backend records it; from memory, never a call to the key manager. The
    /// default knows none (a PKCS#11 token does not say).
    fn current_versions_created(&self) -> Vec<(String, std::time::SystemTime)> {
        Vec::new()
    }
}

/// One row of `keygate keys list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyListing {
    pub id: String,
    pub usage: KeyUsage,
    pub enabled: bool,
    pub versions: u32,
    /// e.g. "software (not HSM-protected)" or "pkcs11 token 'xks', sensitive, non-extractable".
    pub protection: String,
}

/// Key management for `keygate keys ...`; runs outside the server, synchronously.
pub trait KeyAdmin {
    fn create(&mut self, key_id: &str, usage: KeyUsage) -> Result<KeyListing, String>;
    fn list(&self) -> Result<Vec<KeyListing>, String>;
    fn set_enabled(&mut self, key_id: &str, enabled: bool) -> Result<KeyListing, String>;
    /// Adds a new key version that new encryptions will use; old versions still decrypt.
    fn rotate(&mut self, key_id: &str) -> Result<KeyListing, String>;
}

/// Checks a key id against the XKS rules: 1-128 characters of `A-Za-z0-9-._`.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}
