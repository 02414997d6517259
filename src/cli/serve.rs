//! `keygate serve`: the flags, the dev data dir, the TLS overrides; then `crate::serve` runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{EXIT_USAGE, load_config};
use crate::config::Config;
use crate::server::tls::{TlsSettings, TlsToml};
use crate::telemetry::{self, LogFormat};

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// The configuration file.
    #[arg(long, short = 'c', required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Development mode: create (first run) or reuse a config with generated credentials and
    /// software test keys in --data-dir.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Where --dev keeps its config, keys and secret.
    #[arg(long, default_value = "keygate-dev", requires = "dev")]
    data_dir: PathBuf,
    /// Key backend --dev creates: software keys, a SoftHSMv2 token in --data-dir, or Transit
    /// keys in the OpenBao server named by BAO_ADDR and BAO_TOKEN.
    #[arg(long, value_enum, default_value = "software", requires = "dev")]
    backend: DevBackend,
    /// Listen address, overriding the config (--dev default: 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Policy directory, replacing the config's `[policy] dir` and the embedded policy.
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Decision log file, replacing the config's `[decision_log] path`.
    #[arg(long)]
    decision_log: Option<PathBuf>,
    /// Log line format (default: json; text for `--dev` on a terminal).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Plain-HTTP admin listener (/ping, /healthz, /readyz), overriding `[admin] listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Serve the Kubernetes KMS v2 plugin on this Unix socket, overriding `[kms_v2] socket`
    /// (with --dev, on the dev key `foo` when the config has no `[kms_v2]`).
    #[arg(long, value_name = "PATH")]
    kms_v2_socket: Option<PathBuf>,
}

/// TLS flags; each overrides the same `[tls]` setting of the config file.
#[derive(Args, Debug, Default)]
struct TlsArgs {
    /// PEM file: server certificate followed by its intermediates.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM file: the server certificate's private key.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM bundle of CAs client certificates must chain to (turns on mTLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Name client certificates must carry as CN or SAN dNSName.
    #[arg(long)]
    client_name: Option<String>,
}

impl TlsArgs {
    fn given(&self) -> bool {
        self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.client_ca.is_some()
            || self.client_name.is_some()
    }

    fn into_toml(self) -> TlsToml {
        let abs = |p: Option<PathBuf>| p.map(|p| std::path::absolute(&p).unwrap_or(p));
        TlsToml {
            cert_chain: abs(self.tls_cert),
            key: abs(self.tls_key),
            client_ca: abs(self.client_ca),
            client_name: self.client_name,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DevBackend {
    Software,
    Softhsm2,
    /// OpenBao (or Vault) Transit named by BAO_ADDR/BAO_TOKEN or VAULT_ADDR/VAULT_TOKEN.
    Openbao,
}

pub(super) fn serve(args: ServeArgs) -> ExitCode {
    use std::io::IsTerminal as _;
    let format = args
        .log_format
        .unwrap_or(if args.dev && std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        });
    let _log_guard = telemetry::init(format);
    let path = match (&args.config, args.dev) {
        (Some(p), _) => p.clone(),
        (None, _) => {
            let listen = args
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
            let boot = match args.backend {
                DevBackend::Software => crate::dev::bootstrap(&args.data_dir, listen),
                DevBackend::Softhsm2 => crate::dev::softhsm2::ensure_environment(&args.data_dir)
                    .and_then(|()| crate::dev::softhsm2::bootstrap(&args.data_dir, listen)),
                DevBackend::Openbao => crate::dev::openbao::bootstrap(&args.data_dir, listen),
            };
            match boot {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("keygate: cannot prepare the dev data dir: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut config = match load_config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = super::backend_environment(&config) {
        return code;
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.policy_dir {
        config.policy.dir = Some(dir);
    }
    if let Some(path) = args.decision_log {
        match &mut config.decision_log {
            Some(log) => log.path = path,
            None => {
                config.decision_log = Some(crate::config::DecisionLogSettings::at(path));
            }
        }
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = Some(admin);
    }
    let kms_v2_overridden = args.kms_v2_socket.is_some();
    if let Some(socket) = args.kms_v2_socket
        && let Err(code) = apply_kms_v2_socket(&mut config, socket, args.dev)
    {
        return code;
    }
    if args.dev && config.decision_log.is_none() {
        // A dev dir made before the dev config had a [decision_log] table.
        config.decision_log = Some(crate::config::DecisionLogSettings::at(
            args.data_dir.join(crate::dev::DECISION_LOG),
        ));
    }
    let dev_ca = match apply_tls(&mut config, args.tls, args.dev.then_some(&args.data_dir)) {
        Ok(ca) => ca,
        Err(code) => return code,
    };
    let runtime = match crate::runtime::multi_thread().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = crate::serve::Options {
        dev_ca: args.dev.then_some(dev_ca).flatten(),
        dev: args.dev,
        listen_overridden: args.listen.is_some(),
        kms_v2_overridden,
    };
    match runtime.block_on(crate::serve::run(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "keygate stopped");
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--kms-v2-socket`: replaces `[kms_v2] socket`, or (with --dev) adds the plugin on the dev
/// key `foo`.
fn apply_kms_v2_socket(config: &mut Config, socket: PathBuf, dev: bool) -> Result<(), ExitCode> {
    let socket = std::path::absolute(&socket).unwrap_or(socket);
    let limit = crate::kms_v2::socket::MAX_PATH_LEN - 24;
    if socket.as_os_str().len() > limit {
        eprintln!(
            "keygate: --kms-v2-socket {} is too long for a Unix socket path (at most {limit} bytes)",
            socket.display()
        );
        return Err(ExitCode::from(EXIT_USAGE));
    }
    match &mut config.kms_v2 {
        Some(k) => k.socket = socket,
        None if dev => config.kms_v2 = Some(crate::config::KmsV2Settings::dev(socket)),
        None => {
            eprintln!("keygate: --kms-v2-socket needs a [kms_v2] table in the config (or --dev)");
            return Err(ExitCode::from(EXIT_USAGE));
        }
    }
    Ok(())
}

/// Applies the TLS flags over `[tls]`. In dev mode the development certificate in the data
/// dir is made (or remade when expired) first and is the base the flags override, so
/// `--client-ca`/`--client-name` alone serve mTLS with it. Returns the CA file the dev
/// banner names.
fn apply_tls(
    config: &mut Config,
    flags: TlsArgs,
    dev_dir: Option<&PathBuf>,
) -> Result<Option<PathBuf>, ExitCode> {
    let mut dev_ca = None;
    if let Some(dir) = dev_dir {
        match crate::dev::certs::ensure_dev_server(&dir.join(crate::dev::TLS_DIR)) {
            Ok((server, ca)) => {
                if config.tls.is_none() {
                    config.tls = Some(TlsSettings::new(server.cert, server.key));
                }
                dev_ca = Some(ca);
            }
            Err(e) => {
                eprintln!("keygate: cannot prepare the development certificate: {e}");
                return Err(ExitCode::FAILURE);
            }
        }
    }
    if !flags.given() {
        return Ok(dev_ca);
    }
    if flags.tls_cert.is_some() {
        // The dev banner then shows https; the CA is whoever issued --tls-cert.
        dev_ca = dev_dir.map(|_| PathBuf::from("<CA of --tls-cert>"));
    }
    let base = config
        .tls
        .as_ref()
        .map(TlsSettings::to_toml)
        .unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_default();
    config.tls = Some(
        base.overridden_by(flags.into_toml())
            .check(&cwd)
            .map_err(|problems| {
                eprintln!("keygate: the TLS settings are not valid:");
                for p in &problems {
                    eprintln!("  - {p}");
                }
                ExitCode::from(EXIT_USAGE)
            })?,
    );
    Ok(dev_ca)
}
