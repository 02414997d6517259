//! The names a client certificate carries (subject CN, SAN dNSNames), read with x509-parser
//! because rustls validates chains but exposes no subject names.

use rustls::ServerConnection;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity facts of one certificate that keygate acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CertNames {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    /// Issuer equals subject: the certificate signed itself (or claims to).
    pub self_issued: bool,
}

impl CertNames {
    /// Parses a DER certificate; `None` if it is not a certificate.
    pub fn parse(der: &[u8]) -> Option<CertNames> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
        Some(CertNames {
            common_name,
            dns_names,
            self_issued,
        })
    }

    /// True if the CN or any SAN dNSName equals `name` (ASCII case-insensitive, no wildcards).
    pub fn carries(&self, name: &str) -> bool {
        self.common_name
            .iter()
            .chain(self.dns_names.iter())
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The subject to report: the CN, else the first SAN dNSName.
    pub fn subject(&self) -> Option<String> {
        self.common_name
            .clone()
            .or_else(|| self.dns_names.first().cloned())
    }
}

/// The subject (CN, else first SAN dNSName) of the client certificate accepted on this
/// connection; `None` without mTLS.
pub fn client_subject(conn: &ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    CertNames::parse(leaf.as_ref())?.subject()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn matches_cn_or_san_case_insensitively() {
        let names =
            CertNames::parse(&cert(Some("CKS.kms.x"), &["a.example", "b.example"])).unwrap();
        assert!(names.carries("cks.kms.x"));
        assert!(names.carries("B.EXAMPLE"));
        assert!(!names.carries("c.example"));
        assert!(!names.carries("kms.x"));
        assert!(names.self_issued);
        assert_eq!(names.subject().as_deref(), Some("CKS.kms.x"));
    }

    #[test]
    fn subject_falls_back_to_first_san() {
        let names = CertNames::parse(&cert(None, &["first.example", "second.example"])).unwrap();
        assert_eq!(names.subject().as_deref(), Some("first.example"));
        assert!(CertNames::parse(b"not a certificate").is_none());
    }

    #[test]
    fn no_names_carries_nothing() {
        let names = CertNames::parse(&cert(None, &[])).unwrap();
        assert!(!names.carries(""));
        assert_eq!(names.subject(), None);
    }
}
