//! Configuration hot reload, on SIGHUP and when the config file changes (its modification
//! time and size are polled). Key stores, credentials, key ids, rate limits and request
//! limits change in place, with no restart and no dropped connection. A new config that
//! fails its checks is refused, every problem is logged, and the running one stays.
//! Settings a running process cannot change are reported as needing a restart and ignored.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::app::App;
use crate::config::Config;

/// How often the config file's modification time is checked.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new config is in force; the listed settings were ignored until a restart.
    Applied { needs_restart: Vec<String> },
    /// The new config failed its checks (every problem); the running one stays.
    Refused { problems: Vec<String> },
}

/// The settings fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixed {
    listen: Option<String>,
    fleet_size: u32,
    backend: String,
    health_key: String,
    max_connections: usize,
    /// Tables opened once at start, compared as a whole (their Debug text: paths, names and
    /// numbers, never secrets).
    tables: Vec<(&'static str, String)>,
}

impl Fixed {
    fn of(config: &Config, listen_overridden: bool) -> Fixed {
        Fixed {
            listen: (!listen_overridden).then(|| config.server.listen.to_string()),
            fleet_size: config.server.fleet_size,
            backend: format!("{:?}", config.backend.kind),
            health_key: config.backend.health_key.clone(),
            max_connections: config.limits.max_connections,
            tables: vec![
                // Certificate and key files are reloaded when they change; their paths and
                // the mTLS settings are not.
                ("[tls]", format!("{:?}", config.tls)),
                ("[admin] listen", format!("{:?}", config.admin_listen)),
                ("[policy]", format!("{:?}", config.policy)),
                ("[decision_log]", format!("{:?}", config.decision_log)),
            ],
        }
    }

    /// The settings that differ in `new`, described for the log.
    fn changes(&self, new: &Fixed) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |what: &str, old: String, new: String| {
            if old != new {
                out.push(format!("{what} changed from {old} to {new}"));
            }
        };
        if let (Some(old), Some(new)) = (&self.listen, &new.listen) {
            differ("server.listen", old.clone(), new.clone());
        }
        differ(
            "server.fleet_size",
            self.fleet_size.to_string(),
            new.fleet_size.to_string(),
        );
        differ("backend", self.backend.clone(), new.backend.clone());
        differ(
            "backend.health_key",
            self.health_key.clone(),
            new.health_key.clone(),
        );
        differ(
            "limits.max_connections",
            self.max_connections.to_string(),
            new.max_connections.to_string(),
        );
        for ((what, old), (_, new)) in self.tables.iter().zip(&new.tables) {
            if old != new {
                out.push(format!("{what} changed"));
            }
        }
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
    stamp: Option<(SystemTime, u64)>,
}

impl Reloader {
    /// `config` is the one `app` was built from. With `listen_overridden` (`--listen`), the
    /// file's listen address is not compared.
    pub fn new(app: Arc<App>, config: &Config, listen_overridden: bool) -> Reloader {
        Reloader {
            app,
            path: config.path.clone(),
            fixed: Fixed::of(config, listen_overridden),
            listen_overridden,
            stamp: stamp(&config.path),
        }
    }

    /// Reads the file again and applies it, or refuses it.
    pub fn reload(&mut self) -> Outcome {
        self.stamp = stamp(&self.path);
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
        let needs_restart = self
            .fixed
            .changes(&Fixed::of(&config, self.listen_overridden));
        for n in &needs_restart {
            tracing::warn!(setting = %n, "needs restart; ignored until then");
        }
        self.app.apply(&config);
        self.app.metrics.record_reload(true);
        let credentials: usize = config.keystores.iter().map(|k| k.credentials.len()).sum();
        tracing::info!(file = %self.path.display(), keystores = config.keystores.len(), credentials, "configuration reloaded");
        Outcome::Applied { needs_restart }
    }

    /// Reloads when the file's modification time or size changed since the last look.
    pub fn reload_if_changed(&mut self) -> Option<Outcome> {
        let now = stamp(&self.path)?;
        (self.stamp != Some(now)).then(|| self.reload())
    }

    /// Reloads on every SIGHUP and file change until the app is gone.
    async fn run(mut self, mut hangup: Option<Signal>, poll_every: Duration) {
        let mut tick = tokio::time::interval(poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let on_signal = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                Some(()) = on_signal => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    Some(self.reload())
                }
                _ = tick.tick() => self.reload_if_changed(),
            };
            if let Some(Outcome::Applied { .. }) = outcome {
                for (ks, key) in self.app.missing_keys().await {
                    tracing::warn!(keystore = %ks, key_id = %key, "configured key is not in the key backend; requests for it get KeyNotFoundException");
                }
            }
        }
    }
}

/// Installs the SIGHUP handler now (so a signal right after start-up reloads instead of
/// ending the process) and follows the file every `poll_every`.
pub fn spawn(reloader: Reloader, poll_every: Duration) -> tokio::task::JoinHandle<()> {
    let hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reloading on file change only");
            None
        }
    };
    tokio::spawn(reloader.run(hangup, poll_every))
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}
