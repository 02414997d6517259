//! `keygate serve --dev --backend softhsm2`: the dev data dir holds a SoftHSMv2 token (its own
//! softhsm2.conf, token files in tokens/, user PIN in `pin`, mode 0600), the dev keys are
//! created in it with keygate's own key admin, and the config uses the pkcs11 backend.
//!
//! SoftHSMv2 reads SOFTHSM2_CONF at C_Initialize and keygate never sets environment
//! variables, so when the variable does not point at the data dir's softhsm2.conf the
//! command re-executes itself (same arguments) with it set.

mod token;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use super::{CONFIG_NAME, DEV_KEYS, HEALTH_KEY, write_dev_config};
use crate::keys::KeyAdmin;
use crate::keys::pkcs11::Pkcs11Admin;

pub use token::{SoftHsmError, SoftHsmToken, find_softhsm_module, init_softhsm_token};

pub const TOKEN_LABEL: &str = "keygate-dev";

/// The data dir (created if needed, mode 0700), as an absolute path.
pub(crate) fn data_dir(dir: &Path) -> Result<PathBuf, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    dir.canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))
}

/// Re-executes this command with SOFTHSM2_CONF pointing into the data dir, unless it already
/// does. Returns Ok(()) when the environment is right; otherwise only returns on failure.
pub fn ensure_environment(dir: &Path) -> Result<(), String> {
    let conf = SoftHsmToken::conf_path(&data_dir(dir)?);
    if std::env::var_os("SOFTHSM2_CONF").is_some_and(|v| Path::new(&v) == conf) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find keygate itself: {e}"))?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .exec();
    Err(format!("cannot re-execute with SOFTHSM2_CONF set: {err}"))
}

/// Creates the token, the dev keys and the config on first run; reuses them afterwards.
pub fn bootstrap(dir: &Path, listen: SocketAddr) -> Result<PathBuf, String> {
    let dir = data_dir(dir)?;
    let config_path = dir.join(CONFIG_NAME);
    if config_path.exists() {
        return Ok(config_path);
    }
    let token = init_softhsm_token(&dir, TOKEN_LABEL).map_err(|e| e.to_string())?;
    {
        let settings = token.settings().map_err(|e| e.to_string())?;
        let mut admin = Pkcs11Admin::open(&settings)?;
        for (id, usage) in DEV_KEYS {
            admin.create(id, usage)?;
        }
        admin.create_health_key(HEALTH_KEY)?;
    }
    let backend = format!(
        "# The keys are in the SoftHSMv2 token '{TOKEN_LABEL}' (tokens/, user PIN in pin).\n\
         # Start keygate with SOFTHSM2_CONF={}.\n\n\
         [backend]\nkind = \"pkcs11\"\nhealth_key = \"{HEALTH_KEY}\"\n\n[backend.pkcs11]\n{}",
        token.conf.display(),
        token.config_table()
    );
    write_dev_config(&dir, listen, &backend)?;
    Ok(config_path)
}
