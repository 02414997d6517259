//! Per-connection limits of the TLS layer: TCP keepalive, a bounded TLS handshake, and a
//! connection cap for listeners without their own (the admin listener). Header, body and idle
//! keep-alive deadlines live in `server/timed_io.rs`.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::verifier::{RefusalReason, Refusals};

/// Connection limits. The defaults suit KMS behind an NLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Longest a TLS handshake may take once the TCP connection is accepted.
    pub handshake_timeout: Duration,
    /// Idle time before the first TCP keepalive probe.
    pub keepalive_time: Duration,
    /// Time between keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the kernel drops the connection.
    pub keepalive_retries: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(5),
            keepalive_time: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(5),
            keepalive_retries: 3,
        }
    }
}

/// Turns on TCP keepalive probes so dead peers are reaped instead of piling up.
pub fn set_tcp_keepalive(stream: &TcpStream, limits: &ConnLimits) -> io::Result<()> {
    let keepalive = TcpKeepalive::new()
        .with_time(limits.keepalive_time)
        .with_interval(limits.keepalive_interval)
        .with_retries(limits.keepalive_retries);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
}

impl HandshakeError {
    /// The rustls error behind a failed handshake, if any (not an I/O error or timeout).
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            HandshakeError::Failed(e) => e.get_ref()?.downcast_ref::<rustls::Error>(),
            HandshakeError::Timeout(_) => None,
        }
    }
}

/// Runs the TLS handshake with a time limit. A client that sent no certificate to an mTLS
/// listener is counted here (rustls refuses it before any verifier runs).
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    timeout: Duration,
    refusals: &Refusals,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let result = match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(stream)) => return Ok(stream),
        Ok(Err(e)) => HandshakeError::Failed(e),
        Err(_) => HandshakeError::Timeout(timeout),
    };
    if let Some(rustls::Error::NoCertificatesPresented) = result.rustls_error() {
        refusals.record(
            RefusalReason::NoCertificate,
            None,
            "peer sent no certificate",
        );
    }
    Err(result)
}
