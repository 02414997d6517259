//! mTLS: a client-certificate verifier that requires a chain to the configured CA bundle and
//! the configured name (CN or SAN dNSName), and fails every refusal with a `handshake_failure`
//! alert. rustls maps certificate errors to specific alerts (`certificate_expired`,
//! `unknown_ca`, ...); KMS's test kit expects `handshake_failure`, so refusals are reported to
//! rustls as `Error::General`. Each refusal is logged and counted by reason.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::names::CertNames;
use super::settings::ClientName;

/// Why a client was refused during the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The client sent no certificate (rustls answers `certificate_required` itself).
    NoCertificate,
    Expired,
    NotYetValid,
    /// A certificate that signed itself and is not in the CA bundle.
    SelfSigned,
    /// Issued by a CA that is not in the configured bundle.
    UnknownCa,
    /// Chains correctly but carries neither CN nor SAN dNSName equal to the configured name.
    WrongName,
    Revoked,
    /// Any other defect: bad encoding, bad signature, unsupported algorithm, wrong usage...
    Invalid,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::NoCertificate,
        RefusalReason::Expired,
        RefusalReason::NotYetValid,
        RefusalReason::SelfSigned,
        RefusalReason::UnknownCa,
        RefusalReason::WrongName,
        RefusalReason::Revoked,
        RefusalReason::Invalid,
    ];

    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoCertificate => "no_certificate",
            RefusalReason::Expired => "expired",
            RefusalReason::NotYetValid => "not_yet_valid",
            RefusalReason::SelfSigned => "self_signed",
            RefusalReason::UnknownCa => "unknown_ca",
            RefusalReason::WrongName => "wrong_name",
            RefusalReason::Revoked => "revoked",
            RefusalReason::Invalid => "invalid",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Classifies a chain-verification error for the given leaf.
    fn classify(err: &Error, leaf: &CertNames) -> RefusalReason {
        let Error::InvalidCertificate(cert_err) = err else {
            return RefusalReason::Invalid;
        };
        match cert_err {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                RefusalReason::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                RefusalReason::NotYetValid
            }
            CertificateError::Revoked => RefusalReason::Revoked,
            // A self-issued leaf never chains to a bundle that does not contain it; webpki says
            // UnknownIssuer (or CaUsedAsEndEntity for a CA:TRUE one, reported as Other).
            CertificateError::UnknownIssuer | CertificateError::Other(_) if leaf.self_issued => {
                RefusalReason::SelfSigned
            }
            CertificateError::UnknownIssuer => RefusalReason::UnknownCa,
            _ => RefusalReason::Invalid,
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refusal counters by reason, shared by the verifier and the accept loop (for
/// [`RefusalReason::NoCertificate`], which rustls decides before any verifier runs).
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; RefusalReason::ALL.len()],
}

impl Refusals {
    pub fn new() -> Arc<Refusals> {
        Arc::new(Refusals::default())
    }

    /// Logs one refusal and counts it.
    pub fn record(&self, reason: RefusalReason, subject: Option<&str>, detail: &str) {
        if let Some(c) = self.counts.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            reason = reason.as_str(),
            subject = subject.unwrap_or("-"),
            detail,
            "client certificate refused"
        );
    }

    /// Refusals counted so far for `reason`.
    pub fn count(&self, reason: RefusalReason) -> u64 {
        self.counts
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every reason with its count, for the metrics endpoint.
    pub fn snapshot(&self) -> Vec<(RefusalReason, u64)> {
        RefusalReason::ALL
            .iter()
            .map(|r| (*r, self.count(*r)))
            .collect()
    }
}

/// Wraps the webpki verifier (chain to the CA bundle) and adds the client-name check.
#[derive(Debug)]
pub struct ClientNameVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    name: ClientName,
    refusals: Arc<Refusals>,
}

impl ClientNameVerifier {
    /// `chain` must be a mandatory-authentication webpki verifier for the CA bundle.
    pub fn new(
        chain: Arc<dyn ClientCertVerifier>,
        name: ClientName,
        refusals: Arc<Refusals>,
    ) -> ClientNameVerifier {
        ClientNameVerifier {
            chain,
            name,
            refusals,
        }
    }

    fn refuse(&self, reason: RefusalReason, leaf: &CertNames, detail: &str) -> Error {
        self.refusals
            .record(reason, leaf.subject().as_deref(), detail);
        Error::General(format!("client certificate refused: {reason}"))
    }
}

impl ClientCertVerifier for ClientNameVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let leaf = CertNames::parse(end_entity.as_ref()).unwrap_or_default();
        if let Err(e) = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)
        {
            let reason = RefusalReason::classify(&e, &leaf);
            return Err(self.refuse(reason, &leaf, &e.to_string()));
        }
        if !leaf.carries(self.name.as_str()) {
            let detail = format!("expected {} as CN or SAN dNSName", self.name.as_str());
            return Err(self.refuse(RefusalReason::WrongName, &leaf, &detail));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain
            .verify_tls12_signature(message, cert, dss)
            .map_err(|e| self.signature_refused(cert, &e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain
            .verify_tls13_signature(message, cert, dss)
            .map_err(|e| self.signature_refused(cert, &e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

impl ClientNameVerifier {
    fn signature_refused(&self, cert: &CertificateDer<'_>, err: &Error) -> Error {
        let leaf = CertNames::parse(cert.as_ref()).unwrap_or_default();
        self.refuse(RefusalReason::Invalid, &leaf, &err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let own = CertNames {
            self_issued: true,
            ..CertNames::default()
        };
        let issued = CertNames::default();
        let cases = [
            (CertificateError::Expired, &issued, RefusalReason::Expired),
            (
                CertificateError::NotValidYet,
                &issued,
                RefusalReason::NotYetValid,
            ),
            (
                CertificateError::UnknownIssuer,
                &issued,
                RefusalReason::UnknownCa,
            ),
            (
                CertificateError::UnknownIssuer,
                &own,
                RefusalReason::SelfSigned,
            ),
            (CertificateError::Revoked, &issued, RefusalReason::Revoked),
            (
                CertificateError::BadSignature,
                &issued,
                RefusalReason::Invalid,
            ),
            (CertificateError::BadEncoding, &own, RefusalReason::Invalid),
        ];
        for (err, leaf, want) in cases {
            let got = RefusalReason::classify(&Error::InvalidCertificate(err.clone()), leaf);
            assert_eq!(got, want, "{err:?}");
        }
        assert_eq!(
            RefusalReason::classify(&Error::DecryptError, &issued),
            RefusalReason::Invalid
        );
    }

    #[test]
    fn counts_by_reason() {
        let r = Refusals::new();
        r.record(RefusalReason::WrongName, Some("x"), "d");
        r.record(RefusalReason::WrongName, None, "d");
        r.record(RefusalReason::NoCertificate, None, "d");
        assert_eq!(r.count(RefusalReason::WrongName), 2);
        assert_eq!(r.count(RefusalReason::NoCertificate), 1);
        assert_eq!(r.count(RefusalReason::Expired), 0);
        assert_eq!(r.snapshot().len(), RefusalReason::ALL.len());
        for (i, reason) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
