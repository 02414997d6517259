//! The XKS listener: `run(listener, app, shutdown)` accepts connections under a cap, runs the
//! TLS handshake when HTTPS is configured (server/tls.rs), serves HTTP/1.1 keep-alive on each
//! connection in its own task, and drains in-flight requests on shutdown. When `run` returns,
//! no connection task is left: every request has been answered (or cut at the grace period)
//! and its decision line handed to the log.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::app::App;
use crate::router;
use crate::xks::{ConnInfo, Service};

pub mod conn_cap;
pub mod peer_limit;
pub mod timed_io;
pub mod tls;

use conn_cap::ConnectionCap;
use timed_io::TimedIo;

/// Serves XKS requests on `listener` until `shutdown` completes, then drains: idle
/// connections close at once, requests in flight get `shutdown_grace_secs`, and whatever is
/// still open then is cut. Returns once every connection task has ended.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let svc = app.xks.clone();
    let tls = app.tls.clone();
    let cap = ConnectionCap::new(svc.limits().max_connections);
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match cap.try_admit(peer, svc.limits().max_connections_per_peer) {
            Ok(p) => p,
            Err(refused) => {
                svc.metrics.record_connection_refused(refused.as_str());
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (svc, tls, watcher) = (svc.clone(), tls.clone(), graceful.watcher());
        tasks.spawn(async move {
            match tls {
                Some(tls) => serve_tls(stream, peer, svc, &tls, watcher).await,
                None => {
                    let conn = ConnInfo {
                        peer,
                        client_subject: None,
                    };
                    serve_connection(stream, conn, svc, watcher).await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // Idle keep-alive connections close now; requests in flight get the grace period.
    let grace = svc.limits().shutdown_grace;
    let drained = async {
        graceful.shutdown().await;
        // Connections still in their TLS handshake are not watched: they end by themselves
        // (the handshake deadline) or at the grace period.
        while tasks.join_next().await.is_some() {}
    };
    tokio::select! {
        () = drained => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "connections still open after the grace period; closing"),
    }
    // A request cut here is never answered; its judgement, if any, is recorded as abandoned.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Runs the TLS handshake (bounded, keepalive on) and serves the connection with the
/// client certificate's subject, if any.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    svc: Arc<Service>,
    tls: &tls::TlsReloader,
    watcher: Watcher,
) {
    let limits = tls::ConnLimits {
        handshake_timeout: svc.limits().handshake_timeout,
        ..tls::ConnLimits::default()
    };
    if let Err(e) = tls::hygiene::set_tcp_keepalive(&stream, &limits) {
        tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
    }
    let acceptor = tls.acceptor();
    let stream =
        match tls::handshake(&acceptor, stream, limits.handshake_timeout, tls.refusals()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        };
    let conn = ConnInfo {
        peer,
        client_subject: tls::client_subject(stream.get_ref().1),
    };
    serve_connection(stream, conn, svc, watcher).await;
}

/// Serves one connection over any byte stream (plain TCP or TLS).
pub fn serve_connection<I>(
    io: I,
    conn: ConnInfo,
    svc: Arc<Service>,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let limits = svc.limits();
    let (io, phase) = TimedIo::new(io, limits.header_read_timeout, limits.idle_timeout);
    let max_header_bytes = limits.max_header_bytes;
    let service = service_fn(move |req| {
        let (svc, conn, phase) = (svc.clone(), conn.clone(), phase.clone());
        phase.begin_request();
        async move {
            let resp = router::handle(svc, req, conn).await;
            phase.end_request();
            Ok::<_, Infallible>(resp)
        }
    });
    // Deadlines come from TimedIo: hyper's own header timeout would also close idle
    // keep-alive connections after a few seconds.
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(max_header_bytes)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    let watched = watcher.watch(connection);
    async move {
        if let Err(e) = watched.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
