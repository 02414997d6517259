//! SigV4 credential types: access key ids and secrets in the spec's formats, secrets that
//! zeroize on drop and print as `***`, and generation of fresh credentials.

use std::fmt;
use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD};
use zeroize::Zeroizing;

/// An access key id: 20-30 characters of `A-Z2-7` (spec, Appendix A).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccessKeyId(String);

impl AccessKeyId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
        if !(20..=30).contains(&s.len()) || !ok_chars {
            return Err(format!(
                "access key id {:?} must be 20 to 30 characters of A-Z and 2-7",
                crate::sanitize::sanitize_message(s)
            ));
        }
        Ok(AccessKeyId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh random id: 24 base32 characters (120 bits), unrelated to the secret.
    pub fn generate() -> Result<Self, getrandom::Error> {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw)?;
        let id = raw
            .iter()
            .filter_map(|b| ALPHABET.get(usize::from(b & 31)).copied().map(char::from))
            .collect();
        Ok(AccessKeyId(id))
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKeyId({})", self.0)
    }
}

/// A SigV4 secret access key: 43-64 characters of `a-zA-Z0-9+/=`. Never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn parse(s: String) -> Result<Self, String> {
        let s = Zeroizing::new(s);
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if !(43..=64).contains(&s.len()) || !ok_chars {
            return Err(format!(
                "secret must be 43 to 64 characters of a-z, A-Z, 0-9, +, / and = (got {} characters)",
                s.len()
            ));
        }
        Ok(Secret(s))
    }

    /// A fresh secret: Base64 of 32 random bytes (256 bits), 44 characters.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut())?;
        Ok(Secret(Zeroizing::new(STANDARD.encode(raw.as_ref()))))
    }

    /// The secret itself, for signing-key derivation and the console JSON only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret file: a regular file of at most 4 KiB (never a device or a pipe, which
/// could block start-up or fill memory).
pub fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(4097).read_to_string(&mut text)?;
    if text.len() > 4096 {
        return Err(std::io::Error::other("longer than 4096 bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_credentials_meet_the_spec() {
        for _ in 0..50 {
            let id = AccessKeyId::generate().unwrap();
            AccessKeyId::parse(id.as_str()).unwrap();
            let s = Secret::generate().unwrap();
            assert_eq!(s.expose().len(), 44);
            Secret::parse(s.expose().to_owned()).unwrap();
        }
    }

    #[test]
    fn formats_are_enforced() {
        assert!(AccessKeyId::parse("BETWEEN2TENAND3TENCHARACTERS").is_ok());
        assert!(AccessKeyId::parse("TOOSHORT").is_err());
        assert!(AccessKeyId::parse("LOWERCASEletters234567").is_err());
        assert!(AccessKeyId::parse("DIGITS0AND1ARENOTBASE32").is_err());
        assert!(Secret::parse("PleaseReplaceThisWithSomeSecretOfLength43To64".into()).is_ok());
        assert!(Secret::parse("short".into()).is_err());
        assert!(Secret::parse("x".repeat(65)).is_err());
        assert!(Secret::parse(format!("{}-", "a".repeat(50))).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::parse("PleaseReplaceThisWithSomeSecretOfLength43To64".into()).unwrap();
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }

    proptest! {
        #[test]
        fn access_key_parse_accepts_exactly_the_spec_alphabet(s in "[A-Z2-7]{20,30}") {
            prop_assert!(AccessKeyId::parse(&s).is_ok());
        }

        #[test]
        fn secret_parse_never_panics(s in "\\PC{0,80}") {
            let _ = Secret::parse(s);
        }

        /// Access key ids: accepted exactly when 20-30 characters of A-Z and 2-7.
        #[test]
        fn access_key_parse_is_exactly_the_spec(s in "[A-Za-z0-9=+/ ]{0,40}") {
            let spec = (20..=30).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
            prop_assert_eq!(AccessKeyId::parse(&s).is_ok(), spec);
        }

        /// Secrets: accepted exactly when 43-64 characters of a-zA-Z0-9+/=; a refusal never
        /// quotes the secret; an accepted one never prints.
        #[test]
        fn secret_parse_is_exactly_the_spec(s in "[A-Za-z0-9=+/ _-]{30,70}") {
            let spec = (43..=64).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            match Secret::parse(s.clone()) {
                Ok(secret) => {
                    prop_assert!(spec);
                    prop_assert_eq!(format!("{secret:?} {secret}"), "*** ***");
                    prop_assert_eq!(secret.expose(), s.as_str());
                }
                Err(e) => {
                    prop_assert!(!spec);
                    prop_assert!(!e.contains(&s));
                }
            }
        }
    }
}
