//! Signing keys for the decision log's digests: the [`DigestSigner`] a digest is signed with
//! (an Ed25519 key file here; a key in the PKCS#11 token in `keys/pkcs11/sign.rs`), the
//! [`PublicKey`] an auditor verifies with (SPKI PEM, as `openssl pkey -pubout` writes it),
//! and its fingerprint. Neither the policy layer nor the key backends know each other: both
//! know this.
//!
//! Signatures are what `openssl pkeyutl -verify` / `openssl dgst -verify` check: Ed25519
//! (RFC 8032, 64 bytes) over the message, or ECDSA P-256 over SHA-256 of the message,
//! DER-encoded.

use std::fmt;
use std::path::Path;

use ring::signature::{self as sig, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// SPKI DER of an Ed25519 key, before the 32 key bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// SPKI DER of a P-256 key, before the 65-byte uncompressed point (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// PKCS#8 v1 of an Ed25519 key, before the 32-byte seed (what `openssl genpkey` writes).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Errors of signing keys.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A key file could not be read, or is readable by others.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key is not one keygate signs digests with.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// Signing failed (the HSM refused, timed out...).
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The signature algorithms a digest may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (pure, RFC 8032).
    Ed25519,
    /// ECDSA on P-256 over SHA-256, DER-encoded signature.
    EcdsaP256Sha256,
}

impl Algorithm {
    /// The name written in digests: `ed25519` or `ecdsa-p256-sha256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }
}

/// A public key an auditor verifies digests with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    /// 32 bytes (Ed25519) or the 65-byte uncompressed point (P-256).
    raw: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, {})",
            self.algorithm.as_str(),
            self.fingerprint()
        )
    }
}

impl PublicKey {
    /// An Ed25519 key from its 32 bytes, or a P-256 key from its uncompressed point.
    pub fn new(algorithm: Algorithm, raw: Vec<u8>) -> Result<Self, SigningError> {
        let ok = match algorithm {
            Algorithm::Ed25519 => raw.len() == 32,
            Algorithm::EcdsaP256Sha256 => raw.len() == 65 && raw.first() == Some(&4),
        };
        if !ok {
            return Err(SigningError::Unsupported(format!(
                "a {} public key of {} bytes",
                algorithm.as_str(),
                raw.len()
            )));
        }
        Ok(Self { algorithm, raw })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        let prefix: &[u8] = match self.algorithm {
            Algorithm::Ed25519 => &ED25519_SPKI_PREFIX,
            Algorithm::EcdsaP256Sha256 => &P256_SPKI_PREFIX,
        };
        [prefix, &self.raw].concat()
    }

    /// Parses SubjectPublicKeyInfo DER of an Ed25519 or P-256 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SigningError> {
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            return Self::new(Algorithm::Ed25519, raw.to_vec());
        }
        if let Some(raw) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            return Self::new(Algorithm::EcdsaP256Sha256, raw.to_vec());
        }
        Err(SigningError::Unsupported(
            "not an Ed25519 or ECDSA P-256 public key".into(),
        ))
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM, as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    /// Parses a `PUBLIC KEY` PEM.
    pub fn from_pem(text: &[u8]) -> Result<Self, SigningError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(text)
            .map_err(|e| SigningError::Unsupported(format!("not a PUBLIC KEY PEM: {e}")))?;
        Self::from_spki_der(der.as_ref())
    }

    /// Reads a `PUBLIC KEY` PEM file.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        let text = std::fs::read(path).map_err(|e| file_error(path, e))?;
        Self::from_pem(&text).map_err(|e| file_error(path, e))
    }

    /// `sha256:` and the hex SHA-256 of the SPKI DER (`openssl pkey -pubin -outform DER |
    /// sha256sum`).
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.spki_der())))
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &dyn sig::VerificationAlgorithm = match self.algorithm {
            Algorithm::Ed25519 => &sig::ED25519,
            Algorithm::EcdsaP256Sha256 => &sig::ECDSA_P256_SHA256_ASN1,
        };
        sig::UnparsedPublicKey::new(algorithm, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// What signs digests. `sign` may block (an HSM call): it runs on the digest thread only.
pub trait DigestSigner: Send + Sync + fmt::Debug {
    /// The key auditors verify with.
    fn public_key(&self) -> &PublicKey;
    /// The signature of `message` (DER for ECDSA).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError>;
}

/// An Ed25519 key read from a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`).
pub struct Ed25519FileKey {
    pair: sig::Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Ed25519FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519FileKey({:?})", self.public)
    }
}

impl Ed25519FileKey {
    /// Reads the key file, which must not be readable by group or others.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        private_file(path)?;
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| file_error(path, e))?);
        Self::from_pem(&text).map_err(|e| file_error(path, e))
    }

    /// Parses a `PRIVATE KEY` (PKCS#8 v1 or v2) PEM holding an Ed25519 key.
    pub fn from_pem(text: &[u8]) -> Result<Self, SigningError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(text)
            .map_err(|e| SigningError::Unsupported(format!("not a PRIVATE KEY PEM: {e}")))?;
        let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| {
                SigningError::Unsupported(format!("not an Ed25519 PKCS#8 private key ({e})"))
            })?;
        let public = PublicKey::new(Algorithm::Ed25519, pair.public_key().as_ref().to_vec())?;
        Ok(Self { pair, public })
    }

    /// A new random key: its PKCS#8 v1 PEM (the form `openssl genpkey -algorithm ed25519`
    /// writes) and the key.
    pub fn generate() -> Result<(Zeroizing<String>, Self), SigningError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|e| SigningError::Sign(format!("no randomness: {e}")))?;
        let der = Zeroizing::new([&ED25519_PKCS8_PREFIX[..], seed.as_slice()].concat());
        let text = Zeroizing::new(pem("PRIVATE KEY", &der));
        let key = Self::from_pem(text.as_bytes())?;
        Ok((text, key))
    }
}

impl DigestSigner for Ed25519FileKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }
}

/// An ECDSA signature as PKCS#11 returns it (`r || s`, 32 bytes each for P-256) in DER.
pub fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, SigningError> {
    if raw.len() != 64 {
        return Err(SigningError::Sign(format!(
            "an ECDSA P-256 signature of {} bytes (expected r || s, 64)",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(32);
    let (r, s) = (der_integer(r), der_integer(s));
    let len = r.len() + s.len();
    // Two integers of at most 35 bytes each: always the short length form.
    let mut out = Vec::with_capacity(len + 2);
    out.push(0x30);
    out.push(u8::try_from(len).map_err(|_| SigningError::Sign("signature too long".into()))?);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Ok(out)
}

/// A DER INTEGER holding the unsigned big-endian `bytes`.
fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(at) => bytes.get(at..).unwrap_or(bytes),
        None => &[0],
    };
    let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0);
    let len = trimmed.len() + usize::from(pad);
    let mut out = vec![0x02, u8::try_from(len).unwrap_or(u8::MAX)];
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

/// PEM text of `der` under `label`, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Refuses a key file that group or others may read (as for the PKCS#11 PIN file).
fn private_file(path: &Path) -> Result<(), SigningError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| file_error(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(file_error(
            path,
            "is readable by group or others (chmod 600 it)",
        ));
    }
    Ok(())
}

fn file_error(path: &Path, reason: impl fmt::Display) -> SigningError {
    SigningError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_and_round_trip_through_pem() {
        let (pem_text, key) = Ed25519FileKey::generate().unwrap();
        assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = Ed25519FileKey::from_pem(pem_text.as_bytes()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let signature = key.sign(b"digest").unwrap();
        let public = PublicKey::from_pem(key.public_key().to_pem().as_bytes()).unwrap();
        assert!(public.verify(b"digest", &signature));
        assert!(!public.verify(b"digest!", &signature));
        let (_, other) = Ed25519FileKey::generate().unwrap();
        assert!(!other.public_key().verify(b"digest", &signature));
        assert_ne!(other.public_key().fingerprint(), public.fingerprint());
        assert!(public.fingerprint().starts_with("sha256:"));
    }

    #[test]
    fn ecdsa_signatures_become_der_integers() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 1; // s is 1
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 33 + 2 + 3, 0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
        assert!(ecdsa_der(&raw[..63]).is_err());
    }

    #[test]
    fn foreign_keys_are_refused() {
        assert!(PublicKey::from_spki_der(&[0x30, 0x00]).is_err());
        assert!(PublicKey::new(Algorithm::EcdsaP256Sha256, vec![4; 64]).is_err());
        assert!(
            Ed25519FileKey::from_pem(
                b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
    }
}
