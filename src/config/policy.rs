//! The `[policy]` and `[decision_log]` sections: where policies and the decision log live.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Checker;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    dir: Option<PathBuf>,
    eval_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecisionLog {
    path: PathBuf,
    fail_closed: Option<bool>,
    rotate_bytes: Option<u64>,
    rotate_interval_secs: Option<u64>,
}

/// `[policy]`: a policy directory replaces the embedded default policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// `None`: the embedded default policy (allow every authenticated request).
    pub dir: Option<PathBuf>,
    /// Limit for one evaluation; over it the request is refused.
    pub eval_timeout: Duration,
}

/// `[decision_log]`: one hash-chained JSON line per evaluated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogSettings {
    pub path: PathBuf,
    /// Refuse requests while the log cannot be written.
    pub fail_closed: bool,
    pub rotate_bytes: Option<u64>,
    pub rotate_interval: Option<Duration>,
}

impl Checker {
    pub(super) fn policy(&mut self, raw: RawPolicy, base: &Path) -> PolicySettings {
        let ms = raw.eval_timeout_ms.unwrap_or(50);
        if !(1..=10_000).contains(&ms) {
            self.problems
                .push("policy.eval_timeout_ms must be between 1 and 10000".into());
        }
        PolicySettings {
            dir: raw.dir.map(|d| base.join(d)),
            eval_timeout: Duration::from_millis(ms),
        }
    }

    pub(super) fn decision_log(
        &mut self,
        raw: Option<RawDecisionLog>,
        base: &Path,
    ) -> Option<DecisionLogSettings> {
        let raw = raw?;
        if raw.rotate_bytes == Some(0) {
            self.problems
                .push("decision_log.rotate_bytes must be at least 1".into());
        }
        if raw.rotate_interval_secs == Some(0) {
            self.problems
                .push("decision_log.rotate_interval_secs must be at least 1".into());
        }
        Some(DecisionLogSettings {
            path: base.join(raw.path),
            fail_closed: raw.fail_closed.unwrap_or(false),
            rotate_bytes: raw.rotate_bytes,
            rotate_interval: raw.rotate_interval_secs.map(Duration::from_secs),
        })
    }
}
