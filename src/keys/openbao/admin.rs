//! `keygate keys ...` on OpenBao Transit. Runs in its own process with a runtime of its
//! own, as an operator: with the token in BAO_TOKEN (or VAULT_TOKEN) when set, otherwise
//! with keygate's configured credentials.
//!
//! - create: a Transit `aes256-gcm96` key, and the usage granted to keygate's token in the
//!   ACL policy `policy` (policy.rs);
//! - rotate: a new Transit version (old ciphertexts still decrypt);
//! - disable / enable: OpenBao's soft deletion and restore (the server itself then refuses
//!   every use of the key); HashiCorp Vault has no soft deletion, so it has no disable.

use std::collections::BTreeMap;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::client::{Answer, BaoHttp, Verb};
use super::policy::Grants;
use super::settings::{AuthMethod, OpenBaoSettings, SecretSource};
use super::transit::{self, KEY_TYPE, KeyRead};
use crate::keys::{KeyAdmin, KeyError, KeyListing, KeyOp, KeyUsage, valid_key_id};

/// Environment variables an operator's token is read from, in this order.
pub const TOKEN_VARS: [&str; 2] = ["BAO_TOKEN", "VAULT_TOKEN"];

/// Key management on one Transit mount.
pub struct OpenBaoAdmin {
    rt: tokio::runtime::Runtime,
    http: BaoHttp,
    token: Zeroizing<String>,
    mount: String,
    policy: String,
}

impl std::fmt::Debug for OpenBaoAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBaoAdmin")
            .field("address", &self.http.address())
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl OpenBaoAdmin {
    /// Connects as the operator (BAO_TOKEN / VAULT_TOKEN) or, without one, as keygate.
    pub fn open(settings: &OpenBaoSettings) -> Result<OpenBaoAdmin, String> {
        let operator = TOKEN_VARS
            .iter()
            .find_map(|v| SecretSource::Env((*v).to_owned()).read().ok());
        match operator {
            Some(token) => Self::with_token(settings, token),
            None => {
                let token = match &settings.auth {
                    AuthMethod::Token(source) => source.read()?,
                    AuthMethod::AppRole { .. } => {
                        return Err(
                            "set BAO_TOKEN (or VAULT_TOKEN) to an operator's token to manage keys"
                                .into(),
                        );
                    }
                };
                Self::with_token(settings, token)
            }
        }
    }

    /// Connects with `token`.
    pub fn with_token(
        settings: &OpenBaoSettings,
        token: Zeroizing<String>,
    ) -> Result<OpenBaoAdmin, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let http = {
            let _guard = rt.enter();
            BaoHttp::new(settings)?
        };
        Ok(OpenBaoAdmin {
            rt,
            http,
            token,
            mount: settings.mount.clone(),
            policy: settings.policy.clone(),
        })
    }

    /// One request as the operator; the answer whatever its status.
    pub fn raw(
        &self,
        verb: Verb,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, String> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.rt
            .block_on(self.http.call(verb, path, Some(&self.token), body))
            .map_err(|e| e.to_string())
    }

    /// Whether `token` (another than the operator's) is valid on the server now.
    pub fn token_works(&self, token: &str) -> Result<bool, String> {
        let answer = self
            .rt
            .block_on(
                self.http
                    .call(Verb::Get, "auth/token/lookup-self", Some(token), None),
            )
            .map_err(|e| e.to_string())?;
        Ok(answer.status == 200)
    }

    /// `data` of a successful request.
    pub fn data<T: serde::de::DeserializeOwned>(
        &self,
        verb: Verb,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, String> {
        let answer = self.raw(verb, path, body)?;
        transit::data(&answer, KeyOp::Encrypt).map_err(|e| describe(path, &answer, e))
    }

    /// A request whose answer carries nothing keygate needs.
    pub fn write(
        &self,
        verb: Verb,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(), String> {
        let answer = self.raw(verb, path, body)?;
        if (200..300).contains(&answer.status) {
            return Ok(());
        }
        let errors = transit::parse::<serde_json::Value>(&answer)
            .map(|e| e.errors)
            .unwrap_or_default();
        Err(describe(
            path,
            &answer,
            transit::classify(answer.status, &errors, KeyOp::Encrypt),
        ))
    }

    fn key(&self, key_id: &str) -> Result<KeyRead, String> {
        let answer = self.raw(Verb::Get, &format!("{}/keys/{key_id}", self.mount), None)?;
        if answer.status == 404 {
            return Err(format!("no Transit key {key_id:?} in mount {}", self.mount));
        }
        transit::data(&answer, KeyOp::Encrypt).map_err(|e| describe(key_id, &answer, e))
    }

    /// The grants in keygate's policy (none when it does not exist yet).
    pub fn grants(&self) -> Result<Grants, String> {
        #[derive(Deserialize)]
        struct Policy {
            policy: String,
        }
        let path = format!("sys/policies/acl/{}", self.policy);
        let answer = self.raw(Verb::Get, &path, None)?;
        if answer.status == 404 {
            return Ok(Grants::default());
        }
        let p: Policy =
            transit::data(&answer, KeyOp::Encrypt).map_err(|e| describe(&path, &answer, e))?;
        Ok(Grants::parse(&p.policy, &self.mount))
    }

    /// Grants keygate's token `usage` of `key_id` (replacing what it had).
    pub fn grant(&self, key_id: &str, usage: KeyUsage) -> Result<(), String> {
        let mut g = self.grants()?;
        g.keys.insert(key_id.to_owned(), usage);
        let text = g.render(&self.mount);
        self.write(
            Verb::Put,
            &format!("sys/policies/acl/{}", self.policy),
            Some(serde_json::json!({ "policy": text })),
        )
    }

    fn listing(&self, key_id: &str, key: &KeyRead, usage: KeyUsage) -> KeyListing {
        let protection = match key.refusal() {
            Some(why) => format!("openbao transit {}, REFUSED: {why}", self.mount),
            None => format!(
                "openbao transit {} at {} ({KEY_TYPE})",
                self.mount,
                self.http.address()
            ),
        };
        KeyListing {
            id: key_id.to_owned(),
            usage,
            enabled: !key.soft_deleted,
            versions: key.latest_version,
            protection,
        }
    }

    fn show(&self, key_id: &str) -> Result<KeyListing, String> {
        let key = self.key(key_id)?;
        let usage = self.grants()?.keys.get(key_id).copied().unwrap_or_default();
        Ok(self.listing(key_id, &key, usage))
    }
}

fn describe(what: &str, answer: &Answer, e: KeyError) -> String {
    format!("{what}: {e} (HTTP {})", answer.status)
}

impl KeyAdmin for OpenBaoAdmin {
    fn create(&mut self, key_id: &str, usage: KeyUsage) -> Result<KeyListing, String> {
        if !valid_key_id(key_id) {
            return Err(format!(
                "{key_id:?} is not a valid key id (1-128 of A-Za-z0-9-._)"
            ));
        }
        let path = format!("{}/keys/{key_id}", self.mount);
        if self.raw(Verb::Get, &path, None)?.status != 404 {
            return Err(format!(
                "a Transit key {key_id:?} already exists in {}",
                self.mount
            ));
        }
        self.write(
            Verb::Post,
            &path,
            Some(serde_json::json!({ "type": KEY_TYPE })),
        )?;
        self.grant(key_id, usage)?;
        self.show(key_id)
    }

    fn list(&self) -> Result<Vec<KeyListing>, String> {
        #[derive(Deserialize)]
        struct Names {
            #[serde(default)]
            keys: Vec<String>,
        }
        let path = format!("{}/keys", self.mount);
        let answer = self.raw(Verb::List, &path, None)?;
        let names = if answer.status == 404 {
            Vec::new()
        } else {
            transit::data::<Names>(&answer, KeyOp::Encrypt)
                .map_err(|e| describe(&path, &answer, e))?
                .keys
        };
        let grants: BTreeMap<String, KeyUsage> = self.grants()?.keys;
        let mut out = Vec::with_capacity(names.len());
        for id in names {
            let key = self.key(&id)?;
            let usage = grants.get(&id).copied().unwrap_or_default();
            out.push(self.listing(&id, &key, usage));
        }
        Ok(out)
    }

    fn set_enabled(&mut self, key_id: &str, enabled: bool) -> Result<KeyListing, String> {
        self.key(key_id)?;
        let base = format!("{}/keys/{key_id}", self.mount);
        let (verb, path) = if enabled {
            (Verb::Post, format!("{base}/soft-delete-restore"))
        } else {
            (Verb::Delete, format!("{base}/soft-delete"))
        };
        let answer = self.raw(verb, &path, None)?;
        if matches!(answer.status, 404 | 405) {
            return Err(format!(
                "{} has no Transit soft deletion (HashiCorp Vault): keygate cannot disable {key_id:?} there; remove its grants from policy {} instead",
                self.http.address(),
                self.policy
            ));
        }
        if !(200..300).contains(&answer.status) {
            let errors = transit::parse::<serde_json::Value>(&answer)
                .map(|e| e.errors)
                .unwrap_or_default();
            return Err(describe(
                &path,
                &answer,
                transit::classify(answer.status, &errors, KeyOp::Encrypt),
            ));
        }
        self.show(key_id)
    }

    fn rotate(&mut self, key_id: &str) -> Result<KeyListing, String> {
        self.key(key_id)?;
        self.write(
            Verb::Post,
            &format!("{}/keys/{key_id}/rotate", self.mount),
            None,
        )?;
        self.show(key_id)
    }
}
