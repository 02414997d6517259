//! The transport floor: the same TLS configuration, HTTP/1.1 stack and runtime as
//! `keygate serve`, answering every request with a fixed GetHealthStatus body and doing
//! nothing else (no SigV4, no JSON, no policy, no key backend, no logs). `keygate load`
//! against it measures what one HTTPS keep-alive request costs on this machine before
//! keygate does any work; scripts/bench-floor.sh runs it.
//!
//!   cargo run --release --example transport_floor -- 127.0.0.1:18444 server.pem server.key

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use keygate::server::tls::{Refusals, TlsSettings, server_config};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const BODY: &str = r#"{"xksProxyFleetSize":1,"xksProxyVendor":"floor","xksProxyModel":"floor","ekmVendor":"floor","ekmFleetDetails":[{"id":"floor","model":"floor","healthStatus":"ACTIVE"}]}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, cert, key] = args.as_slice() else {
        return Err("usage: transport_floor LISTEN CERT_CHAIN KEY".into());
    };
    let settings = TlsSettings::new(cert.into(), key.into());
    let acceptor = TlsAcceptor::from(server_config(&settings, &Arc::new(Refusals::default()))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen.as_str()).await?;
        eprintln!("transport floor listening on {listen}");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    // Read the body as keygate does, then answer.
                    let _ = req.into_body().collect().await;
                    let mut resp = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}
