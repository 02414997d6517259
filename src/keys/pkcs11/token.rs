//! One initialised PKCS#11 module with a logged-in token and its pool of idle sessions.
//!
//! A `Token` owns the module's `C_Initialize`: dropping it closes every session and calls
//! `C_Finalize`, so at most one `Token` per module may exist in a process at a time.

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::ckr::ckr_name;
use super::settings::{Pkcs11Settings, TokenSelector};

/// What the module and token say about themselves (for health and `ekmVendor`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFacts {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub hardware: String,
    pub library: String,
}

impl TokenFacts {
    /// `ekmVendor`: "<manufacturer> (serial number: <serial>)".
    pub fn vendor(&self) -> String {
        format!("{} (serial number: {})", self.manufacturer, self.serial)
    }

    /// `ekmFleetDetails[].model`.
    pub fn model_line(&self) -> String {
        format!(
            "{} (firmware version: {}, hardware version: {}; module: {})",
            self.model, self.firmware, self.hardware, self.library
        )
    }
}

/// Why a token could not be opened. Never contains the PIN.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The process lacks what the module reads from its environment.
    #[error("{0}")]
    Environment(String),
    #[error("cannot load PKCS#11 module {0}: {1}")]
    Load(String, String),
    #[error(
        "the PKCS#11 module is already initialised in this process (another backend or admin \
         of the same module is open)"
    )]
    AlreadyInitialized,
    #[error("{0} not found on the PKCS#11 module")]
    NoToken(String),
    #[error("{0} is present on more than one slot")]
    AmbiguousToken(String),
    #[error("the token rejected the user PIN ({0})")]
    Pin(String),
    #[error("{0:?} failed: {1}")]
    Call(Function, String),
    #[error("{0}")]
    Other(String),
}

impl From<CkError> for OpenError {
    fn from(e: CkError) -> OpenError {
        match e {
            CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _) => {
                OpenError::AlreadyInitialized
            }
            CkError::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
                | RvError::PinLocked
                | RvError::UserPinNotInitialized),
                _,
            ) => OpenError::Pin(ckr_name(rv)),
            CkError::Pkcs11(rv, f) => OpenError::Call(f, ckr_name(rv)),
            other => OpenError::Other(other.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct Token {
    pub generation: u64,
    pub slot: Slot,
    pub facts: TokenFacts,
    idle: Mutex<Vec<Session>>,
    login: Mutex<Option<Session>>,
    pkcs11: Option<Pkcs11>,
}

impl Token {
    /// Loads and initialises the module, finds the token and logs the user in.
    pub fn open(settings: &Pkcs11Settings, generation: u64) -> Result<Token, OpenError> {
        if let Some(problem) = settings.environment_problem() {
            return Err(OpenError::Environment(problem));
        }
        let pkcs11 = Pkcs11::new(&settings.module)
            .map_err(|e| OpenError::Load(settings.module.display().to_string(), e.to_string()))?;
        pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
        // From here on a failure must finalize again: build the Token first so Drop does it.
        let mut token = Token {
            generation,
            slot: Slot::try_from(0u64).map_err(|e| OpenError::Other(e.to_string()))?,
            facts: TokenFacts::default(),
            idle: Mutex::new(Vec::new()),
            login: Mutex::new(None),
            pkcs11: Some(pkcs11.clone()),
        };
        token.slot = find_slot(&pkcs11, &settings.token)?;
        token.facts = read_facts(&pkcs11, token.slot)?;
        let session = pkcs11.open_rw_session(token.slot)?;
        let pin = AuthPin::from(settings.pin.expose());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(e.into()),
        }
        *lock(&token.login) = Some(session);
        Ok(token)
    }

    /// A session from the pool, or a new one (the login is application-wide).
    pub fn checkout(&self) -> Result<Session, CkError> {
        if let Some(s) = lock(&self.idle).pop() {
            return Ok(s);
        }
        self.context()?.open_rw_session(self.slot)
    }

    /// Returns a healthy session to the pool.
    pub fn checkin(&self, session: Session) {
        lock(&self.idle).push(session);
    }

    /// Cheap liveness probe: `C_GetTokenInfo`.
    pub fn probe(&self) -> Result<(), CkError> {
        self.context()?.get_token_info(self.slot).map(|_| ())
    }

    pub fn context(&self) -> Result<&Pkcs11, CkError> {
        self.pkcs11.as_ref().ok_or(CkError::Pkcs11(
            RvError::CryptokiNotInitialized,
            Function::GetTokenInfo,
        ))
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        lock(&self.idle).clear();
        lock(&self.login).take();
        if let Some(p) = self.pkcs11.take()
            && let Err(e) = p.finalize()
        {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn find_slot(pkcs11: &Pkcs11, which: &TokenSelector) -> Result<Slot, OpenError> {
    let slots = pkcs11.get_slots_with_token()?;
    let mut found = Vec::new();
    for slot in slots {
        let hit = match which {
            TokenSelector::SlotId(id) => slot.id() == *id,
            TokenSelector::Label(label) => pkcs11
                .get_token_info(slot)
                .is_ok_and(|t| t.token_initialized() && t.label() == label),
        };
        if hit {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(OpenError::NoToken(which.to_string())),
        _ => Err(OpenError::AmbiguousToken(which.to_string())),
    }
}

fn read_facts(pkcs11: &Pkcs11, slot: Slot) -> Result<TokenFacts, CkError> {
    let t = pkcs11.get_token_info(slot)?;
    let lib = pkcs11.get_library_info()?;
    Ok(TokenFacts {
        label: t.label().to_owned(),
        manufacturer: t.manufacturer_id().to_owned(),
        model: t.model().to_owned(),
        serial: t.serial_number().to_owned(),
        firmware: t.firmware_version().to_string(),
        hardware: t.hardware_version().to_string(),
        library: format!(
            "{} {} v{}",
            lib.manufacturer_id(),
            lib.library_description(),
            lib.library_version()
        ),
    })
}
