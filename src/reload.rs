//! The reload supervisor: one SIGHUP listener and one tick fan out to everything that reloads
//! without a restart (the config file, the policy directory, the TLS certificate files, the
//! software backend's key file). On SIGHUP everything is reloaded; on each tick only what
//! changed on disk ([`stamp::Watch`]). Each part keeps what is in force when its new version
//! is refused.

mod config;
pub mod stamp;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

pub use config::{Outcome, Reloader};
use stamp::{Watch, Watched};

use crate::keys::software::SoftwareBackend;
use crate::policy::Authorizer;
use crate::server::tls::TlsReloader;

/// How often the watched files are looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// One reloadable part: how it is watched and how it reloads.
enum Part {
    Config(Box<Reloader>),
    Policy {
        dir: PathBuf,
        authorizer: Authorizer,
    },
    Tls(Arc<TlsReloader>),
    KeyFile(Arc<SoftwareBackend>),
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Part {
    fn name(&self) -> &'static str {
        match self {
            Part::Config(_) => "configuration",
            Part::Policy { .. } => "policy",
            Part::Tls(_) => "TLS certificate",
            Part::KeyFile(_) => "key file",
        }
    }

    fn watched(&self) -> Watched {
        match self {
            Part::Config(r) => Watched::Files(vec![r.path().to_owned()]),
            Part::Policy { dir, .. } => Watched::Dir {
                dir: dir.clone(),
                ext: "rego",
            },
            Part::Tls(t) => Watched::Files(
                t.settings()
                    .files()
                    .into_iter()
                    .map(|p| p.to_owned())
                    .collect(),
            ),
            Part::KeyFile(k) => Watched::Files(vec![k.path().to_owned()]),
        }
    }

    async fn reload(&mut self) {
        match self {
            Part::Config(r) => {
                if let Outcome::Applied { .. } = r.reload() {
                    r.warn_missing_keys().await;
                }
            }
            Part::Policy { dir, authorizer } => {
                let (engine, dir) = (authorizer.engine().clone(), dir.clone());
                let outcome = tokio::task::spawn_blocking(move || {
                    crate::policy::reload::reload_dir(&engine, &dir)
                })
                .await;
                if !matches!(outcome, Ok(Ok(_))) {
                    authorizer.stats().count_reload_failure();
                }
            }
            Part::Tls(t) => {
                let _ = t.reload();
            }
            Part::KeyFile(k) => match k.reload() {
                Ok(()) => tracing::info!(file = %k.path().display(), "key file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "key file changed but cannot be loaded; the previous keys stay in force")
                }
            },
        }
    }
}

/// Everything that reloads, and how each looked last.
#[derive(Debug)]
pub struct Supervisor {
    parts: Vec<(Part, Watch)>,
    poll_every: Duration,
}

impl Supervisor {
    /// A supervisor with nothing to watch yet, looking every `poll_every`.
    pub fn new(poll_every: Duration) -> Supervisor {
        Supervisor {
            parts: Vec::new(),
            poll_every,
        }
    }

    fn with(mut self, part: Part) -> Supervisor {
        let watch = Watch::new(part.watched());
        self.parts.push((part, watch));
        self
    }

    /// Follows the config file.
    pub fn config(self, reloader: Reloader) -> Supervisor {
        self.with(Part::Config(Box::new(reloader)))
    }

    /// Follows a policy directory, swapping it into `authorizer`'s engine.
    pub fn policy(self, dir: PathBuf, authorizer: Authorizer) -> Supervisor {
        self.with(Part::Policy { dir, authorizer })
    }

    /// Follows the TLS certificate, key and client CA files.
    pub fn tls(self, reloader: Arc<TlsReloader>) -> Supervisor {
        self.with(Part::Tls(reloader))
    }

    /// Follows the software backend's key file.
    pub fn key_file(self, backend: Arc<SoftwareBackend>) -> Supervisor {
        self.with(Part::KeyFile(backend))
    }

    /// Everything a running [`App`](crate::app::App) reloads: its config file (unless
    /// `config` is `None`), policy directory, TLS files and software key file.
    pub fn for_app(app: &Arc<crate::app::App>, config: Option<Reloader>) -> Supervisor {
        let mut s = Supervisor::new(POLL_EVERY);
        if let Some(reloader) = config {
            s = s.config(reloader);
        }
        if let Some(dir) = app.policy_dir.clone() {
            s = s.policy(dir, app.authorizer.clone());
        }
        if let Some(tls) = app.tls.clone() {
            s = s.tls(tls);
        }
        if let Some(software) = app.software.clone() {
            s = s.key_file(software);
        }
        s
    }

    /// Reloads every part now (as on SIGHUP).
    pub async fn reload_all(&mut self) {
        for (part, watch) in &mut self.parts {
            watch.mark();
            part.reload().await;
        }
    }

    /// Reloads the parts whose files changed since the last look.
    pub async fn reload_changed(&mut self) {
        for (part, watch) in &mut self.parts {
            if watch.changed() {
                tracing::info!(part = part.name(), "files changed: reloading");
                part.reload().await;
            }
        }
    }

    /// Installs the SIGHUP handler now (so a signal right after start-up reloads instead of
    /// ending the process) and runs until `shutdown` completes.
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the SIGHUP handler; reloading on file change only");
                None
            }
        };
        tokio::spawn(self.run(hangup, shutdown))
    }

    async fn run(mut self, mut hangup: Option<Signal>, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let on_signal = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                Some(()) = on_signal => {
                    tracing::info!("SIGHUP: reloading the configuration, policy, certificates and keys");
                    self.reload_all().await;
                }
                _ = tick.tick() => self.reload_changed().await,
            }
        }
    }
}
