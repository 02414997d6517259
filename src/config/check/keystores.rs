//! The key-store checks: names, URI path prefixes, regions, key ids, rate limits and the
//! credentials (with their secrets, read from the config, the environment or a file).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use super::Checker;
use crate::config::checked::KeystoreSettings;
use crate::config::raw::{RawCredential, RawKeystore};
use crate::credentials::{AccessKeyId, Secret};
use crate::keys::valid_key_id;
use crate::shed::RateLimit;

/// Longest URI path prefix: the path `{prefix}/kms/xks/v1` may have 128 characters.
pub const MAX_PREFIX_LEN: usize = 117;

impl Checker {
    pub(super) fn keystores(
        &mut self,
        raw: Vec<RawKeystore>,
        region: &str,
        base: &Path,
        required: bool,
    ) -> Vec<KeystoreSettings> {
        if raw.is_empty() && required {
            self.problems.push(
                "at least one [[keystore]] is required (or a [kms_v2] table to serve only the KMS v2 plugin)"
                    .into(),
            );
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
