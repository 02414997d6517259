//! The command line: clap definitions and one function per subcommand, one file per command
//! group. Exit codes: 0 success, 1 runtime failure, 64 usage or configuration error.

mod audit;
mod certs;
mod keys;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

pub use keys::console_json;

/// Exit code for usage and configuration errors (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "keygate",
    version,
    about = "AWS KMS External Key Store (XKS) proxy with Rego policies"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the XKS Proxy API.
    Serve(serve::ServeArgs),
    /// Check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the keys of the configured key backend.
    Keys(keys::KeysArgs),
    /// Key store helpers for the AWS KMS console.
    #[command(subcommand)]
    Keystore(keys::KeystoreCommand),
    /// Test any XKS proxy against the XKS API v1 specification.
    Conformance(crate::client::ConformanceArgs),
    /// Drive an XKS proxy with signed requests and report throughput and latency.
    Load(crate::client::LoadArgs),
    /// Test, evaluate and check Rego policies.
    Policy(crate::policy::cli::PolicyArgs),
    /// Verify decision logs and their signed digests; make the digest signing key.
    Audit(audit::AuditArgs),
    /// Certificates for development and tests.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Check a configuration file and report every problem.
    Check { file: PathBuf },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    match cli.command {
        Command::Serve(a) => serve::serve(a),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Keys(a) => keys::keys(a),
        Command::Keystore(c) => keys::keystore(c),
        Command::Policy(a) => {
            policy_command(crate::policy::cli::run_policy(&a, &mut std::io::stdout()))
        }
        Command::Audit(a) => audit::run(a),
        Command::Certs(c) => certs::run(c),
        Command::Conformance(a) => client_command(crate::client::run_conformance(a)),
        Command::Load(a) => client_command(crate::client::run_load(a)),
    }
}

/// Runs `conformance` or `load` on a fresh runtime; a bad URL or TLS setup exits 64.
fn client_command(run: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            match e.downcast_ref::<crate::client::conn::ConnError>() {
                Some(
                    crate::client::conn::ConnError::Url(_) | crate::client::conn::ConnError::Tls(_),
                ) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `policy ...`: an input file not shaped like the policy input exits 64.
fn policy_command(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Err(e) if e.is::<crate::policy::cli::InputProblems>() => {
            eprintln!("keygate: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
        other => report(other),
    }
}

fn report(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|e| {
        eprintln!("keygate: {e:#}");
        ExitCode::FAILURE
    })
}

pub(crate) fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("keygate: configuration {} is not valid:", path.display());
        for p in &e.problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(EXIT_USAGE)
    })
}

/// Refuses (exit 64) to open a key backend whose module needs what this process's
/// environment lacks (SoftHSMv2's `SOFTHSM2_CONF`). Only commands that open the token call it.
pub(crate) fn backend_environment(config: &Config) -> Result<(), ExitCode> {
    let crate::config::BackendKind::Pkcs11(settings) = &config.backend.kind else {
        return Ok(());
    };
    match settings.environment_problem() {
        None => Ok(()),
        Some(problem) => {
            eprintln!("keygate: {problem}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

fn config_check(file: &Path) -> ExitCode {
    match load_config(file) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: OK ({} key store(s))",
                file.display(),
                c.keystores.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
