//! Reads the PEM files a TLS configuration is built from: the served chain, its key and the
//! client CA bundle, checking each before anything is handed to rustls.

use std::fmt;
use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// Everything a server configuration is built from, read from disk at one moment.
pub(crate) struct Material {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_roots: Option<RootCertStore>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("chain_len", &self.chain.len())
            .field("key", &"***")
            .field(
                "client_roots",
                &self.client_roots.as_ref().map(RootCertStore::len),
            )
            .finish()
    }
}

fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    match err {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
        // The other variants carry at most a section name, never key bytes.
        other => TlsError::Pem {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// All certificates in a PEM file, in file order; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The served chain: leaf first, every certificate parseable, the leaf valid now.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = read_certs(path)?;
    for (i, der) in certs.iter().enumerate() {
        let (_, cert) = parse(path, der)?;
        if i == 0 {
            check_validity(path, &cert)?;
        }
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1). Errors never include key bytes.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => pem_error(path, other),
    })
}

/// The client CA bundle as a root store; every certificate must be a usable trust anchor.
pub(crate) fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in read_certs(path)? {
        parse(path, &der)?;
        roots.add(der).map_err(|e| TlsError::BadClientCa {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// When the first certificate in `path` (the served leaf) expires; `None` if unreadable.
pub(crate) fn leaf_not_after(path: &Path) -> Option<std::time::SystemTime> {
    let certs = read_certs(path).ok()?;
    let (_, leaf) = parse(path, certs.first()?).ok()?;
    let secs = u64::try_from(leaf.validity().not_after.timestamp()).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
}

fn parse<'a>(
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<(&'a [u8], X509Certificate<'a>), TlsError> {
    X509Certificate::from_der(der.as_ref()).map_err(|e| TlsError::BadCertificate {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn check_validity(path: &Path, cert: &X509Certificate<'_>) -> Result<(), TlsError> {
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}
