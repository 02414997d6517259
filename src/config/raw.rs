//! The configuration as read from TOML: serde structs, one per section, with every field
//! optional where the file may leave it out. Nothing here is checked; `check.rs` turns these
//! into the types in `checked.rs`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::server::tls::TlsToml;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) backend: RawBackend,
    #[serde(default)]
    pub(super) keystore: Vec<RawKeystore>,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    pub(super) decision_log: Option<RawDecisionLog>,
    pub(super) tls: Option<TlsToml>,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    pub(super) kms_v2: Option<RawKmsV2>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKmsV2 {
    pub(super) socket: Option<PathBuf>,
    pub(super) name: Option<String>,
    pub(super) key: Option<String>,
    #[serde(default)]
    pub(super) previous_keys: Vec<String>,
    pub(super) key_id_format: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_in_flight: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) region: Option<String>,
    pub(super) fleet_size: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_plaintext_bytes: Option<usize>,
    pub(super) max_aad_bytes: Option<usize>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) header_read_timeout_ms: Option<u64>,
    pub(super) body_read_timeout_ms: Option<u64>,
    pub(super) idle_timeout_secs: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) shutdown_grace_secs: Option<u64>,
    pub(super) max_connections_per_peer: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) handshake_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) kind: Option<String>,
    pub(super) health_key: Option<String>,
    pub(super) software: Option<RawSoftware>,
    pub(super) pkcs11: Option<crate::keys::pkcs11::Pkcs11Toml>,
    pub(super) openbao: Option<crate::keys::openbao::OpenBaoToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSoftware {
    pub(super) key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeystore {
    pub(super) name: String,
    pub(super) uri_prefix: String,
    pub(super) region: Option<String>,
    #[serde(default)]
    pub(super) keys: Vec<String>,
    #[serde(default)]
    pub(super) credential: Vec<RawCredential>,
    pub(super) rate_limit_rps: Option<u32>,
    pub(super) burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) access_key_id: String,
    pub(super) secret: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    /// RFC 3339 creation time, reported as the credential's age.
    pub(super) created: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) dir: Option<PathBuf>,
    pub(super) eval_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) keep_files: Option<u64>,
    pub(super) max_age_days: Option<u64>,
    pub(super) max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecisionLog {
    pub(super) path: PathBuf,
    pub(super) fail_closed: Option<bool>,
    pub(super) rotate_bytes: Option<u64>,
    pub(super) rotate_interval_secs: Option<u64>,
    pub(super) queue_lines: Option<u64>,
    pub(super) min_free_bytes: Option<u64>,
    pub(super) min_free_percent: Option<u64>,
    pub(super) min_free_inodes: Option<u64>,
    pub(super) reserved_bytes: Option<u64>,
    pub(super) compression: Option<String>,
    pub(super) retention: Option<RawRetention>,
    pub(super) upload: Option<crate::policy::decision_log::settings::UploadToml>,
    pub(super) digest: Option<crate::policy::decision_log::settings::DigestToml>,
    pub(super) mask: Option<crate::policy::decision_log::mask::MaskToml>,
}
