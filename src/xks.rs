//! The XKS front door's gate, orchestration only: authenticate (SigV4), parse, judge (the
//! [`Authorizer`](crate::policy::Authorizer)), check the key store's key list, run the
//! operation with `envelope` building the AAD and CDIV and the key backend doing the
//! cryptography, and close the judgement with the answer. HTTP stays in the router.

pub mod api;
mod authorize;
pub mod envelope;
pub mod error;
pub mod keystore;
pub mod route;
mod service;

use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::keys::{KeyError, KeyInfo, SealedRef};
use crate::sigv4::{self, SignedRequest};
use api::{RequestMetadata, b64};
use authorize::{Caller, close, judge};
use envelope::{CiphertextMetadata, cdiv, frame_aad};
use error::XksError;
use keystore::Keystore;
pub use route::{ConnInfo, Operation, Route, route};
pub use service::{Handles, Service};

/// What the request log line needs to know about a request, filled in as it is learnt.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts {
    pub kms_request_id: Option<String>,
    pub kms_operation: Option<String>,
    pub access_key_id: Option<String>,
    /// Why the request was shed after authentication (the key store's rate limit).
    pub shed: Option<&'static str>,
    /// Why SigV4 verification refused the request (`SigV4Error::reason`).
    pub sigv4_refusal: Option<&'static str>,
}

/// Runs one routed request whose body has been read; returns the JSON response body. A
/// judged request's decision line is handed to the log before this returns.
pub async fn handle(
    h: &Handles,
    limits: api::Limits,
    route: &Route,
    req: &SignedRequest<'_>,
    conn: &ConnInfo,
    facts: &mut RequestFacts,
) -> Result<String, XksError> {
    let ks = &route.keystore;
    let credential =
        sigv4::verify(req, &ks.credentials, &ks.region, SystemTime::now()).map_err(|e| {
            tracing::debug!(keystore = %ks.name, reason = %e, "SigV4 verification failed");
            facts.sigv4_refusal = Some(e.reason());
            XksError::AuthenticationFailed(e.public_message())
        })?;
    facts.access_key_id = Some(credential.access_key_id.to_string());
    if let Err(shed) = ks.charge() {
        facts.shed = Some(shed.reason());
        return Err(XksError::Throttling(shed.message(&ks.name)));
    }
    let ak = credential.access_key_id.as_str();
    match route.operation {
        Operation::Health => {
            note(facts, api::parse_health(req.body))?;
            let health = h.health.current().await;
            to_json(&health)
        }
        Operation::Metadata => {
            let m = note(facts, api::parse_metadata(req.body))?;
            let (judgement, allowed) = judge(&h.authorizer, route, conn, &caller(&m, ak));
            let result = async {
                allowed?;
                metadata(h, ks, route).await
            };
            close(judgement, result.await)
        }
        Operation::Encrypt => {
            let r = note(facts, api::parse_encrypt(req.body, limits))?;
            let (judgement, allowed) = judge(&h.authorizer, route, conn, &caller(&r, ak));
            let result = async {
                allowed?;
                let info = key_info(h, ks, route, true).await?;
                encrypt(h, route.key_id(), &info, r).await
            };
            close(judgement, result.await)
        }
        Operation::Decrypt => {
            let r = note(facts, api::parse_decrypt(req.body, limits))?;
            let (judgement, allowed) = judge(&h.authorizer, route, conn, &caller(&r, ak));
            let result = async {
                allowed?;
                let info = key_info(h, ks, route, true).await?;
                decrypt(h, route.key_id(), &info, r).await
            };
            close(judgement, result.await)
        }
    }
}

async fn metadata(h: &Handles, ks: &Keystore, route: &Route) -> Result<String, XksError> {
    let info = key_info(h, ks, route, false).await?;
    to_json(&api::KeyMetadataResponse {
        key_spec: info.key_spec,
        key_usage: info.usage_names(),
        key_status: if info.enabled { "ENABLED" } else { "DISABLED" },
    })
}

fn aad_len<T: AsRef<[u8]>>(aad: &Option<T>) -> usize {
    aad.as_ref().map_or(0, |a| a.as_ref().len())
}

/// What the policy is told about a parsed request and its caller.
fn caller<'a>(request: &'a impl HasMetadata, access_key_id: &'a str) -> Caller<'a> {
    Caller {
        metadata: &request.metadata().raw,
        access_key_id,
        aad_length: request.aad_length(),
    }
}

/// Records the request ids for the log as soon as the body parsed.
fn note<T: HasMetadata>(
    facts: &mut RequestFacts,
    parsed: Result<T, XksError>,
) -> Result<T, XksError> {
    if let Ok(p) = &parsed {
        facts.kms_request_id = Some(p.metadata().kms_request_id.clone());
        facts.kms_operation = Some(p.metadata().kms_operation.clone());
    }
    parsed
}

trait HasMetadata {
    fn metadata(&self) -> &RequestMetadata;
    /// Bytes of caller AAD (0 where the operation has none).
    fn aad_length(&self) -> usize {
        0
    }
}

impl HasMetadata for RequestMetadata {
    fn metadata(&self) -> &RequestMetadata {
        self
    }
}

impl HasMetadata for api::EncryptRequest {
    fn metadata(&self) -> &RequestMetadata {
        &self.metadata
    }
    fn aad_length(&self) -> usize {
        aad_len(&self.aad)
    }
}

impl HasMetadata for api::DecryptRequest {
    fn metadata(&self) -> &RequestMetadata {
        &self.metadata
    }
    fn aad_length(&self) -> usize {
        aad_len(&self.aad)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, XksError> {
    serde_json::to_string(value)
        .map_err(|e| XksError::Internal(format!("cannot encode response: {e}")))
}

/// The key must be listed for this key store and known to the backend. GetKeyMetadata reads
/// the key's facts now; Encrypt and Decrypt (`for_use`) may use facts read within
/// [`USE_FRESHNESS`](crate::keys::USE_FRESHNESS).
async fn key_info(
    h: &Handles,
    ks: &Keystore,
    route: &Route,
    for_use: bool,
) -> Result<KeyInfo, XksError> {
    let key_id = listed(ks, route)?;
    let info = if for_use {
        h.keys.key_info_for_use(key_id).await
    } else {
        h.keys.key_info(key_id).await
    };
    info.map_err(|e| XksError::from_key(&e, key_id))
}

fn listed<'r>(ks: &Keystore, route: &'r Route) -> Result<&'r str, XksError> {
    let key_id = route.key_id();
    if ks.keys.contains(key_id) {
        Ok(key_id)
    } else {
        Err(XksError::KeyNotFound(format!(
            "key {key_id} is not in key store {}",
            ks.name
        )))
    }
}

fn require(info: &KeyInfo, key_id: &str, op: crate::keys::KeyOp) -> Result<(), XksError> {
    if !info.enabled {
        return Err(XksError::from_key(&KeyError::Disabled, key_id));
    }
    let permitted = match op {
        crate::keys::KeyOp::Encrypt => info.usage.encrypt,
        crate::keys::KeyOp::Decrypt => info.usage.decrypt,
    };
    if permitted {
        Ok(())
    } else {
        Err(XksError::from_key(&KeyError::UsageNotPermitted(op), key_id))
    }
}

async fn encrypt(
    h: &Handles,
    key_id: &str,
    info: &KeyInfo,
    r: api::EncryptRequest,
) -> Result<String, XksError> {
    use crate::keys::KeyOp;
    require(info, key_id, KeyOp::Encrypt)?;
    if r.want_cdiv {
        // The CDIV self-check decrypts; an encrypt-only key can't do that.
        require(info, key_id, KeyOp::Decrypt)?;
    }
    let aad = r.aad.as_deref().unwrap_or_default();
    let meta = CiphertextMetadata::new(info.current_version).encode();
    let framed =
        frame_aad(aad, &meta).map_err(|e| XksError::UnsupportedOperation(e.to_string()))?;
    let sealed = h
        .keys
        .encrypt(key_id, info.current_version, &r.plaintext, &framed)
        .await
        .map_err(|e| XksError::from_key(&e, key_id))?;
    let integrity = if r.want_cdiv {
        // Spec order: compute the CDIV from the output first, then verify by decrypting.
        let value = cdiv(aad, &meta, &sealed.iv, &sealed.ciphertext, &sealed.tag);
        let sref = SealedRef {
            iv: &sealed.iv,
            ciphertext: &sealed.ciphertext,
            tag: &sealed.tag,
        };
        let back = h
            .keys
            .decrypt(key_id, info.current_version, sref, &framed)
            .await
            .map_err(|e| XksError::from_key(&e, key_id))?;
        if back.as_slice() != r.plaintext.as_slice() {
            return Err(XksError::Internal("encryption self-check failed".into()));
        }
        Some(b64(&value))
    } else {
        None
    };
    to_json(&api::EncryptResponse {
        authentication_tag: b64(&sealed.tag),
        ciphertext: b64(&sealed.ciphertext),
        ciphertext_data_integrity_value: integrity,
        ciphertext_metadata: b64(&meta),
        initialization_vector: b64(&sealed.iv),
    })
}

async fn decrypt(
    h: &Handles,
    key_id: &str,
    info: &KeyInfo,
    r: api::DecryptRequest,
) -> Result<String, XksError> {
    require(info, key_id, crate::keys::KeyOp::Decrypt)?;
    let meta_bytes = r.ciphertext_metadata.as_deref().unwrap_or_default();
    let meta = CiphertextMetadata::decode(meta_bytes).ok_or_else(|| {
        XksError::InvalidCiphertext(
            "ciphertextMetadata is missing or was not issued by keygate".into(),
        )
    })?;
    let framed = frame_aad(r.aad.as_deref().unwrap_or_default(), meta_bytes)
        .map_err(|e| XksError::InvalidCiphertext(e.to_string()))?;
    let sref = SealedRef {
        iv: &r.iv,
        ciphertext: &r.ciphertext,
        tag: &r.tag,
    };
    let plaintext = h
        .keys
        .decrypt(key_id, meta.key_version, sref, &framed)
        .await
        .map_err(|e| XksError::from_key(&e, key_id))?;
    let encoded = Zeroizing::new(b64(&plaintext));
    to_json(&api::DecryptResponse { plaintext: encoded })
}

#[cfg(test)]
mod tests;
