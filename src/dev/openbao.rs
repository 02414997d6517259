//! `keygate serve --dev --backend openbao`: with BAO_ADDR/BAO_TOKEN (or VAULT_ADDR/VAULT_TOKEN)
//! naming a server and an operator's token, make sure the server has what the dev config
//! needs, then write the config (first run) and serve:
//!
//! - a Transit mount `keygate` (enabled when absent),
//! - the four dev keys and the health key (`aes256-gcm96`, created when absent),
//! - the ACL policy `keygate-dev` granting exactly those keys' paths with their usage,
//! - a periodic token with only that policy (and `default`, for lookup and renewal), kept
//!   in `DIR/openbao.token` (0600) and made again when the stored one no longer works
//!   (a dev server forgets everything when it stops).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{CONFIG_NAME, DEV_KEYS, HEALTH_KEY, write_dev_config, write_private};
use crate::keys::openbao::{AuthMethod, OpenBaoAdmin, OpenBaoSettings, SecretSource, Verb};
use crate::keys::{KeyAdmin, KeyUsage};

pub const MOUNT: &str = "keygate";
pub const POLICY: &str = "keygate-dev";
pub const TOKEN_FILE: &str = "openbao.token";
/// The dev token renews itself within this period, indefinitely.
const TOKEN_PERIOD: &str = "24h";

/// The server address and operator token from the environment.
fn environment() -> Result<(String, Zeroizing<String>), String> {
    let var = |names: [&str; 2]| names.iter().find_map(|n| std::env::var(n).ok());
    let addr = var(["BAO_ADDR", "VAULT_ADDR"])
        .ok_or("set BAO_ADDR (or VAULT_ADDR) to the OpenBao server, e.g. http://127.0.0.1:8200")?;
    let token = var(["BAO_TOKEN", "VAULT_TOKEN"])
        .ok_or("set BAO_TOKEN (or VAULT_TOKEN) to a token that may set up Transit and policies")?;
    Ok((addr, Zeroizing::new(token)))
}

/// Prepares the server and the data dir; returns the config path.
pub fn bootstrap(dir: &Path, listen: SocketAddr) -> Result<PathBuf, String> {
    let dir = super::softhsm2::data_dir(dir)?;
    let config_path = dir.join(CONFIG_NAME);
    let (addr, operator) = match environment() {
        Ok(env) => env,
        Err(_) if config_path.exists() => return Ok(config_path),
        Err(e) => return Err(e),
    };
    let settings = OpenBaoSettings {
        policy: POLICY.to_owned(),
        ..OpenBaoSettings::new(
            &addr,
            MOUNT,
            AuthMethod::Token(SecretSource::File(dir.join(TOKEN_FILE))),
        )
    };
    if settings.tls() {
        return Err(format!(
            "{addr}: serve --dev speaks plain http to a local dev server; write a config with ca_file for https"
        ));
    }
    let mut admin = OpenBaoAdmin::with_token(&settings, operator)?;
    ensure_mount(&admin)?;
    let keys = DEV_KEYS
        .iter()
        .copied()
        .chain(std::iter::once((HEALTH_KEY, KeyUsage::BOTH)));
    for (id, usage) in keys {
        if admin
            .raw(Verb::Get, &format!("{MOUNT}/keys/{id}"), None)?
            .status
            == 404
        {
            admin.create(id, usage)?;
        } else {
            admin.grant(id, usage)?;
        }
    }
    ensure_token(&admin, &dir)?;
    if !config_path.exists() {
        let backend = format!(
            "# The keys are OpenBao Transit keys in mount {MOUNT} at {addr}; keygate's token\n\
             # (policy {POLICY}) is in {TOKEN_FILE}.\n\n\
             [backend]\nkind = \"openbao\"\nhealth_key = \"{HEALTH_KEY}\"\n\n\
             [backend.openbao]\naddress = \"{addr}\"\nmount = \"{MOUNT}\"\n\
             token_file = \"{TOKEN_FILE}\"\npolicy = \"{POLICY}\"\n"
        );
        write_dev_config(&dir, listen, &backend)?;
    }
    Ok(config_path)
}

fn ensure_mount(admin: &OpenBaoAdmin) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Mount {
        #[serde(rename = "type")]
        kind: String,
    }
    let answer = admin.raw(Verb::Get, &format!("sys/mounts/{MOUNT}"), None)?;
    if (200..300).contains(&answer.status) {
        let m: Mount = admin.data(Verb::Get, &format!("sys/mounts/{MOUNT}"), None)?;
        return match m.kind.as_str() {
            "transit" => Ok(()),
            other => Err(format!(
                "mount {MOUNT}/ exists but is a {other} engine, not transit"
            )),
        };
    }
    admin.write(
        Verb::Post,
        &format!("sys/mounts/{MOUNT}"),
        Some(serde_json::json!({"type": "transit", "description": "keygate (serve --dev)"})),
    )
}

/// Keeps the stored token when it still works; otherwise makes a new one.
fn ensure_token(admin: &OpenBaoAdmin, dir: &Path) -> Result<(), String> {
    let path = dir.join(TOKEN_FILE);
    if let Ok(token) = SecretSource::File(path.clone()).read()
        && admin.token_works(&token)?
    {
        return Ok(());
    }
    let answer = admin.raw(
        Verb::Post,
        "auth/token/create",
        Some(serde_json::json!({
            "policies": [POLICY],
            "period": TOKEN_PERIOD,
            "renewable": true,
            "display_name": "keygate-dev",
        })),
    )?;
    let reply: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("auth/token/create: {e}"))?;
    let token = reply
        .pointer("/auth/client_token")
        .and_then(serde_json::Value::as_str)
        .map(|t| Zeroizing::new(t.to_owned()))
        .ok_or_else(|| {
            format!(
                "auth/token/create answered {}: {}",
                answer.status,
                reply.get("errors").unwrap_or(&serde_json::Value::Null)
            )
        })?;
    answer.scrub();
    write_private(&path, &token)
}
