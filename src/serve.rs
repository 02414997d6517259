//! `keygate serve`, wired: build the [`App`] from a checked config, bind the front doors (the
//! XKS listener when key stores are configured, the KMS v2 socket when `[kms_v2]` is) and the
//! admin listener, start the reload supervisor and the health refresh, serve until SIGTERM or
//! SIGINT, then shut down in order: stop accepting, drain every front door, stop the
//! background tasks, flush and join the decision-log writer (the shutdown checkpoint), and
//! only then return.

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
    /// `--kms-v2-socket` replaced or added `[kms_v2]` (a reload does not compare it).
    pub kms_v2_overridden: bool,
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
        tracing::warn!(keystore = %ks, key_id = %key, "configured key is not in the key backend; requests for it are refused");
    }
    let signal = shutdown_signal();
    let xks = bind_xks(&config, &app).await?;
    let kms_v2 = bind_kms_v2(&app)?;
    if options.dev
        && let Some(addr) = xks.as_ref().and_then(|l| l.local_addr().ok())
    {
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
    let reloader = Reloader::new(app.clone(), &config, options.listen_overridden)
        .kms_v2_overridden(options.kms_v2_overridden);
    let supervisor = Supervisor::for_app(&app, Some(reloader)).spawn(wait());
    let admin = match config.admin_listen {
        Some(admin_addr) => Some(spawn_admin(&app, admin_addr, wait()).await?),
        None => None,
    };
    // The front doors run until the signal; each returns only once it has drained.
    let doors = {
        let xks = xks.map(|listener| crate::server::run(listener, app.clone(), wait()));
        let kms_v2 = kms_v2.map(|(listener, file, door)| async move {
            crate::kms_v2::listener::run(listener, door, wait()).await;
            drop(file);
        });
        async move {
            tokio::join!(
                async {
                    if let Some(x) = xks {
                        x.await;
                    }
                },
                async {
                    if let Some(k) = kms_v2 {
                        k.await;
                    }
                }
            )
        }
    };
    tokio::pin!(doors);
    tokio::select! {
        _ = &mut doors => {}
        () = signal => {
            let _ = stop.send(true);
            doors.await;
        }
    }
    health.abort();
    let _ = supervisor.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    app.finish();
    tracing::info!("keygate stopped");
    Ok(())
}

/// Binds the XKS listener when the config has key stores (a config with only `[kms_v2]`
/// serves no XKS).
async fn bind_xks(config: &Config, app: &App) -> Result<Option<tokio::net::TcpListener>, String> {
    if config.keystores.is_empty() {
        tracing::info!("no [[keystore]] configured: the XKS listener is off");
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, keystores = config.keystores.len(), backend = app.backend.kind(), version = env!("CARGO_PKG_VERSION"), "keygate listening");
    if config.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving PLAIN HTTP on a non-loopback address: KMS requires HTTPS, and SigV4 alone does not hide plaintext; run keygate behind a TLS-terminating proxy only, or configure [tls]"
        );
    }
    Ok(Some(listener))
}

type KmsV2Door = (
    tokio::net::UnixListener,
    crate::kms_v2::socket::SocketFile,
    Arc<crate::kms_v2::Door>,
);

/// Binds the KMS v2 socket when `[kms_v2]` is configured.
fn bind_kms_v2(app: &App) -> Result<Option<KmsV2Door>, String> {
    let Some(door) = app.kms_v2.clone() else {
        return Ok(None);
    };
    let s = door.settings();
    let (listener, file) = crate::kms_v2::socket::BoundSocket::bind(&s.socket)
        .and_then(crate::kms_v2::socket::BoundSocket::into_tokio)
        .map_err(|e| format!("KMS v2: {e}"))?;
    tracing::info!(socket = %s.socket.display(), key = %s.key, name = %s.name, backend = app.backend.kind(), version = env!("CARGO_PKG_VERSION"), "KMS v2 plugin listening");
    Ok(Some((listener, file, door)))
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
        crate::dev::banner(&crate::dev::Banner {
            config_dir: dir,
            addr,
            prefix: &ks.uri_prefix,
            access_key_id: &ak,
            backend_kind: app.backend.kind(),
            ca: dev_ca,
            decision_log: config.decision_log.as_ref().map(|d| d.path.as_path()),
            kms_v2_socket: config.kms_v2.as_ref().map(|k| k.socket.as_path()),
        })
    );
}

/// Completes on SIGINT or SIGTERM.
/// The handlers are installed when this is called, not when the future is first polled: a
/// SIGTERM that arrives once keygate said it is listening is never the default action (exit).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {},
            () = wait(int) => {},
        }
        tracing::info!("shutdown requested; draining connections");
    }
}
