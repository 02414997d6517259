//! The checked configuration: what `check.rs` produces and the rest of keygate reads. Every
//! value here has passed its checks.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::credentials::{AccessKeyId, Secret};
use crate::policy::decision_log::SpaceLimits;
use crate::policy::decision_log::settings::{DigestSettings, UploadSettings};
use crate::server::tls::TlsSettings;
use crate::shed::RateLimit;

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub server: ServerSettings,
    pub limits: LimitSettings,
    pub backend: BackendSettings,
    pub keystores: Vec<KeystoreSettings>,
    pub policy: PolicySettings,
    pub decision_log: Option<DecisionLogSettings>,
    /// `[tls]`: HTTPS (and optional mTLS) on the XKS listener; `None` serves plain HTTP.
    pub tls: Option<TlsSettings>,
    /// `[admin] listen`: the plain-HTTP admin listener (/ping, /healthz, /readyz).
    pub admin_listen: Option<SocketAddr>,
    /// `[kms_v2]`: the Kubernetes KMS v2 plugin on a Unix socket.
    pub kms_v2: Option<KmsV2Settings>,
    /// Things worth a warning that do not stop the server.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub region: String,
    pub fleet_size: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    pub max_plaintext: usize,
    pub max_aad: usize,
    /// Hard cap on a request body, enforced while reading.
    pub max_body: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept (above an NLB's 350 s).
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Requests admitted at once; more answer 429 ThrottlingException.
    pub max_in_flight: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Open connections one peer address (an IPv6 /64) may hold.
    pub max_connections_per_peer: usize,
    /// Largest request head (request line and headers); larger gets 431 and a close.
    pub max_header_bytes: usize,
    /// Longest a TLS handshake may take once the connection is accepted.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    Software { key_file: PathBuf },
    Pkcs11(crate::keys::pkcs11::Pkcs11Settings),
    OpenBao(crate::keys::openbao::OpenBaoSettings),
}

#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub kind: BackendKind,
    /// The dedicated key the deep health check encrypts and decrypts with.
    pub health_key: String,
}

/// One logical key store, selected by its URI path prefix.
#[derive(Debug, Clone)]
pub struct KeystoreSettings {
    pub name: String,
    /// Empty, or `/segment[/segment...]` of `A-Za-z0-9_-`.
    pub uri_prefix: String,
    pub region: String,
    pub keys: BTreeSet<String>,
    pub credentials: Vec<(AccessKeyId, Secret)>,
    /// Creation times given in the config (`created`), by access key id.
    pub credential_created: HashMap<String, SystemTime>,
    /// `rate_limit_rps` / `burst`: requests beyond it answer 429 ThrottlingException.
    pub rate_limit: Option<RateLimit>,
}

/// `[kms_v2]`: the Kubernetes KMS v2 plugin door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsV2Settings {
    /// The Unix socket the kube-apiserver connects to (`unix://` + this path).
    pub socket: PathBuf,
    /// The door's name: `input.keystore` for policies, the key store label of its policy
    /// decisions.
    pub name: String,
    /// The key Encrypt uses (a key id of the backend).
    pub key: String,
    /// Keys Decrypt still accepts besides `key` (after the plugin moved to a new key).
    pub previous_keys: Vec<String>,
    /// How key and version are shown to the apiserver as `key_id`.
    pub key_id_format: crate::kms_v2::KeyIdFormat,
    /// The longest a call may take (a caller's shorter grpc-timeout wins).
    pub timeout: Duration,
    /// Socket connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Encrypt and Decrypt calls running at once; more answer RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
}

impl KmsV2Settings {
    /// The settings `serve --dev --kms-v2-socket` serves: the dev key `foo`.
    pub fn dev(socket: PathBuf) -> KmsV2Settings {
        KmsV2Settings {
            socket,
            name: DEFAULT_KMS_V2_NAME.to_owned(),
            key: "foo".to_owned(),
            previous_keys: Vec::new(),
            key_id_format: crate::kms_v2::KeyIdFormat::default(),
            timeout: DEFAULT_KMS_V2_TIMEOUT,
            max_connections: 16,
            max_in_flight: 256,
        }
    }

    /// Whether Decrypt may use `key` (the ciphertext names it).
    pub fn decrypts_with(&self, key: &str) -> bool {
        self.key == key || self.previous_keys.iter().any(|k| k == key)
    }
}

/// The default `[kms_v2] name`.
pub const DEFAULT_KMS_V2_NAME: &str = "kubernetes";
/// The default `[kms_v2] timeout_ms`: under the apiserver's default 3 s, so keygate answers
/// DEADLINE_EXCEEDED before the apiserver gives up.
pub const DEFAULT_KMS_V2_TIMEOUT: Duration = Duration::from_millis(2500);

/// `[policy]`: a policy directory replaces the embedded default policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// `None`: the embedded default policy (allow every authenticated request).
    pub dir: Option<PathBuf>,
    /// Limit for one evaluation; over it the request is refused.
    pub eval_timeout: Duration,
}

/// `[decision_log]`: one hash-chained JSON line per evaluated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogSettings {
    pub path: PathBuf,
    /// Refuse requests while the log cannot be written.
    pub fail_closed: bool,
    /// `None`: the default ([`crate::policy::decision_log::DEFAULT_ROTATE_BYTES`]).
    pub rotate_bytes: Option<u64>,
    /// `None`: the default ([`crate::policy::decision_log::DEFAULT_ROTATE_INTERVAL`]).
    pub rotate_interval: Option<Duration>,
    /// Lines that may wait for the writer (`queue_lines`).
    pub queue_lines: usize,
    /// Free-space thresholds of the log's filesystem (`min_free_bytes`, `min_free_percent`,
    /// `min_free_inodes`, `reserved_bytes`).
    pub space: SpaceLimits,
    /// `compression` and `[decision_log.retention]`.
    pub lifecycle: crate::policy::decision_log::LifecycleConfig,
    /// `[decision_log.upload]`: ship events to an OPA decision-log collector.
    pub upload: Option<UploadSettings>,
    /// `[decision_log.digest]`: signed digests.
    pub digest: Option<DigestSettings>,
    /// `[decision_log.mask]`: members erased or HMAC'd before a line is written.
    pub mask: Option<crate::policy::decision_log::mask::MaskSettings>,
}

impl DecisionLogSettings {
    /// A log at `path` with every default (no `[decision_log]` table: `--decision-log`).
    pub fn at(path: PathBuf) -> Self {
        Self {
            path,
            fail_closed: false,
            rotate_bytes: None,
            rotate_interval: None,
            queue_lines: crate::policy::decision_log::DEFAULT_QUEUE_LINES,
            space: SpaceLimits::default(),
            lifecycle: Default::default(),
            upload: None,
            digest: None,
            mask: None,
        }
    }
}

impl Config {
    /// The key store with `name`, or the only one when `name` is `None`.
    pub fn keystore(&self, name: Option<&str>) -> Result<&KeystoreSettings, String> {
        match name {
            Some(n) => self
                .keystores
                .iter()
                .find(|k| k.name == n)
                .ok_or_else(|| format!("no key store named {n:?}")),
            None => match self.keystores.as_slice() {
                [only] => Ok(only),
                _ => Err("several key stores are configured; name one with --keystore".into()),
            },
        }
    }
}
