//! The `[backend.openbao]` table: its TOML shape and the checked settings the backend runs on.
//! Secrets (the token, the AppRole secret id) are named by file or environment variable and
//! read when the backend needs them, never written inline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::credentials::read_secret_file;

/// The `[backend.openbao]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBaoToml {
    /// `https://host:port` (or `http://` on loopback and trusted networks).
    pub address: String,
    /// PEM bundle of the CAs the server's certificate chains to (required for https).
    pub ca_file: Option<PathBuf>,
    /// Sent as `X-Vault-Namespace` on every request.
    pub namespace: Option<String>,
    /// Where the Transit engine is mounted.
    #[serde(default = "defaults::mount")]
    pub mount: String,
    /// File holding keygate's token (renewed with `renew-self`; re-read when it changes).
    pub token_file: Option<PathBuf>,
    /// Environment variable holding keygate's token.
    pub token_env: Option<String>,
    /// AppRole login: the role id (not a secret on its own) ...
    pub role_id: Option<String>,
    pub role_id_file: Option<PathBuf>,
    /// ... and the secret id, from a file or an environment variable.
    pub secret_id_file: Option<PathBuf>,
    pub secret_id_env: Option<String>,
    #[serde(default = "defaults::approle_mount")]
    pub approle_mount: String,
    /// The ACL policy on keygate's token that `keygate keys create` edits to grant a key's usage.
    #[serde(default = "defaults::policy")]
    pub policy: String,
    /// Each request to the server (connect, TLS, answer) must finish within this.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests to the server at once, each on its own keep-alive connection.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// How long a request may wait for a free connection before ThrottlingException.
    #[serde(default = "defaults::queue_wait_ms")]
    pub queue_wait_ms: u64,
}

mod defaults {
    pub fn mount() -> String {
        "transit".into()
    }
    pub fn approle_mount() -> String {
        "approle".into()
    }
    pub fn policy() -> String {
        "keygate".into()
    }
    pub fn request_timeout_ms() -> u64 {
        2000
    }
    pub fn pool_size() -> usize {
        16
    }
    pub fn queue_wait_ms() -> u64 {
        50
    }
}

/// Where a secret comes from: read when needed, so a rotated file is picked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    /// Written in the config: only for the AppRole role id, which identifies but proves nothing.
    Inline(String),
}

impl SecretSource {
    /// The secret itself: the first line of the file, or the variable's value.
    pub fn read(&self) -> Result<zeroize::Zeroizing<String>, String> {
        let text = match self {
            SecretSource::File(path) => {
                check_private(path)?;
                zeroize::Zeroizing::new(
                    read_secret_file(path).map_err(|e| format!("{}: {e}", path.display()))?,
                )
            }
            SecretSource::Env(var) => zeroize::Zeroizing::new(
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
            ),
            SecretSource::Inline(v) => zeroize::Zeroizing::new(v.clone()),
        };
        match text.lines().next().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(zeroize::Zeroizing::new(s.to_owned())),
            _ => Err(format!("{self} is empty")),
        }
    }

    /// When the secret last changed (files only), to notice a rotated file.
    pub fn stamp(&self) -> Option<std::time::SystemTime> {
        match self {
            SecretSource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            SecretSource::Env(_) | SecretSource::Inline(_) => None,
        }
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
            SecretSource::Inline(_) => f.write_str("the inline value"),
        }
    }
}

/// How keygate logs in to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// A token given to keygate, renewed before it expires.
    Token(SecretSource),
    /// AppRole: log in with role id and secret id; log in again when the token cannot be
    /// renewed any more.
    AppRole {
        mount: String,
        role_id: SecretSource,
        secret_id: SecretSource,
    },
}

/// Checked settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenBaoSettings {
    /// `http(s)://host:port`, without a trailing slash.
    pub address: String,
    pub ca_file: Option<PathBuf>,
    pub namespace: Option<String>,
    /// The Transit mount, without slashes at either end.
    pub mount: String,
    pub auth: AuthMethod,
    pub policy: String,
    pub request_timeout: Duration,
    pub pool_size: usize,
    pub queue_wait: Duration,
    pub warnings: Vec<String>,
}

impl OpenBaoSettings {
    /// Settings with every default, for code that builds them directly (tests, `serve --dev`).
    pub fn new(address: &str, mount: &str, auth: AuthMethod) -> OpenBaoSettings {
        OpenBaoSettings {
            address: address.trim_end_matches('/').to_owned(),
            ca_file: None,
            namespace: None,
            mount: mount.trim_matches('/').to_owned(),
            auth,
            policy: defaults::policy(),
            request_timeout: Duration::from_millis(defaults::request_timeout_ms()),
            pool_size: defaults::pool_size(),
            queue_wait: Duration::from_millis(defaults::queue_wait_ms()),
            warnings: Vec::new(),
        }
    }

    /// Whether the address is https.
    pub fn tls(&self) -> bool {
        self.address.starts_with("https://")
    }
}

impl OpenBaoToml {
    /// Checks the table; relative paths resolve against `base` (the config file's
    /// directory). Reports every problem at once.
    pub fn check(self, base: &Path) -> Result<OpenBaoSettings, Vec<String>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let address = check_address(&self.address, &mut errors, &mut warnings);
        let ca_file = self.ca_file.as_ref().map(|p| base.join(p));
        match (&ca_file, address.starts_with("https://")) {
            (Some(ca), _) if !ca.is_file() => {
                errors.push(format!("openbao.ca_file: {} is not a file", ca.display()));
            }
            (None, true) => errors.push(
                "openbao.ca_file: an https address needs the CA bundle its certificate chains to"
                    .into(),
            ),
            _ => {}
        }
        if let Some(ns) = &self.namespace
            && !valid_path(ns)
        {
            errors.push(format!("openbao.namespace {ns:?}: use A-Za-z0-9_-. and /"));
        }
        let mount = self.mount.trim_matches('/').to_owned();
        if !valid_path(&mount) {
            errors.push(format!(
                "openbao.mount {:?}: use A-Za-z0-9_-. and /",
                self.mount
            ));
        }
        let auth = self.auth(base, &mut errors);
        if !valid_path(&self.policy) || self.policy.contains('/') {
            errors.push(format!(
                "openbao.policy {:?}: use A-Za-z0-9_-.",
                self.policy
            ));
        }
        if !(1..=60_000).contains(&self.request_timeout_ms) {
            errors.push("openbao.request_timeout_ms: must be 1-60000".into());
        }
        if !(1..=1024).contains(&self.pool_size) {
            errors.push("openbao.pool_size: must be 1-1024".into());
        }
        if self.queue_wait_ms > self.request_timeout_ms {
            errors.push("openbao.queue_wait_ms: must not exceed request_timeout_ms".into());
        }
        match auth {
            Some(auth) if errors.is_empty() => Ok(OpenBaoSettings {
                address,
                ca_file,
                namespace: self.namespace,
                mount,
                auth,
                policy: self.policy,
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                pool_size: self.pool_size,
                queue_wait: Duration::from_millis(self.queue_wait_ms),
                warnings,
            }),
            _ => Err(errors),
        }
    }

    fn auth(&self, base: &Path, errors: &mut Vec<String>) -> Option<AuthMethod> {
        let token = one_source(
            "token",
            self.token_file.as_ref(),
            self.token_env.as_ref(),
            base,
            errors,
        );
        let approle_given = self.role_id.is_some()
            || self.role_id_file.is_some()
            || self.secret_id_file.is_some()
            || self.secret_id_env.is_some();
        match (token, approle_given) {
            (Some(_), true) => {
                errors.push(
                    "openbao: use a token (token_file/token_env) or AppRole, not both".into(),
                );
                None
            }
            (Some(source), false) => {
                readable(source, "openbao.token", errors).map(AuthMethod::Token)
            }
            (None, true) => {
                let role_id = match (&self.role_id, &self.role_id_file) {
                    (Some(id), None) => Some(SecretSource::Inline(id.clone())),
                    (None, Some(f)) => Some(SecretSource::File(base.join(f))),
                    _ => {
                        errors.push(
                            "openbao: AppRole needs exactly one of role_id, role_id_file".into(),
                        );
                        None
                    }
                };
                let secret_id = one_source(
                    "secret_id",
                    self.secret_id_file.as_ref(),
                    self.secret_id_env.as_ref(),
                    base,
                    errors,
                )
                .and_then(|s| readable(s, "openbao.secret_id", errors));
                if !valid_path(&self.approle_mount) {
                    errors.push("openbao.approle_mount: use A-Za-z0-9_-. and /".into());
                }
                match (role_id, secret_id) {
                    (Some(role), Some(secret_id)) => Some(AuthMethod::AppRole {
                        mount: self.approle_mount.trim_matches('/').to_owned(),
                        role_id: role,
                        secret_id,
                    }),
                    (None, Some(_)) => None,
                    (_, None) => {
                        if self.secret_id_file.is_none() && self.secret_id_env.is_none() {
                            errors.push(
                                "openbao: AppRole needs secret_id_file or secret_id_env".into(),
                            );
                        }
                        None
                    }
                }
            }
            (None, false) => {
                if self.token_file.is_none() && self.token_env.is_none() {
                    errors.push(
                        "openbao: set token_file (or token_env), or role_id and secret_id_file for AppRole"
                            .into(),
                    );
                }
                None
            }
        }
    }
}

fn one_source(
    what: &str,
    file: Option<&PathBuf>,
    env: Option<&String>,
    base: &Path,
    errors: &mut Vec<String>,
) -> Option<SecretSource> {
    match (file, env) {
        (Some(f), None) => Some(SecretSource::File(base.join(f))),
        (None, Some(v)) => Some(SecretSource::Env(v.clone())),
        (Some(_), Some(_)) => {
            errors.push(format!("openbao: set {what}_file or {what}_env, not both"));
            None
        }
        (None, None) => None,
    }
}

/// The source must be readable now (the config is refused otherwise).
fn readable(source: SecretSource, what: &str, errors: &mut Vec<String>) -> Option<SecretSource> {
    match source.read() {
        Ok(_) => Some(source),
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            None
        }
    }
}

/// A secret file must not be readable by group or others.
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (chmod 600 it)",
            path.display()
        ));
    }
    Ok(())
}

fn valid_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn check_address(raw: &str, errors: &mut Vec<String>, warnings: &mut Vec<String>) -> String {
    let address = raw.trim_end_matches('/').to_owned();
    let uri: http::Uri = match address.parse() {
        Ok(u) => u,
        Err(e) => {
            errors.push(format!("openbao.address {raw:?}: {e}"));
            return address;
        }
    };
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            let loopback = host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                warnings.push(format!(
                    "openbao.address {address}: plain http sends keygate's token and every plaintext unencrypted; use https"
                ));
            }
        }
        _ => errors.push(format!(
            "openbao.address {raw:?}: must start with https:// or http://"
        )),
    }
    if host.is_empty() {
        errors.push(format!("openbao.address {raw:?}: no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        errors.push(format!(
            "openbao.address {raw:?}: give scheme, host and port only"
        ));
    }
    address
}

#[cfg(test)]
mod tests;
