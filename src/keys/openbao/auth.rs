//! keygate's own token: where it comes from (a token file or variable, or an AppRole login),
//! and the task that keeps it alive: `renew-self` at two thirds of its lease, a fresh AppRole
//! login when it cannot be renewed any more, the token file read again when it changes, and
//! an immediate check when the server refuses the token. Requests read the current token
//! without waiting; the token is never logged.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

use super::client::{BaoHttp, Verb};
use super::settings::{AuthMethod, SecretSource};
use super::transit::{self, Envelope};
use crate::keys::{KeyError, KeyOp};

/// The token requests carry.
#[derive(Clone)]
pub struct Token(Arc<Zeroizing<String>>);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What requests see.
#[derive(Clone, Debug)]
pub enum AuthState {
    /// The first token is being obtained.
    Starting,
    Ready(Token),
    /// No usable token, and why (health reports it).
    Failed(String),
}

/// A token and its lease, as the server told.
struct Lease {
    token: Token,
    /// `None`: the token does not expire (a root token).
    ttl: Option<Duration>,
    renewable: bool,
    /// The token file's modification time when it was read.
    stamp: Option<SystemTime>,
}

/// Shared between the backend and its renewal task.
#[derive(Debug)]
pub struct Auth {
    method: AuthMethod,
    state: watch::Sender<AuthState>,
    /// Wakes the task early (the server refused the token).
    kick: Notify,
}

/// Why a round of token upkeep failed.
#[derive(Debug)]
enum Upkeep {
    /// The server could not be reached: a token already in use stays in use.
    Transport(String),
    /// The server (or the token source) refused: there is no usable token.
    Refused(String),
}

impl Upkeep {
    fn text(&self) -> &str {
        match self {
            Upkeep::Transport(m) | Upkeep::Refused(m) => m,
        }
    }
}

impl From<super::client::HttpError> for Upkeep {
    fn from(e: super::client::HttpError) -> Upkeep {
        Upkeep::Transport(e.to_string())
    }
}

/// Shortest wait between two attempts that failed.
const RETRY: Duration = Duration::from_secs(2);

impl Auth {
    pub fn new(method: AuthMethod) -> Arc<Auth> {
        let (state, _) = watch::channel(AuthState::Starting);
        Arc::new(Auth {
            method,
            state,
            kick: Notify::new(),
        })
    }

    /// The current token; waits only while the first one is being obtained (callers bound
    /// the wait with their request timeout).
    pub async fn token(&self) -> Result<Token, KeyError> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                AuthState::Ready(t) => return Ok(t.clone()),
                AuthState::Failed(why) => return Err(KeyError::Unavailable(why.clone())),
                AuthState::Starting => {}
            }
            if rx.changed().await.is_err() {
                return Err(KeyError::Unavailable("OpenBao login stopped".into()));
            }
        }
    }

    /// Why there is no usable token, if there is none.
    pub fn problem(&self) -> Option<String> {
        match &*self.state.borrow() {
            AuthState::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// The server refused the token: check it now.
    pub fn refused(&self) {
        self.kick.notify_one();
    }

    /// Keeps the token alive until `auth` or `http` is dropped.
    pub fn spawn(auth: &Arc<Auth>, http: &Arc<BaoHttp>) -> tokio::task::JoinHandle<()> {
        let (auth, http) = (Arc::downgrade(auth), Arc::downgrade(http));
        tokio::spawn(maintain(auth, http))
    }

    fn set(&self, s: AuthState) {
        self.state.send_replace(s);
    }
}

async fn maintain(auth: Weak<Auth>, http: Weak<BaoHttp>) {
    let mut lease: Option<Lease> = None;
    loop {
        let (Some(a), Some(h)) = (auth.upgrade(), http.upgrade()) else {
            return;
        };
        let previous = lease.as_ref().map(|l| (l.token.clone(), l.stamp));
        let wait = match step(&a, &h, &mut lease).await {
            Ok(wait) => wait,
            Err(Upkeep::Transport(why)) if previous.is_some() => {
                // Keep the token in use; the server may be back in a moment.
                tracing::warn!(error = %why, "OpenBao token upkeep failed; retrying");
                if let Some((token, stamp)) = previous {
                    lease = Some(Lease {
                        token,
                        ttl: Some(Duration::ZERO),
                        renewable: false,
                        stamp,
                    });
                }
                RETRY
            }
            Err(e) => {
                tracing::warn!(error = %e.text(), "OpenBao: keygate has no usable token");
                a.set(AuthState::Failed(e.text().to_owned()));
                RETRY
            }
        };
        drop(h);
        let kicked = async { a.kick.notified().await };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = kicked => {
                // The server refused the token: look it up again before trusting it.
                if let Some(l) = lease.as_mut() {
                    l.ttl = Some(Duration::ZERO);
                }
            }
        }
        drop(a);
    }
}

/// One round: obtain a token if there is none, otherwise renew (or replace) it when due.
/// Returns how long to sleep.
async fn step(a: &Auth, h: &BaoHttp, lease: &mut Option<Lease>) -> Result<Duration, Upkeep> {
    let current = match lease.take() {
        None => obtain(a, h).await?,
        Some(l) => refresh(a, h, l).await?,
    };
    a.set(AuthState::Ready(current.token.clone()));
    let wait = match current.ttl {
        None => Duration::from_secs(60),
        Some(ttl) => (ttl * 2 / 3).max(Duration::from_secs(1)),
    };
    *lease = Some(current);
    Ok(wait)
}

/// A token from the configured source (file, variable or AppRole login), looked up.
async fn obtain(a: &Auth, h: &BaoHttp) -> Result<Lease, Upkeep> {
    match &a.method {
        AuthMethod::Token(source) => {
            let stamp = source.stamp();
            let token = Token(Arc::new(
                source
                    .read()
                    .map_err(|e| Upkeep::Refused(format!("token {e}")))?,
            ));
            lookup(h, token, stamp).await
        }
        AuthMethod::AppRole {
            mount,
            role_id,
            secret_id,
        } => login(h, mount, role_id, secret_id).await,
    }
}

/// The token is due: renew it, or replace it when it cannot be renewed (AppRole) or the
/// token file changed.
async fn refresh(a: &Auth, h: &BaoHttp, l: Lease) -> Result<Lease, Upkeep> {
    if let AuthMethod::Token(source) = &a.method
        && source.stamp() != l.stamp
    {
        tracing::info!(source = %source, "OpenBao token file changed; using the new token");
        return obtain(a, h).await;
    }
    if l.ttl == Some(Duration::ZERO) {
        // Kicked: is the token still good?
        return match lookup(h, l.token.clone(), l.stamp).await {
            Ok(fresh) => Ok(fresh),
            Err(Upkeep::Refused(_)) if matches!(a.method, AuthMethod::AppRole { .. }) => {
                obtain(a, h).await
            }
            Err(e) => Err(e),
        };
    }
    if l.ttl.is_none() {
        return Ok(l);
    }
    let renewed = if l.renewable {
        renew(h, &l).await
    } else {
        Err(Upkeep::Refused("the token is not renewable".to_owned()))
    };
    match (renewed, &a.method) {
        (Ok(r), _) => Ok(r),
        (Err(e @ Upkeep::Transport(_)), _) => Err(e),
        (Err(why), AuthMethod::AppRole { .. }) => {
            tracing::info!(reason = %why.text(), "OpenBao token not renewed; logging in again with AppRole");
            obtain(a, h).await
        }
        (Err(why), AuthMethod::Token(_)) => {
            let why = why.text();
            tracing::warn!(reason = %why, "OpenBao token could not be renewed; it stays in use until it expires");
            Ok(Lease {
                ttl: Some(Duration::from_secs(30)),
                ..l
            })
        }
    }
}

async fn lookup(h: &BaoHttp, token: Token, stamp: Option<SystemTime>) -> Result<Lease, Upkeep> {
    #[derive(serde::Deserialize)]
    struct Look {
        #[serde(default)]
        ttl: u64,
        #[serde(default)]
        renewable: bool,
    }
    let answer = h
        .call(
            Verb::Get,
            "auth/token/lookup-self",
            Some(token.expose()),
            None,
        )
        .await?;
    let d: Look = transit::data(&answer, KeyOp::Encrypt)
        .map_err(|e| Upkeep::Refused(format!("{e} (auth/token/lookup-self)")))?;
    Ok(Lease {
        token,
        ttl: (d.ttl > 0).then(|| Duration::from_secs(d.ttl)),
        renewable: d.renewable,
        stamp,
    })
}

async fn renew(h: &BaoHttp, l: &Lease) -> Result<Lease, Upkeep> {
    let answer = h
        .call(
            Verb::Post,
            "auth/token/renew-self",
            Some(l.token.expose()),
            Some(b"{}".to_vec()),
        )
        .await?;
    let env = auth_answer(&answer).map_err(Upkeep::Refused)?;
    // A lease capped by the token's max TTL shrinks at every renewal: a sign it ends soon.
    let ttl = Duration::from_secs(env.lease_duration);
    if ttl < Duration::from_secs(3) {
        return Err(Upkeep::Refused(format!(
            "renewal granted only {}s",
            env.lease_duration
        )));
    }
    Ok(Lease {
        token: l.token.clone(),
        ttl: Some(ttl),
        renewable: env.renewable,
        stamp: l.stamp,
    })
}

async fn login(
    h: &BaoHttp,
    mount: &str,
    role_id: &SecretSource,
    secret_id: &SecretSource,
) -> Result<Lease, Upkeep> {
    let role = role_id
        .read()
        .map_err(|e| Upkeep::Refused(format!("AppRole role id {e}")))?;
    let secret = secret_id
        .read()
        .map_err(|e| Upkeep::Refused(format!("AppRole secret id {e}")))?;
    let body = Zeroizing::new(
        serde_json::json!({"role_id": role.as_str(), "secret_id": secret.as_str()}).to_string(),
    );
    let answer = h
        .call(
            Verb::Post,
            &format!("auth/{mount}/login"),
            None,
            Some(body.as_bytes().to_vec()),
        )
        .await?;
    let auth = auth_answer(&answer).map_err(|e| Upkeep::Refused(format!("AppRole login: {e}")))?;
    tracing::info!(ttl_secs = auth.lease_duration, "OpenBao AppRole login");
    Ok(Lease {
        token: Token(Arc::new(auth.client_token)),
        ttl: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
        renewable: auth.renewable,
        stamp: None,
    })
}

fn auth_answer(answer: &super::client::Answer) -> Result<transit::AuthData, String> {
    let env: Envelope<serde_json::Value> = transit::parse(answer).map_err(|e| e.to_string())?;
    if !(200..300).contains(&answer.status) {
        return Err(format!(
            "OpenBao answered {}: {}",
            answer.status,
            env.errors.join("; ")
        ));
    }
    env.auth
        .ok_or_else(|| format!("OpenBao answered {} without auth", answer.status))
}
