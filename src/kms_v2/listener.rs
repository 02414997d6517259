//! The KMS v2 listener: `run(socket, door, shutdown)` accepts Unix-socket connections under a
//! cap, reads each peer's credentials (SO_PEERCRED) once, serves gRPC over HTTP/2 on each
//! connection in its own task, and on shutdown stops accepting and drains: calls in flight get
//! the grace period, whatever is left then is cut. When `run` returns no connection task is
//! left, so every judged call has handed its decision line to the log.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::codegen::Service as _;

use super::error::remap_library_status;
use super::proto::key_management_service_server::KeyManagementServiceServer;
use super::{Door, KmsService};
use crate::policy::PeerCred;

/// Largest gRPC message decoded: a Decrypt with its largest ciphertext, key_id, uid and
/// 32 kB of annotations fits; anything larger is refused before it is buffered.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Calls one connection may have open at once (HTTP/2 streams).
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Largest request head (HTTP/2 header list).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Serves the door on `listener` until `shutdown` completes, then drains.
pub async fn run(listener: UnixListener, door: Arc<Door>, shutdown: impl Future<Output = ()>) {
    let grpc = KeyManagementServiceServer::new(KmsService::new(door.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let cap = Arc::new(Semaphore::new(door.settings().max_connections));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "KMS v2 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            door.metrics()
                .kms_v2()
                .connection_refused("connection_limit");
            continue;
        };
        let peer = match stream.peer_cred() {
            Ok(c) => PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the KMS v2 peer's credentials; closing");
                door.metrics().kms_v2().connection_refused("no_credentials");
                continue;
            }
        };
        let connection = serve_connection(stream, peer, grpc.clone(), graceful.watcher());
        tasks.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let grace = door.grace();
    let drained = async {
        graceful.shutdown().await;
        while tasks.join_next().await.is_some() {}
    };
    tokio::select! {
        () = drained => tracing::info!("KMS v2 connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "KMS v2 calls still open after the grace period; closing"),
    }
    // A call cut here is never answered; its judgement is recorded as abandoned.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Serves gRPC on one connection; every request carries the peer's credentials.
fn serve_connection(
    stream: UnixStream,
    peer: PeerCred,
    grpc: KeyManagementServiceServer<KmsService>,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + 'static {
    let service = service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(peer);
        let mut grpc = grpc.clone();
        async move {
            let resp = grpc.call(req).await;
            Ok::<_, Infallible>(remap_library_status(match resp {
                Ok(r) => r,
                Err(never) => match never {},
            }))
        }
    });
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let watched = watcher.watch(connection);
    async move {
        if let Err(e) = watched.await {
            tracing::debug!(error = %e, "KMS v2 connection ended with an error");
        }
    }
}
