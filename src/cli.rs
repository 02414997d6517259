//! The command line: clap definitions and one function per subcommand. Exit codes: 0 success,
//! 1 runtime failure, 64 usage or configuration error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::config::{BackendKind, Config};
use crate::credentials::{AccessKeyId, Secret};
use crate::keys::pkcs11::Pkcs11Admin;
use crate::keys::software::SoftwareAdmin;
use crate::keys::{KeyAdmin, KeyListing, KeyUsage};
use crate::server::tls::{TlsSettings, TlsToml};
use crate::telemetry::{self, LogFormat};

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
    Serve(ServeArgs),
    /// Check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the keys of the configured key backend.
    Keys(KeysArgs),
    /// Key store helpers for the AWS KMS console.
    #[command(subcommand)]
    Keystore(KeystoreCommand),
    /// Test any XKS proxy against the XKS API v1 specification.
    Conformance(crate::client::ConformanceArgs),
    /// Drive an XKS proxy with signed requests and report throughput and latency.
    Load(crate::client::LoadArgs),
    /// Test, evaluate and check Rego policies.
    Policy(crate::policy::cli::PolicyArgs),
    /// Verify decision logs.
    Audit(crate::policy::cli::AuditArgs),
    /// Certificates for development and tests.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Write a development CA, a server certificate for localhost and 127.0.0.1 (full chain)
    /// and client certificates for tests (valid, wrong name, expired, self-signed, other CA).
    Dev {
        dir: PathBuf,
        /// CN and SAN of the valid client certificate.
        #[arg(long, default_value = crate::certs::DEFAULT_CLIENT_NAME)]
        client_name: String,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
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
    /// Key backend --dev creates: software keys, or a SoftHSMv2 token in --data-dir.
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
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
    #[command(flatten)]
    tls: TlsArgs,
    /// Plain-HTTP admin listener (/ping, /healthz, /readyz), overriding `[admin] listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
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
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Check a configuration file and report every problem.
    Check { file: PathBuf },
}

#[derive(Args, Debug)]
struct KeysArgs {
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
enum KeystoreCommand {
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
        Command::Serve(a) => serve(a),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Keys(a) => keys(a),
        Command::Keystore(c) => keystore(c),
        Command::Policy(a) => report(crate::policy::cli::run_policy(&a, &mut std::io::stdout())),
        Command::Audit(a) => report(crate::policy::cli::run_audit(&a, &mut std::io::stdout())),
        Command::Certs(CertsCommand::Dev { dir, client_name }) => certs_dev(&dir, client_name),
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

fn report(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|e| {
        eprintln!("keygate: {e:#}");
        ExitCode::FAILURE
    })
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("keygate: configuration {} is not valid:", path.display());
        for p in &e.problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(EXIT_USAGE)
    })
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

fn serve(args: ServeArgs) -> ExitCode {
    let _log_guard = telemetry::init(args.log_format);
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
                config.decision_log = Some(crate::config::DecisionLogSettings {
                    path,
                    fail_closed: false,
                    rotate_bytes: None,
                    rotate_interval: None,
                });
            }
        }
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = Some(admin);
    }
    let dev_ca = match apply_tls(&mut config, args.tls, args.dev.then_some(&args.data_dir)) {
        Ok(ca) => ca,
        Err(code) => return code,
    };
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
    match runtime.block_on(serve_config(
        config,
        dev_ca,
        args.dev,
        args.listen.is_some(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "keygate stopped");
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Applies the TLS flags over `[tls]`; in dev mode without any TLS setting, uses (and if
/// needed makes) a development certificate in the data dir and returns its CA file.
fn apply_tls(
    config: &mut Config,
    flags: TlsArgs,
    dev_dir: Option<&PathBuf>,
) -> Result<Option<PathBuf>, ExitCode> {
    if flags.given() {
        let base = config
            .tls
            .as_ref()
            .map(TlsSettings::to_toml)
            .unwrap_or_default();
        let cwd = std::env::current_dir().unwrap_or_default();
        config.tls = Some(base.overridden_by(flags.into_toml()).check(&cwd).map_err(
            |problems| {
                eprintln!("keygate: the TLS settings are not valid:");
                for p in &problems {
                    eprintln!("  - {p}");
                }
                ExitCode::from(EXIT_USAGE)
            },
        )?);
        // The dev banner then shows https; the CA is whoever issued --tls-cert.
        return Ok(dev_dir.map(|_| PathBuf::from("<CA of --tls-cert>")));
    }
    let Some(dir) = dev_dir.filter(|_| config.tls.is_none()) else {
        return Ok(None);
    };
    match crate::certs::ensure_dev_server(&dir.join("tls")) {
        Ok((server, ca)) => {
            config.tls = Some(TlsSettings::new(server.cert, server.key));
            Ok(Some(ca))
        }
        Err(e) => {
            eprintln!("keygate: cannot prepare the development certificate: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn certs_dev(dir: &Path, client_name: String) -> ExitCode {
    let opts = crate::certs::DevOptions {
        client_name,
        ..Default::default()
    };
    match crate::certs::write_dev_set(dir, &opts) {
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

async fn serve_config(
    config: Config,
    dev_ca: Option<PathBuf>,
    dev: bool,
    listen_overridden: bool,
) -> Result<(), String> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let app = Arc::new(App::build(&config)?);
    if !app.backend.hardware_protected() {
        tracing::warn!(
            backend = app.backend.kind(),
            "keys are held by the software backend and are NOT protected by an HSM; use the pkcs11 backend in production"
        );
    }
    for (ks, key) in app.missing_keys().await {
        tracing::warn!(keystore = %ks, key_id = %key, "configured key is not in the key backend; requests for it get KeyNotFoundException");
    }
    let reloader = crate::reload::Reloader::new(app.clone(), &config, listen_overridden);
    let reloads = crate::reload::spawn(reloader, crate::reload::POLL_EVERY);
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, keystores = config.keystores.len(), backend = app.backend.kind(), version = env!("CARGO_PKG_VERSION"), "keygate listening");
    if dev && let Some(ks) = config.keystores.first() {
        let dir = config.path.parent().unwrap_or(Path::new("."));
        let ak = ks
            .credentials
            .first()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        // A closed stdout must not stop the server (println! would panic on EPIPE).
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            crate::dev::banner(
                dir,
                addr,
                &ks.uri_prefix,
                &ak,
                app.backend.kind(),
                dev_ca.as_deref()
            )
        );
    }
    app.health.refresh().await;
    let background = app.spawn_background();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if let Some(tls) = &app.tls {
        let poll = crate::server::tls::reload::POLL_INTERVAL;
        tokio::spawn(tls.clone().watch(poll, wait()));
    }
    if let Some(admin_addr) = config.admin_listen {
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|e| format!("cannot listen on {admin_addr} (admin): {e}"))?;
        tracing::info!(addr = %admin_addr, "admin listener on plain HTTP");
        let state = crate::admin::AdminState::new(
            env!("CARGO_PKG_VERSION"),
            Arc::new(crate::admin::AppReadiness::new(app.clone())),
        )
        .with_metrics(app.metrics.clone());
        tokio::spawn(crate::admin::run(admin, state, wait()));
    }
    crate::server::run(listener, app.clone(), async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await;
    background.abort();
    reloads.abort();
    app.finish().await;
    tracing::info!("keygate stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining connections");
}

fn open_admin(config: &Config) -> Result<Box<dyn KeyAdmin>, String> {
    match &config.backend.kind {
        BackendKind::Software { key_file } => Ok(Box::new(SoftwareAdmin::open(key_file)?)),
        BackendKind::Pkcs11(settings) => Ok(Box::new(Pkcs11Admin::open(settings)?)),
    }
}

fn keys(args: KeysArgs) -> ExitCode {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = open_admin(&config).and_then(|mut admin| match args.action {
        KeysAction::Create { key_id, usage } => {
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

fn keystore(cmd: KeystoreCommand) -> ExitCode {
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
