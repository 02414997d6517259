//! `keygate keys` (the key backend's keys) and `keygate keystore` (credentials and the KMS
//! console's proxy configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{EXIT_USAGE, load_config};
use crate::config::edit::{self, EditError, KeyListEdit};
use crate::config::{BackendKind, Config};
use crate::credentials::{AccessKeyId, Secret};
use crate::keys::openbao::OpenBaoAdmin;
use crate::keys::pkcs11::Pkcs11Admin;
use crate::keys::software::SoftwareAdmin;
use crate::keys::{KeyAdmin, KeyListing, KeyUsage};

#[derive(Args, Debug)]
pub(super) struct KeysArgs {
    #[arg(long, short = 'c')]
    config: PathBuf,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Create a key (AES-256).
    Create {
        key_id: String,
        /// Comma-separated: encrypt, decrypt, or none.
        #[arg(long, default_value = "encrypt,decrypt")]
        usage: String,
        /// Also add the key to this key store's `keys` in the config file (comments and
        /// layout kept), so the key store may use it once the config is reloaded.
        #[arg(long, value_name = "NAME")]
        keystore: Option<String>,
    },
    /// List keys with usage and status.
    List,
    /// Show one key.
    Show { key_id: String },
    /// Disable a key: metadata reports DISABLED, encrypt and decrypt are refused.
    Disable { key_id: String },
    /// Enable a key.
    Enable { key_id: String },
    /// Add a new key version for new encryptions; old versions still decrypt.
    Rotate { key_id: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum KeystoreCommand {
    /// Print the key store's proxy configuration in the JSON the KMS console accepts.
    ConsoleJson {
        #[arg(long, short = 'c')]
        config: PathBuf,
        #[arg(long)]
        keystore: Option<String>,
        /// Which of the key store's credentials (its access key id); default the first.
        #[arg(long)]
        access_key_id: Option<String>,
    },
    /// Generate a spec-conformant access key id and secret.
    NewCredential,
}

fn open_admin(config: &Config) -> Result<Box<dyn KeyAdmin>, String> {
    match &config.backend.kind {
        BackendKind::Software { key_file } => Ok(Box::new(SoftwareAdmin::open(key_file)?)),
        BackendKind::Pkcs11(settings) => Ok(Box::new(Pkcs11Admin::open(settings)?)),
        BackendKind::OpenBao(settings) => Ok(Box::new(OpenBaoAdmin::open(settings)?)),
    }
}

pub(super) fn keys(args: KeysArgs) -> ExitCode {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = super::backend_environment(&config) {
        return code;
    }
    if let KeysAction::Create {
        key_id,
        usage,
        keystore: Some(keystore),
    } = &args.action
    {
        return create_for_keystore(&config, key_id, usage, keystore);
    }
    let result = open_admin(&config).and_then(|mut admin| match args.action {
        KeysAction::Create { key_id, usage, .. } => {
            let usage = KeyUsage::parse_list(&usage)?;
            admin.create(&key_id, usage).map(|l| vec![l])
        }
        KeysAction::List => admin.list(),
        KeysAction::Show { key_id } => admin
            .list()?
            .into_iter()
            .find(|k| k.id == key_id)
            .map(|l| vec![l])
            .ok_or(format!("no key {key_id:?}")),
        KeysAction::Disable { key_id } => admin.set_enabled(&key_id, false).map(|l| vec![l]),
        KeysAction::Enable { key_id } => admin.set_enabled(&key_id, true).map(|l| vec![l]),
        KeysAction::Rotate { key_id } => admin.rotate(&key_id).map(|l| vec![l]),
    });
    match result {
        Ok(rows) => {
            print_keys(&rows);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `keys create ID --keystore NAME`: checks that the key store exists and its `keys` can be
/// edited before the key is created, then adds the key to the list in the config file.
fn create_for_keystore(config: &Config, key_id: &str, usage: &str, keystore: &str) -> ExitCode {
    let file = config.path.as_path();
    if let Err(e) = planned_key_list(file, keystore, key_id) {
        eprintln!("keygate: {e}; no key was created");
        return ExitCode::from(match e {
            EditError::Io { .. } => 1,
            EditError::UnknownKeystore { .. } | EditError::Shape { .. } => EXIT_USAGE,
        });
    }
    let created =
        KeyUsage::parse_list(usage).and_then(|usage| open_admin(config)?.create(key_id, usage));
    match created {
        Ok(listing) => print_keys(&[listing]),
        Err(e) => {
            eprintln!("keygate: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Planned again on the file as it is now, in case it changed meanwhile.
    let written = planned_key_list(file, keystore, key_id).and_then(|edit| match edit {
        KeyListEdit::AlreadyListed => Ok(false),
        KeyListEdit::Added(text) => edit::replace_file(file, &text).map(|()| true),
    });
    match written {
        Ok(true) => {
            println!(
                "added {key_id:?} to the keys of key store {keystore:?} in {}; a running \
                 keygate uses it after its next config reload (within seconds, or at once on \
                 SIGHUP)",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!(
                "key store {keystore:?} already lists {key_id:?}; {} is unchanged",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "keygate: key {key_id:?} was created but not added to key store {keystore:?}: \
                 {e}; add it to that key store's `keys` in {} by hand",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// The config file with `key_id` in `keystore`'s `keys`, checked as a whole config.
fn planned_key_list(file: &Path, keystore: &str, key_id: &str) -> Result<KeyListEdit, EditError> {
    let text = std::fs::read_to_string(file).map_err(|source| EditError::Io {
        what: "read",
        file: file.display().to_string(),
        source,
    })?;
    let edit = edit::add_key(&text, file, keystore, key_id)?;
    if let KeyListEdit::Added(new) = &edit {
        Config::parse(new, file).map_err(|e| EditError::Shape {
            file: file.display().to_string(),
            reason: format!("the edited file would not be a valid config: {e}"),
        })?;
    }
    Ok(edit)
}

fn print_keys(rows: &[KeyListing]) {
    println!(
        "{:<32} {:<16} {:<9} {:>8}  PROTECTION",
        "KEY ID", "USAGE", "STATUS", "VERSIONS"
    );
    for k in rows {
        let status = if k.enabled { "ENABLED" } else { "DISABLED" };
        println!(
            "{:<32} {:<16} {:<9} {:>8}  {}",
            k.id,
            k.usage.to_string(),
            status,
            k.versions,
            k.protection
        );
    }
}

pub(super) fn keystore(cmd: KeystoreCommand) -> ExitCode {
    match cmd {
        KeystoreCommand::NewCredential => match (AccessKeyId::generate(), Secret::generate()) {
            (Ok(id), Ok(secret)) => {
                println!("access_key_id = \"{id}\"\nsecret = \"{}\"", secret.expose());
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("keygate: the system random number generator failed");
                ExitCode::FAILURE
            }
        },
        KeystoreCommand::ConsoleJson {
            config,
            keystore,
            access_key_id,
        } => {
            let config = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match console_json(&config, keystore.as_deref(), access_key_id.as_deref()) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygate: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
    }
}

/// The proxy configuration file the KMS console accepts for a key store.
pub fn console_json(
    config: &Config,
    keystore: Option<&str>,
    access_key_id: Option<&str>,
) -> Result<String, String> {
    let ks = config.keystore(keystore)?;
    let (id, secret) = match access_key_id {
        Some(want) => ks.credentials.iter().find(|(id, _)| id.as_str() == want),
        None => ks.credentials.first(),
    }
    .ok_or("no such credential in this key store")?;
    let json = serde_json::json!({
        "XksProxyUriPath": format!("{}/kms/xks/v1", ks.uri_prefix),
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": id.as_str(),
            "RawSecretAccessKey": secret.expose(),
        }
    });
    Ok(json.to_string())
}
