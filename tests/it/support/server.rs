//! `TestServer`: keygate's server in this process, on 127.0.0.1:0, built from a config text
//! and the fixture's software keys in a temp dir, and driven over real sockets. This is the
//! one place the tests reach into the library's composition (`App`, `server::run`, config
//! reload); everything a test needs from a running server is a method here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::app::App;
use keygate::config::{Config, LimitSettings};
use keygate::policy::PolicyCounts;
use keygate::policy::decision_log::DecisionLog;
use keygate::reload::{Outcome, Reloader};
use keygate::server::tls::TlsReloader;

use super::client::Client;
use super::fixtures;

/// A keygate server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    app: Arc<App>,
    /// Follows the config file; taken by `follow_config`.
    reloader: Mutex<Option<Reloader>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestServer {
    /// A server on the fixture config, unchanged.
    pub async fn fixture() -> TestServer {
        Self::start(&fixtures::config("")).await
    }

    /// A server on `config_text` (written to `keygate.toml` beside the fixture's key file).
    pub async fn start(config_text: &str) -> TestServer {
        let (dir, config_path) = fixtures::server_dir(config_text);
        let config = Config::load(&config_path).unwrap();
        let app = Arc::new(App::build(&config).unwrap());
        let reloader = Reloader::new(app.clone(), &config, false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(keygate::server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            dir,
            config_path,
            app,
            reloader: Mutex::new(Some(reloader)),
            shutdown: Some(tx),
            task,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Stops accepting: the listener closes, idle connections close, requests in flight get
    /// the drain grace.
    pub fn begin_shutdown(&mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
    }

    /// Whether the server's accept-and-drain task has ended.
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits (at most `within`) for the drain to end after `begin_shutdown`.
    pub async fn stopped(&mut self, within: Duration) {
        tokio::time::timeout(within, &mut self.task)
            .await
            .expect("the server did not stop")
            .unwrap();
    }

    /// Stops accepting and waits for the server to drain.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.stopped(Duration::from_secs(15)).await;
    }

    /// Replaces the config file atomically (write, then rename over it).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("keygate.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Reads the config file again and applies it: `Ok(settings that need a restart)`, or
    /// `Err(every problem)` when it was refused and the running config stays.
    pub fn reload_config(&self) -> Result<Vec<String>, Vec<String>> {
        let mut reloader = self.reloader.lock().unwrap();
        let reloader = reloader
            .as_mut()
            .expect("the config is followed by follow_config");
        match reloader.reload() {
            Outcome::Applied { needs_restart } => Ok(needs_restart),
            Outcome::Refused { problems } => Err(problems),
        }
    }

    /// Follows the config file from now on, looking at it every `poll` (and on SIGHUP).
    pub fn follow_config(&self, poll: Duration) -> tokio::task::JoinHandle<()> {
        let reloader = self.reloader.lock().unwrap().take().unwrap();
        keygate::reload::Supervisor::new(poll)
            .config(reloader)
            .spawn(std::future::pending())
    }

    /// The app's background work as `keygate serve` runs it: the reload supervisor (policy
    /// directory, key file, TLS files; not the config file) and the health refresh. Stops
    /// when the returned value is dropped.
    pub fn spawn_background(&self) -> Background {
        Background(vec![
            self.app.spawn_health_refresh(),
            keygate::reload::Supervisor::for_app(&self.app, None).spawn(std::future::pending()),
        ])
    }

    pub fn limits(&self) -> LimitSettings {
        self.app.limits()
    }

    /// The metrics text as `name{labels}` -> value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        super::parse_metrics(&self.app.metrics.encode())
    }

    /// Waits until `n` requests are in flight (admitted, not answered).
    pub async fn wait_in_flight(&self, n: i64) {
        let gauge = self.app.metrics.in_flight();
        super::wait_for(
            Duration::from_secs(5),
            format!("{n} requests in flight"),
            || gauge.get() == n,
        )
        .await;
    }

    pub fn policy_revision(&self) -> String {
        self.app.authorizer.engine().revision()
    }

    pub fn policy_counts(&self) -> PolicyCounts {
        self.app.authorizer.stats().snapshot()
    }

    pub fn decision_log(&self) -> &DecisionLog {
        self.app
            .authorizer
            .decision_log()
            .expect("the config has no [decision_log]")
    }

    /// The TLS configuration of the XKS listener.
    pub fn tls(&self) -> Arc<TlsReloader> {
        self.app.tls.clone().expect("the config has no [tls] table")
    }

    /// The Debug text of the whole app (`pretty`: `{:#?}`).
    pub fn app_debug(&self, pretty: bool) -> String {
        if pretty {
            format!("{:#?}", self.app)
        } else {
            format!("{:?}", self.app)
        }
    }

    /// An admin listener on 127.0.0.1:0 whose readiness and metrics are this server's, as
    /// `keygate serve --admin-listen` wires it; it stops when the sender is dropped or sent.
    pub async fn admin_listener(
        &self,
        version: &str,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = keygate::admin::AdminState::new(
            version,
            Arc::new(keygate::admin::AppReadiness::new(self.app.health.clone())),
        )
        .with_metrics(self.app.metrics.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(keygate::admin::run(listener, state, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }
}

/// Background tasks that end when dropped.
pub struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
