//! The Kubernetes KMS v2 front door: the kube-apiserver calls it over a Unix socket (gRPC)
//! to wrap and unwrap its data-encryption-key seed with a key of the key backend. This file
//! is the door's gate, orchestration only: check the call, judge it with the same
//! [`Authorizer`] as every door, run the key operation under the call's deadline, close the
//! judgement with the answer. It knows no HTTP and nothing of the XKS door.
//!
//! ```text
//! kms_v2/socket.rs    the socket file: mode 0600, a stale one replaced, a live one refused
//! kms_v2/listener.rs  accept under a connection cap, SO_PEERCRED, HTTP/2, drain on shutdown
//! kms_v2/service.rs   protobuf in, gate calls out (the generated trait), deadline, metrics
//! kms_v2/envelope.rs  pure: ciphertext format (format byte, key, version, IV, tag), AAD, key_id
//! kms_v2/error.rs     KmsError -> gRPC status, in one match
//! kms_v2/proto.rs     the generated wire types (proto/kms_v2.proto)
//! ```

pub mod envelope;
pub mod error;
pub mod listener;
pub mod proto;
mod service;
pub mod socket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::config::KmsV2Settings;
use crate::health::HealthMonitor;
use crate::keys::{KeyBackend, KeyInfo, KeyOp};
use crate::metrics::Metrics;
use crate::policy::{Authorizer, Interface, Judgement, PeerCred, PolicyInput, Verdict};
use envelope::{Header, MAX_PLAINTEXT, MAX_WIRE_LEN};
use error::KmsError;

pub use envelope::KeyIdFormat;
pub use service::KmsService;

/// The `version` every Status answers.
pub const API_VERSION: &str = "v2";
/// The `healthz` of a healthy plugin.
pub const HEALTHY: &str = "ok";
/// Longest `uid` accepted (the apiserver sends a UUID).
pub const MAX_UID_LEN: usize = 128;
/// Annotation keys plus values a Decrypt may carry, in total.
pub const MAX_ANNOTATIONS_LEN: usize = 32 * 1024;

/// What the door runs with: narrow handles, no `App`.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The key backend (metered).
    pub keys: Arc<dyn KeyBackend>,
    /// Judges Encrypt and Decrypt and records each decision.
    pub authorizer: Authorizer,
    /// The cached deep health check of the backend.
    pub health: Arc<HealthMonitor>,
}

/// The key version the latest Status reported, and its key_id: Encrypt uses exactly this
/// version, so its key_id equals the latest Status's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Current {
    version: u32,
    key_id: String,
}

/// The KMS v2 door, shared by every connection.
#[derive(Debug)]
pub struct Door {
    settings: KmsV2Settings,
    handles: Handles,
    metrics: Arc<Metrics>,
    current: ArcSwapOption<Current>,
    in_flight: Arc<Semaphore>,
    grace: Duration,
}

/// What Status answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    pub healthz: String,
    pub key_id: String,
}

/// Who is calling: the request's `uid` and the socket peer's identity.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub uid: &'a str,
    pub peer: Option<PeerCred>,
}

impl Door {
    /// The door for `settings`; in-flight calls get `grace` to finish at shutdown.
    pub fn new(
        settings: KmsV2Settings,
        handles: Handles,
        metrics: Arc<Metrics>,
        grace: Duration,
    ) -> Door {
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
        Door {
            settings,
            handles,
            metrics,
            current: ArcSwapOption::empty(),
            in_flight,
            grace,
        }
    }

    /// The door's settings.
    pub fn settings(&self) -> &KmsV2Settings {
        &self.settings
    }

    /// Status: the cached backend health and the configured key's current version. Never
    /// judged (like XKS GetHealthStatus); cheap enough to poll.
    pub async fn status(&self) -> StatusAnswer {
        let key = &self.settings.key;
        let (problem, key_id) = match self.handles.keys.key_info_for_use(key).await {
            Ok(info) => {
                let key_id = self
                    .settings
                    .key_id_format
                    .render(key, info.current_version);
                let problem = usable(&info, key, KeyOp::Encrypt).err();
                if problem.is_none() {
                    self.current.store(Some(Arc::new(Current {
                        version: info.current_version,
                        key_id: key_id.clone(),
                    })));
                }
                (problem.map(|e| e.to_string()), key_id)
            }
            Err(e) => (
                Some(KmsError::from_key(&e, key, KeyOp::Encrypt).to_string()),
                self.current
                    .load()
                    .as_ref()
                    .map(|c| c.key_id.clone())
                    .unwrap_or_default(),
            ),
        };
        let healthz = match problem {
            Some(p) => p,
            None if self.handles.health.ready().await => HEALTHY.to_owned(),
            None => "key backend unavailable (deep health check failed)".to_owned(),
        };
        StatusAnswer { healthz, key_id }
    }

    /// Encrypt: wraps `plaintext` with the configured key at the version the latest Status
    /// reported. Returns the ciphertext and its key_id.
    pub async fn encrypt(
        &self,
        plaintext: &[u8],
        caller: Caller<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<u8>, String), KmsError> {
        check_uid(caller.uid)?;
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KmsError::InvalidArgument(format!(
                "plaintext must be 1-{MAX_PLAINTEXT} bytes, got {}",
                plaintext.len()
            )));
        }
        let _slot = self.admit()?;
        let key = self.settings.key.as_str();
        let (judgement, allowed) = self.judge("Encrypt", key, caller);
        let work = async {
            allowed?;
            let info = self.key_info(key, KeyOp::Encrypt).await?;
            usable(&info, key, KeyOp::Encrypt)?;
            let current = self.current_for(&info);
            let header = Header {
                key: key.to_owned(),
                version: current.version,
            }
            .encode()?;
            let sealed = self
                .handles
                .keys
                .encrypt(key, current.version, plaintext, &Header::aad(&header))
                .await
                .map_err(|e| KmsError::from_key(&e, key, KeyOp::Encrypt))?;
            let wire = envelope::assemble(&header, &sealed.iv, &sealed.ciphertext, &sealed.tag);
            Ok((wire, current.key_id.clone()))
        };
        close(judgement, within(deadline, work).await)
    }

    /// Decrypt: unwraps a ciphertext this door issued, with the key and version it names.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        annotations: &HashMap<String, Vec<u8>>,
        key_id: &str,
        caller: Caller<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        check_uid(caller.uid)?;
        check_key_id(key_id)?;
        check_annotations(annotations)?;
        let parsed = envelope::parse(ciphertext)?;
        let _slot = self.admit()?;
        let key = parsed.key;
        let (judgement, allowed) = self.judge("Decrypt", key, caller);
        let work = async {
            allowed?;
            if !self.settings.decrypts_with(key) {
                return Err(KmsError::InvalidArgument(format!(
                    "the ciphertext names key {key}, which is neither this plugin's key nor one of its previous_keys"
                )));
            }
            let info = self.key_info(key, KeyOp::Decrypt).await?;
            usable(&info, key, KeyOp::Decrypt)?;
            self.handles
                .keys
                .decrypt(key, parsed.version, parsed.sealed, &parsed.aad())
                .await
                .map_err(|e| KmsError::from_key(&e, key, KeyOp::Decrypt))
        };
        close(judgement, within(deadline, work).await)
    }

    /// How long in-flight calls may take to finish after shutdown begins.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The metrics this door counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The decision log's masking rules, which this door's request log follows too.
    pub fn masking(&self) -> Option<&crate::policy::decision_log::mask::Masking> {
        self.handles
            .authorizer
            .decision_log()
            .and_then(|log| log.masking())
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, KmsError> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            KmsError::ResourceExhausted(format!(
                "more than {} calls in flight",
                self.settings.max_in_flight
            ))
        })
    }

    async fn key_info(&self, key: &str, op: KeyOp) -> Result<KeyInfo, KmsError> {
        self.handles
            .keys
            .key_info_for_use(key)
            .await
            .map_err(|e| KmsError::from_key(&e, key, op))
    }

    /// The version the latest Status reported; before any Status, the key's current one
    /// (which the next Status then reports too).
    fn current_for(&self, info: &KeyInfo) -> Arc<Current> {
        if let Some(c) = self.current.load_full() {
            return c;
        }
        let c = Arc::new(Current {
            version: info.current_version,
            key_id: self
                .settings
                .key_id_format
                .render(&self.settings.key, info.current_version),
        });
        self.current.store(Some(c.clone()));
        c
    }

    fn judge(
        &self,
        operation: &str,
        key: &str,
        caller: Caller<'_>,
    ) -> (Judgement, Result<(), KmsError>) {
        let empty = serde_json::Map::new();
        let input = PolicyInput {
            interface: Interface::KmsV2,
            operation,
            keystore: &self.settings.name,
            uri_prefix: "",
            key_id: key,
            request_metadata: &empty,
            access_key_id: None,
            source_ip: None,
            client_subject: None,
            time: SystemTime::now(),
            aad_length: 0,
            request_uid: Some(caller.uid),
            peer: caller.peer,
        };
        let judgement = self.handles.authorizer.judge(&input);
        let refusal = match judgement.verdict() {
            Verdict::Allow => Ok(()),
            Verdict::Deny(reasons) if reasons.is_empty() => {
                Err(KmsError::PermissionDenied("denied by policy".into()))
            }
            Verdict::Deny(reasons) => Err(KmsError::PermissionDenied(format!(
                "denied by policy: {}",
                reasons.join("; ")
            ))),
            Verdict::Failed(e) => Err(KmsError::PermissionDenied(format!(
                "policy evaluation failed, call refused: {e}"
            ))),
            Verdict::LogUnavailable => Err(log_unavailable()),
        };
        (judgement, refusal)
    }
}

/// Closes the judgement with the answer: a success whose line cannot be written in
/// fail-closed mode becomes a refusal.
fn close<T>(judgement: Judgement, result: Result<T, KmsError>) -> Result<T, KmsError> {
    let error_name = result.as_ref().err().map(KmsError::name);
    match judgement.record_or(error_name, log_unavailable().name()) {
        Ok(()) => result,
        Err(_) => Err(log_unavailable()),
    }
}

fn log_unavailable() -> KmsError {
    KmsError::Unavailable(
        "the decision log cannot be written and fail_closed is set; call refused".into(),
    )
}

/// Runs `work` until `deadline`.
async fn within<T>(
    deadline: tokio::time::Instant,
    work: impl Future<Output = Result<T, KmsError>>,
) -> Result<T, KmsError> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(KmsError::DeadlineExceeded(
                "the call did not finish within its deadline".into(),
            ))
        })
}

fn usable(info: &KeyInfo, key: &str, op: KeyOp) -> Result<(), KmsError> {
    let permitted = match op {
        KeyOp::Encrypt => info.usage.encrypt,
        KeyOp::Decrypt => info.usage.decrypt,
    };
    if !info.enabled {
        Err(KmsError::FailedPrecondition(format!(
            "key {key} is disabled"
        )))
    } else if !permitted {
        Err(KmsError::FailedPrecondition(format!(
            "key {key} does not permit {op}"
        )))
    } else {
        Ok(())
    }
}

fn check_uid(uid: &str) -> Result<(), KmsError> {
    if uid.len() > MAX_UID_LEN || !uid.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(KmsError::InvalidArgument(format!(
            "uid must be at most {MAX_UID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn check_key_id(key_id: &str) -> Result<(), KmsError> {
    if key_id.is_empty() || key_id.len() > MAX_WIRE_LEN {
        return Err(KmsError::InvalidArgument(format!(
            "key_id must be 1-{MAX_WIRE_LEN} bytes"
        )));
    }
    Ok(())
}

/// keygate's format 1 issues no annotations: any on a Decrypt were not issued by it.
fn check_annotations(annotations: &HashMap<String, Vec<u8>>) -> Result<(), KmsError> {
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATIONS_LEN {
        return Err(KmsError::InvalidArgument(format!(
            "annotations are {total} bytes; at most {MAX_ANNOTATIONS_LEN} are accepted"
        )));
    }
    if !annotations.is_empty() {
        let mut names: Vec<&str> = annotations.keys().map(String::as_str).collect();
        names.sort_unstable();
        return Err(KmsError::InvalidArgument(format!(
            "annotations keygate did not issue: {}",
            names.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_its_deadline_is_deadline_exceeded() {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let never = std::future::pending::<Result<(), KmsError>>();
        let e = within(deadline, never).await.unwrap_err();
        assert_eq!(e.name(), "DEADLINE_EXCEEDED");
        let done = within(deadline, async { Ok::<_, KmsError>(7) }).await;
        assert_eq!(done, Ok(7));
    }

    #[test]
    fn uids_annotations_and_key_ids_are_bounded() {
        assert!(check_uid("5c2a8f62-9f4e-4d0b-8a51-0d1e4b7f3a10").is_ok());
        assert!(check_uid("").is_ok());
        assert!(check_uid(&"u".repeat(MAX_UID_LEN + 1)).is_err());
        assert!(check_uid("a\u{0}b").is_err());
        assert!(check_key_id("").is_err());
        assert!(check_key_id(&"k".repeat(MAX_WIRE_LEN + 1)).is_err());
        assert!(check_annotations(&HashMap::new()).is_ok());
        let one = HashMap::from([("a.example.org/x".to_owned(), vec![1])]);
        assert!(check_annotations(&one).is_err());
    }
}
