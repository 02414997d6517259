//! Configuration: TOML parsed into checked types. Every problem is collected and reported at
//! once; nothing here opens a port or touches a key.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::credentials::{AccessKeyId, Secret};
use crate::keys::valid_key_id;
use crate::server::tls::{TlsSettings, TlsToml};
use crate::shed::RateLimit;

mod policy;
pub use policy::{DecisionLogSettings, PolicySettings};

/// The spec's minimum plaintext/ciphertext size a proxy must support.
pub const SPEC_MIN_PLAINTEXT: usize = 4300;
/// The spec's minimum AAD size a proxy must support.
pub const SPEC_MIN_AAD: usize = 8192;
/// Longest URI path prefix: the path `{prefix}/kms/xks/v1` may have 128 characters.
pub const MAX_PREFIX_LEN: usize = 117;
/// Smallest request-head buffer hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;
/// Largest request-head limit keygate accepts.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    backend: RawBackend,
    #[serde(default)]
    keystore: Vec<RawKeystore>,
    #[serde(default)]
    policy: policy::RawPolicy,
    decision_log: Option<policy::RawDecisionLog>,
    tls: Option<TlsToml>,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    region: Option<String>,
    fleet_size: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_plaintext_bytes: Option<usize>,
    max_aad_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_in_flight: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    max_connections_per_peer: Option<usize>,
    max_header_bytes: Option<usize>,
    handshake_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    health_key: Option<String>,
    software: Option<RawSoftware>,
    pkcs11: Option<crate::keys::pkcs11::Pkcs11Toml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoftware {
    key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeystore {
    name: String,
    uri_prefix: String,
    region: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    credential: Vec<RawCredential>,
    rate_limit_rps: Option<u32>,
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    access_key_id: String,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    /// RFC 3339 creation time, reported as the credential's age.
    created: Option<String>,
}

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

/// Default body cap: Base64 of the largest plaintext and AAD, plus room for metadata.
fn default_max_body(max_plaintext: usize, max_aad: usize) -> usize {
    (max_plaintext + max_aad).div_ceil(3) * 4 + 16 * 1024
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
        let base = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf();
        let mut c = Checker {
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let server = c.server(raw.server);
        let limits = c.limits(raw.limits);
        let backend = c.backend(raw.backend, &base);
        let keystores = c.keystores(raw.keystore, &server.region, &base);
        let policy = c.policy(raw.policy, &base);
        let decision_log = c.decision_log(raw.decision_log, &base);
        let tls = raw.tls.and_then(|t| match t.check(&base) {
            Ok(t) => Some(t),
            Err(p) => {
                c.problems.extend(p);
                None
            }
        });
        let admin_listen = c.admin_listen(raw.admin.listen);
        if !c.problems.is_empty() {
            return Err(ConfigError {
                problems: c.problems,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            server,
            limits,
            backend,
            keystores,
            policy,
            decision_log,
            tls,
            admin_listen,
            warnings: c.warnings,
        })
    }

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

struct Checker {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Checker {
    fn admin_listen(&mut self, raw: Option<String>) -> Option<SocketAddr> {
        let text = raw?;
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.problems.push(format!(
                "admin.listen {text:?} is not an address like 127.0.0.1:9090"
            ));
        }
        parsed
    }

    fn server(&mut self, raw: RawServer) -> ServerSettings {
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8443".into());
        let listen = listen_text.parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "server.listen {listen_text:?} is not an address like 0.0.0.0:443"
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let region = raw.region.unwrap_or_else(|| "us-east-1".into());
        self.region("server.region", &region);
        let fleet_size = raw.fleet_size.unwrap_or(1);
        if fleet_size == 0 {
            self.problems
                .push("server.fleet_size must be at least 1".into());
        }
        ServerSettings {
            listen,
            region,
            fleet_size,
        }
    }

    fn region(&mut self, what: &str, region: &str) {
        let ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.problems.push(format!(
                "{what} {region:?} is not a region name like us-east-1"
            ));
        }
    }

    fn limits(&mut self, raw: RawLimits) -> LimitSettings {
        let max_plaintext = raw.max_plaintext_bytes.unwrap_or(8192);
        let max_aad = raw.max_aad_bytes.unwrap_or(16384);
        if max_plaintext < SPEC_MIN_PLAINTEXT {
            self.problems.push(format!(
                "limits.max_plaintext_bytes must be at least the spec's {SPEC_MIN_PLAINTEXT}"
            ));
        }
        if !(SPEC_MIN_AAD..=crate::xks::envelope::MAX_FRAMED_AAD_LEN).contains(&max_aad) {
            self.problems.push(format!(
                "limits.max_aad_bytes must be between the spec's {SPEC_MIN_AAD} and 65535"
            ));
        }
        let needed = default_max_body(max_plaintext, max_aad);
        let max_body = raw.max_body_bytes.unwrap_or(needed);
        if max_body < needed {
            self.problems.push(format!(
                "limits.max_body_bytes must be at least {needed} to carry the configured plaintext and AAD"
            ));
        }
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        let max_connections = raw.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            self.problems
                .push("limits.max_connections must be at least 1".into());
        }
        let max_in_flight = raw.max_in_flight.unwrap_or(1024);
        if max_in_flight == 0 {
            self.problems
                .push("limits.max_in_flight must be at least 1".into());
        }
        let (max_connections_per_peer, max_header_bytes) = self.connection_limits(&raw);
        let handshake_ms = raw.handshake_timeout_ms.unwrap_or(5_000);
        if !(100..=60_000).contains(&handshake_ms) {
            self.problems
                .push("limits.handshake_timeout_ms must be between 100 and 60000".into());
        }
        LimitSettings {
            max_plaintext,
            max_aad,
            max_body,
            header_read_timeout: ms(raw.header_read_timeout_ms, 5_000),
            body_read_timeout: ms(raw.body_read_timeout_ms, 5_000),
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs.unwrap_or(400)),
            max_connections,
            max_in_flight,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(10)),
            max_connections_per_peer,
            max_header_bytes,
            handshake_timeout: Duration::from_millis(handshake_ms),
        }
    }

    fn connection_limits(&mut self, raw: &RawLimits) -> (usize, usize) {
        let per_peer = raw.max_connections_per_peer.unwrap_or(1024);
        if per_peer == 0 {
            self.problems
                .push("limits.max_connections_per_peer must be at least 1".into());
        }
        let header = raw.max_header_bytes.unwrap_or(16 * 1024);
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&header) {
            self.problems.push(format!(
                "limits.max_header_bytes must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"
            ));
        }
        (per_peer, header)
    }

    fn backend(&mut self, raw: RawBackend, base: &Path) -> BackendSettings {
        let health_key = raw.health_key.unwrap_or_else(|| "keygate-health".into());
        if !valid_key_id(&health_key) {
            self.problems.push(format!(
                "backend.health_key {health_key:?} is not a valid key id"
            ));
        }
        let kind = match raw.kind.as_deref().unwrap_or("software") {
            "software" => {
                let key_file = raw
                    .software
                    .map(|s| s.key_file)
                    .unwrap_or_else(|| "keys.json".into());
                BackendKind::Software {
                    key_file: base.join(key_file),
                }
            }
            "pkcs11" => match raw.pkcs11.map(|t| t.check(base)) {
                Some(Ok(mut settings)) => {
                    self.warnings.append(&mut settings.warnings);
                    BackendKind::Pkcs11(settings)
                }
                Some(Err(problems)) => {
                    self.problems.extend(problems);
                    BackendKind::Software {
                        key_file: PathBuf::new(),
                    }
                }
                None => {
                    self.problems
                        .push("backend.kind = \"pkcs11\" needs a [backend.pkcs11] table".into());
                    BackendKind::Software {
                        key_file: PathBuf::new(),
                    }
                }
            },
            other => {
                self.problems.push(format!(
                    "backend.kind {other:?} is unknown (expected software or pkcs11)"
                ));
                BackendKind::Software {
                    key_file: PathBuf::new(),
                }
            }
        };
        BackendSettings { kind, health_key }
    }

    fn keystores(
        &mut self,
        raw: Vec<RawKeystore>,
        region: &str,
        base: &Path,
    ) -> Vec<KeystoreSettings> {
        if raw.is_empty() {
            self.problems
                .push("at least one [[keystore]] is required".into());
        }
        let (mut names, mut prefixes) = (HashSet::new(), HashSet::new());
        let mut out = Vec::with_capacity(raw.len());
        for ks in raw {
            let what = format!("keystore {:?}", ks.name);
            if !valid_name(&ks.name) {
                self.problems.push(format!(
                    "{what}: name must be 1-64 characters of A-Za-z0-9_-"
                ));
            }
            if !names.insert(ks.name.clone()) {
                self.problems.push(format!("{what}: name is used twice"));
            }
            if let Err(p) = check_prefix(&ks.uri_prefix) {
                self.problems
                    .push(format!("{what}: uri_prefix {:?} {p}", ks.uri_prefix));
            }
            if !prefixes.insert(ks.uri_prefix.clone()) {
                self.problems.push(format!(
                    "{what}: uri_prefix {:?} is used twice",
                    ks.uri_prefix
                ));
            }
            let region = ks.region.unwrap_or_else(|| region.to_owned());
            self.region(&format!("{what}: region"), &region);
            for k in ks.keys.iter().filter(|k| !valid_key_id(k)) {
                self.problems.push(format!(
                    "{what}: key id {k:?} must be 1-128 characters of A-Za-z0-9-._"
                ));
            }
            let rate_limit = self.rate_limit(&what, ks.rate_limit_rps, ks.burst);
            let credential_created = self.created(&what, &ks.credential);
            let credentials = self.credentials(&what, ks.credential, base);
            out.push(KeystoreSettings {
                name: ks.name,
                uri_prefix: ks.uri_prefix,
                region,
                keys: ks.keys.into_iter().collect(),
                credentials,
                credential_created,
                rate_limit,
            });
        }
        out
    }

    fn credentials(
        &mut self,
        what: &str,
        raw: Vec<RawCredential>,
        base: &Path,
    ) -> Vec<(AccessKeyId, Secret)> {
        if raw.is_empty() {
            self.problems.push(format!(
                "{what}: at least one [[keystore.credential]] is required"
            ));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in raw {
            let id = AccessKeyId::parse(&c.access_key_id);
            if !seen.insert(c.access_key_id.clone()) {
                self.problems.push(format!(
                    "{what}: access key id {} is listed twice",
                    c.access_key_id
                ));
            }
            let secret = self.secret(what, &c, base);
            match (id, secret) {
                (Ok(id), Some(secret)) => out.push((id, secret)),
                (Err(e), _) => self.problems.push(format!("{what}: {e}")),
                (Ok(_), None) => {}
            }
        }
        out
    }

    fn rate_limit(
        &mut self,
        what: &str,
        rps: Option<u32>,
        burst: Option<u32>,
    ) -> Option<RateLimit> {
        match (rps, burst) {
            (None, None) => None,
            (None, Some(_)) => {
                self.problems
                    .push(format!("{what}: burst needs rate_limit_rps"));
                None
            }
            (Some(0), _) | (_, Some(0)) => {
                self.problems.push(format!(
                    "{what}: rate_limit_rps and burst must be at least 1"
                ));
                None
            }
            (Some(rps), burst) => Some(RateLimit {
                rps,
                burst: burst.unwrap_or(rps),
            }),
        }
    }

    fn created(&mut self, what: &str, raw: &[RawCredential]) -> HashMap<String, SystemTime> {
        let rfc3339 = time::format_description::well_known::Rfc3339;
        let mut out = HashMap::new();
        for c in raw {
            let Some(text) = &c.created else { continue };
            match time::OffsetDateTime::parse(text, &rfc3339) {
                Ok(t) => {
                    out.insert(c.access_key_id.clone(), SystemTime::from(t));
                }
                Err(_) => self.problems.push(format!(
                    "{what}: credential {}: created {text:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z",
                    c.access_key_id
                )),
            }
        }
        out
    }

    fn secret(&mut self, what: &str, c: &RawCredential, base: &Path) -> Option<Secret> {
        let who = format!("{what}: credential {}", c.access_key_id);
        let text = match (&c.secret, &c.secret_env, &c.secret_file) {
            (Some(s), None, None) => s.clone(),
            (None, Some(var), None) => match std::env::var(var) {
                Ok(v) => v,
                Err(_) => {
                    self.problems
                        .push(format!("{who}: environment variable {var} is not set"));
                    return None;
                }
            },
            (None, None, Some(file)) => {
                let path = base.join(file);
                self.warn_if_readable_by_others(&who, &path);
                match crate::credentials::read_secret_file(&path) {
                    Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
                    Err(e) => {
                        self.problems.push(format!(
                            "{who}: cannot read secret_file {}: {e}",
                            path.display()
                        ));
                        return None;
                    }
                }
            }
            _ => {
                self.problems.push(format!(
                    "{who}: give exactly one of secret, secret_env, secret_file"
                ));
                return None;
            }
        };
        Secret::parse(text)
            .map_err(|e| self.problems.push(format!("{who}: {e}")))
            .ok()
    }

    fn warn_if_readable_by_others(&mut self, who: &str, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            self.warnings.push(format!(
                "{who}: secret_file {} is readable by other users (chmod 600 it)",
                path.display()
            ));
        }
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A URI path prefix: empty, or `/seg(/seg)*` with segments of `A-Za-z0-9_-`, at most 117
/// characters, so `{prefix}/kms/xks/v1` fits the spec's 128.
pub fn check_prefix(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Ok(());
    }
    if p.len() > MAX_PREFIX_LEN {
        return Err("is longer than 117 characters");
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err("must be empty or start with /");
    };
    let segments_ok = rest.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !segments_ok {
        return Err("must be /segments of A-Za-z0-9_- with no empty segment or trailing /");
    }
    if p.ends_with("/kms/xks/v1") || p.contains("/kms/xks/") {
        return Err("must not contain /kms/xks/ (give only the part before it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
