//! The checker: turns the raw TOML sections into checked types, collecting every problem
//! (and every warning) instead of stopping at the first.

mod keystores;
mod kms_v2;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::checked::{
    BackendKind, BackendSettings, Config, DecisionLogSettings, LimitSettings, PolicySettings,
    ServerSettings,
};
use super::raw::{
    RawBackend, RawConfig, RawDecisionLog, RawLimits, RawPolicy, RawRetention, RawServer,
};
use crate::keys::valid_key_id;
use crate::policy::decision_log::settings::DigestKey;
use crate::policy::decision_log::{DEFAULT_QUEUE_LINES, SpaceLimits};

pub use keystores::{MAX_PREFIX_LEN, check_prefix};

/// Most `decision_log.queue_lines`: each waiting line holds about 1 KiB of memory.
pub const MAX_QUEUE_LINES: u64 = 262_144;
/// The spec's minimum plaintext/ciphertext size a proxy must support.
pub const SPEC_MIN_PLAINTEXT: usize = 4300;
/// The spec's minimum AAD size a proxy must support.
pub const SPEC_MIN_AAD: usize = 8192;
/// Smallest request-head buffer hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;
/// Largest request-head limit keygate accepts.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Default body cap: Base64 of the largest plaintext and AAD, plus room for metadata.
fn default_max_body(max_plaintext: usize, max_aad: usize) -> usize {
    (max_plaintext + max_aad).div_ceil(3) * 4 + 16 * 1024
}

/// Checks every section of `raw`, read from `path` (relative paths resolve against its
/// directory), and reports all problems at once.
pub(super) fn config(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let base = path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf();
    let mut c = Checker {
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let server = c.server(raw.server);
    let limits = c.limits(raw.limits);
    let backend = c.backend(raw.backend, &base);
    let keystores = c.keystores(raw.keystore, &server.region, &base, raw.kms_v2.is_none());
    let kms_v2 = c.kms_v2(raw.kms_v2, &base, &keystores);
    let policy = c.policy(raw.policy, &base);
    let decision_log = c.decision_log(raw.decision_log, &base, &backend.kind);
    let tls = raw.tls.and_then(|t| match t.check(&base) {
        Ok(t) => Some(t),
        Err(p) => {
            c.problems.extend(p);
            None
        }
    });
    let admin_listen = c.admin_listen(raw.admin.listen);
    if !c.problems.is_empty() {
        return Err(ConfigError {
            problems: c.problems,
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        server,
        limits,
        backend,
        keystores,
        policy,
        decision_log,
        tls,
        admin_listen,
        kms_v2,
        warnings: c.warnings,
    })
}

struct Checker {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Checker {
    fn admin_listen(&mut self, raw: Option<String>) -> Option<SocketAddr> {
        let text = raw?;
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.problems.push(format!(
                "admin.listen {text:?} is not an address like 127.0.0.1:9090"
            ));
        }
        parsed
    }

    fn server(&mut self, raw: RawServer) -> ServerSettings {
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8443".into());
        let listen = listen_text.parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "server.listen {listen_text:?} is not an address like 0.0.0.0:443"
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let region = raw.region.unwrap_or_else(|| "us-east-1".into());
        self.region("server.region", &region);
        let fleet_size = raw.fleet_size.unwrap_or(1);
        if fleet_size == 0 {
            self.problems
                .push("server.fleet_size must be at least 1".into());
        }
        ServerSettings {
            listen,
            region,
            fleet_size,
        }
    }

    fn region(&mut self, what: &str, region: &str) {
        let ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.problems.push(format!(
                "{what} {region:?} is not a region name like us-east-1"
            ));
        }
    }

    fn limits(&mut self, raw: RawLimits) -> LimitSettings {
        let max_plaintext = raw.max_plaintext_bytes.unwrap_or(8192);
        let max_aad = raw.max_aad_bytes.unwrap_or(16384);
        if max_plaintext < SPEC_MIN_PLAINTEXT {
            self.problems.push(format!(
                "limits.max_plaintext_bytes must be at least the spec's {SPEC_MIN_PLAINTEXT}"
            ));
        }
        if !(SPEC_MIN_AAD..=crate::xks::envelope::MAX_FRAMED_AAD_LEN).contains(&max_aad) {
            self.problems.push(format!(
                "limits.max_aad_bytes must be between the spec's {SPEC_MIN_AAD} and 65535"
            ));
        }
        let needed = default_max_body(max_plaintext, max_aad);
        let max_body = raw.max_body_bytes.unwrap_or(needed);
        if max_body < needed {
            self.problems.push(format!(
                "limits.max_body_bytes must be at least {needed} to carry the configured plaintext and AAD"
            ));
        }
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        let max_connections = raw.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            self.problems
                .push("limits.max_connections must be at least 1".into());
        }
        let max_in_flight = raw.max_in_flight.unwrap_or(1024);
        if max_in_flight == 0 {
            self.problems
                .push("limits.max_in_flight must be at least 1".into());
        }
        let (max_connections_per_peer, max_header_bytes) = self.connection_limits(&raw);
        let handshake_ms = raw.handshake_timeout_ms.unwrap_or(5_000);
        if !(100..=60_000).contains(&handshake_ms) {
            self.problems
                .push("limits.handshake_timeout_ms must be between 100 and 60000".into());
        }
        LimitSettings {
            max_plaintext,
            max_aad,
            max_body,
            header_read_timeout: ms(raw.header_read_timeout_ms, 5_000),
            body_read_timeout: ms(raw.body_read_timeout_ms, 5_000),
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs.unwrap_or(400)),
            max_connections,
            max_in_flight,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs.unwrap_or(10)),
            max_connections_per_peer,
            max_header_bytes,
            handshake_timeout: Duration::from_millis(handshake_ms),
        }
    }

    fn connection_limits(&mut self, raw: &RawLimits) -> (usize, usize) {
        let per_peer = raw.max_connections_per_peer.unwrap_or(1024);
        if per_peer == 0 {
            self.problems
                .push("limits.max_connections_per_peer must be at least 1".into());
        }
        let header = raw.max_header_bytes.unwrap_or(16 * 1024);
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&header) {
            self.problems.push(format!(
                "limits.max_header_bytes must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"
            ));
        }
        (per_peer, header)
    }

    fn backend(&mut self, raw: RawBackend, base: &Path) -> BackendSettings {
        let health_key = raw.health_key.unwrap_or_else(|| "keygate-health".into());
        if !valid_key_id(&health_key) {
            self.problems.push(format!(
                "backend.health_key {health_key:?} is not a valid key id"
            ));
        }
        let kind = match raw.kind.as_deref().unwrap_or("software") {
            "software" => {
                let key_file = raw
                    .software
                    .map(|s| s.key_file)
                    .unwrap_or_else(|| "keys.json".into());
                BackendKind::Software {
                    key_file: base.join(key_file),
                }
            }
            "pkcs11" => {
                let checked = raw.pkcs11.map(|t| t.check(base));
                self.backend_table("pkcs11", checked, |mut s| {
                    (std::mem::take(&mut s.warnings), BackendKind::Pkcs11(s))
                })
            }
            "openbao" => {
                let checked = raw.openbao.map(|t| t.check(base));
                self.backend_table("openbao", checked, |mut s| {
                    (std::mem::take(&mut s.warnings), BackendKind::OpenBao(s))
                })
            }
            other => {
                self.problems.push(format!(
                    "backend.kind {other:?} is unknown (expected software, pkcs11 or openbao)"
                ));
                BackendKind::Software {
                    key_file: PathBuf::new(),
                }
            }
        };
        BackendSettings { kind, health_key }
    }

    /// A `[backend.NAME]` table checked: its settings (their warnings kept), or its problems
    /// (or its absence) recorded with a placeholder backend, since the config is refused.
    fn backend_table<S>(
        &mut self,
        name: &str,
        checked: Option<Result<S, Vec<String>>>,
        into_kind: impl FnOnce(S) -> (Vec<String>, BackendKind),
    ) -> BackendKind {
        match checked {
            Some(Ok(settings)) => {
                let (mut warnings, kind) = into_kind(settings);
                self.warnings.append(&mut warnings);
                kind
            }
            Some(Err(problems)) => {
                self.problems.extend(problems);
                BackendKind::Software {
                    key_file: PathBuf::new(),
                }
            }
            None => {
                self.problems.push(format!(
                    "backend.kind = \"{name}\" needs a [backend.{name}] table"
                ));
                BackendKind::Software {
                    key_file: PathBuf::new(),
                }
            }
        }
    }

    fn policy(&mut self, raw: RawPolicy, base: &Path) -> PolicySettings {
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

    /// The free-space thresholds: 0 turns one off; the reserve must sit below the low-space
    /// threshold, so that the warning and early retention come before any refusal.
    fn space_limits(&mut self, raw: &RawDecisionLog) -> SpaceLimits {
        let d = SpaceLimits::default();
        let percent = raw.min_free_percent.unwrap_or(d.min_free_percent.into());
        if percent > 50 {
            self.problems
                .push("decision_log.min_free_percent must be between 0 and 50".into());
        }
        let limits = SpaceLimits {
            min_free_bytes: raw.min_free_bytes.unwrap_or(d.min_free_bytes),
            min_free_percent: u8::try_from(percent.min(50)).unwrap_or(50),
            min_free_inodes: raw.min_free_inodes.unwrap_or(d.min_free_inodes),
            reserved_bytes: raw.reserved_bytes.unwrap_or(d.reserved_bytes),
        };
        if limits.reserved_bytes > 0 && limits.reserved_bytes >= limits.min_free_bytes {
            self.problems.push(format!(
                "decision_log.reserved_bytes ({}) must be below decision_log.min_free_bytes ({}): \
                 the low-space warning and early retention come before requests are refused",
                limits.reserved_bytes, limits.min_free_bytes
            ));
        }
        limits
    }

    fn decision_log(
        &mut self,
        raw: Option<RawDecisionLog>,
        base: &Path,
        backend: &BackendKind,
    ) -> Option<DecisionLogSettings> {
        let raw = raw?;
        let space = self.space_limits(&raw);
        let upload = raw
            .upload
            .and_then(|u| match u.check(base, &mut self.warnings) {
                Ok(u) => Some(u),
                Err(p) => {
                    self.problems.extend(p);
                    None
                }
            });
        let digest = raw.digest.and_then(|d| match d.check(base) {
            Ok(d) => Some(d),
            Err(p) => {
                self.problems.extend(p);
                None
            }
        });
        let mask = raw
            .mask
            .and_then(|m| match m.check(base, &mut self.warnings) {
                Ok(m) => Some(m),
                Err(p) => {
                    self.problems.extend(p);
                    None
                }
            });
        if let Some(DigestKey::Pkcs11Label(_)) = digest.as_ref().map(|d| &d.key)
            && !matches!(backend, BackendKind::Pkcs11(_))
        {
            self.problems.push(
                "decision_log.digest.pkcs11_key_label needs backend.kind = \"pkcs11\" (the key is \
                 in the backend's token)"
                    .into(),
            );
        }
        if raw.rotate_bytes == Some(0) {
            self.problems
                .push("decision_log.rotate_bytes must be at least 1".into());
        }
        if raw.rotate_interval_secs == Some(0) {
            self.problems
                .push("decision_log.rotate_interval_secs must be at least 1".into());
        }
        let queue_lines = raw.queue_lines.unwrap_or(DEFAULT_QUEUE_LINES as u64);
        if !(1..=MAX_QUEUE_LINES).contains(&queue_lines) {
            self.problems.push(format!(
                "decision_log.queue_lines must be between 1 and {MAX_QUEUE_LINES}"
            ));
        }
        let lifecycle = self.lifecycle(raw.compression.as_deref(), raw.retention.as_ref());
        Some(DecisionLogSettings {
            path: base.join(raw.path),
            fail_closed: raw.fail_closed.unwrap_or(false),
            rotate_bytes: raw.rotate_bytes,
            rotate_interval: raw.rotate_interval_secs.map(Duration::from_secs),
            queue_lines: usize::try_from(queue_lines).unwrap_or(DEFAULT_QUEUE_LINES),
            space,
            lifecycle,
            upload,
            digest,
            mask,
        })
    }

    /// `compression` and `[decision_log.retention]`: every limit at least 1 (retention cannot
    /// be turned off: the log must never fill the disk by itself).
    fn lifecycle(
        &mut self,
        compression: Option<&str>,
        raw: Option<&RawRetention>,
    ) -> crate::policy::decision_log::LifecycleConfig {
        use crate::policy::decision_log::{Codec, LifecycleConfig};
        let mut c = LifecycleConfig::default();
        match compression {
            None | Some("zstd") => {}
            Some("gzip") => c.compression = Some(Codec::Gzip),
            Some("none") => c.compression = None,
            Some(other) => self.problems.push(format!(
                "decision_log.compression {other:?}: use \"zstd\", \"gzip\" or \"none\""
            )),
        }
        let Some(raw) = raw else { return c };
        let mut at_least_one = |key: &str, value: Option<u64>| {
            if value == Some(0) {
                self.problems.push(format!(
                    "decision_log.retention.{key} must be at least 1 (retention cannot be turned \
                     off; set a larger limit)"
                ));
            }
            value.filter(|v| *v > 0)
        };
        if let Some(n) = at_least_one("keep_files", raw.keep_files) {
            c.retention.keep_files = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(days) = at_least_one("max_age_days", raw.max_age_days) {
            c.retention.max_age = Duration::from_secs(days.saturating_mul(86400));
        }
        if let Some(bytes) = at_least_one("max_bytes", raw.max_bytes) {
            c.retention.max_bytes = bytes;
        }
        c
    }
}
