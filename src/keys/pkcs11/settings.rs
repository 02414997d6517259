//! The `[backend.pkcs11]` table: its TOML shape and the checked settings the backend runs on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

/// How the 12-byte GCM IV comes to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IvMode {
    /// keygate draws the IV from the HSM's RNG (`C_GenerateRandom`) and passes it in.
    /// Right for SoftHSMv2 and any HSM that accepts a caller-supplied IV.
    #[default]
    Random,
    /// The HSM generates the IV itself and appends it after the tag (Luna in FIPS mode).
    HsmGenerated,
    /// The HSM wants a zero IV buffer that it overwrites with the IV it chose
    /// (AWS CloudHSM, Entrust nShield).
    ZeroBuffer,
}

/// A PIN held in memory: zeroized on drop, printed as `***`, compared in constant time.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl PartialEq for Pin {
    fn eq(&self, other: &Pin) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Pin {}

impl Pin {
    pub fn new(pin: String) -> Pin {
        Pin(Zeroizing::new(pin))
    }

    /// The PIN itself, for the one call that logs in.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pin, D::Error> {
        String::deserialize(d).map(Pin::new)
    }
}

/// Which token the backend uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    SlotId(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "token '{l}'"),
            TokenSelector::SlotId(id) => write!(f, "slot {id}"),
        }
    }
}

/// The `[backend.pkcs11]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Toml {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    pub token_label: Option<String>,
    pub slot_id: Option<u64>,
    /// Name of the environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// File holding the user PIN (one line; must not be readable by group or others).
    pub pin_file: Option<PathBuf>,
    /// Inline user PIN: accepted for experiments, with a warning.
    pub pin: Option<Pin>,
    #[serde(default = "defaults::pool_size")]
    pub session_pool_size: usize,
    #[serde(default = "defaults::operation_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// How long a request may wait for a free session before it gets ThrottlingException.
    #[serde(default = "defaults::queue_wait_ms")]
    pub queue_wait_ms: u64,
    #[serde(default)]
    pub iv_mode: IvMode,
    #[serde(default = "defaults::key_cache_ttl_secs")]
    pub key_cache_ttl_secs: u64,
    /// Minimum time between two attempts to re-initialise a failed module.
    #[serde(default = "defaults::reconnect_backoff_ms")]
    pub reconnect_backoff_ms: u64,
    /// SoftHSMv2 only: the `softhsm2.conf` the process must have been started with
    /// (SoftHSMv2 reads `SOFTHSM2_CONF` from the environment at `C_Initialize`).
    pub softhsm2_conf: Option<PathBuf>,
}

mod defaults {
    pub fn pool_size() -> usize {
        4
    }
    pub fn operation_timeout_ms() -> u64 {
        2000
    }
    pub fn queue_wait_ms() -> u64 {
        50
    }
    pub fn key_cache_ttl_secs() -> u64 {
        60
    }
    pub fn reconnect_backoff_ms() -> u64 {
        1000
    }
}

/// Checked settings: every path resolved, the PIN loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token: TokenSelector,
    pub pin: Pin,
    pub session_pool_size: usize,
    pub operation_timeout: Duration,
    pub queue_wait: Duration,
    pub iv_mode: IvMode,
    pub key_cache_ttl: Duration,
    pub reconnect_backoff: Duration,
    /// SoftHSMv2's configuration, which the process must have in `SOFTHSM2_CONF` when the
    /// module is opened (checked then, so commands that never open the token do not ask).
    pub softhsm2_conf: Option<PathBuf>,
    /// Things that work but deserve a warning at start-up (e.g. an inline PIN).
    pub warnings: Vec<String>,
}

impl Pkcs11Settings {
    /// Settings with every default, for code that builds them directly (tests, `serve --dev`).
    pub fn new(module: PathBuf, token: TokenSelector, pin: Pin) -> Pkcs11Settings {
        Pkcs11Settings {
            module,
            token,
            pin,
            session_pool_size: defaults::pool_size(),
            operation_timeout: Duration::from_millis(defaults::operation_timeout_ms()),
            queue_wait: Duration::from_millis(defaults::queue_wait_ms()),
            iv_mode: IvMode::Random,
            key_cache_ttl: Duration::from_secs(defaults::key_cache_ttl_secs()),
            reconnect_backoff: Duration::from_millis(defaults::reconnect_backoff_ms()),
            softhsm2_conf: None,
            warnings: Vec::new(),
        }
    }

    /// Why the module cannot be opened by this process: SoftHSMv2 reads `SOFTHSM2_CONF`
    /// when it initialises, so it must name the configured `softhsm2_conf`.
    pub fn environment_problem(&self) -> Option<String> {
        let conf = self.softhsm2_conf.as_deref()?;
        let same = std::env::var_os("SOFTHSM2_CONF")
            .map(PathBuf::from)
            .is_some_and(|env| same_file(&env, conf));
        (!same).then(|| {
            format!(
                "pkcs11.softhsm2_conf: start keygate with SOFTHSM2_CONF={} in its environment",
                conf.display()
            )
        })
    }
}

impl Pkcs11Toml {
    /// Checks the table; relative paths resolve against `base_dir` (the config file's
    /// directory). Reports every problem at once.
    pub fn check(self, base_dir: &Path) -> Result<Pkcs11Settings, Vec<String>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let module = base_dir.join(&self.module);
        if !module.is_file() {
            errors.push(format!("pkcs11.module: {} is not a file", module.display()));
        }
        let token = self.token(&mut errors);
        let pin = self.pin(base_dir, &mut errors, &mut warnings);
        self.check_numbers(&mut errors);
        let softhsm2_conf = self.softhsm2_conf.as_ref().map(|c| base_dir.join(c));
        if let Some(conf) = &softhsm2_conf
            && !conf.is_file()
        {
            errors.push(format!(
                "pkcs11.softhsm2_conf: {} is not a file",
                conf.display()
            ));
        }
        match (token, pin) {
            (Some(token), Some(pin)) if errors.is_empty() => Ok(Pkcs11Settings {
                module,
                token,
                pin,
                session_pool_size: self.session_pool_size,
                operation_timeout: Duration::from_millis(self.operation_timeout_ms),
                queue_wait: Duration::from_millis(self.queue_wait_ms),
                iv_mode: self.iv_mode,
                key_cache_ttl: Duration::from_secs(self.key_cache_ttl_secs),
                reconnect_backoff: Duration::from_millis(self.reconnect_backoff_ms),
                softhsm2_conf,
                warnings,
            }),
            _ => Err(errors),
        }
    }

    fn token(&self, errors: &mut Vec<String>) -> Option<TokenSelector> {
        match (&self.token_label, self.slot_id) {
            (Some(label), None) if !label.is_empty() && label.len() <= 32 => {
                Some(TokenSelector::Label(label.clone()))
            }
            (Some(_), None) => {
                errors.push("pkcs11.token_label: must be 1-32 characters".to_owned());
                None
            }
            (None, Some(id)) => Some(TokenSelector::SlotId(id)),
            (Some(_), Some(_)) => {
                errors.push("pkcs11: set token_label or slot_id, not both".to_owned());
                None
            }
            (None, None) => {
                errors.push("pkcs11: token_label (or slot_id) is required".to_owned());
                None
            }
        }
    }

    fn pin(&self, base: &Path, errors: &mut Vec<String>, warns: &mut Vec<String>) -> Option<Pin> {
        match (&self.pin_env, &self.pin_file, &self.pin) {
            (Some(var), None, None) => match std::env::var(var) {
                Ok(pin) if !pin.is_empty() => Some(Pin::new(pin)),
                _ => {
                    errors.push(format!(
                        "pkcs11.pin_env: environment variable {var} is not set"
                    ));
                    None
                }
            },
            (None, Some(file), None) => read_pin_file(&base.join(file), errors),
            (None, None, Some(pin)) => {
                warns.push(
                    "pkcs11.pin: the user PIN is written in the config file; use pin_env or pin_file"
                        .to_owned(),
                );
                Some(pin.clone())
            }
            (None, None, None) => {
                errors.push("pkcs11: pin_env or pin_file is required".to_owned());
                None
            }
            _ => {
                errors.push("pkcs11: set exactly one of pin_env, pin_file, pin".to_owned());
                None
            }
        }
    }

    fn check_numbers(&self, errors: &mut Vec<String>) {
        if !(1..=256).contains(&self.session_pool_size) {
            errors.push("pkcs11.session_pool_size: must be 1-256".to_owned());
        }
        if !(1..=60_000).contains(&self.operation_timeout_ms) {
            errors.push("pkcs11.operation_timeout_ms: must be 1-60000".to_owned());
        }
        if self.queue_wait_ms > self.operation_timeout_ms {
            errors.push("pkcs11.queue_wait_ms: must not exceed operation_timeout_ms".to_owned());
        }
        if !(1..=86_400).contains(&self.key_cache_ttl_secs) {
            errors.push("pkcs11.key_cache_ttl_secs: must be 1-86400".to_owned());
        }
        if !(1..=600_000).contains(&self.reconnect_backoff_ms) {
            errors.push("pkcs11.reconnect_backoff_ms: must be 1-600000".to_owned());
        }
    }
}

/// Reads a PIN file: the first line, which must not be empty; the file must be private.
fn read_pin_file(path: &Path, errors: &mut Vec<String>) -> Option<Pin> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(format!("pkcs11.pin_file: {}: {e}", path.display()));
            return None;
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        errors.push(format!(
            "pkcs11.pin_file: {} is readable by group or others (chmod 600 it)",
            path.display()
        ));
        return None;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) => {
            errors.push(format!("pkcs11.pin_file: {}: {e}", path.display()));
            return None;
        }
    };
    match text.lines().next().map(str::trim_end) {
        Some(pin) if !pin.is_empty() => Some(Pin::new(pin.to_owned())),
        _ => {
            errors.push(format!("pkcs11.pin_file: {} is empty", path.display()));
            None
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse(extra: &str) -> Pkcs11Toml {
        toml::from_str(&format!(
            "module = \"/bin/sh\"\ntoken_label = \"xks\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn defaults_and_pin_file_relative_to_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = parse("pin_file = \"pin\"").check(dir.path()).unwrap();
        assert_eq!(s.pin.expose(), "1234");
        assert_eq!(s.token, TokenSelector::Label("xks".into()));
        assert_eq!(s.iv_mode, IvMode::Random);
        assert_eq!(s.session_pool_size, 4);
        assert!(s.warnings.is_empty());
        assert_eq!(format!("{:?}", s.pin), "***");
        assert!(!format!("{s:?}").contains("1234"));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let t: Pkcs11Toml = toml::from_str(
            "module = \"no/such.so\"\nsession_pool_size = 0\noperation_timeout_ms = 0\n\
             pin_env = \"KEYGATE_SURELY_UNSET_VAR\"",
        )
        .unwrap();
        let errors = t.check(Path::new("/nonexistent")).unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "module",
            "token_label",
            "KEYGATE_SURELY_UNSET_VAR",
            "session_pool_size",
            "operation_timeout_ms",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn inline_pin_works_with_a_warning_and_never_prints() {
        let s = parse("pin = \"secret-pin\"").check(Path::new("/")).unwrap();
        assert_eq!(s.warnings.len(), 1);
        assert!(!format!("{s:?}").contains("secret-pin"));
    }

    #[test]
    fn pin_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
        let errors = parse("pin_file = \"pin\"").check(dir.path()).unwrap_err();
        assert!(errors.join("").contains("chmod 600"), "{errors:?}");
    }

    #[test]
    fn conflicting_choices_are_refused() {
        let t = parse("slot_id = 3\npin = \"a\"\npin_env = \"PATH\"");
        let errors = t.check(Path::new("/")).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("not both")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("exactly one")),
            "{errors:?}"
        );
    }

    #[test]
    fn iv_modes_and_unknown_fields() {
        assert_eq!(
            parse("iv_mode = \"zero_buffer\"").iv_mode,
            IvMode::ZeroBuffer
        );
        assert_eq!(
            parse("iv_mode = \"hsm_generated\"").iv_mode,
            IvMode::HsmGenerated
        );
        assert!(toml::from_str::<Pkcs11Toml>("module = \"m\"\nuser_pin = \"1\"").is_err());
        assert!(toml::from_str::<Pkcs11Toml>("module = \"m\"\niv_mode = \"counter\"").is_err());
    }

    #[test]
    fn softhsm2_conf_must_match_the_environment_only_to_open_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let missing = parse("pin = \"1\"\nsofthsm2_conf = \"none.conf\"")
            .check(dir.path())
            .unwrap_err();
        assert!(missing.join("").contains("is not a file"), "{missing:?}");
        std::fs::write(dir.path().join("other.conf"), "").unwrap();
        let settings = parse("pin = \"1\"\nsofthsm2_conf = \"other.conf\"")
            .check(dir.path())
            .unwrap();
        let problem = settings.environment_problem().unwrap();
        assert!(problem.contains("SOFTHSM2_CONF="), "{problem}");
    }
}
