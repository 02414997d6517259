//! `keygate audit`: verify decision logs (hash chain, checkpoints, signed digests), make or
//! show the key digests are signed with, and compute a masked value (audit/mask.rs). Exit codes: 0 success, 1 a problem was found (or a
//! command failed), 64 usage or configuration error.

mod mask;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{EXIT_USAGE, load_config};
use crate::config::{BackendKind, Config};
use crate::keys::pkcs11::Pkcs11Admin;
use crate::policy::decision_log::chain::{Checkpoint, GENESIS, Verified, Verifier};
use crate::policy::decision_log::digest::verify::{self, DigestReport};
use crate::policy::decision_log::segments;
use crate::policy::decision_log::settings::DigestKey;
use crate::signing::{Algorithm, DigestSigner, Ed25519FileKey, PublicKey};

/// `keygate audit ...`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check decision-log files (oldest first): the hash chain, checkpoints, and with
    /// --digests the signed digests; report the first problem.
    Verify(VerifyArgs),
    /// Make the digest signing key: an Ed25519 key file (--out), or a key pair in the PKCS#11
    /// token of a config (--config). Prints the public key (PEM) and its fingerprint.
    Keygen(KeygenArgs),
    /// Print the public key (PEM) of the digest key a config names.
    PublicKey(PublicKeyArgs),
    /// Print the HMAC a [decision_log.mask] hmac rule writes for VALUE (`hmac-sha256:<hex>`),
    /// to find or check a masked member with the key.
    Mask(mask::MaskArgs),
}

/// `keygate audit verify FILE...|DIR|GLOB`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Decision-log files, plain or compressed (`.zst`, `.gz`): the log's directory, a glob
    /// (`'logs/decisions.log*'`), or files (put in chain order when they are one log's). Given
    /// the whole log, a start after a file that no retention line records is an error.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// A line's `seq` and `hash` recorded outside the log (from a `decision log checkpoint`
    /// line in keygate's own log): the files must hold that line with that hash, which shows
    /// a log cut off at the end or rewritten after it. Repeatable.
    #[arg(long = "checkpoint", value_name = "SEQ:HASH")]
    pub checkpoints: Vec<Checkpoint>,
    /// The log's digest directory: every digest must be signed by a --public-key, chained to
    /// the one before, and match the files.
    #[arg(long, value_name = "DIR", requires = "public_keys")]
    pub digests: Option<PathBuf>,
    /// Public key (PEM) the digests are signed with; repeat it across a key rotation.
    #[arg(long = "public-key", value_name = "PEM", requires = "digests")]
    pub public_keys: Vec<PathBuf>,
    /// Judge the newest digest's age as of this RFC 3339 time instead of now (for copies
    /// verified later).
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Exit 1 when the log records lost lines (`lines_lost` lines: fail-open dropped lines it
    /// could not write). Without it such a log verifies (exit 0): the chain is intact and the
    /// loss is recorded in it, and the report says how many were lost.
    #[arg(long)]
    pub fail_on_lost: bool,
}

/// `keygate audit keygen`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write a new Ed25519 private key here (PKCS#8 PEM, mode 0600; never overwritten).
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    pub out: Option<PathBuf>,
    /// Or: generate the key pair in the PKCS#11 token of this config (backend.kind = pkcs11),
    /// labelled as its decision_log.digest.pkcs11_key_label (or --label).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The token key's label (default: the config's pkcs11_key_label).
    #[arg(long, requires = "config")]
    pub label: Option<String>,
    /// The token key's algorithm: ecdsa-p256 or ed25519.
    #[arg(long, default_value = "ecdsa-p256", requires = "config")]
    pub algorithm: String,
    /// Also write the public key (PEM) to this file.
    #[arg(long)]
    pub public_out: Option<PathBuf>,
}

/// `keygate audit public-key --config FILE`
#[derive(Debug, Args)]
pub struct PublicKeyArgs {
    /// The config whose [decision_log.digest] key to show.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

/// Runs a `keygate audit` subcommand.
pub fn run(args: AuditArgs) -> ExitCode {
    let mut out = std::io::stdout();
    match args.command {
        AuditCommand::Verify(a) => report(run_verify(&a, &mut out)),
        AuditCommand::Keygen(a) => keygen(&a),
        AuditCommand::PublicKey(a) => public_key(&a),
        AuditCommand::Mask(a) => mask::run(&a),
    }
}

fn report(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|e| {
        eprintln!("keygate: {e:#}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// `keygate audit verify`: the chain across the files (and the digests), or the first problem.
pub fn run_verify(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (files, whole) = match log_files(&args.files) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("keygate: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let checkpoints = args.checkpoints.clone();
    let outcome = match &args.digests {
        None => Verifier::verify_files_with(&paths, checkpoints).map(|v| (v, None)),
        Some(dir) => {
            let keys = args
                .public_keys
                .iter()
                .map(|p| PublicKey::read(p))
                .collect::<Result<Vec<_>, _>>()?;
            let now = match &args.as_of {
                Some(t) => crate::policy::parse_rfc3339(t)
                    .with_context(|| format!("--as-of {t:?} is not an RFC 3339 time"))?,
                None => SystemTime::now(),
            };
            verify::verify(&paths, checkpoints, dir, &keys, now).map(|(v, d)| (v, Some(d)))
        }
    };
    match outcome {
        Ok((v, _)) if whole && v.starts_from != GENESIS && v.dropped_by_retention.is_none() => {
            let first = paths.first().map(|p| p.display().to_string());
            writeln!(
                out,
                "BROKEN: {}:1: the log starts after {} (prev_hash {}), which is missing: no \
                 retention line in the log records dropping it",
                first.unwrap_or_default(),
                v.continues.as_deref().unwrap_or("an earlier file"),
                v.starts_from
            )?;
            Ok(ExitCode::FAILURE)
        }
        Ok((v, digests)) => {
            writeln!(out, "{}", summary(&v, paths.len(), digests.as_ref()))?;
            let lost: u64 = v.lines_lost.iter().map(|(_, n)| n).sum();
            if args.fail_on_lost && lost > 0 {
                writeln!(
                    out,
                    "LOST: the log records {lost} lost lines (--fail-on-lost)"
                )?;
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            writeln!(out, "BROKEN: {b}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The files to verify, in chain order, and whether they are the whole log on disk (a
/// directory, a glob, or every file of one log).
fn log_files(given: &[PathBuf]) -> Result<(Vec<PathBuf>, bool), String> {
    match given {
        [one] if one.is_dir() => return Ok((segments::in_dir(one)?, true)),
        [one] if segments::is_glob(one) => return Ok((segments::glob(one)?, true)),
        _ => {}
    }
    let mut files = given.to_vec();
    if !segments::chain_order(&mut files) {
        return Ok((files, false));
    }
    // Every file of one log, its live file among them?
    let whole = files.last().is_some_and(|live| {
        let on_disk: Vec<PathBuf> = segments::all(live).into_iter().map(|s| s.path).collect();
        on_disk.len() == files.len()
            && on_disk
                .iter()
                .all(|p| files.iter().any(|f| same_file(f, p)))
    });
    Ok((files, whole))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn summary(v: &Verified, files: usize, digests: Option<&DigestReport>) -> String {
    let start = match (&v.continues, v.starts_from.as_str()) {
        (_, GENESIS) => "the start of the log".to_owned(),
        (Some(file), hash) if let Some(seq) = v.dropped_by_retention => format!(
            "{file} (prev_hash {hash}), dropped by the retention policy (retention line seq {seq})"
        ),
        (Some(file), hash) => format!("{file} (prev_hash {hash})"),
        (None, hash) => format!("prev_hash {hash}"),
    };
    let mut line = format!(
        "OK: {} lines in {files} files; chain continues from {start}; last seq {}, last hash {}; \
         {} checkpoints matched; {} files dropped by retention lines",
        v.lines, v.last_seq, v.last_hash, v.checkpoints, v.dropped_files
    );
    line.push_str(&lost_summary(&v.lines_lost));
    if let Some(d) = digests {
        let first = match d.first {
            Some((n, true)) => format!("from digest {n} (which continues an earlier one)"),
            Some((n, false)) => format!("from digest {n}"),
            None => String::new(),
        };
        line.push_str(&format!(
            "; {} digests {first} signed by {}",
            d.digests,
            d.keys.join(", ")
        ));
        if let Some((name, reason, end, seq)) = &d.newest {
            line.push_str(&format!(
                "; newest {name} ({reason:?}, ended {end}) covers seq 1..{seq}; {} lines after \
                 it not yet covered",
                d.uncovered
            ));
        }
    }
    line
}

/// `; N lines lost in K episodes (lines_lost lines seq A, B)`, or `; no lines lost`.
fn lost_summary(lost: &[(u64, u64)]) -> String {
    const SHOWN: usize = 10;
    if lost.is_empty() {
        return "; no lines lost".to_owned();
    }
    let total: u64 = lost.iter().map(|(_, n)| n).sum();
    let mut seqs: Vec<String> = lost
        .iter()
        .take(SHOWN)
        .map(|(s, _)| s.to_string())
        .collect();
    if lost.len() > SHOWN {
        seqs.push("...".to_owned());
    }
    format!(
        "; {total} lines lost in {} episodes (lines_lost lines seq {})",
        lost.len(),
        seqs.join(", ")
    )
}

fn keygen(args: &KeygenArgs) -> ExitCode {
    let public = match (&args.out, &args.config) {
        (Some(out), _) => keygen_file(out),
        (None, Some(config)) => keygen_token(config, args),
        (None, None) => Err("give --out FILE or --config FILE".into()),
    };
    finish(public.and_then(|p| print_public(&p, args.public_out.as_deref())))
}

/// Exit 0, or print the error and exit 1 (64 when the config was bad: already reported).
fn finish(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => ExitCode::from(EXIT_USAGE),
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen_file(out: &Path) -> Result<PublicKey, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let (pem, key) = Ed25519FileKey::generate().map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(key.public_key().clone())
}

fn keygen_token(config: &Path, args: &KeygenArgs) -> Result<PublicKey, String> {
    let algorithm = match args.algorithm.as_str() {
        "ecdsa-p256" => Algorithm::EcdsaP256Sha256,
        "ed25519" => Algorithm::Ed25519,
        other => return Err(format!("--algorithm {other:?}: use ecdsa-p256 or ed25519")),
    };
    let (config, mut admin) = token_admin(config)?;
    let label = match &args.label {
        Some(l) => l.clone(),
        None => token_label(&config)?,
    };
    admin.create_signing_key(&label, algorithm)
}

fn public_key(args: &PublicKeyArgs) -> ExitCode {
    let public = load_config(&args.config)
        .map_err(|_| String::new())
        .and_then(|config| match digest_key(&config)? {
            DigestKey::File(path) => Ed25519FileKey::read(&path)
                .map(|k| k.public_key().clone())
                .map_err(|e| e.to_string()),
            DigestKey::Pkcs11Label(label) => {
                let (_, admin) = token_admin(&args.config)?;
                admin.signing_public_key(&label)
            }
        });
    finish(public.and_then(|p| print_public(&p, None)))
}

fn digest_key(config: &Config) -> Result<DigestKey, String> {
    config
        .decision_log
        .as_ref()
        .and_then(|d| d.digest.as_ref())
        .map(|d| d.key.clone())
        .ok_or_else(|| {
            format!(
                "{} has no [decision_log.digest] table",
                config.path.display()
            )
        })
}

fn token_label(config: &Config) -> Result<String, String> {
    match digest_key(config)? {
        DigestKey::Pkcs11Label(label) => Ok(label),
        DigestKey::File(_) => {
            Err("the config's digest key is a key_file; give --label for a token key".to_owned())
        }
    }
}

/// The config and an admin session on its PKCS#11 token.
fn token_admin(path: &Path) -> Result<(Config, Pkcs11Admin), String> {
    let config = load_config(path).map_err(|_| String::new())?;
    super::backend_environment(&config).map_err(|_| String::new())?;
    let BackendKind::Pkcs11(settings) = &config.backend.kind else {
        return Err(format!("{}: backend.kind is not pkcs11", path.display()));
    };
    let admin = Pkcs11Admin::open(settings)?;
    Ok((config, admin))
}

fn print_public(public: &PublicKey, also: Option<&Path>) -> Result<(), String> {
    if let Some(path) = also {
        std::fs::write(path, public.to_pem()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout();
    let _ = write!(out, "{}", public.to_pem());
    eprintln!(
        "{} public key, fingerprint {}",
        public.algorithm().as_str(),
        public.fingerprint()
    );
    Ok(())
}
