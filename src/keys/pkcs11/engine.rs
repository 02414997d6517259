//! The blocking core: runs one operation on a pooled session with the key-handle cache,
//! retries once on a stale handle or broken session, and re-initialises the module when the
//! token or device fails. Everything here blocks; `pkcs11.rs` calls it off the reactor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use moka::sync::Cache;

use super::ckr::{self, Verdict};
use super::facts::KeyFacts;
use super::settings::Pkcs11Settings;
use super::token::{Token, TokenFacts};
use crate::keys::{KeyError, KeyOp};

/// A failure inside one attempt.
#[derive(Debug)]
pub enum Fault {
    /// A PKCS#11 call failed; `ckr::classify` decides what it means.
    Ck(RvError, Function),
    /// A decided outcome (not found, disabled, bad IV length...).
    Key(KeyError),
}

impl From<CkError> for Fault {
    fn from(e: CkError) -> Fault {
        match e {
            CkError::Pkcs11(rv, f) => Fault::Ck(rv, f),
            other => Fault::Key(KeyError::Unavailable(other.to_string())),
        }
    }
}

/// A cached key: its handle in the current module generation and its attributes.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub handle: ObjectHandle,
    pub facts: KeyFacts,
    generation: u64,
    /// When `facts` were read from the token.
    read_at: Instant,
}

#[derive(Debug)]
enum State {
    Up(Box<Token>),
    Down { reason: String, since: Instant },
}

#[derive(Debug)]
pub struct Engine {
    pub settings: Pkcs11Settings,
    state: RwLock<State>,
    cache: Cache<String, Arc<KeyEntry>>,
    generation: AtomicU64,
    last_facts: Mutex<TokenFacts>,
}

impl Engine {
    /// Opens the token now: a module or token that is not there fails start-up.
    pub fn open(settings: Pkcs11Settings) -> Result<Engine, KeyError> {
        let token = Token::open(&settings, 1).map_err(|e| KeyError::Unavailable(e.to_string()))?;
        let cache = Cache::builder()
            .max_capacity(10_000)
            .time_to_live(settings.key_cache_ttl)
            .build();
        Ok(Engine {
            last_facts: Mutex::new(token.facts.clone()),
            settings,
            state: RwLock::new(State::Up(Box::new(token))),
            cache,
            generation: AtomicU64::new(1),
        })
    }

    /// What the token said about itself when last opened.
    pub fn facts(&self) -> TokenFacts {
        self.last_facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` on a pooled session for `key_id`; a stale handle empties the handle cache (the
    /// handle may be one of the key's versions) and the call is tried once more.
    pub fn run<T>(
        &self,
        op: KeyOp,
        key_id: &str,
        mut f: impl FnMut(&Engine, &Token, &Session) -> Result<T, Fault>,
    ) -> Result<T, KeyError> {
        let mut retried = false;
        loop {
            let guard = self.up()?;
            let State::Up(token) = &*guard else {
                return Err(KeyError::Unavailable(
                    "PKCS#11 token unavailable".to_owned(),
                ));
            };
            let generation = token.generation;
            let attempt = token.checkout().map_err(Fault::from).and_then(|session| {
                let r = f(self, token, &session);
                match &r {
                    Err(Fault::Ck(rv, func)) if broken(*rv, *func) => drop(session),
                    _ => token.checkin(session),
                }
                r
            });
            let fault = match attempt {
                Ok(v) => return Ok(v),
                Err(fault) => fault,
            };
            let (rv, func) = match fault {
                Fault::Key(KeyError::NotFound) => {
                    let probe = token.probe();
                    drop(guard);
                    return match probe {
                        Ok(()) => Err(KeyError::NotFound),
                        Err(e) => Err(self.down(generation, &format!("token probe: {e}"))),
                    };
                }
                Fault::Key(e) => return Err(e),
                Fault::Ck(rv, func) => (rv, func),
            };
            drop(guard);
            let verdict = ckr::classify(rv, func);
            match verdict {
                // The handle may be a version's (`K/vN`): forget them all, it is rare.
                Verdict::StaleHandle => {
                    tracing::debug!(key_id, "stale PKCS#11 object handle; looking keys up again");
                    self.cache.invalidate_all();
                }
                Verdict::BrokenSession => {}
                Verdict::DeviceDown => {
                    let why = ckr::key_error(verdict, rv, func, op).to_string();
                    let err = self.down(generation, &why);
                    if retried {
                        return Err(err);
                    }
                }
                _ => return Err(ckr::key_error(verdict, rv, func, op)),
            }
            if retried {
                return Err(ckr::key_error(verdict, rv, func, op));
            }
            retried = true;
        }
    }

    /// The key's cached entry, or a fresh lookup by CKA_LABEL.
    pub fn key(&self, token: &Token, s: &Session, key_id: &str) -> Result<Arc<KeyEntry>, Fault> {
        if let Some(entry) = self.cache.get(key_id)
            && entry.generation == token.generation
        {
            return Ok(entry);
        }
        let handle = find_key(s, key_id)?;
        let facts = read_facts(s, handle, key_id)?;
        self.remember(token, key_id, handle, facts)
    }

    /// The cached entry when its attributes were read less than `max_age` ago from the token
    /// that is up now; never touches the token (no session, no blocking).
    pub fn recent(&self, key_id: &str, max_age: Duration) -> Option<Arc<KeyEntry>> {
        let entry = self.cache.get(key_id)?;
        let guard = self.state.try_read().ok()?;
        match &*guard {
            State::Up(token)
                if entry.generation == token.generation && entry.read_at.elapsed() < max_age =>
            {
                Some(entry)
            }
            _ => None,
        }
    }

    /// Re-reads the attributes of the key's handle (GetKeyMetadata wants them current).
    pub fn fresh(&self, token: &Token, s: &Session, key_id: &str) -> Result<Arc<KeyEntry>, Fault> {
        let handle = self.key(token, s, key_id)?.handle;
        let facts = read_facts(s, handle, key_id)?;
        self.remember(token, key_id, handle, facts)
    }

    fn remember(
        &self,
        token: &Token,
        key_id: &str,
        handle: ObjectHandle,
        facts: KeyFacts,
    ) -> Result<Arc<KeyEntry>, Fault> {
        let entry = Arc::new(KeyEntry {
            handle,
            facts,
            generation: token.generation,
            read_at: Instant::now(),
        });
        self.cache.insert(key_id.to_owned(), entry.clone());
        Ok(entry)
    }

    /// A read guard on an Up state, re-initialising first when the module is down and the
    /// back-off has passed.
    fn up(&self) -> Result<RwLockReadGuard<'_, State>, KeyError> {
        {
            let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
            match &*guard {
                State::Up(_) => return Ok(guard),
                State::Down { reason, since }
                    if since.elapsed() < self.settings.reconnect_backoff =>
                {
                    return Err(KeyError::Unavailable(reason.clone()));
                }
                State::Down { .. } => {}
            }
        }
        self.reinit(None);
        let guard = self.state.read().unwrap_or_else(PoisonError::into_inner);
        match &*guard {
            State::Up(_) => Ok(guard),
            State::Down { reason, .. } => Err(KeyError::Unavailable(reason.clone())),
        }
    }

    /// Marks generation `failed` down and tries to re-initialise at once.
    fn down(&self, failed: u64, why: &str) -> KeyError {
        tracing::warn!(
            reason = why,
            "PKCS#11 token failed; re-initialising the module"
        );
        self.reinit(Some((failed, why)));
        KeyError::Unavailable(format!("PKCS#11 token failed: {why}"))
    }

    /// Finalizes the current module (if it is `failed`, or down) and opens it again.
    fn reinit(&self, failed: Option<(u64, &str)>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let reason = match (&*state, failed) {
            (State::Up(t), Some((g, why))) if t.generation == g => why.to_owned(),
            (State::Up(_), _) => return,
            (State::Down { since, .. }, _) if since.elapsed() < self.settings.reconnect_backoff => {
                return;
            }
            (State::Down { reason, .. }, _) => reason.clone(),
        };
        // Drop the old Token (C_Finalize) before C_Initialize runs again.
        *state = State::Down {
            reason: reason.clone(),
            since: Instant::now(),
        };
        self.cache.invalidate_all();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        match Token::open(&self.settings, generation) {
            Ok(token) => {
                tracing::info!(generation, "PKCS#11 module re-initialised");
                *self
                    .last_facts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = token.facts.clone();
                *state = State::Up(Box::new(token));
            }
            Err(e) => {
                let reason = format!("PKCS#11 token unavailable: {e} (after: {reason})");
                tracing::warn!(%reason, "re-initialisation failed");
                *state = State::Down {
                    reason,
                    since: Instant::now(),
                };
            }
        }
    }
}

/// A key's attributes and, for a key (not one of its later versions), its current version.
fn read_facts(s: &Session, handle: ObjectHandle, label: &str) -> Result<KeyFacts, Fault> {
    let mut facts = KeyFacts::read(s, handle)?;
    if !super::versions::is_later_version(label) {
        facts.info.current_version = super::versions::current(s, label)?;
    }
    Ok(facts)
}

/// Whether a failed call leaves the session unusable (it is then closed, not pooled).
fn broken(rv: RvError, func: Function) -> bool {
    matches!(
        ckr::classify(rv, func),
        Verdict::BrokenSession | Verdict::DeviceDown
    )
}

/// The one secret key whose CKA_LABEL is `key_id`.
pub fn find_key(session: &Session, key_id: &str) -> Result<ObjectHandle, Fault> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(key_id.as_bytes().to_vec()),
    ];
    let found = session.find_objects(&template)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Fault::Key(KeyError::NotFound)),
        many => Err(Fault::Key(KeyError::Unavailable(format!(
            "{} secret keys carry the label {key_id:?}; keygate needs exactly one",
            many.len()
        )))),
    }
}
