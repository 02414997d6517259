//! `keygate keys ...` on a PKCS#11 token: create, list, disable/enable, rotate, destroy.
//! Runs in its own process (it opens the module itself), synchronously.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::engine::{Fault, find_key};
use super::facts::{KeyFacts, create_template};
use super::settings::Pkcs11Settings;
use super::sign;
use super::token::Token;
use super::versions;
use crate::keys::{KeyAdmin, KeyError, KeyListing, KeyUsage, valid_key_id};
use crate::signing::{Algorithm, PublicKey};

/// Key management on one token.
#[derive(Debug)]
pub struct Pkcs11Admin {
    // Field order matters: the session closes before the token finalizes the module.
    session: SessionCell,
    token: Token,
}

/// The admin's session (cryptoki sessions are not Sync; the admin is used from one thread).
struct SessionCell(std::sync::Mutex<Session>);

impl std::fmt::Debug for SessionCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

impl Pkcs11Admin {
    /// Opens the module and logs in. Fails if the module is already open in this process.
    pub fn open(settings: &Pkcs11Settings) -> Result<Pkcs11Admin, String> {
        let token = Token::open(settings, 0).map_err(|e| e.to_string())?;
        let session = token.checkout().map_err(|e| e.to_string())?;
        Ok(Pkcs11Admin {
            session: SessionCell(std::sync::Mutex::new(session)),
            token,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Session) -> Result<T, String>) -> Result<T, String> {
        let s = self
            .session
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&s)
    }

    /// Creates the dedicated health-check key (encrypt + decrypt, used for nothing else).
    pub fn create_health_key(&mut self, label: &str) -> Result<KeyListing, String> {
        self.create(label, KeyUsage::BOTH)
    }

    /// Generates the decision log's digest signing key pair labelled `label` in the token:
    /// the private key sensitive, non-extractable, for signing only. Returns its public key.
    pub fn create_signing_key(
        &mut self,
        label: &str,
        algorithm: Algorithm,
    ) -> Result<PublicKey, String> {
        self.with(|s| {
            if let Ok((_, public)) = sign::signing_key(s, label) {
                return Err(format!(
                    "a signing key labelled {label:?} already exists ({})",
                    public.fingerprint()
                ));
            }
            let (mechanism, public, private) = sign::key_pair_templates(label, algorithm);
            s.generate_key_pair(&mechanism, &public, &private)
                .map_err(|e| format!("generating {label:?}: {e}"))?;
            sign::signing_key(s, label)
                .map(|(_, p)| p)
                .map_err(|f| fault_text(label, f))
        })
    }

    /// The public key of the digest signing key pair labelled `label`.
    pub fn signing_public_key(&self, label: &str) -> Result<PublicKey, String> {
        self.with(|s| {
            sign::signing_key(s, label)
                .map(|(_, p)| p)
                .map_err(|f| fault_text(label, f))
        })
    }

    /// Destroys the key labelled `key_id` (irreversible).
    pub fn destroy(&mut self, key_id: &str) -> Result<(), String> {
        self.with(|s| {
            let handle = find_key(s, key_id).map_err(|f| fault_text(key_id, f))?;
            s.destroy_object(handle)
                .map_err(|e| format!("destroying {key_id:?}: {e}"))
        })
    }

    fn listing(&self, key_id: &str, facts: &KeyFacts, versions: u32) -> KeyListing {
        let protection = match &facts.refusal {
            Some(why) => format!("pkcs11 token '{}', REFUSED: {why}", self.token.facts.label),
            None => format!(
                "pkcs11 token '{}', sensitive, non-extractable",
                self.token.facts.label
            ),
        };
        KeyListing {
            id: key_id.to_owned(),
            usage: facts.info.usage,
            enabled: facts.info.enabled,
            versions,
            protection,
        }
    }

    fn show(&self, s: &Session, key_id: &str) -> Result<KeyListing, String> {
        let handle = find_key(s, key_id).map_err(|f| fault_text(key_id, f))?;
        let facts = KeyFacts::read(s, handle).map_err(|e| e.to_string())?;
        let versions = versions::current(s, key_id).map_err(|f| fault_text(key_id, f))?;
        Ok(self.listing(key_id, &facts, versions))
    }
}

fn fault_text(key_id: &str, fault: Fault) -> String {
    match fault {
        Fault::Key(KeyError::NotFound) => format!("no key labelled {key_id:?} on the token"),
        Fault::Key(e) => e.to_string(),
        Fault::Ck(rv, f) => format!("{f:?} returned {}", super::ckr::ckr_name(rv)),
    }
}

fn label_of(s: &Session, handle: ObjectHandle) -> Option<String> {
    let attrs = s.get_attributes(handle, &[AttributeType::Label]).ok()?;
    attrs.into_iter().find_map(|a| match a {
        Attribute::Label(l) => String::from_utf8(l).ok(),
        _ => None,
    })
}

impl KeyAdmin for Pkcs11Admin {
    fn create(&mut self, key_id: &str, usage: KeyUsage) -> Result<KeyListing, String> {
        if !valid_key_id(key_id) {
            return Err(format!(
                "{key_id:?} is not a valid key id (1-128 of A-Za-z0-9-._)"
            ));
        }
        self.with(|s| {
            match find_key(s, key_id) {
                Err(Fault::Key(KeyError::NotFound)) => {}
                Ok(_) => return Err(format!("a key labelled {key_id:?} already exists")),
                Err(f) => return Err(fault_text(key_id, f)),
            }
            s.generate_key(&Mechanism::AesKeyGen, &create_template(key_id, usage))
                .map_err(|e| format!("generating {key_id:?}: {e}"))?;
            self.show(s, key_id)
        })
    }

    fn list(&self) -> Result<Vec<KeyListing>, String> {
        self.with(|s| {
            let handles = s
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                let (Some(label), Ok(facts)) = (label_of(s, h), KeyFacts::read(s, h)) else {
                    continue;
                };
                if versions::is_later_version(&label) {
                    continue;
                }
                let count = versions::current(s, &label).unwrap_or(1);
                out.push(self.listing(&label, &facts, count));
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
    }

    fn set_enabled(&mut self, key_id: &str, enabled: bool) -> Result<KeyListing, String> {
        self.with(|s| {
            let handle = find_key(s, key_id).map_err(|f| fault_text(key_id, f))?;
            let facts = KeyFacts::read(s, handle).map_err(|e| e.to_string())?;
            s.update_attributes(handle, &[Attribute::Id(facts.id_for(enabled))])
                .map_err(|e| format!("updating {key_id:?}: {e}"))?;
            self.show(s, key_id)
        })
    }

    /// Generates the next version as a key of its own (`K/vN`, same usage, same template):
    /// new encryptions use it, older versions still decrypt.
    fn rotate(&mut self, key_id: &str) -> Result<KeyListing, String> {
        self.with(|s| {
            let handle = find_key(s, key_id).map_err(|f| fault_text(key_id, f))?;
            let facts = KeyFacts::read(s, handle).map_err(|e| e.to_string())?;
            let current = versions::current(s, key_id).map_err(|f| fault_text(key_id, f))?;
            if current >= versions::MAX_VERSIONS {
                return Err(format!(
                    "key {key_id:?} has {current} versions, the most keygate reads"
                ));
            }
            let label = versions::label(key_id, current + 1);
            s.generate_key(
                &Mechanism::AesKeyGen,
                &create_template(&label, facts.info.usage),
            )
            .map_err(|e| format!("generating {label:?}: {e}"))?;
            self.show(s, key_id)
        })
    }
}
