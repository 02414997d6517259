//! HTTPS for the XKS listener: checked settings, the rustls server configuration, the mTLS
//! client-name verifier, certificate reload and per-connection limits.
//!
//! Flow for one connection: the accept loop takes a connection permit, turns on TCP keepalive, runs [`hygiene::handshake`] with the acceptor of the configuration
//! currently in force ([`TlsReloader::acceptor`]), reads [`client_subject`] for the policy input
//! and hands the stream to the HTTP/1.1 server.

mod build;
pub mod hygiene;
mod material;
mod names;
pub mod reload;
pub mod settings;
pub mod verifier;

use std::path::PathBuf;

pub use build::{alpn_protocols, provider, server_config};
pub use hygiene::{ConnLimits, HandshakeError, handshake};
pub use names::client_subject;
pub use reload::TlsReloader;
pub use settings::{ClientAuth, ClientName, TlsSettings, TlsToml};
pub use verifier::{ClientNameVerifier, RefusalReason, Refusals};

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid PEM ({detail})")]
    Pem { path: PathBuf, detail: String },
    #[error("{path}: contains no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: contains no private key")]
    NoKey { path: PathBuf },
    #[error("{path}: certificate cannot be parsed ({detail})")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{path}: certificate expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("{path}: certificate not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{path}: CA certificate rejected ({detail})")]
    BadClientCa { path: PathBuf, detail: String },
    /// The key does not belong to the leaf certificate, or rustls refused the pair.
    #[error("certificate {cert} and key {key} do not form a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier rejected: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}
