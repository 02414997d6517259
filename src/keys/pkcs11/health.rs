//! GetHealthStatus for the PKCS#11 backend: token and module facts plus a deep check
//! (an encrypt and a decrypt on the dedicated health key), bounded like any other call.

use super::Pkcs11Backend;
use crate::keys::{EkmInstance, HealthStatus, KeyBackend, KeyError, SealedRef};

const PROBE: &[u8] = b"keygate health check plaintext..";
const AAD: &[u8] = b"keygate-health";

/// One fleet entry: the token. ACTIVE when the round trip works; DEGRADED when the token
/// answers but the check could not run (busy, missing or disabled health key); UNAVAILABLE
/// when the token or module does not work or does not answer in time.
pub async fn check(backend: &Pkcs11Backend, health_key: &str) -> Vec<EkmInstance> {
    let (status, detail) = match round_trip(backend, health_key).await {
        Ok(()) => (HealthStatus::Active, None),
        Err(e @ (KeyError::Busy(_) | KeyError::NotFound | KeyError::Disabled)) => (
            HealthStatus::Degraded,
            Some(format!("health key {health_key:?}: {e}")),
        ),
        Err(e) => (HealthStatus::Unavailable, Some(e.to_string())),
    };
    let facts = backend.engine.facts();
    let id = if facts.label.is_empty() {
        "pkcs11".to_owned()
    } else {
        facts.label.clone()
    };
    vec![EkmInstance {
        id,
        model: facts.model_line(),
        status,
        detail,
    }]
}

async fn round_trip(backend: &Pkcs11Backend, health_key: &str) -> Result<(), KeyError> {
    let sealed = backend.encrypt(health_key, 1, PROBE, AAD).await?;
    let back = backend
        .decrypt(
            health_key,
            1,
            SealedRef {
                iv: &sealed.iv,
                ciphertext: &sealed.ciphertext,
                tag: &sealed.tag,
            },
            AAD,
        )
        .await?;
    if back.as_slice() == PROBE {
        Ok(())
    } else {
        Err(KeyError::Unavailable(
            "health round trip returned other bytes".to_owned(),
        ))
    }
}
