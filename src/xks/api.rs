//! XKS wire types: request bodies parsed into typed, bounded values (every failure is a
//! ValidationException or, above keygate's limits, an UnsupportedOperationException), and
//! the compact JSON responses.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::envelope::MAX_METADATA_LEN;
use super::error::{XksError, sanitize_message};

/// The request metadata: the object exactly as received (kept for policy and logs) plus
/// the fields keygate itself reads.
#[derive(Debug, Clone)]
pub struct RequestMetadata {
    pub raw: Map<String, Value>,
    pub kms_request_id: String,
    pub kms_operation: String,
}

impl RequestMetadata {
    /// Checks that each `required` field is present and a string. Unknown fields and
    /// unfamiliar `kmsOperation` values are kept as they are.
    fn from_map(raw: Map<String, Value>, required: &[&str]) -> Result<Self, XksError> {
        for field in required {
            match raw.get(*field) {
                Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(XksError::Validation(format!(
                        "requestMetadata.{field} must be a string"
                    )));
                }
                None => {
                    return Err(XksError::Validation(format!(
                        "requestMetadata.{field} is required"
                    )));
                }
            }
        }
        let text = |k: &str| {
            raw.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(RequestMetadata {
            kms_request_id: text("kmsRequestId"),
            kms_operation: text("kmsOperation"),
            raw,
        })
    }

    /// `awsPrincipalArn`, when present.
    pub fn principal(&self) -> Option<&str> {
        self.raw.get("awsPrincipalArn").and_then(Value::as_str)
    }
}

/// Size limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_plaintext: usize,
    pub max_aad: usize,
}

const HEALTH_REQUIRED: &[&str] = &["kmsRequestId", "kmsOperation"];
const METADATA_REQUIRED: &[&str] = &["awsPrincipalArn", "kmsOperation", "kmsRequestId"];
const CRYPTO_REQUIRED: &[&str] = &[
    "awsPrincipalArn",
    "kmsOperation",
    "kmsRequestId",
    "kmsKeyArn",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataOnlyWire {
    request_metadata: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptWire {
    request_metadata: Map<String, Value>,
    plaintext: String,
    encryption_algorithm: String,
    additional_authenticated_data: Option<String>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptWire {
    request_metadata: Map<String, Value>,
    ciphertext: String,
    encryption_algorithm: String,
    initialization_vector: String,
    authentication_tag: String,
    additional_authenticated_data: Option<String>,
    ciphertext_metadata: Option<String>,
}

/// A parsed Encrypt request.
#[derive(Debug)]
pub struct EncryptRequest {
    pub metadata: RequestMetadata,
    pub plaintext: Zeroizing<Vec<u8>>,
    /// `None` when the field was absent (framed the same as empty).
    pub aad: Option<Vec<u8>>,
    pub want_cdiv: bool,
}

/// A parsed Decrypt request.
#[derive(Debug)]
pub struct DecryptRequest {
    pub metadata: RequestMetadata,
    pub ciphertext: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub aad: Option<Vec<u8>>,
    pub ciphertext_metadata: Option<Vec<u8>>,
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|e| {
        XksError::Validation(sanitize_message(&format!("malformed request body: {e}")))
    })
}

/// GetHealthStatus body.
pub fn parse_health(body: &[u8]) -> Result<RequestMetadata, XksError> {
    let w: MetadataOnlyWire = parse_json(body)?;
    RequestMetadata::from_map(w.request_metadata, HEALTH_REQUIRED)
}

/// GetKeyMetadata body.
pub fn parse_metadata(body: &[u8]) -> Result<RequestMetadata, XksError> {
    let w: MetadataOnlyWire = parse_json(body)?;
    RequestMetadata::from_map(w.request_metadata, METADATA_REQUIRED)
}

/// Encrypt body.
pub fn parse_encrypt(body: &[u8], limits: Limits) -> Result<EncryptRequest, XksError> {
    let w: EncryptWire = parse_json(body)?;
    let metadata = RequestMetadata::from_map(w.request_metadata, CRYPTO_REQUIRED)?;
    check_algorithm(&w.encryption_algorithm)?;
    let want_cdiv = match w.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some("SHA_256") => true,
        Some(_) => {
            return Err(XksError::Validation(
                "ciphertextDataIntegrityValueAlgorithm must be SHA_256".into(),
            ));
        }
    };
    let plaintext = Zeroizing::new(decode_bounded(
        "plaintext",
        &w.plaintext,
        limits.max_plaintext,
    )?);
    let aad = w
        .additional_authenticated_data
        .map(|a| decode_bounded("additionalAuthenticatedData", &a, limits.max_aad))
        .transpose()?;
    Ok(EncryptRequest {
        metadata,
        plaintext,
        aad,
        want_cdiv,
    })
}

/// Decrypt body.
pub fn parse_decrypt(body: &[u8], limits: Limits) -> Result<DecryptRequest, XksError> {
    let w: DecryptWire = parse_json(body)?;
    let metadata = RequestMetadata::from_map(w.request_metadata, CRYPTO_REQUIRED)?;
    check_algorithm(&w.encryption_algorithm)?;
    let ciphertext = decode_bounded("ciphertext", &w.ciphertext, limits.max_plaintext)?;
    let iv = decode_bounded("initializationVector", &w.initialization_vector, 16)?;
    if iv.len() != 12 && iv.len() != 16 {
        return Err(XksError::InvalidCiphertext(format!(
            "initializationVector must be 12 or 16 bytes, got {}",
            iv.len()
        )));
    }
    let tag = decode_bounded("authenticationTag", &w.authentication_tag, 16)?;
    if tag.len() != 16 {
        return Err(XksError::InvalidCiphertext(format!(
            "authenticationTag must be 16 bytes, got {}",
            tag.len()
        )));
    }
    let aad = w
        .additional_authenticated_data
        .map(|a| decode_bounded("additionalAuthenticatedData", &a, limits.max_aad))
        .transpose()?;
    let ciphertext_metadata = w
        .ciphertext_metadata
        .map(|m| decode_bounded("ciphertextMetadata", &m, MAX_METADATA_LEN))
        .transpose()?;
    Ok(DecryptRequest {
        metadata,
        ciphertext,
        iv,
        tag,
        aad,
        ciphertext_metadata,
    })
}

fn check_algorithm(alg: &str) -> Result<(), XksError> {
    if alg == "AES_GCM" {
        Ok(())
    } else {
        Err(XksError::Validation(
            "encryptionAlgorithm must be AES_GCM".into(),
        ))
    }
}

/// Decodes standard, padded Base64, refusing values that decode to more than `max` bytes.
/// The size is checked on the encoded length first, so no oversized buffer is allocated.
/// Over the limit: the spec's fixed-size fields (IV, tag, metadata) are invalid input, and
/// variable fields exceed what keygate supports (501).
pub fn decode_bounded(field: &str, s: &str, max: usize) -> Result<Vec<u8>, XksError> {
    let decoded_len_bound = s.len() / 4 * 3;
    let too_long = |len: usize| match field {
        "initializationVector" | "authenticationTag" => XksError::InvalidCiphertext(format!(
            "{field} is longer than the {max} bytes it may have"
        )),
        "ciphertextMetadata" => {
            XksError::Validation(format!("{field} is {len} bytes; at most {max} are allowed"))
        }
        _ => XksError::UnsupportedOperation(format!(
            "{field} exceeds this proxy's limit of {max} bytes"
        )),
    };
    // Padding can shave at most two bytes off the bound.
    if decoded_len_bound > max + 2 {
        return Err(too_long(decoded_len_bound));
    }
    let bytes = STANDARD
        .decode(s)
        .map_err(|_| XksError::Validation(format!("{field} is not valid standard Base64")))?;
    if bytes.len() > max {
        return Err(too_long(bytes.len()));
    }
    Ok(bytes)
}

/// GetKeyMetadata response.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetadataResponse {
    pub key_spec: &'static str,
    pub key_usage: Vec<&'static str>,
    pub key_status: &'static str,
}

/// Encrypt response.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    pub authentication_tag: String,
    pub ciphertext: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
    pub ciphertext_metadata: String,
    pub initialization_vector: String,
}

/// Decrypt response. The encoded plaintext is wiped when dropped.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    pub plaintext: Zeroizing<String>,
}

/// One `ekmFleetDetails` entry.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct EkmFleetEntry {
    pub id: String,
    pub model: String,
    pub health_status: &'static str,
}

/// GetHealthStatus response.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub xks_proxy_fleet_size: u32,
    pub xks_proxy_vendor: &'static str,
    pub xks_proxy_model: String,
    pub ekm_vendor: String,
    pub ekm_fleet_details: Vec<EkmFleetEntry>,
}

/// Standard Base64 encoding for response fields.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_plaintext: 8192,
        max_aad: 16384,
    };
    const MD: &str = r#"{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/k","kmsOperation":"Encrypt","kmsRequestId":"r1","futureField":{"x":1}}"#;

    fn name(r: Result<impl std::fmt::Debug, XksError>) -> &'static str {
        r.err().map(|e| e.name()).unwrap_or("ok")
    }

    #[test]
    fn encrypt_parses_and_keeps_unknown_fields() {
        let body = format!(
            r#"{{"requestMetadata":{MD},"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM","extra":1}}"#
        );
        let r = parse_encrypt(body.as_bytes(), LIMITS).unwrap();
        assert_eq!(&r.plaintext[..], b"Hello");
        assert!(r.aad.is_none());
        assert!(!r.want_cdiv);
        assert!(r.metadata.raw.contains_key("futureField"));
        assert_eq!(r.metadata.kms_request_id, "r1");
    }

    #[test]
    fn malformed_bodies_are_validation_errors() {
        let cases = [
            "".to_string(),
            "{".to_string(),
            "[]".to_string(),
            "{}".to_string(),
            format!(r#"{{"requestMetadata":{MD},"encryptionAlgorithm":"AES_GCM"}}"#),
            format!(r#"{{"requestMetadata":{MD},"plaintext":"!!","encryptionAlgorithm":"AES_GCM"}}"#),
            format!(r#"{{"requestMetadata":{MD},"plaintext":"SGVsbG8","encryptionAlgorithm":"AES_GCM"}}"#),
            format!(r#"{{"requestMetadata":{MD},"plaintext":"","encryptionAlgorithm":"RSA"}}"#),
            format!(r#"{{"requestMetadata":{MD},"plaintext":5,"encryptionAlgorithm":"AES_GCM"}}"#),
            r#"{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"Encrypt"},"plaintext":"","encryptionAlgorithm":"AES_GCM"}"#.to_string(),
            format!(r#"{{"requestMetadata":{MD},"plaintext":"","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"MD5"}}"#),
        ];
        for c in cases {
            assert_eq!(
                name(parse_encrypt(c.as_bytes(), LIMITS)),
                "ValidationException",
                "{c}"
            );
        }
    }

    #[test]
    fn health_requires_request_id_and_operation() {
        assert_eq!(name(parse_health(b"{}")), "ValidationException");
        assert_eq!(
            name(parse_health(br#"{"requestMetadata":{}}"#)),
            "ValidationException"
        );
        let ok =
            parse_health(br#"{"requestMetadata":{"kmsRequestId":"x","kmsOperation":"Anything"}}"#);
        assert_eq!(ok.unwrap().kms_operation, "Anything");
    }

    #[test]
    fn sizes_above_limits_are_unsupported_and_fixed_fields_are_checked() {
        let big = STANDARD.encode(vec![0u8; 8193]);
        assert_eq!(
            name(decode_bounded("plaintext", &big, 8192)),
            "UnsupportedOperationException"
        );
        let max = STANDARD.encode(vec![0u8; 8192]);
        assert_eq!(decode_bounded("plaintext", &max, 8192).unwrap().len(), 8192);
        let meta = STANDARD.encode([0u8; 21]);
        assert_eq!(
            name(decode_bounded("ciphertextMetadata", &meta, 20)),
            "ValidationException"
        );
        let body = format!(
            r#"{{"requestMetadata":{MD},"ciphertext":"","encryptionAlgorithm":"AES_GCM","initializationVector":"AAAA","authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA=="}}"#
        );
        assert_eq!(
            name(parse_decrypt(body.as_bytes(), LIMITS)),
            "InvalidCiphertextException"
        );
    }

    #[test]
    fn error_messages_do_not_echo_base64_fields() {
        let body = format!(
            r#"{{"requestMetadata":{MD},"plaintext":"c2VjcmV0c2VjcmV0!","encryptionAlgorithm":"AES_GCM"}}"#
        );
        let e = parse_encrypt(body.as_bytes(), LIMITS).unwrap_err();
        assert!(!e.message().contains("c2VjcmV0"));
    }
}
