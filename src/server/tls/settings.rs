//! The `[tls]` config section and the `--tls-cert/--tls-key/--client-ca/--client-name` flags,
//! checked into [`TlsSettings`]: paths resolved, files readable and usable, all problems
//! reported at once.

use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;
use serde::Deserialize;

use super::material;

/// `[tls]` as written in the config file (and the shape the CLI flags override).
/// Relative paths are relative to the config file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsToml {
    /// PEM file with the server certificate first, then its intermediates (full chain).
    pub cert_chain: Option<PathBuf>,
    /// PEM file with the server certificate's private key.
    pub key: Option<PathBuf>,
    /// PEM bundle of CAs a client certificate must chain to; turns on mTLS.
    pub client_ca: Option<PathBuf>,
    /// Name the client certificate must carry as CN or SAN dNSName,
    /// e.g. `cks.kms.us-east-1.amazonaws.com`.
    pub client_name: Option<String>,
}

impl TlsToml {
    /// Fields set in `over` (e.g. command-line flags, already made absolute) win.
    pub fn overridden_by(self, over: TlsToml) -> TlsToml {
        TlsToml {
            cert_chain: over.cert_chain.or(self.cert_chain),
            key: over.key.or(self.key),
            client_ca: over.client_ca.or(self.client_ca),
            client_name: over.client_name.or(self.client_name),
        }
    }

    /// Resolves paths against `base_dir`, reads every file once to prove it is usable, and
    /// returns every problem found.
    pub fn check(self, base_dir: &Path) -> Result<TlsSettings, Vec<String>> {
        let mut problems = Vec::new();
        let cert_chain = required(self.cert_chain, "tls.cert_chain", base_dir, &mut problems);
        let key = required(self.key, "tls.key", base_dir, &mut problems);
        let client_auth = client_auth(self.client_ca, self.client_name, base_dir, &mut problems);
        let (Some(cert_chain), Some(key)) = (cert_chain, key) else {
            return Err(problems);
        };
        let settings = TlsSettings {
            cert_chain,
            key,
            client_auth,
        };
        let build = problems.is_empty();
        problems.extend(settings.probe(build));
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }
}

fn required(
    path: Option<PathBuf>,
    field: &str,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<PathBuf> {
    if path.is_none() {
        problems.push(format!("{field} is required when TLS is on"));
    }
    path.map(|p| base_dir.join(p))
}

fn client_auth(
    ca: Option<PathBuf>,
    name: Option<String>,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<ClientAuth> {
    match (ca, name) {
        (None, None) => None,
        (Some(_), None) => {
            problems
                .push("tls.client_ca is set but tls.client_name is not: mTLS needs both".into());
            None
        }
        (None, Some(_)) => {
            problems
                .push("tls.client_name is set but tls.client_ca is not: mTLS needs both".into());
            None
        }
        (Some(ca), Some(name)) => match ClientName::parse(&name) {
            Ok(name) => Some(ClientAuth {
                ca: base_dir.join(ca),
                name,
            }),
            Err(e) => {
                problems.push(format!("tls.client_name: {e}"));
                None
            }
        },
    }
}

/// Checked TLS settings. The files are read again on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    /// `Some` turns on mTLS.
    pub client_auth: Option<ClientAuth>,
}

impl TlsSettings {
    /// Settings without mTLS.
    pub fn new(cert_chain: PathBuf, key: PathBuf) -> TlsSettings {
        TlsSettings {
            cert_chain,
            key,
            client_auth: None,
        }
    }

    /// Adds mTLS with the given CA bundle and client name.
    pub fn with_client_auth(mut self, ca: PathBuf, name: ClientName) -> TlsSettings {
        self.client_auth = Some(ClientAuth { ca, name });
        self
    }

    /// Back to the TOML shape (absolute paths as resolved), so flags can override it.
    pub fn to_toml(&self) -> TlsToml {
        TlsToml {
            cert_chain: Some(self.cert_chain.clone()),
            key: Some(self.key.clone()),
            client_ca: self.client_auth.as_ref().map(|a| a.ca.clone()),
            client_name: self
                .client_auth
                .as_ref()
                .map(|a| a.name.as_str().to_owned()),
        }
    }

    /// The files the configuration is built from (watched for changes).
    pub fn files(&self) -> Vec<&Path> {
        let mut v = vec![self.cert_chain.as_path(), self.key.as_path()];
        if let Some(auth) = &self.client_auth {
            v.push(auth.ca.as_path());
        }
        v
    }

    /// Reads every file and returns each problem (one per file at most); with `build`, and
    /// when every file reads, also builds the rustls configuration (key matches certificate).
    fn probe(&self, build: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = material::read_chain(&self.cert_chain) {
            problems.push(format!("tls.cert_chain: {e}"));
        }
        if let Err(e) = material::read_key(&self.key) {
            problems.push(format!("tls.key: {e}"));
        }
        if let Some(auth) = &self.client_auth
            && let Err(e) = material::read_roots(&auth.ca)
        {
            problems.push(format!("tls.client_ca: {e}"));
        }
        if build
            && problems.is_empty()
            && let Err(e) = super::build::server_config(self, &super::Refusals::new())
        {
            problems.push(e.to_string());
        }
        problems
    }
}

/// mTLS settings: the CA bundle and the name a client certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub name: ClientName,
}

/// A DNS name a client certificate must carry, stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName(String);

impl ClientName {
    /// Accepts a syntactically valid DNS name (not an IP address, no wildcard).
    pub fn parse(s: &str) -> Result<ClientName, String> {
        match ServerName::try_from(s) {
            Ok(ServerName::DnsName(_)) if !s.contains('*') => {
                Ok(ClientName(s.to_ascii_lowercase()))
            }
            _ => Err(format!("{s:?} is not a DNS name")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_name_rules() {
        assert_eq!(
            ClientName::parse("CKS.kms.us-east-1.amazonaws.com")
                .unwrap()
                .as_str(),
            "cks.kms.us-east-1.amazonaws.com"
        );
        for bad in ["", "127.0.0.1", "*.example.com", "a b", "-x..y"] {
            assert!(ClientName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reports_all_missing_fields_at_once() {
        let toml = TlsToml {
            client_ca: Some("ca.pem".into()),
            ..TlsToml::default()
        };
        let problems = toml.check(Path::new("/nonexistent")).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("tls.cert_chain is required"))
        );
        assert!(problems.iter().any(|p| p.contains("tls.key is required")));
        assert!(problems.iter().any(|p| p.contains("client_name is not")));
    }

    #[test]
    fn reports_each_unreadable_file() {
        let toml = TlsToml {
            cert_chain: Some("c.pem".into()),
            key: Some("k.pem".into()),
            client_ca: Some("ca.pem".into()),
            client_name: Some("client.example".into()),
        };
        let problems = toml.check(Path::new("/nonexistent")).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| p.contains("/nonexistent/")));
    }

    #[test]
    fn flags_override_the_file() {
        let file = TlsToml {
            cert_chain: Some("a".into()),
            key: Some("b".into()),
            client_ca: None,
            client_name: Some("n.example".into()),
        };
        let flags = TlsToml {
            key: Some("/abs/k".into()),
            ..TlsToml::default()
        };
        let merged = file.overridden_by(flags);
        assert_eq!(merged.cert_chain, Some("a".into()));
        assert_eq!(merged.key, Some("/abs/k".into()));
        assert_eq!(merged.client_name.as_deref(), Some("n.example"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<TlsToml>("cert = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
