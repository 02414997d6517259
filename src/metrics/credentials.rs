//! `keygate_credential_age_seconds`: the age of every configured SigV4 credential, computed
//! at each scrape from when it was created (the config's `created`) or, failing that, from
//! when this process first loaded it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A credential as configured: when it was created, if the config says.
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub keystore: String,
    pub access_key_id: String,
    pub created: Option<SystemTime>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialAgeLabels {
    keystore: String,
    access_key_id: String,
    since: String,
}

/// The configured credentials and their age gauge.
#[derive(Debug, Default)]
pub(super) struct CredentialAges {
    age: Family<CredentialAgeLabels, Gauge>,
    /// (keystore, access key id) -> (when it starts counting, whether from `created`).
    known: Mutex<HashMap<(String, String), (SystemTime, bool)>>,
}

impl CredentialAges {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "credential_age_seconds",
            "Age of each configured SigV4 credential: since its `created` time in the config (since=\"created\"), otherwise since this keygate process first loaded it (since=\"loaded\")",
            self.age.clone(),
        );
    }

    /// Replaces the set of configured credentials. One that stays keeps its age; a new one
    /// without `created` starts at zero now; a removed one disappears from the output.
    pub(super) fn set(&self, creds: &[CredentialRecord]) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        let now = SystemTime::now();
        let mut next = HashMap::with_capacity(creds.len());
        for c in creds {
            let key = (c.keystore.clone(), c.access_key_id.clone());
            let since = match (c.created, known.remove(&key)) {
                (Some(created), _) => (created, true),
                (None, Some((loaded, false))) => (loaded, false),
                (None, _) => (now, false),
            };
            next.insert(key, since);
        }
        *known = next;
    }

    /// Recomputes every age (at each scrape).
    pub(super) fn refresh(&self) {
        let Ok(known) = self.known.lock() else {
            return;
        };
        self.age.clear();
        let now = SystemTime::now();
        for ((keystore, access_key_id), (since, created)) in known.iter() {
            let age = now.duration_since(*since).unwrap_or_default().as_secs();
            self.age
                .get_or_create(&CredentialAgeLabels {
                    keystore: keystore.clone(),
                    access_key_id: access_key_id.clone(),
                    since: if *created { "created" } else { "loaded" }.to_owned(),
                })
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
    }
}
