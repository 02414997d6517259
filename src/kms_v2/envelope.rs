//! Pure: the KMS v2 ciphertext format, its AAD, and the `key_id` the apiserver sees.
//!
//! A ciphertext carries everything Decrypt needs; keygate returns no annotations with format 1
//! and refuses a Decrypt that brings any.
//!
//! ```text
//! offset      size  field
//! 0           1     format, 1
//! 1           1     n, length of the key name (1..=128)
//! 2           n     key name: the backend key id (A-Za-z0-9._-)
//! 2+n         4     key version, u32 big-endian
//! 6+n         12    AES-GCM IV
//! 18+n        m     AES-256-GCM ciphertext of the plaintext (m = plaintext length)
//! 18+n+m      16    GCM tag
//! ```
//!
//! The AAD is `"keygate/kms-v2\0"` followed by the header (bytes 0..6+n): the format, key and
//! version are authenticated; the apiserver's `uid` is not (it differs between an Encrypt and
//! the Decrypt of its result). The AAD can never equal one the XKS door frames for the same
//! key: an XKS AAD always has the byte 0x01 (its framing scheme) five bytes from its end,
//! where a KMS v2 AAD has the last character of a key name, which is never 0x01.

use crate::keys::{IV_LEN, SealedRef, TAG_LEN, valid_key_id};

/// The format written by this version of keygate.
pub const FORMAT_V1: u8 = 1;
/// Prefix of every KMS v2 AAD (domain separation from the XKS door's AAD).
const DOMAIN: &[u8] = b"keygate/kms-v2\0";
/// The largest plaintext Encrypt accepts (the apiserver sends a 32-byte seed).
pub const MAX_PLAINTEXT: usize = 512;
/// The apiserver refuses a ciphertext or key_id over 1 kB.
pub const MAX_WIRE_LEN: usize = 1024;
/// Longest key name a ciphertext can carry.
const MAX_KEY_NAME: usize = 128;

/// The header of a ciphertext: which key and version sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub version: u32,
}

/// A parsed ciphertext, borrowing the caller's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    /// The bytes the AAD authenticates (format through version).
    header_bytes: &'a [u8],
    pub key: &'a str,
    pub version: u32,
    pub sealed: SealedRef<'a>,
}

impl Parsed<'_> {
    /// The AAD the ciphertext was sealed with.
    pub fn aad(&self) -> Vec<u8> {
        [DOMAIN, self.header_bytes].concat()
    }
}

/// Why a ciphertext cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("ciphertext is empty")]
    Empty,
    #[error("ciphertext format {0} is unknown (this keygate writes format {FORMAT_V1})")]
    UnknownFormat(u8),
    #[error("ciphertext is truncated or malformed")]
    Malformed,
    #[error("ciphertext names an invalid key")]
    BadKeyName,
    #[error("ciphertext is {0} bytes; at most {MAX_WIRE_LEN} are accepted")]
    TooLong(usize),
}

impl Header {
    /// The header bytes: format, key name length, key name, version.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let n = u8::try_from(self.key.len()).map_err(|_| FormatError::BadKeyName)?;
        if !valid_key_id(&self.key) || usize::from(n) > MAX_KEY_NAME {
            return Err(FormatError::BadKeyName);
        }
        let mut out = Vec::with_capacity(6 + self.key.len());
        out.push(FORMAT_V1);
        out.push(n);
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        Ok(out)
    }

    /// The AAD for a new encryption under this header.
    pub fn aad(header_bytes: &[u8]) -> Vec<u8> {
        [DOMAIN, header_bytes].concat()
    }
}

/// Assembles header, IV, ciphertext and tag into the wire ciphertext.
pub fn assemble(header_bytes: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_bytes.len() + iv.len() + ciphertext.len() + tag.len());
    out.extend_from_slice(header_bytes);
    out.extend_from_slice(iv);
    out.extend_from_slice(ciphertext);
    out.extend_from_slice(tag);
    out
}

/// Reads a wire ciphertext. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, FormatError> {
    if bytes.len() > MAX_WIRE_LEN {
        return Err(FormatError::TooLong(bytes.len()));
    }
    let (&format, rest) = bytes.split_first().ok_or(FormatError::Empty)?;
    if format != FORMAT_V1 {
        return Err(FormatError::UnknownFormat(format));
    }
    let (&n, rest) = rest.split_first().ok_or(FormatError::Malformed)?;
    let n = usize::from(n);
    let (name, rest) = rest.split_at_checked(n).ok_or(FormatError::Malformed)?;
    let key = std::str::from_utf8(name).map_err(|_| FormatError::BadKeyName)?;
    if !valid_key_id(key) {
        return Err(FormatError::BadKeyName);
    }
    let (version, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(FormatError::Malformed)?;
    let (iv, rest) = rest
        .split_at_checked(IV_LEN)
        .ok_or(FormatError::Malformed)?;
    let body_len = rest
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(FormatError::Malformed)?;
    let (ciphertext, tag) = rest
        .split_at_checked(body_len)
        .ok_or(FormatError::Malformed)?;
    let header_bytes = bytes.get(..6 + n).ok_or(FormatError::Malformed)?;
    Ok(Parsed {
        header_bytes,
        key,
        version: u32::from_be_bytes(*version),
        sealed: SealedRef {
            iv,
            ciphertext,
            tag,
        },
    })
}

/// How the apiserver sees a key and version: a template holding `{key}` and `{version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdFormat(String);

/// The default `key_id_format`.
pub const DEFAULT_KEY_ID_FORMAT: &str = "keygate/{key}/v{version}";

impl KeyIdFormat {
    /// Checks a template: printable ASCII, at most 256 characters, `{key}` and `{version}`
    /// each present (a rotation or a change of key must change the key_id) and no other
    /// braces.
    pub fn parse(template: &str) -> Result<KeyIdFormat, String> {
        if template.is_empty() || template.len() > 256 {
            return Err("must be 1-256 characters".into());
        }
        if !template.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err("must be printable ASCII".into());
        }
        if !template.contains("{key}") || !template.contains("{version}") {
            return Err("must contain both {key} and {version}".into());
        }
        let rest = template.replace("{key}", "").replace("{version}", "");
        if rest.contains(['{', '}']) {
            return Err("may hold no placeholder but {key} and {version}".into());
        }
        Ok(KeyIdFormat(template.to_owned()))
    }

    /// The key_id for `key` at `version` (under 1 kB: the template is at most 256
    /// characters, a key name 128).
    pub fn render(&self, key: &str, version: u32) -> String {
        self.0
            .replace("{key}", key)
            .replace("{version}", &version.to_string())
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyIdFormat {
    fn default() -> Self {
        KeyIdFormat(DEFAULT_KEY_ID_FORMAT.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str, version: u32, body: &[u8]) -> Vec<u8> {
        let header = Header {
            key: key.into(),
            version,
        }
        .encode()
        .unwrap();
        assemble(&header, &[7; IV_LEN], body, &[9; TAG_LEN])
    }

    #[test]
    fn round_trips_the_layout() {
        let wire = sample("k8s-kek", 3, b"secret-ct");
        assert_eq!(wire.first(), Some(&FORMAT_V1));
        assert_eq!(wire.get(1), Some(&7));
        assert_eq!(wire.get(2..9), Some(&b"k8s-kek"[..]));
        assert_eq!(wire.get(9..13), Some(&[0, 0, 0, 3][..]));
        let p = parse(&wire).unwrap();
        assert_eq!((p.key, p.version), ("k8s-kek", 3));
        assert_eq!(p.sealed.iv, &[7; IV_LEN]);
        assert_eq!(p.sealed.ciphertext, b"secret-ct");
        assert_eq!(p.sealed.tag, &[9; TAG_LEN]);
        let mut aad = b"keygate/kms-v2\0".to_vec();
        aad.extend_from_slice(wire.get(..13).unwrap());
        assert_eq!(p.aad(), aad);
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let wire = sample("k", 1, b"x");
        assert_eq!(parse(&[]).unwrap_err(), FormatError::Empty);
        let mut other = wire.clone();
        other[0] = 2;
        assert_eq!(parse(&other).unwrap_err(), FormatError::UnknownFormat(2));
        for cut in 1..wire.len() - b"x".len() {
            assert!(parse(&wire[..cut]).is_err(), "{cut} bytes parsed");
        }
        let mut bad_name = wire.clone();
        bad_name[2] = b'/';
        assert_eq!(parse(&bad_name).unwrap_err(), FormatError::BadKeyName);
        let mut long_name = wire;
        long_name[1] = 200;
        assert!(parse(&long_name).is_err());
        assert_eq!(
            parse(&vec![1; MAX_WIRE_LEN + 1]).unwrap_err(),
            FormatError::TooLong(MAX_WIRE_LEN + 1)
        );
    }

    #[test]
    fn an_empty_plaintext_still_has_a_tag() {
        let wire = sample("k", 1, b"");
        let p = parse(&wire).unwrap();
        assert!(p.sealed.ciphertext.is_empty());
        assert_eq!(p.sealed.tag.len(), TAG_LEN);
    }

    #[test]
    fn the_largest_ciphertext_fits_the_apiserver_limit() {
        let key = "k".repeat(MAX_KEY_NAME);
        let wire = sample(&key, u32::MAX, &[0; MAX_PLAINTEXT]);
        assert!(wire.len() < MAX_WIRE_LEN, "{}", wire.len());
        assert!(
            Header {
                key: "k".repeat(129),
                version: 1
            }
            .encode()
            .is_err()
        );
    }

    #[test]
    fn never_equal_to_an_xks_aad() {
        // XKS frames u16(len) || AAD || u8(6) || 'k' || 1 || u32 version: 0x01 sits five
        // bytes from the end. A KMS v2 AAD has a key-name character there.
        for key in ["a", "ab", "abc", "k8s-kek", "x.y_z-1"] {
            for version in [0, 1, 0x0100_0000, u32::MAX] {
                let header = Header {
                    key: key.into(),
                    version,
                }
                .encode()
                .unwrap();
                let aad = Header::aad(&header);
                let at = aad.len() - 5;
                assert_ne!(aad[at], 0x01, "{key} v{version}");
                assert_eq!(aad[at], *key.as_bytes().last().unwrap());
            }
        }
    }

    #[test]
    fn key_id_templates() {
        let f = KeyIdFormat::default();
        assert_eq!(f.render("k8s-kek", 2), "keygate/k8s-kek/v2");
        let g = KeyIdFormat::parse("prod-eu1:{key}:{version}").unwrap();
        assert_eq!(g.render("kek", 10), "prod-eu1:kek:10");
        for bad in [
            "",
            "{key}",
            "v{version}",
            "{key}{version}{x}",
            "{key}\n{version}",
        ] {
            assert!(KeyIdFormat::parse(bad).is_err(), "{bad:?}");
        }
        assert!(KeyIdFormat::parse(&format!("{}{{key}}{{version}}", "a".repeat(250))).is_err());
        let longest = format!("{}{{key}}{{version}}", "a".repeat(242));
        let id = KeyIdFormat::parse(&longest)
            .unwrap()
            .render(&"k".repeat(MAX_KEY_NAME), u32::MAX);
        assert!(id.len() < MAX_WIRE_LEN);
    }
}
