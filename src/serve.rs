//! `keygate serve`, wired: build the [`App`] from a checked config, bind the XKS listener
//! (and the admin listener), start the reload supervisor and the health refresh, serve until
//! SIGTERM or SIGINT, then shut down in order: stop accepting, drain the front doors, stop
//! the background tasks, flush and join the decision-log writer (the shutdown checkpoint),
//! and only then return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::App;
use crate::config::Config;
use crate::reload::{Reloader, Supervisor};

/// How `serve` was asked to run beyond the config file.
#[derive(Debug, Default)]
pub struct Options {
    /// `--dev`: print the dev banner (endpoint, credentials, a ready curl command).
    pub dev: bool,
    /// The dev CA file the banner tells clients to trust.
    pub dev_ca: Option<PathBuf>,
    /// `--listen` replaced the config's listen address (a reload does not compare it).
    pub listen_overridden: bool,
}

/// Serves `config` until a shutdown signal, then shuts down in order.
pub async fn run(config: Config, options: Options) -> Result<(), String> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let app = Arc::new(App::build(&config)?);
    if app.backend.kind() == "software" {
        tracing::warn!(
            backend = app.backend.kind(),
            "keys are held by the software backend and are NOT protected by an HSM; use the pkcs11 backend in production"
        );
    }
    for (ks, key) in app.missing_keys().await {
        tracing::warn!(keystore = %ks, key_id = %key, "configured key is not in the key backend; requests for it get KeyNotFoundException");
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Before anything announces the server: a SIGTERM that follows the banner (or the
    // listening line) at once must drain, not kill with the default action.
    let stop_signal = ShutdownSignal::listen();
    tracing::info!(%addr, keystores = config.keystores.len(), backend = app.backend.kind(), version = env!("CARGO_PKG_VERSION"), "keygate listening");
    if config.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving PLAIN HTTP on a non-loopback address: KMS requires HTTPS, and SigV4 alone does not hide plaintext; run keygate behind a TLS-terminating proxy only, or configure [tls]"
        );
    }
    if options.dev {
        print_banner(&config, &app, addr, options.dev_ca.as_deref());
    }
    app.health.refresh().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let health = app.spawn_health_refresh();
    let reloader = Reloader::new(app.clone(), &config, options.listen_overridden);
    let supervisor = Supervisor::for_app(&app, Some(reloader)).spawn(wait());
    let admin = match config.admin_listen {
        Some(admin_addr) => Some(spawn_admin(&app, admin_addr, wait()).await?),
        None => None,
    };
    crate::server::run(listener, app.clone(), async move {
        stop_signal.wait().await;
        let _ = stop.send(true);
    })
    .await;
    health.abort();
    let _ = supervisor.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    app.finish();
    tracing::info!("keygate stopped");
    Ok(())
}

async fn spawn_admin(
    app: &Arc<App>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let admin = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?;
    let addr = admin.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "admin listener on plain HTTP");
    let state = crate::admin::AdminState::new(
        env!("CARGO_PKG_VERSION"),
        Arc::new(crate::admin::AppReadiness::new(app.health.clone())),
    )
    .with_metrics(app.metrics.clone());
    Ok(tokio::spawn(crate::admin::run(admin, state, shutdown)))
}

fn print_banner(config: &Config, app: &App, addr: SocketAddr, dev_ca: Option<&Path>) {
    let Some(ks) = config.keystores.first() else {
        return;
    };
    let dir = config.path.parent().unwrap_or(Path::new("."));
    let ak = ks
        .credentials
        .first()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    // A closed stdout must not stop the server (println! would panic on EPIPE).
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        crate::dev::banner(
            dir,
            addr,
            &ks.uri_prefix,
            &ak,
            app.backend.kind(),
            dev_ca,
            config.decision_log.as_ref().map(|d| d.path.as_path()),
        )
    );
}

async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// SIGINT and SIGTERM, listened for from the moment it is made.
struct ShutdownSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn listen() -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignal {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Completes on SIGINT or SIGTERM.
    async fn wait(mut self) {
        tokio::select! {
            () = recv(self.term.as_mut()) => {},
            () = recv(self.int.as_mut()) => {},
        }
        tracing::info!("shutdown requested; draining connections");
    }
}
