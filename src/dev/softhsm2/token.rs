//! A SoftHSMv2 token in a directory of its own: for tests and `keygate serve --dev --backend
//! softhsm2`.
//!
//! SoftHSMv2 finds its configuration through the `SOFTHSM2_CONF` environment variable, read at
//! `C_Initialize`. keygate never sets environment variables; the process that initialises the
//! token must already run with `SOFTHSM2_CONF=DIR/softhsm2.conf` (the dev command re-executes
//! itself with it; the test harness does the same).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::keys::pkcs11::{Pin, Pkcs11Settings, TokenSelector};

/// Where distributions install the module.
const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

/// The installed SoftHSMv2 module, if any.
pub fn find_softhsm_module() -> Option<PathBuf> {
    MODULE_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

#[derive(Debug, thiserror::Error)]
pub enum SoftHsmError {
    #[error("SoftHSMv2 is not installed (looked for {0}); install it: apt-get install -y softhsm2")]
    NotInstalled(String),
    #[error("start this process with SOFTHSM2_CONF={0} (SoftHSMv2 reads it at C_Initialize)")]
    WrongEnvironment(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("SoftHSMv2: {0}")]
    Pkcs11(String),
}

/// An initialised token: its directory, config, PIN file and label.
#[derive(Clone, Debug)]
pub struct SoftHsmToken {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub pin_file: PathBuf,
    pub label: String,
    pub module: PathBuf,
}

impl SoftHsmToken {
    /// `DIR/softhsm2.conf`: the value `SOFTHSM2_CONF` must have.
    pub fn conf_path(dir: &Path) -> PathBuf {
        dir.join("softhsm2.conf")
    }

    /// Backend settings for this token, the PIN read from the PIN file.
    pub fn settings(&self) -> Result<Pkcs11Settings, SoftHsmError> {
        let pin = read_pin(&self.pin_file)?;
        let token = TokenSelector::Label(self.label.clone());
        Ok(Pkcs11Settings::new(self.module.clone(), token, pin))
    }

    /// The `[backend.pkcs11]` table for a config file in `self.dir`.
    pub fn config_table(&self) -> String {
        format!(
            "module = \"{}\"\ntoken_label = \"{}\"\npin_file = \"pin\"\n\
             softhsm2_conf = \"softhsm2.conf\"\n",
            self.module.display(),
            self.label
        )
    }
}

/// Initialises token `label` in `dir` (config in `dir/softhsm2.conf`, token files in
/// `dir/tokens`, user PIN in `dir/pin` with mode 0600; the random SO PIN is not kept).
/// Idempotent: an existing token with a PIN file is reused.
pub fn init_softhsm_token(dir: &Path, label: &str) -> Result<SoftHsmToken, SoftHsmError> {
    let module =
        find_softhsm_module().ok_or_else(|| SoftHsmError::NotInstalled(MODULE_PATHS.join(", ")))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| SoftHsmError::Io(dir.display().to_string(), e))?;
    let conf = SoftHsmToken::conf_path(&dir);
    let env_ok = std::env::var_os("SOFTHSM2_CONF").is_some_and(|v| Path::new(&v) == conf);
    if !env_ok {
        return Err(SoftHsmError::WrongEnvironment(conf.display().to_string()));
    }
    let token = SoftHsmToken {
        pin_file: dir.join("pin"),
        conf: conf.clone(),
        label: label.to_owned(),
        module,
        dir: dir.clone(),
    };
    write_conf(&dir, &conf)?;
    let p11 = Pkcs11::new(&token.module).map_err(pk)?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(pk)?;
    let result = init_in(&p11, &token);
    p11.finalize().map_err(pk)?;
    result.map(|()| token)
}

fn init_in(p11: &Pkcs11, token: &SoftHsmToken) -> Result<(), SoftHsmError> {
    let labelled = |p11: &Pkcs11| -> Result<Option<cryptoki::slot::Slot>, SoftHsmError> {
        let slots = p11.get_slots_with_token().map_err(pk)?;
        Ok(slots.into_iter().find(|s| {
            p11.get_token_info(*s)
                .is_ok_and(|t| t.token_initialized() && t.label() == token.label)
        }))
    };
    if labelled(p11)?.is_some() && token.pin_file.is_file() {
        return Ok(());
    }
    let free = p11
        .get_slots_with_token()
        .map_err(pk)?
        .into_iter()
        .find(|s| p11.get_token_info(*s).is_ok_and(|t| !t.token_initialized()))
        .ok_or_else(|| SoftHsmError::Pkcs11("no free slot".to_owned()))?;
    let so_pin = AuthPin::from(random_pin()?.as_str());
    let user_pin = random_pin()?;
    p11.init_token(free, &so_pin, &token.label).map_err(pk)?;
    // SoftHSMv2 renumbers the slot after C_InitToken: find it again by label.
    let slot = labelled(p11)?.ok_or_else(|| SoftHsmError::Pkcs11("token vanished".to_owned()))?;
    let session = p11.open_rw_session(slot).map_err(pk)?;
    session.login(UserType::So, Some(&so_pin)).map_err(pk)?;
    session
        .init_pin(&AuthPin::from(user_pin.as_str()))
        .map_err(pk)?;
    session.logout().map_err(pk)?;
    drop(session);
    write_private(&token.pin_file, user_pin.as_bytes())
}

fn pk(e: cryptoki::error::Error) -> SoftHsmError {
    SoftHsmError::Pkcs11(e.to_string())
}

fn write_conf(dir: &Path, conf: &Path) -> Result<(), SoftHsmError> {
    let tokens = dir.join("tokens");
    if !tokens.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tokens)
            .map_err(|e| SoftHsmError::Io(tokens.display().to_string(), e))?;
    }
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
         slots.removable = false\n",
        tokens.display()
    );
    std::fs::write(conf, text).map_err(|e| SoftHsmError::Io(conf.display().to_string(), e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SoftHsmError> {
    let io = |e| SoftHsmError::Io(path.display().to_string(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes)
        .and_then(|()| f.write_all(b"\n"))
        .map_err(io)
}

fn read_pin(path: &Path) -> Result<Pin, SoftHsmError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| SoftHsmError::Io(path.display().to_string(), e))?,
    );
    Ok(Pin::new(text.trim_end().to_owned()))
}

/// 32 hex characters from the OS RNG.
fn random_pin() -> Result<Zeroizing<String>, SoftHsmError> {
    let mut bytes = Zeroizing::new([0u8; 16]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SoftHsmError::Pkcs11(format!("RNG: {e}")))?;
    Ok(Zeroizing::new(hex::encode(bytes.as_ref())))
}
