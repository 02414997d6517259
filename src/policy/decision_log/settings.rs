//! The `[decision_log.upload]` and `[decision_log.digest]` tables: their TOML shape and the
//! checked settings. Names follow OPA's decision_logs plugin where it has one
//! (`resource`, `partition_name`, `upload_size_limit_bytes`, `min_delay_seconds`,
//! `max_delay_seconds`, `buffer_size_limit_bytes`) and its defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// OPA's default upload size limit (gzip'd body).
pub const DEFAULT_UPLOAD_SIZE_LIMIT: u64 = 32 * 1024;
/// OPA's default delay bounds between uploads.
pub const DEFAULT_MIN_DELAY_SECS: u64 = 300;
pub const DEFAULT_MAX_DELAY_SECS: u64 = 600;
/// Default bound of events read from the log and not yet acknowledged.
pub const DEFAULT_BUFFER_SIZE_LIMIT: u64 = 4 * 1024 * 1024;
/// Default per-request timeout (OPA's `response_header_timeout_seconds`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Default digest interval (CloudTrail's).
pub const DEFAULT_DIGEST_INTERVAL_SECS: u64 = 3600;

/// `[decision_log.upload]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadToml {
    /// The collector's base URL; events are POSTed to `{url}{resource}`.
    pub url: String,
    /// Path appended to `url` (OPA's `resource`), default `/logs`.
    pub resource: Option<String>,
    /// OPA's `partition_name`: the resource becomes `/logs/{partition_name}`.
    pub partition_name: Option<String>,
    /// CA bundle (PEM) the collector's certificate must chain to (https).
    pub ca_cert: Option<PathBuf>,
    /// File holding a bearer token (mode 0600), read before every upload.
    pub bearer_token_path: Option<PathBuf>,
    pub upload_size_limit_bytes: Option<u64>,
    pub min_delay_seconds: Option<u64>,
    pub max_delay_seconds: Option<u64>,
    pub buffer_size_limit_bytes: Option<u64>,
    /// Connecting plus one request and its answer, in seconds.
    pub timeout_seconds: Option<u64>,
    /// Refuse requests while the collector cannot take the log (default false).
    pub require_upload: Option<bool>,
}

/// Checked upload settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSettings {
    /// The collector's base URL as configured.
    pub url: String,
    /// The request path: the URL's path and the resource.
    pub path: String,
    pub ca_cert: Option<PathBuf>,
    pub bearer_token_path: Option<PathBuf>,
    /// Largest gzip'd request body.
    pub upload_size_limit: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Most event bytes held in memory (read from the log, not yet acknowledged).
    pub buffer_size_limit: usize,
    pub timeout: Duration,
    pub require_upload: bool,
}

impl UploadSettings {
    /// Settings for `url` with every default (for tests).
    pub fn new(url: &str) -> Result<Self, Vec<String>> {
        let toml = UploadToml {
            url: url.to_owned(),
            resource: None,
            partition_name: None,
            ca_cert: None,
            bearer_token_path: None,
            upload_size_limit_bytes: None,
            min_delay_seconds: None,
            max_delay_seconds: None,
            buffer_size_limit_bytes: None,
            timeout_seconds: None,
            require_upload: None,
        };
        toml.check(Path::new("/"), &mut Vec::new())
    }
}

impl UploadToml {
    /// Checks the table (paths relative to `base`), reporting every problem; warnings (plain
    /// HTTP off the machine) go to `warnings`.
    pub fn check(
        self,
        base: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<UploadSettings, Vec<String>> {
        let mut problems = Vec::new();
        let p = "decision_log.upload";
        let path = self.request_path(&mut problems, warnings);
        let ca_cert = self.ca_cert.map(|c| base.join(c));
        if let Some(ca) = &ca_cert
            && !ca.is_file()
        {
            problems.push(format!("{p}.ca_cert: {} is not a file", ca.display()));
        }
        if self.url.starts_with("https://") && ca_cert.is_none() {
            problems.push(format!(
                "{p}.ca_cert is required for an https url (e.g. /etc/ssl/certs/ca-certificates.crt)"
            ));
        }
        let bearer_token_path = self.bearer_token_path.map(|t| base.join(t));
        if let Some(token) = &bearer_token_path
            && let Err(e) = private_file(token)
        {
            problems.push(format!("{p}.bearer_token_path: {e}"));
        }
        let limit = self
            .upload_size_limit_bytes
            .unwrap_or(DEFAULT_UPLOAD_SIZE_LIMIT);
        if !(1024..=64 * 1024 * 1024).contains(&limit) {
            problems.push(format!(
                "{p}.upload_size_limit_bytes must be between 1024 and 67108864"
            ));
        }
        let buffer = self
            .buffer_size_limit_bytes
            .unwrap_or(DEFAULT_BUFFER_SIZE_LIMIT.max(limit));
        if buffer < limit || buffer > 1 << 30 {
            problems.push(format!(
                "{p}.buffer_size_limit_bytes must be at least upload_size_limit_bytes and at most 1073741824"
            ));
        }
        let (min, max) = match (self.min_delay_seconds, self.max_delay_seconds) {
            (None, None) => (DEFAULT_MIN_DELAY_SECS, DEFAULT_MAX_DELAY_SECS),
            (Some(min), Some(max)) => (min, max),
            _ => {
                problems.push(format!(
                    "{p}: set both min_delay_seconds and max_delay_seconds, or neither"
                ));
                (1, 1)
            }
        };
        if min == 0 || max < min || max > 86_400 {
            problems.push(format!(
                "{p}: min_delay_seconds must be at least 1 and at most max_delay_seconds (at most 86400)"
            ));
        }
        let timeout = self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=300).contains(&timeout) {
            problems.push(format!("{p}.timeout_seconds must be between 1 and 300"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(UploadSettings {
            url: self.url,
            path,
            ca_cert,
            bearer_token_path,
            upload_size_limit: usize::try_from(limit).unwrap_or(usize::MAX),
            min_delay: Duration::from_secs(min),
            max_delay: Duration::from_secs(max),
            buffer_size_limit: usize::try_from(buffer).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(timeout),
            require_upload: self.require_upload.unwrap_or(false),
        })
    }

    /// The URL's path plus the resource; checks the URL.
    fn request_path(&self, problems: &mut Vec<String>, warnings: &mut Vec<String>) -> String {
        let p = "decision_log.upload";
        let uri = match self.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => u,
            _ => {
                problems.push(format!(
                    "{p}.url {:?} is not an http(s)://host[:port][/path] URL",
                    self.url
                ));
                return String::new();
            }
        };
        if uri.query().is_some() {
            problems.push(format!("{p}.url must not carry a query"));
        }
        let loopback = matches!(
            uri.host(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        );
        if uri.scheme_str() == Some("http") && !loopback {
            warnings.push(format!(
                "{p}.url is plain HTTP to another machine: decision events (principal and key \
                 ARNs) cross the network unencrypted; use https"
            ));
        }
        let resource = match (&self.resource, &self.partition_name) {
            (Some(_), Some(_)) => {
                problems.push(format!("{p}: set resource or partition_name, not both"));
                String::new()
            }
            (Some(r), None) if r.starts_with('/') => r.clone(),
            (Some(r), None) => format!("/{r}"),
            (None, Some(part)) => format!("/logs/{part}"),
            (None, None) => "/logs".to_owned(),
        };
        let path = format!("{}{resource}", uri.path().trim_end_matches('/'));
        if path.parse::<http::uri::PathAndQuery>().is_err() || path.contains('?') {
            problems.push(format!("{p}: {path:?} is not a valid request path"));
        }
        path
    }
}

/// `[decision_log.digest]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestToml {
    /// Where digests are written.
    pub dir: PathBuf,
    /// Ed25519 private key, PKCS#8 PEM (mode 0600).
    pub key_file: Option<PathBuf>,
    /// Or: the label of an ECDSA P-256 or Ed25519 key pair in the PKCS#11 backend's token.
    pub pkcs11_key_label: Option<String>,
    pub interval_secs: Option<u64>,
}

/// Where the digest key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestKey {
    /// An Ed25519 PKCS#8 PEM file.
    File(PathBuf),
    /// A key pair in the PKCS#11 backend's token, by label.
    Pkcs11Label(String),
}

/// Checked digest settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSettings {
    pub dir: PathBuf,
    pub key: DigestKey,
    pub interval: Duration,
}

impl DigestToml {
    /// Checks the table (paths relative to `base`): the key file is read and parsed now, so a
    /// bad key stops the start.
    pub fn check(self, base: &Path) -> Result<DigestSettings, Vec<String>> {
        let p = "decision_log.digest";
        let mut problems = Vec::new();
        let key = match (self.key_file, self.pkcs11_key_label) {
            (Some(file), None) => {
                let file = base.join(file);
                if let Err(e) = crate::signing::Ed25519FileKey::read(&file) {
                    problems.push(format!("{p}.key_file: {e}"));
                }
                DigestKey::File(file)
            }
            (None, Some(label)) => {
                if label.is_empty() || label.len() > 128 {
                    problems.push(format!("{p}.pkcs11_key_label must be 1-128 characters"));
                }
                DigestKey::Pkcs11Label(label)
            }
            _ => {
                problems.push(format!(
                    "{p}: set exactly one of key_file and pkcs11_key_label"
                ));
                DigestKey::File(PathBuf::new())
            }
        };
        let interval = self.interval_secs.unwrap_or(DEFAULT_DIGEST_INTERVAL_SECS);
        if !(1..=86_400).contains(&interval) {
            problems.push(format!("{p}.interval_secs must be between 1 and 86400"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(DigestSettings {
            dir: base.join(self.dir),
            key,
            interval: Duration::from_secs(interval),
        })
    }
}

/// A file that must not be readable by group or others.
pub(crate) fn private_file(path: &Path) -> Result<(), String> {
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
