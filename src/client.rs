//! The XKS client side: `keygate conformance` (a strict suite for any XKS proxy) and
//! `keygate load` (a SigV4 load generator), on shared connection and signing code.

pub mod conformance;
pub mod conn;
pub mod expect;
pub mod load;
pub mod report;
pub mod sign;
pub mod tls;
pub mod wire;

mod cases;
mod cases_auth;
mod cases_crypto;
mod cases_errors;

use std::path::PathBuf;

pub use conformance::{ConformanceArgs, run_conformance};
pub use load::{LoadArgs, run_load};

use conn::{ConnError, Connector, Target};
use sign::{Secret, Signer};
use tls::TlsOptions;

/// Connection and credential flags shared by `conformance` and `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Base URL of the proxy, e.g. https://xks.example.com or http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// URI path prefix of the key store ("" for none), e.g. /tenant-a; the whole URI path
    /// (/tenant-a/kms/xks/v1, as the dev banner and the KMS console show it) works too.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// SigV4 access key id of the key store.
    #[arg(long, env = "KEYGATE_ACCESS_KEY_ID")]
    pub access_key_id: String,
    /// SigV4 secret access key (prefer the environment variable to keep it out of `ps`).
    #[arg(long, env = "KEYGATE_SECRET", hide_env_values = true)]
    pub secret: Secret,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// PEM file with the CA certificates to trust for https.
    #[arg(long, conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// PEM client certificate for mTLS.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key for mTLS.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Longest wait for a connection (TCP and TLS) and for each response, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = load::parse_duration)]
    pub timeout: std::time::Duration,
}

impl ConnArgs {
    /// The connector these flags describe.
    pub fn connector(&self) -> Result<Connector, ConnError> {
        let target = Target::parse(&self.url, &self.prefix)?;
        let tls = TlsOptions {
            cacert: self.cacert.clone(),
            insecure: self.insecure,
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        };
        Ok(Connector::new(target, &tls)?.with_timeout(self.timeout))
    }

    /// The signer these flags describe.
    pub fn signer(&self) -> Signer {
        Signer::new(
            self.access_key_id.clone(),
            self.secret.clone(),
            self.region.clone(),
        )
    }
}
