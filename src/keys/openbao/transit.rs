//! The Transit API as keygate uses it: the wire types, the mapping between Transit's
//! ciphertext string (`vault:v<N>:` + base64 of nonce || ciphertext || tag) and the XKS
//! parts, and the one table that turns a server's answer into a [`KeyError`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::client::{Answer, HttpError};
use crate::keys::{IV_LEN, KeyError, KeyOp, Sealed, SealedRef, TAG_LEN};

/// The only key type keygate serves: AES-256-GCM with a 96-bit nonce, taking associated data.
pub const KEY_TYPE: &str = "aes256-gcm96";
/// The prefix Transit puts before the version.
const PREFIX: &str = "vault";

/// The envelope every answer comes in.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub data: Option<T>,
    pub auth: Option<AuthData>,
    #[serde(default)]
    pub errors: Vec<String>,
}

/// `auth` of a login or renewal.
#[derive(Deserialize)]
pub struct AuthData {
    pub client_token: Zeroizing<String>,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub renewable: bool,
}

impl std::fmt::Debug for AuthData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthData")
            .field("client_token", &"***")
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// `GET {mount}/keys/{name}`: what keygate reads about a key.
#[derive(Debug, Deserialize)]
pub struct KeyRead {
    #[serde(rename = "type")]
    pub key_type: String,
    pub latest_version: u32,
    #[serde(default)]
    pub derived: bool,
    /// OpenBao's soft deletion: the key refuses every use until restored (keygate's
    /// "disabled"). HashiCorp Vault has no such field.
    #[serde(default)]
    pub soft_deleted: bool,
}

impl KeyRead {
    /// Why keygate will not serve this key, if it won't.
    pub fn refusal(&self) -> Option<String> {
        if self.key_type != KEY_TYPE {
            return Some(format!(
                "Transit key type {} is not served; keygate serves {KEY_TYPE} keys only",
                self.key_type
            ));
        }
        if self.derived {
            return Some("derived Transit keys need a context keygate cannot give".into());
        }
        None
    }
}

#[derive(Debug, Deserialize)]
pub struct EncryptData {
    pub ciphertext: String,
}

#[derive(Deserialize)]
pub struct DecryptData {
    pub plaintext: Zeroizing<String>,
}

/// Parses an answer's JSON; a body that is not what Transit sends is the server's fault.
pub fn parse<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<Envelope<T>, KeyError> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        KeyError::Unavailable(format!(
            "OpenBao answered {} with a body keygate cannot read: {e}",
            answer.status
        ))
    })
}

/// The `data` of a successful answer, or the error the answer means.
pub fn data<T: serde::de::DeserializeOwned>(answer: &Answer, op: KeyOp) -> Result<T, KeyError> {
    if !(200..300).contains(&answer.status) {
        let errors = parse::<serde_json::Value>(answer)
            .map(|e| e.errors)
            .unwrap_or_default();
        return Err(classify(answer.status, &errors, op));
    }
    parse::<T>(answer)?.data.ok_or_else(|| {
        KeyError::Unavailable(format!("OpenBao answered {} without data", answer.status))
    })
}

/// The request body of an encryption under `version` with `aad` as associated data.
pub fn encrypt_body(plaintext: &[u8], aad: &[u8], version: u32) -> Vec<u8> {
    let pt = Zeroizing::new(STANDARD.encode(plaintext));
    let mut body = Vec::with_capacity(pt.len() + aad.len() * 4 / 3 + 96);
    body.extend_from_slice(b"{\"plaintext\":\"");
    body.extend_from_slice(pt.as_bytes());
    body.extend_from_slice(b"\",\"associated_data\":\"");
    body.extend_from_slice(STANDARD.encode(aad).as_bytes());
    body.extend_from_slice(format!("\",\"key_version\":{version}}}").as_bytes());
    body
}

/// The request body of a decryption: the exact Transit ciphertext rebuilt from its parts.
pub fn decrypt_body(version: u32, sealed: SealedRef<'_>, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
    let ciphertext = ciphertext_string(version, sealed)?;
    let body = serde_json::json!({
        "ciphertext": ciphertext,
        "associated_data": STANDARD.encode(aad),
    });
    Ok(body.to_string().into_bytes())
}

/// `vault:v<N>:` + base64(IV || ciphertext || tag), after checking the parts' lengths.
pub fn ciphertext_string(version: u32, sealed: SealedRef<'_>) -> Result<String, KeyError> {
    if version == 0 {
        return Err(KeyError::InvalidCiphertext(
            "key version 0 does not exist".into(),
        ));
    }
    if sealed.iv.len() != IV_LEN {
        return Err(KeyError::InvalidCiphertext(format!(
            "Transit uses 12-byte IVs, got {} bytes",
            sealed.iv.len()
        )));
    }
    if sealed.tag.len() != TAG_LEN {
        return Err(KeyError::InvalidCiphertext(
            "authentication tag must be 16 bytes".into(),
        ));
    }
    let mut blob = Vec::with_capacity(IV_LEN + sealed.ciphertext.len() + TAG_LEN);
    blob.extend_from_slice(sealed.iv);
    blob.extend_from_slice(sealed.ciphertext);
    blob.extend_from_slice(sealed.tag);
    Ok(format!("{PREFIX}:v{version}:{}", STANDARD.encode(blob)))
}

/// Splits Transit's ciphertext into IV, ciphertext and tag; it must be of `version`.
pub fn split_ciphertext(s: &str, version: u32) -> Result<Sealed, KeyError> {
    let bad = |why: &str| {
        KeyError::Unavailable(format!(
            "OpenBao returned a ciphertext keygate cannot read: {why}"
        ))
    };
    let rest = s
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix(":v"))
        .ok_or_else(|| bad("no vault:v prefix"))?;
    let (n, b64) = rest.split_once(':').ok_or_else(|| bad("no version"))?;
    let got: u32 = n.parse().map_err(|_| bad("version is not a number"))?;
    if got != version {
        return Err(bad(&format!("version {got}, asked for {version}")));
    }
    let blob = STANDARD.decode(b64).map_err(|_| bad("not base64"))?;
    let body_len = blob
        .len()
        .checked_sub(IV_LEN + TAG_LEN)
        .ok_or_else(|| bad("shorter than nonce and tag"))?;
    let (iv, rest) = blob.split_at(IV_LEN);
    let (ct, tag) = rest.split_at(body_len);
    Ok(Sealed {
        iv: iv.try_into().map_err(|_| bad("nonce"))?,
        ciphertext: ct.to_vec(),
        tag: tag.try_into().map_err(|_| bad("tag"))?,
    })
}

/// Decodes Transit's base64 plaintext.
pub fn plaintext(d: &DecryptData) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    STANDARD
        .decode(d.plaintext.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| {
            KeyError::Unavailable("OpenBao returned a plaintext that is not base64".into())
        })
}

/// What an error answer from the server means for keygate: the one table.
pub fn classify(status: u16, errors: &[String], op: KeyOp) -> KeyError {
    let first = tidy(errors.first().map(String::as_str).unwrap_or(""));
    let first = first.as_str();
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    match status {
        400 if has("message authentication failed") => KeyError::Authentication,
        400 if has("soft-deleted") => KeyError::Disabled,
        400 if has("key not found") => KeyError::NotFound,
        400 if op == KeyOp::Decrypt
            && (has("invalid ciphertext") || has("disallowed by policy") || has("version")) =>
        {
            KeyError::InvalidCiphertext(format!("OpenBao: {first}"))
        }
        404 => KeyError::NotFound,
        403 => KeyError::Unavailable(format!(
            "OpenBao refused keygate's token ({}): revoked or expired, or its policy lacks this path",
            if first.is_empty() {
                "permission denied"
            } else {
                first
            }
        )),
        429 => KeyError::Busy(format!("OpenBao is rate limiting: {first}")),
        503 => KeyError::Unavailable(format!("OpenBao is sealed or not active: {first}")),
        s => KeyError::Unavailable(format!("OpenBao answered {s}: {first}")),
    }
}

/// One line of the server's error text: Go's "1 error occurred:\n\t* x\n\n" becomes "x".
pub fn tidy(message: &str) -> String {
    message
        .lines()
        .map(|l| l.trim().trim_start_matches("* ").trim())
        .filter(|l| !(l.is_empty() || (l.ends_with("occurred:") && l.contains("error"))))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<HttpError> for KeyError {
    fn from(e: HttpError) -> KeyError {
        match e {
            HttpError::Busy(..) => KeyError::Busy(e.to_string()),
            HttpError::Timeout(d) => KeyError::Timeout(d),
            HttpError::Connect(..) | HttpError::Exchange(..) => {
                KeyError::Unavailable(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
