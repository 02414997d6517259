//! `keygate certs dev`: development certificates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum CertsCommand {
    /// Write a development CA, a server certificate for localhost and 127.0.0.1 (full chain)
    /// and client certificates for tests (valid, wrong name, expired, self-signed, other CA).
    Dev {
        dir: PathBuf,
        /// CN and SAN of the valid client certificate.
        #[arg(long, default_value = crate::dev::certs::DEFAULT_CLIENT_NAME)]
        client_name: String,
    },
}

/// Runs a `certs` subcommand.
pub(super) fn run(cmd: CertsCommand) -> ExitCode {
    match cmd {
        CertsCommand::Dev { dir, client_name } => certs_dev(&dir, client_name),
    }
}

fn certs_dev(dir: &Path, client_name: String) -> ExitCode {
    let opts = crate::dev::certs::DevOptions {
        client_name,
        ..Default::default()
    };
    match crate::dev::certs::write_dev_set(dir, &opts) {
        Ok(set) => {
            println!(
                "wrote development certificates to {} (NOT for production)\n  CA:     {}\n  server: {} (full chain), {}\n  client: {}, {}",
                dir.display(),
                set.ca.cert.display(),
                set.server.cert.display(),
                set.server.key.display(),
                set.client.cert.display(),
                set.client.key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}
