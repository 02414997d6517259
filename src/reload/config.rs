//! Configuration reload: key stores, credentials, key ids, rate limits and request limits
//! change in place, with no restart and no dropped connection. A new config that fails its
//! checks is refused, every problem is logged, and the running one stays. Settings a running
//! process cannot change are compared as typed values and reported as needing a restart.

use std::path::PathBuf;
use std::sync::Arc;

use crate::app::App;
use crate::config::{BackendKind, Config, DecisionLogSettings, KmsV2Settings, PolicySettings};
use crate::server::tls::TlsSettings;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new config is in force; the listed settings were ignored until a restart.
    Applied { needs_restart: Vec<String> },
    /// The new config failed its checks (every problem); the running one stays.
    Refused { problems: Vec<String> },
}

/// The settings fixed for the life of the process.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    listen: Option<std::net::SocketAddr>,
    fleet_size: u32,
    backend: BackendKind,
    health_key: String,
    max_connections: usize,
    /// Certificate and key files are reloaded when they change; their paths and the mTLS
    /// settings are not.
    tls: Option<TlsSettings>,
    admin_listen: Option<std::net::SocketAddr>,
    policy: PolicySettings,
    decision_log: Option<DecisionLogSettings>,
    /// Whether the XKS listener runs (some key store is configured).
    xks: bool,
    /// `None` also when `--kms-v2-socket` replaced the table (then it is not compared).
    kms_v2: Option<KmsV2Settings>,
}

impl Fixed {
    fn of(config: &Config, listen_overridden: bool, kms_v2_overridden: bool) -> Fixed {
        Fixed {
            xks: !config.keystores.is_empty(),
            kms_v2: config.kms_v2.clone().filter(|_| !kms_v2_overridden),
            listen: (!listen_overridden).then_some(config.server.listen),
            fleet_size: config.server.fleet_size,
            backend: config.backend.kind.clone(),
            health_key: config.backend.health_key.clone(),
            max_connections: config.limits.max_connections,
            tls: config.tls.clone(),
            admin_listen: config.admin_listen,
            policy: config.policy.clone(),
            decision_log: config.decision_log.clone(),
        }
    }

    /// The settings that differ in `new`, named for the log (values only where they are
    /// plain: addresses and numbers, never a table that may hold a secret).
    fn changes(&self, new: &Fixed) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(old), Some(new)) = (&self.listen, &new.listen)
            && old != new
        {
            out.push(format!("server.listen changed from {old} to {new}"));
        }
        if self.fleet_size != new.fleet_size {
            out.push(format!(
                "server.fleet_size changed from {} to {}",
                self.fleet_size, new.fleet_size
            ));
        }
        if self.max_connections != new.max_connections {
            out.push(format!(
                "limits.max_connections changed from {} to {}",
                self.max_connections, new.max_connections
            ));
        }
        let tables = [
            ("[backend]", self.backend != new.backend),
            ("backend.health_key", self.health_key != new.health_key),
            ("[tls]", self.tls != new.tls),
            ("[admin] listen", self.admin_listen != new.admin_listen),
            ("[policy]", self.policy != new.policy),
            ("[decision_log]", self.decision_log != new.decision_log),
            ("[kms_v2]", self.kms_v2 != new.kms_v2),
            (
                "whether any [[keystore]] is configured (the XKS listener)",
                self.xks != new.xks,
            ),
        ];
        out.extend(
            tables
                .into_iter()
                .filter(|(_, differ)| *differ)
                .map(|(what, _)| format!("{what} changed")),
        );
        out
    }
}

/// Reloads one config file into one running `App`.
#[derive(Debug)]
pub struct Reloader {
    app: Arc<App>,
    path: PathBuf,
    fixed: Fixed,
    listen_overridden: bool,
    kms_v2_overridden: bool,
}

impl Reloader {
    /// `config` is the one `app` was built from. With `listen_overridden` (`--listen`), the
    /// file's listen address is not compared.
    pub fn new(app: Arc<App>, config: &Config, listen_overridden: bool) -> Reloader {
        Reloader {
            app,
            path: config.path.clone(),
            fixed: Fixed::of(config, listen_overridden, false),
            listen_overridden,
            kms_v2_overridden: false,
        }
    }

    /// `--kms-v2-socket` replaced or added `[kms_v2]`: the file's table is not compared.
    pub fn kms_v2_overridden(mut self, overridden: bool) -> Reloader {
        if overridden {
            self.kms_v2_overridden = true;
            self.fixed.kms_v2 = None;
        }
        self
    }

    /// Reads the file again and applies it, or refuses it.
    pub fn reload(&mut self) -> Outcome {
        let config = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(file = %self.path.display(), problem = %p, "new configuration refused");
                }
                tracing::error!(file = %self.path.display(), problems = e.problems.len(), "configuration reload refused; the running configuration stays in force");
                self.app.metrics.record_reload(false);
                return Outcome::Refused {
                    problems: e.problems,
                };
            }
        };
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let needs_restart = self.fixed.changes(&Fixed::of(
            &config,
            self.listen_overridden,
            self.kms_v2_overridden,
        ));
        for n in &needs_restart {
            tracing::warn!(setting = %n, "needs restart; ignored until then");
        }
        self.app.apply(&config);
        self.app.metrics.record_reload(true);
        let credentials: usize = config.keystores.iter().map(|k| k.credentials.len()).sum();
        tracing::info!(file = %self.path.display(), keystores = config.keystores.len(), credentials, "configuration reloaded");
        Outcome::Applied { needs_restart }
    }

    /// The config file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Warns about configured keys the backend does not have (after an applied reload).
    pub async fn warn_missing_keys(&self) {
        for (ks, key) in self.app.missing_keys().await {
            tracing::warn!(keystore = %ks, key_id = %key, "configured key is not in the key backend; requests for it get KeyNotFoundException");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(keys: &str, extra: &str) -> Fixed {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:8443"
[backend]
kind = "software"
[backend.software]
key_file = "keys.json"
[[keystore]]
name = "a"
uri_prefix = "/a"
keys = [{keys}]
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
{extra}"#
        );
        Fixed::of(
            &Config::parse(&text, std::path::Path::new("k.toml")).unwrap(),
            false,
            false,
        )
    }

    #[test]
    fn a_kms_v2_change_needs_a_restart() {
        let old = fixed("\"foo\"", "");
        let new = fixed(
            "\"foo\"",
            "[kms_v2]\nsocket = \"/run/k.sock\"\nkey = \"kek\"\n",
        );
        assert_eq!(old.changes(&new), vec!["[kms_v2] changed".to_owned()]);
    }

    #[test]
    fn a_key_list_change_needs_no_restart() {
        let old = fixed("\"foo\"", "");
        let new = fixed("\"foo\", \"bar\"", "");
        assert!(old.changes(&new).is_empty(), "{:?}", old.changes(&new));
        let with_admin = fixed("\"foo\"", "[admin]\nlisten = \"127.0.0.1:9090\"\n");
        assert_eq!(
            old.changes(&with_admin),
            vec!["[admin] listen changed".to_owned()]
        );
        let with_log = fixed("\"foo\"", "[decision_log]\npath = \"d.log\"\n");
        assert_eq!(
            old.changes(&with_log),
            vec!["[decision_log] changed".to_owned()]
        );
    }
}
