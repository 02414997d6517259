//! The software key file: its JSON format (a format tag, keys, versions of Base64 key
//! material), read and refused whole on any problem, loaded into ciphers, and written
//! atomically with 0600 permissions.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::{KeyUsage, valid_key_id};

pub(super) const FORMAT: &str = "keygate-software-keys/1";

/// The key file as stored.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyFile {
    pub(super) format: String,
    pub(super) keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredKey {
    pub(super) id: String,
    pub(super) encrypt: bool,
    pub(super) decrypt: bool,
    pub(super) enabled: bool,
    pub(super) versions: Vec<StoredVersion>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredVersion {
    pub(super) version: u32,
    /// Base64 of the 32-byte key.
    pub(super) material: Zeroizing<String>,
    pub(super) created: String,
}

/// A loaded key: ciphers ready, material never kept in readable form.
pub(super) struct LoadedKey {
    pub(super) usage: KeyUsage,
    pub(super) enabled: bool,
    pub(super) current: u32,
    pub(super) versions: BTreeMap<u32, Aes256Gcm>,
    /// When the current version was created (`None`: its `created` is not RFC 3339).
    pub(super) current_created: Option<std::time::SystemTime>,
}

pub(super) type KeySet = HashMap<String, LoadedKey>;

/// Reads the key file, refusing it whole on any problem.
pub(super) fn read_key_file(path: &Path) -> Result<KeyFile, String> {
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

pub(super) fn load_keys(file: &KeyFile) -> Result<KeySet, String> {
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
        let current_created = k
            .versions
            .iter()
            .find(|v| v.version == current)
            .and_then(|v| parse_rfc3339(&v.created));
        let loaded = LoadedKey {
            usage,
            enabled: k.enabled,
            current,
            versions,
            current_created,
        };
        if set.insert(k.id.clone(), loaded).is_some() {
            return Err(format!("key {} is listed twice", k.id));
        }
    }
    Ok(set)
}

/// An RFC 3339 time as the key file stores it (`created`); `None` when it is not one.
fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339);
    t.ok().map(std::time::SystemTime::from)
}

/// Writes the key file atomically (temp file, fsync, rename) with 0600 permissions.
pub(super) fn write_key_file(path: &Path, file: &KeyFile) -> Result<(), String> {
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
