//! `keygate audit mask --key FILE VALUE`: the value a `[decision_log.mask]` hmac rule writes
//! for VALUE, so an auditor with the key can find or check a masked member.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::policy::decision_log::mask::MaskKey;

/// `keygate audit mask`
#[derive(Debug, Args)]
pub struct MaskArgs {
    /// The `hmac_key_file` of `[decision_log.mask]` (hex, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Take VALUE as JSON (a number, object, ...) rather than as a string.
    #[arg(long)]
    pub json: bool,
    /// The member's value as it was before masking (a string, or JSON with --json).
    pub value: String,
}

/// Prints `hmac-sha256:<hex>`: exit 0, 64 for a bad key file or bad JSON.
pub fn run(args: &MaskArgs) -> ExitCode {
    let value = if args.json {
        match serde_json::from_str(&args.value) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("keygate: --json: the value is not JSON: {e}");
                return ExitCode::from(super::EXIT_USAGE);
            }
        }
    } else {
        serde_json::Value::String(args.value.clone())
    };
    match MaskKey::read(&args.key) {
        Ok(key) => {
            println!("{}", key.tag(&value));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keygate: --key: {e}");
            ExitCode::from(super::EXIT_USAGE)
        }
    }
}
