//! `keygate keys ...` on the software key file: create, list, enable/disable and rotate
//! keys, each change written back to the file at once.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use zeroize::Zeroizing;

use super::PROTECTION;
use super::format::{
    FORMAT, KeyFile, StoredKey, StoredVersion, load_keys, read_key_file, write_key_file,
};
use crate::keys::{KeyAdmin, KeyListing, KeyUsage, valid_key_id};

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
