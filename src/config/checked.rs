//! The checked configuration: what `check.rs` produces and the rest of keygate reads. Every
//! value here has passed its checks.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::credentials::{AccessKeyId, Secret};
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
    pub rotate_bytes: Option<u64>,
    pub rotate_interval: Option<Duration>,
    /// `[decision_log.upload]`: ship events to an OPA decision-log collector.
    pub upload: Option<UploadSettings>,
    /// `[decision_log.digest]`: signed digests.
    pub digest: Option<DigestSettings>,
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
