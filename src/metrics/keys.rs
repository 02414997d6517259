//! The key backend's state as the last look saw it: its key-manager instances by health
//! status (from each deep health check) and, where the backend records it, when each key's
//! current version was created (sampled at each scrape).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::keys::{EkmInstance, HealthStatus};

const STATUSES: [HealthStatus; 3] = [
    HealthStatus::Active,
    HealthStatus::Degraded,
    HealthStatus::Unavailable,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key_id: String,
}

/// The backend's health and key-version gauges.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    instances: Family<StatusLabel, Gauge>,
    checked_at: Gauge,
    version_created: Family<KeyLabel, Gauge>,
}

impl KeyState {
    pub(super) fn register(&self, r: &mut Registry) {
        for s in STATUSES {
            let _exported_from_zero = self.instances.get_or_create(&label(s));
        }
        r.register(
            "backend_instances",
            "Key-manager instances (HSMs, tokens) by health status in the last deep health check (ACTIVE|DEGRADED|UNAVAILABLE); keygate is not ready when none is ACTIVE or DEGRADED",
            self.instances.clone(),
        );
        r.register(
            "backend_health_checked_timestamp_seconds",
            "When the last deep health check of the key backend finished (Unix time; 0 before the first)",
            self.checked_at.clone(),
        );
        r.register(
            "key_version_created_timestamp_seconds",
            "When each key's current version (the one new encryptions use) was created, Unix time: the key's creation or its last rotation (only keys whose backend records it)",
            self.version_created.clone(),
        );
    }

    /// Records the outcome of one deep health check.
    pub(super) fn set_health(&self, instances: &[EkmInstance]) {
        for s in STATUSES {
            let n = instances.iter().filter(|i| i.status == s).count();
            self.instances
                .get_or_create(&label(s))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.checked_at.set(unix_seconds(SystemTime::now()));
    }

    /// Replaces the key-version creation times.
    pub(super) fn set_versions(&self, created: &[(String, SystemTime)]) {
        self.version_created.clear();
        for (key_id, at) in created {
            self.version_created
                .get_or_create(&KeyLabel {
                    key_id: key_id.clone(),
                })
                .set(unix_seconds(*at));
        }
    }
}

fn label(status: HealthStatus) -> StatusLabel {
    StatusLabel {
        status: status.as_str(),
    }
}

/// Whole seconds since the Unix epoch (0 before it).
pub(super) fn unix_seconds(at: SystemTime) -> i64 {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}
