//! GetHealthStatus for the OpenBao backend: the server's own `sys/health` (sealed,
//! uninitialised and standby servers are not ACTIVE) plus the deep check, an encrypt and a
//! decrypt on the dedicated health key, all within the request timeout.

use std::time::Duration;

use serde::Deserialize;

use super::OpenBaoBackend;
use super::client::Verb;
use crate::keys::{EkmInstance, HealthStatus, KeyBackend, KeyError, SealedRef};

const PROBE: &[u8] = b"keygate health check plaintext..";
const AAD: &[u8] = b"keygate-health";
/// Within the health monitor's own 2 s limit, so the answer names the cause.
const LIMIT: Duration = Duration::from_millis(1500);

/// `sys/health`'s answer (any status code carries it).
#[derive(Debug, Default, Deserialize)]
struct Health {
    #[serde(default)]
    initialized: bool,
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    standby: bool,
    #[serde(default)]
    performance_standby: bool,
    #[serde(default)]
    version: String,
    #[serde(default)]
    cluster_name: String,
}

impl Health {
    /// The server's product and version: OpenBao numbers its releases from 2.0, Vault's are 1.x.
    fn product(&self) -> String {
        let name = if self.version.starts_with("1.") {
            "HashiCorp Vault"
        } else {
            "OpenBao"
        };
        format!("{name} {}", self.version).trim().to_owned()
    }
}

/// One fleet entry: the server.
pub async fn check(b: &OpenBaoBackend, health_key: &str) -> Vec<EkmInstance> {
    let limit = b.http.timeout().min(LIMIT);
    let (status, detail, server) = match tokio::time::timeout(limit, assess(b, health_key)).await {
        Ok(r) => r,
        Err(_) => (
            HealthStatus::Unavailable,
            Some(format!("OpenBao did not answer within {limit:?}")),
            None,
        ),
    };
    if let Some(h) = &server {
        b.server.store(std::sync::Arc::new(h.product()));
    }
    let model = match &server {
        Some(h) if !h.cluster_name.is_empty() => format!(
            "{} Transit (cluster {}, mount {})",
            h.product(),
            h.cluster_name,
            b.mount
        ),
        Some(h) => format!("{} Transit (mount {})", h.product(), b.mount),
        None => format!("{} Transit (mount {})", b.server.load(), b.mount),
    };
    vec![EkmInstance {
        id: b.http.authority().to_owned(),
        model,
        status,
        detail,
    }]
}

async fn assess(
    b: &OpenBaoBackend,
    health_key: &str,
) -> (HealthStatus, Option<String>, Option<Health>) {
    let health = match server_health(b).await {
        Ok(h) => h,
        Err(e) => return (HealthStatus::Unavailable, Some(e.to_string()), None),
    };
    if !health.initialized || health.sealed {
        let why = if health.sealed {
            "sealed"
        } else {
            "not initialised"
        };
        return (
            HealthStatus::Unavailable,
            Some(format!("OpenBao is {why}")),
            Some(health),
        );
    }
    if let Some(problem) = b.auth.problem() {
        return (HealthStatus::Unavailable, Some(problem), Some(health));
    }
    let deep = round_trip(b, health_key).await;
    let standby = health.standby || health.performance_standby;
    let (status, detail) = match deep {
        Ok(()) if standby => (
            HealthStatus::Degraded,
            Some("OpenBao answered from a standby node".to_owned()),
        ),
        Ok(()) => (HealthStatus::Active, None),
        Err(e @ (KeyError::Busy(_) | KeyError::NotFound | KeyError::Disabled)) => (
            HealthStatus::Degraded,
            Some(format!("health key {health_key:?}: {e}")),
        ),
        Err(e) => (HealthStatus::Unavailable, Some(e.to_string())),
    };
    (status, detail, Some(health))
}

/// `sys/health` without a token; every status code it uses carries the same body.
async fn server_health(b: &OpenBaoBackend) -> Result<Health, KeyError> {
    let answer = b
        .http
        .call(Verb::Get, super::client::HEALTH_PATH, None, None)
        .await?;
    match answer.status {
        200 | 429 | 472 | 473 | 501 | 503 => serde_json::from_slice(&answer.body).map_err(|e| {
            KeyError::Unavailable(format!("OpenBao sys/health answer unreadable: {e}"))
        }),
        s => Err(KeyError::Unavailable(format!(
            "OpenBao sys/health answered {s}"
        ))),
    }
}

async fn round_trip(b: &OpenBaoBackend, health_key: &str) -> Result<(), KeyError> {
    let info = b.key_info(health_key).await?;
    if !info.enabled {
        return Err(KeyError::Disabled);
    }
    let v = info.current_version;
    let sealed = b.encrypt(health_key, v, PROBE, AAD).await?;
    let sref = SealedRef {
        iv: &sealed.iv,
        ciphertext: &sealed.ciphertext,
        tag: &sealed.tag,
    };
    let back = b.decrypt(health_key, v, sref, AAD).await?;
    if back.as_slice() == PROBE {
        Ok(())
    } else {
        Err(KeyError::Unavailable(
            "health round trip returned other bytes".to_owned(),
        ))
    }
}
