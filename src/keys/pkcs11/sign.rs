//! Signing the decision log's digests with a key pair in the PKCS#11 token: an ECDSA P-256
//! (CKM_ECDSA over SHA-256 of the message) or Ed25519 (CKM_EDDSA) private key found by
//! CKA_LABEL, which must be sensitive and non-extractable, and its public key (same label)
//! for the fingerprint. Signing goes through the backend's engine: a pooled session, the
//! module's re-initialisation on failure. Every call here blocks.

use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest as _, Sha256};

use super::engine::{Engine, Fault};
use crate::keys::{KeyError, KeyOp};
use crate::signing::{Algorithm, DigestSigner, PublicKey, SigningError, ecdsa_der};

/// CKA_EC_PARAMS of P-256: the OID 1.2.840.10045.3.1.7.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// CKA_EC_PARAMS of Ed25519: the OID 1.3.101.112 ...
const ED25519_OID_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// ... or the printable string "edwards25519" (PKCS#11 3.0 allows both).
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// A digest signer whose private key never leaves the token.
#[derive(Debug)]
pub struct Pkcs11Signer {
    engine: Arc<Engine>,
    label: String,
    public: PublicKey,
}

impl Pkcs11Signer {
    /// Finds and checks the key pair labelled `label`, and proves the pair belongs together
    /// with one signature.
    pub(super) fn open(engine: Arc<Engine>, label: &str) -> Result<Self, KeyError> {
        let name = label.to_owned();
        let public = engine.run(KeyOp::Encrypt, label, |_, _, s| {
            signing_key(s, &name).map(|(_, p)| p)
        })?;
        let signer = Self {
            engine,
            label: label.to_owned(),
            public,
        };
        let probe = b"keygate digest key check";
        let signature = signer
            .sign(probe)
            .map_err(|e| KeyError::Unavailable(e.to_string()))?;
        if !signer.public.verify(probe, &signature) {
            return Err(KeyError::Unavailable(format!(
                "the public key labelled {label:?} does not verify its private key's signature"
            )));
        }
        Ok(signer)
    }
}

impl DigestSigner for Pkcs11Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let (label, algorithm) = (self.label.clone(), self.public.algorithm());
        self.engine
            .run(KeyOp::Encrypt, &self.label, |_, _, s| {
                let (handle, _) = signing_key(s, &label)?;
                sign(s, handle, algorithm, message)
            })
            .map_err(|e| SigningError::Sign(e.to_string()))
    }
}

/// Signs `message` with the private key `handle` of `algorithm`.
pub(super) fn sign(
    s: &Session,
    handle: ObjectHandle,
    algorithm: Algorithm,
    message: &[u8],
) -> Result<Vec<u8>, Fault> {
    match algorithm {
        Algorithm::EcdsaP256Sha256 => {
            let raw = s.sign(&Mechanism::Ecdsa, handle, &Sha256::digest(message))?;
            ecdsa_der(&raw).map_err(|e| Fault::Key(KeyError::Unavailable(e.to_string())))
        }
        Algorithm::Ed25519 => {
            let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
            Ok(s.sign(&mechanism, handle, message)?)
        }
    }
}

/// The private key labelled `label` (checked: a signing key, sensitive, non-extractable) and
/// the public key of the pair.
pub(super) fn signing_key(s: &Session, label: &str) -> Result<(ObjectHandle, PublicKey), Fault> {
    let private = one(s, ObjectClass::PRIVATE_KEY, label)?;
    let attrs = s.get_attributes(
        private,
        &[
            AttributeType::KeyType,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Sign,
        ],
    )?;
    let mut refusals = Vec::new();
    for a in &attrs {
        match a {
            Attribute::Sensitive(false) => refusals.push("not sensitive"),
            Attribute::Extractable(true) => refusals.push("extractable"),
            Attribute::Sign(false) => refusals.push("not allowed to sign (CKA_SIGN false)"),
            Attribute::KeyType(t) if *t != KeyType::EC && *t != KeyType::EC_EDWARDS => {
                refusals.push("neither an EC nor an Edwards key");
            }
            _ => {}
        }
    }
    if !refusals.is_empty() {
        return Err(refused(format!(
            "the private key labelled {label:?} is {}; keygate signs digests only with a \
             sensitive, non-extractable ECDSA P-256 or Ed25519 signing key",
            refusals.join(", ")
        )));
    }
    let public = one(s, ObjectClass::PUBLIC_KEY, label)?;
    Ok((private, public_key(s, public, label)?))
}

/// The public key object `handle` as a [`PublicKey`].
fn public_key(s: &Session, handle: ObjectHandle, label: &str) -> Result<PublicKey, Fault> {
    let attrs = s.get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])?;
    let (mut params, mut point) = (Vec::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = p,
            Attribute::EcPoint(p) => point = p,
            _ => {}
        }
    }
    let algorithm = if params == P256_PARAMS {
        Algorithm::EcdsaP256Sha256
    } else if params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS {
        Algorithm::Ed25519
    } else {
        return Err(refused(format!(
            "the key labelled {label:?} is on a curve keygate does not sign with \
             (P-256 and Ed25519 only)"
        )));
    };
    PublicKey::new(algorithm, unwrap_octet_string(&point, algorithm).to_vec())
        .map_err(|e| refused(format!("the public key labelled {label:?}: {e}")))
}

/// CKA_EC_POINT is a DER OCTET STRING holding the point; some modules give the point bare.
fn unwrap_octet_string(point: &[u8], algorithm: Algorithm) -> &[u8] {
    let bare = match algorithm {
        Algorithm::Ed25519 => 32,
        Algorithm::EcdsaP256Sha256 => 65,
    };
    match point {
        [0x04, len, rest @ ..] if usize::from(*len) == bare && rest.len() == bare => rest,
        _ => point,
    }
}

/// The one object of `class` labelled `label`.
fn one(s: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, Fault> {
    let found = s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    match found.as_slice() {
        [handle] => Ok(*handle),
        [] => Err(refused(format!(
            "no {class} labelled {label:?} on the token"
        ))),
        many => Err(refused(format!(
            "{} objects of class {class} carry the label {label:?}; keygate needs exactly one",
            many.len()
        ))),
    }
}

fn refused(why: String) -> Fault {
    Fault::Key(KeyError::Unavailable(why))
}

/// The templates of a new signing key pair labelled `label` (private: sensitive,
/// non-extractable, sign only).
pub(super) fn key_pair_templates(
    label: &str,
    algorithm: Algorithm,
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let (mechanism, params) = match algorithm {
        Algorithm::EcdsaP256Sha256 => (Mechanism::EccKeyPairGen, P256_PARAMS.to_vec()),
        Algorithm::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, ED25519_OID_PARAMS.to_vec()),
    };
    let label = label.as_bytes().to_vec();
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(params),
        Attribute::Label(label.clone()),
        Attribute::Id(label.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Label(label.clone()),
        Attribute::Id(label),
    ];
    (mechanism, public, private)
}
