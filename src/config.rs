//! Configuration: TOML parsed into checked types. Every problem is collected and reported at
//! once; nothing here opens a port or touches a key.
//!
//! ```text
//! config/raw.rs      the file as serde reads it (every field optional where it may be left out)
//! config/check.rs    the Checker: raw -> checked, collecting every problem and warning
//!   check/keystores.rs  key stores, URI prefixes, credentials and their secrets
//!   check/kms_v2.rs     the KMS v2 plugin door
//! config/checked.rs  the checked types the rest of keygate reads
//! config/edit.rs     changes keygate writes into the file itself (`keys create --keystore`),
//!                    keeping its comments and layout
//! ```

mod check;
mod checked;
pub mod edit;
mod raw;

use std::path::Path;

pub use check::{
    MAX_HEADER_BYTES, MAX_PREFIX_LEN, MIN_HEADER_BYTES, SPEC_MIN_AAD, SPEC_MIN_PLAINTEXT,
    check_prefix,
};
pub use checked::{
    BackendKind, BackendSettings, Config, DecisionLogSettings, KeystoreSettings, KmsV2Settings,
    LimitSettings, PolicySettings, ServerSettings,
};
use raw::RawConfig;

/// A configuration that failed its checks: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(p: String) -> Self {
        ConfigError { problems: vec![p] }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// Checks `text` as if read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigError::one(format!("{}: {}", path.display(), e.to_string().trim()))
        })?;
        check::config(raw, path)
    }
}

#[cfg(test)]
mod tests;
