//! The `[kms_v2]` checks: socket path, name, keys, key_id format, timeout and caps.

use std::path::Path;
use std::time::Duration;

use super::Checker;
use crate::config::checked::{
    DEFAULT_KMS_V2_NAME, DEFAULT_KMS_V2_TIMEOUT, KeystoreSettings, KmsV2Settings,
};
use crate::config::raw::RawKmsV2;
use crate::keys::valid_key_id;
use crate::kms_v2::KeyIdFormat;

impl Checker {
    pub(super) fn kms_v2(
        &mut self,
        raw: Option<RawKmsV2>,
        base: &Path,
        keystores: &[KeystoreSettings],
    ) -> Option<KmsV2Settings> {
        let raw = raw?;
        let socket = match raw.socket {
            Some(s) if !s.as_os_str().is_empty() => base.join(s),
            _ => {
                self.problems
                    .push("kms_v2.socket is required (the Unix socket path)".into());
                Default::default()
            }
        };
        if socket.as_os_str().len() > crate::kms_v2::socket::MAX_PATH_LEN - 24 {
            self.problems.push(format!(
                "kms_v2.socket {} is too long for a Unix socket path (at most {} bytes)",
                socket.display(),
                crate::kms_v2::socket::MAX_PATH_LEN - 24
            ));
        }
        let name = raw.name.unwrap_or_else(|| DEFAULT_KMS_V2_NAME.into());
        if !valid_name(&name) {
            self.problems.push(format!(
                "kms_v2.name {name:?} must be 1-64 characters of A-Za-z0-9_-"
            ));
        }
        if keystores.iter().any(|k| k.name == name) {
            self.problems.push(format!(
                "kms_v2.name {name:?} is also a [[keystore]] name; policies and metrics could not tell them apart"
            ));
        }
        let key = raw.key.unwrap_or_default();
        if !valid_key_id(&key) {
            self.problems.push(format!(
                "kms_v2.key {key:?} must be a key id of the backend (1-128 of A-Za-z0-9-._)"
            ));
        }
        for k in &raw.previous_keys {
            if !valid_key_id(k) {
                self.problems
                    .push(format!("kms_v2.previous_keys: {k:?} is not a valid key id"));
            }
        }
        let key_id_format = match raw.key_id_format.as_deref().map(KeyIdFormat::parse) {
            None => KeyIdFormat::default(),
            Some(Ok(f)) => f,
            Some(Err(why)) => {
                self.problems.push(format!("kms_v2.key_id_format {why}"));
                KeyIdFormat::default()
            }
        };
        let timeout = raw
            .timeout_ms
            .map_or(DEFAULT_KMS_V2_TIMEOUT, Duration::from_millis);
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
            self.problems
                .push("kms_v2.timeout_ms must be between 100 and 60000".into());
        }
        let max_connections = raw.max_connections.unwrap_or(16);
        let max_in_flight = raw.max_in_flight.unwrap_or(256);
        if max_connections == 0 || max_in_flight == 0 {
            self.problems
                .push("kms_v2.max_connections and kms_v2.max_in_flight must be at least 1".into());
        }
        Some(KmsV2Settings {
            socket,
            name,
            key,
            previous_keys: raw.previous_keys,
            key_id_format,
            timeout,
            max_connections,
            max_in_flight,
        })
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
