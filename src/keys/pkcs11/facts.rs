//! What a key's PKCS#11 attributes say: spec, usage, status, and whether keygate accepts it.
//!
//! Status: SoftHSMv2 2.6.1 cannot read CKA_START_DATE/CKA_END_DATE back once set (it answers
//! CKR_GENERAL_ERROR), so a disabled key carries the marker `keygate:disabled:` at the start
//! of its CKA_ID (the original CKA_ID follows the marker and comes back on enable).

use cryptoki::error::Error as CkError;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::keys::{KeyError, KeyInfo, KeyUsage};

/// Prefix of CKA_ID on a disabled key.
pub const DISABLED_MARKER: &[u8] = b"keygate:disabled:";

/// The attributes keygate reads.
pub const READ: &[AttributeType] = &[
    AttributeType::KeyType,
    AttributeType::ValueLen,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::Wrap,
    AttributeType::Unwrap,
    AttributeType::Sign,
    AttributeType::Verify,
    AttributeType::Derive,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::Id,
];

/// A key as its attributes describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFacts {
    pub info: KeyInfo,
    pub id: Vec<u8>,
    /// Why keygate refuses to use this key, if it does.
    pub refusal: Option<String>,
}

impl KeyFacts {
    pub fn read(session: &Session, handle: ObjectHandle) -> Result<KeyFacts, CkError> {
        Ok(KeyFacts::from_attributes(
            &session.get_attributes(handle, READ)?,
        ))
    }

    pub fn from_attributes(attrs: &[Attribute]) -> KeyFacts {
        let mut a = Flags::default();
        for attr in attrs {
            a.absorb(attr);
        }
        let key_spec = spec(a.key_type, a.value_len);
        let mut refusal = Vec::new();
        if key_spec != "AES_256" {
            refusal.push(format!("key is {key_spec}, XKS needs AES_256"));
        }
        if a.extractable {
            refusal.push("key is extractable (CKA_EXTRACTABLE)".to_owned());
        }
        if !a.sensitive {
            refusal.push("key is not sensitive (CKA_SENSITIVE)".to_owned());
        }
        let disabled = a.id.starts_with(DISABLED_MARKER);
        KeyFacts {
            info: KeyInfo {
                key_spec,
                usage: KeyUsage {
                    encrypt: a.encrypt,
                    decrypt: a.decrypt,
                },
                extra_usage: a.extras,
                enabled: !disabled && refusal.is_empty(),
                current_version: 1,
            },
            id: a.id,
            refusal: (!refusal.is_empty()).then(|| refusal.join("; ")),
        }
    }

    /// Whether the key is administratively disabled (the CKA_ID marker).
    pub fn disabled(&self) -> bool {
        self.id.starts_with(DISABLED_MARKER)
    }

    /// Refused keys and disabled keys are not used for cryptography.
    pub fn usable(&self, key_id: &str) -> Result<(), KeyError> {
        if let Some(why) = &self.refusal {
            tracing::warn!(key_id, reason = %why, "refusing a PKCS#11 key");
            return Err(KeyError::Disabled);
        }
        if self.disabled() {
            return Err(KeyError::Disabled);
        }
        Ok(())
    }

    /// The CKA_ID that marks (or unmarks) this key as disabled.
    pub fn id_for(&self, enabled: bool) -> Vec<u8> {
        let original = self.id.strip_prefix(DISABLED_MARKER).unwrap_or(&self.id);
        if enabled {
            original.to_vec()
        } else {
            [DISABLED_MARKER, original].concat()
        }
    }
}

#[derive(Default)]
struct Flags {
    key_type: Option<KeyType>,
    value_len: u64,
    encrypt: bool,
    decrypt: bool,
    sensitive: bool,
    extractable: bool,
    extras: Vec<&'static str>,
    id: Vec<u8>,
}

impl Flags {
    fn absorb(&mut self, attr: &Attribute) {
        match attr {
            Attribute::KeyType(t) => self.key_type = Some(*t),
            Attribute::ValueLen(n) => self.value_len = u64::from(*n),
            Attribute::Encrypt(b) => self.encrypt = *b,
            Attribute::Decrypt(b) => self.decrypt = *b,
            Attribute::Sensitive(b) => self.sensitive = *b,
            Attribute::Extractable(b) => self.extractable = *b,
            Attribute::Id(id) => self.id = id.clone(),
            Attribute::Wrap(true) => self.extras.push("WRAP"),
            Attribute::Unwrap(true) => self.extras.push("UNWRAP"),
            Attribute::Sign(true) => self.extras.push("SIGN"),
            Attribute::Verify(true) => self.extras.push("VERIFY"),
            Attribute::Derive(true) => self.extras.push("DERIVE"),
            _ => {}
        }
    }
}

fn spec(key_type: Option<KeyType>, value_len: u64) -> &'static str {
    match (key_type, value_len) {
        (Some(KeyType::AES), 32) => "AES_256",
        (Some(KeyType::AES), 24) => "AES_192",
        (Some(KeyType::AES), 16) => "AES_128",
        (Some(KeyType::AES), _) => "AES_OTHER",
        (Some(KeyType::GENERIC_SECRET), _) => "GENERIC_SECRET",
        _ => "UNSUPPORTED",
    }
}

/// The template keygate generates keys with: AES-256, token object, private, sensitive,
/// never extractable, only the chosen usage.
pub fn create_template(label: &str, usage: KeyUsage) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(true),
        Attribute::Encrypt(usage.encrypt),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<Attribute> {
        vec![
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Id(b"01".to_vec()),
        ]
    }

    #[test]
    fn a_good_key() {
        let f = KeyFacts::from_attributes(&good());
        assert_eq!(f.info.key_spec, "AES_256");
        assert_eq!(f.info.usage, KeyUsage::ENCRYPT_ONLY);
        assert_eq!(f.info.extra_usage, vec!["WRAP"]);
        assert!(f.info.enabled);
        assert_eq!(f.refusal, None);
        assert!(f.usable("k").is_ok());
    }

    #[test]
    fn extractable_non_sensitive_and_short_keys_are_refused() {
        let mut a = good();
        a.push(Attribute::Extractable(true));
        a.push(Attribute::Sensitive(false));
        a.push(Attribute::ValueLen(16.into()));
        let f = KeyFacts::from_attributes(&a);
        let why = f.refusal.clone().unwrap();
        assert!(
            why.contains("AES_128") && why.contains("extractable") && why.contains("sensitive")
        );
        assert!(!f.info.enabled);
        assert_eq!(f.usable("k"), Err(KeyError::Disabled));
    }

    #[test]
    fn disable_marker_round_trips_the_original_id() {
        let f = KeyFacts::from_attributes(&good());
        let off = f.id_for(false);
        assert_eq!(off, b"keygate:disabled:01");
        let mut a = good();
        a.push(Attribute::Id(off));
        let g = KeyFacts::from_attributes(&a);
        assert!(g.disabled() && !g.info.enabled);
        assert_eq!(g.usable("k"), Err(KeyError::Disabled));
        assert_eq!(g.id_for(true), b"01");
        assert_eq!(g.id_for(false), b"keygate:disabled:01");
    }
}
