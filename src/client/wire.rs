//! The XKS wire format as a client sees it: paths, request bodies, signed requests, strict
//! parsing of Encrypt output and the client-side CDIV.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::conn::Target;
use super::sign::{SignError, Signable, Signer};

/// A principal ARN used in every request.
pub const PRINCIPAL: &str = "arn:aws:iam::123456789012:user/keygate-client";
/// The KMS key ARN used in every request.
pub const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:123456789012:key/12345678-90ab-cdef-1234-567890abcdef";

/// The four XKS operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// GetKeyMetadata.
    Metadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
    /// GetHealthStatus.
    Health,
}

impl Op {
    /// The URI path of this operation on `key_id` under `target`.
    pub fn path(self, target: &Target, key_id: &str) -> String {
        let base = target.api_base();
        match self {
            Op::Health => format!("{base}/health"),
            Op::Metadata => format!("{base}/keys/{key_id}/metadata"),
            Op::Encrypt => format!("{base}/keys/{key_id}/encrypt"),
            Op::Decrypt => format!("{base}/keys/{key_id}/decrypt"),
        }
    }
}

/// Base64 (standard alphabet, padded).
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// `requestMetadata` as KMS sends it, with a fresh uuid v4 `kmsRequestId`.
pub fn request_metadata(op: Op, kms_operation: &str) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    match op {
        Op::Health => json!({"kmsRequestId": id, "kmsOperation": kms_operation}),
        Op::Metadata => json!({
            "awsPrincipalArn": PRINCIPAL, "kmsOperation": kms_operation, "kmsRequestId": id,
        }),
        Op::Encrypt | Op::Decrypt => json!({
            "awsPrincipalArn": PRINCIPAL, "kmsKeyArn": KMS_KEY_ARN,
            "kmsOperation": kms_operation, "kmsRequestId": id,
        }),
    }
}

/// A GetHealthStatus body.
pub fn health_body() -> Value {
    json!({"requestMetadata": request_metadata(Op::Health, "KmsHealthCheck")})
}

/// A GetKeyMetadata body.
pub fn metadata_body() -> Value {
    json!({"requestMetadata": request_metadata(Op::Metadata, "CreateKey")})
}

/// An Encrypt body; `cdiv` asks for a `SHA_256` integrity value.
pub fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata(Op::Encrypt, "Encrypt"),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(aad) = aad {
        set(&mut body, "additionalAuthenticatedData", b64(aad));
    }
    if cdiv {
        set(
            &mut body,
            "ciphertextDataIntegrityValueAlgorithm",
            "SHA_256",
        );
    }
    body
}

/// A Decrypt body for `sealed`, with `aad` as the caller's AAD.
pub fn decrypt_body(sealed: &Sealed, aad: Option<&[u8]>) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata(Op::Decrypt, "Decrypt"),
        "ciphertext": b64(&sealed.ciphertext),
        "encryptionAlgorithm": "AES_GCM",
        "initializationVector": b64(&sealed.iv),
        "authenticationTag": b64(&sealed.tag),
    });
    if let Some(aad) = aad {
        set(&mut body, "additionalAuthenticatedData", b64(aad));
    }
    if let Some(md) = &sealed.metadata {
        set(&mut body, "ciphertextMetadata", b64(md));
    }
    body
}

/// Sets `key` on a JSON object (no-op on anything else).
pub fn set(obj: &mut Value, key: &str, value: impl Into<Value>) {
    if let Some(map) = obj.as_object_mut() {
        map.insert(key.to_owned(), value.into());
    }
}

/// Sets `outer.inner` on a JSON object (no-op when `outer` is not an object).
pub fn set_in(obj: &mut Value, outer: &str, inner: &str, value: impl Into<Value>) {
    if let Some(nested) = obj.get_mut(outer) {
        set(nested, inner, value);
    }
}

/// Serializes a JSON body compactly.
pub fn to_bytes(body: &Value) -> Bytes {
    Bytes::from(body.to_string())
}

/// A POST signed over `signed_body` and sending `sent_body` (equal unless testing tampering).
pub fn signed_request(
    target: &Target,
    signer: &Signer,
    path: &str,
    signed_body: &[u8],
    sent_body: Bytes,
    time: SystemTime,
) -> Result<Request<Full<Bytes>>, SignError> {
    let signed = signer.sign(&Signable {
        method: "POST",
        path,
        host: target.authority(),
        content_type: Some("application/json"),
        body: signed_body,
        time,
    })?;
    Request::post(path)
        .header(http::header::HOST, target.authority())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-amz-date", signed.amz_date)
        .header(http::header::AUTHORIZATION, signed.authorization)
        .body(Full::new(sent_body))
        .map_err(|e| SignError::Signing(e.to_string()))
}

/// A signed GET with no body (for the 405 checks).
pub fn signed_get(
    target: &Target,
    signer: &Signer,
    path: &str,
) -> Result<Request<Full<Bytes>>, SignError> {
    let signed = signer.sign(&Signable {
        method: "GET",
        path,
        host: target.authority(),
        content_type: None,
        body: b"",
        time: SystemTime::now(),
    })?;
    Request::get(path)
        .header(http::header::HOST, target.authority())
        .header("x-amz-date", signed.amz_date)
        .header(http::header::AUTHORIZATION, signed.authorization)
        .body(Full::new(Bytes::new()))
        .map_err(|e| SignError::Signing(e.to_string()))
}

/// A correctly signed POST of `body` to `path`, signed now.
pub fn post(
    target: &Target,
    signer: &Signer,
    path: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, SignError> {
    signed_request(target, signer, path, &body.clone(), body, SystemTime::now())
}

/// The fields of an Encrypt response, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// `ciphertext`.
    pub ciphertext: Vec<u8>,
    /// `initializationVector`.
    pub iv: Vec<u8>,
    /// `authenticationTag`.
    pub tag: Vec<u8>,
    /// `ciphertextMetadata`, if returned.
    pub metadata: Option<Vec<u8>>,
    /// `ciphertextDataIntegrityValue`, if returned.
    pub cdiv: Option<Vec<u8>>,
}

fn b64_field(obj: &Value, name: &str) -> Result<Option<Vec<u8>>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => B64
            .decode(s)
            .map(Some)
            .map_err(|e| format!("{name} is not standard Base64: {e}")),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

fn required(obj: &Value, name: &str) -> Result<Vec<u8>, String> {
    b64_field(obj, name)?.ok_or_else(|| format!("{name} missing"))
}

impl Sealed {
    /// Parses an Encrypt response body and checks the spec's shape rules: ciphertext as long as
    /// the plaintext, IV of 12 or 16 bytes, 16-byte tag, metadata of at most 20 bytes.
    pub fn parse(body: &[u8], plaintext_len: usize) -> Result<Self, String> {
        let obj: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let sealed = Self {
            ciphertext: required(&obj, "ciphertext")?,
            iv: required(&obj, "initializationVector")?,
            tag: required(&obj, "authenticationTag")?,
            metadata: b64_field(&obj, "ciphertextMetadata")?,
            cdiv: b64_field(&obj, "ciphertextDataIntegrityValue")?,
        };
        if sealed.ciphertext.len() != plaintext_len {
            return Err(format!(
                "ciphertext is {} bytes for a {plaintext_len}-byte plaintext",
                sealed.ciphertext.len()
            ));
        }
        if !matches!(sealed.iv.len(), 12 | 16) {
            return Err(format!("IV is {} bytes, not 12 or 16", sealed.iv.len()));
        }
        if sealed.tag.len() != 16 {
            return Err(format!("tag is {} bytes, not 16", sealed.tag.len()));
        }
        if let Some(md) = &sealed.metadata
            && md.len() > 20
        {
            return Err(format!("ciphertextMetadata is {} bytes, over 20", md.len()));
        }
        Ok(sealed)
    }

    /// The CDIV this output should carry for the caller's `aad` (facts §3.7).
    pub fn expected_cdiv(&self, aad: Option<&[u8]>) -> [u8; 32] {
        cdiv(
            aad.unwrap_or_default(),
            self.metadata.as_deref().unwrap_or_default(),
            &self.iv,
            &self.ciphertext,
            &self.tag,
        )
    }
}

/// SHA-256(AAD ‖ ciphertextMetadata ‖ IV ‖ ciphertext ‖ tag), absent parts empty.
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// The spec's worked example (facts §3.4 / §3.7).
    const SPEC_RESPONSE: &str = r#"{"authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ==","ciphertext":"ghxkK1txeDNn3q8Y","ciphertextDataIntegrityValue":"qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=","ciphertextMetadata":"a2V5X3ZlcnNpb249MQ==","initializationVector":"HMrlRw85cAJUd5Ax"}"#;

    #[test]
    fn spec_cdiv_example() {
        let sealed = Sealed::parse(SPEC_RESPONSE.as_bytes(), 12).unwrap();
        let aad = d("cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n");
        let got = sealed.expected_cdiv(Some(&aad));
        assert_eq!(
            hex::encode(got),
            "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7"
        );
        assert_eq!(Some(got.to_vec()), sealed.cdiv);
        assert_ne!(Some(sealed.expected_cdiv(None).to_vec()), sealed.cdiv);
    }

    #[test]
    fn parse_rejects_bad_shapes() {
        assert!(
            Sealed::parse(SPEC_RESPONSE.as_bytes(), 13)
                .unwrap_err()
                .contains("13-byte plaintext")
        );
        let short_tag = SPEC_RESPONSE.replace("vBxN2ncH1oEkR8WVXpmyYQ==", "vBxN2ncH1oEkR8WV");
        assert!(
            Sealed::parse(short_tag.as_bytes(), 12)
                .unwrap_err()
                .contains("tag")
        );
        let url_safe = SPEC_RESPONSE.replace("qHA/ImC9", "qHA_ImC9");
        assert!(
            Sealed::parse(url_safe.as_bytes(), 12)
                .unwrap_err()
                .contains("Base64")
        );
        let no_iv =
            r#"{"authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ==","ciphertext":"ghxkK1txeDNn3q8Y"}"#;
        assert!(
            Sealed::parse(no_iv.as_bytes(), 12)
                .unwrap_err()
                .contains("missing")
        );
        let long_md = SPEC_RESPONSE.replace("a2V5X3ZlcnNpb249MQ==", &b64(&[7u8; 21]));
        assert!(
            Sealed::parse(long_md.as_bytes(), 12)
                .unwrap_err()
                .contains("over 20")
        );
    }

    #[test]
    fn bodies_have_fresh_request_ids_and_expected_fields() {
        let a = encrypt_body(b"hi", Some(b"ctx"), true);
        let b = encrypt_body(b"hi", None, false);
        assert_ne!(
            a["requestMetadata"]["kmsRequestId"],
            b["requestMetadata"]["kmsRequestId"]
        );
        assert_eq!(a["plaintext"], "aGk=");
        assert_eq!(a["additionalAuthenticatedData"], "Y3R4");
        assert_eq!(a["ciphertextDataIntegrityValueAlgorithm"], "SHA_256");
        assert!(b.get("additionalAuthenticatedData").is_none());
        let sealed = Sealed::parse(SPEC_RESPONSE.as_bytes(), 12).unwrap();
        let dec = decrypt_body(&sealed, None);
        assert_eq!(dec["ciphertextMetadata"], "a2V5X3ZlcnNpb249MQ==");
        assert_eq!(dec["requestMetadata"]["kmsOperation"], "Decrypt");
        let health = health_body();
        assert!(health["requestMetadata"].get("awsPrincipalArn").is_none());
    }

    #[test]
    fn paths() {
        let t = Target::parse("http://h:1", "/p").unwrap();
        assert_eq!(Op::Health.path(&t, "k"), "/p/kms/xks/v1/health");
        assert_eq!(Op::Decrypt.path(&t, "k"), "/p/kms/xks/v1/keys/k/decrypt");
    }
}
