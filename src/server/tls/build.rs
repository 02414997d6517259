//! Builds the rustls `ServerConfig` for the XKS listener from checked settings: TLS 1.2 and
//! 1.3 with the ring provider (all its suites, which include the four the XKS spec names),
//! the full chain from the PEM file, ALPN `http/1.1`, and the mTLS verifier when configured.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, version};

use super::TlsError;
use super::material::{self, Material};
use super::settings::TlsSettings;
use super::verifier::{ClientNameVerifier, Refusals};

/// The crypto provider used for every TLS object keygate builds (never the process default,
/// so a second provider elsewhere in the dependency graph cannot change or break it).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN protocols offered: HTTP/1.1 only; the server speaks HTTP/1.1 and SigV4's `host`
/// comes from the Host header.
pub fn alpn_protocols() -> Vec<Vec<u8>> {
    vec![b"http/1.1".to_vec()]
}

/// Reads the files named by `settings` and builds a server configuration.
pub fn server_config(
    settings: &TlsSettings,
    refusals: &Arc<Refusals>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let material = Material {
        chain: material::read_chain(&settings.cert_chain)?,
        key: material::read_key(&settings.key)?,
        client_roots: match &settings.client_auth {
            Some(auth) => Some(material::read_roots(&auth.ca)?),
            None => None,
        },
    };
    from_material(settings, material, refusals)
}

fn from_material(
    settings: &TlsSettings,
    material: Material,
    refusals: &Arc<Refusals>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?;
    let builder = match (material.client_roots, &settings.client_auth) {
        (Some(roots), Some(auth)) => {
            let chain =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            let verifier = ClientNameVerifier::new(chain, auth.name.clone(), refusals.clone());
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(material.chain, material.key)
        .map_err(|source| TlsError::Pair {
            cert: settings.cert_chain.clone(),
            key: settings.key.clone(),
            source,
        })?;
    config.alpn_protocols = alpn_protocols();
    Ok(Arc::new(config))
}
