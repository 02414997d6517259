//! TLS client configuration: trusted roots or the named-dangerous "accept any certificate", and mTLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Neither a CA file nor `--insecure` was given for an https URL.
    #[error(
        "an https URL needs --cacert FILE, the CA certificate that issued the proxy's \
         certificate ({DEV_CA} for `keygate serve --dev`), or --insecure"
    )]
    NoTrust,
    /// Only one of certificate and key was given.
    #[error("--client-cert and --client-key must be given together")]
    HalfClientIdentity,
}

/// The CA file of a `keygate serve --dev` server (in its default data dir), which an https
/// client must trust.
pub const DEV_CA: &str = "keygate-dev/tls/ca.pem";

/// How the client decides to trust the server, and whether it presents a certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust.
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure: bool,
    /// PEM client certificate chain for mTLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key for mTLS.
    pub client_key: Option<PathBuf>,
}

fn pem_error(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::Pem {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// Builds the rustls client configuration (ring provider, TLS 1.2 and 1.3, ALPN http/1.1).
pub fn client_config(opts: &TlsOptions) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DangerousAcceptAnyServerCert::new(
                &provider,
            )))
    } else {
        let path = opts.cacert.as_deref().ok_or(TlsSetupError::NoTrust)?;
        let mut roots = RootCertStore::empty();
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| pem_error(path, e))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsSetupError::HalfClientIdentity),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts every server certificate without checking chain or name; handshake signatures are
/// still verified. Only for `--insecure` against test servers.
#[derive(Debug)]
pub struct DangerousAcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl DangerousAcceptAnyServerCert {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for DangerousAcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
