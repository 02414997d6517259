//! `keygate conformance`: runs every case against one XKS proxy and reports per case.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use super::conn::{ConnError, Connection, Connector, Reply, Target};
use super::report::{CaseResult, ConformanceReport, Stopped, Verdict};
use super::sign::Signer;
use super::wire::{self, Op, Sealed};
use super::{ConnArgs, cases};

/// Flags of `keygate conformance`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConformanceArgs {
    /// Connection and credentials.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// A key allowed to encrypt and decrypt.
    #[arg(long, default_value = "foo")]
    pub key_id: String,
    /// A key allowed only to encrypt (its cases are skipped when not given).
    #[arg(long)]
    pub encrypt_only_key_id: Option<String>,
    /// A key allowed only to decrypt (its cases are skipped when not given).
    #[arg(long)]
    pub decrypt_only_key_id: Option<String>,
    /// A key allowed neither to encrypt nor decrypt (its cases are skipped when not given).
    #[arg(long)]
    pub no_usage_key_id: Option<String>,
    /// Print a machine-readable JSON report instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// The outcome of one case that did not fail.
#[derive(Debug)]
pub enum Done {
    /// The case passed.
    Pass,
    /// The case does not apply to this proxy (why).
    NotApplicable(String),
}

/// What a case returns: `Err` holds the failure text (`expected X got Y`).
pub type Check = Result<Done, String>;

/// A boxed case future.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Check> + Send + 'a>>;

/// Which optional key a case needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Only the main key.
    Nothing,
    /// `--encrypt-only-key-id`.
    EncryptOnly,
    /// `--decrypt-only-key-id`.
    DecryptOnly,
    /// `--no-usage-key-id`.
    NoUsage,
}

/// One conformance case.
#[derive(Debug)]
pub struct Case {
    /// Stable name, e.g. `path.unknown-prefix`.
    pub name: &'static str,
    /// Optional key it needs.
    pub needs: Needs,
    /// The check.
    pub run: for<'a> fn(&'a mut Ctx) -> CaseFuture<'a>,
}

/// The key ids under test.
#[derive(Clone, Debug)]
pub struct Keys {
    /// ENCRYPT + DECRYPT key.
    pub main: String,
    /// Encrypt-only key.
    pub encrypt_only: Option<String>,
    /// Decrypt-only key.
    pub decrypt_only: Option<String>,
    /// Key with neither usage.
    pub no_usage: Option<String>,
}

/// What every case works with: a keep-alive connection, the signer, the key ids.
#[derive(Debug)]
pub struct Ctx {
    connector: Connector,
    conn: Option<Connection>,
    /// Set when the proxy could not be reached (connection refused, TLS handshake failed,
    /// timed out): the run stops, since every case after it would fail the same way.
    unreachable: Option<String>,
    /// The correct signer.
    pub signer: Signer,
    /// Keys under test.
    pub keys: Keys,
}

impl Ctx {
    /// The target.
    pub fn target(&self) -> &Target {
        self.connector.target()
    }

    /// Sends a request on the kept-alive connection, reconnecting once if it was closed.
    /// A proxy that cannot be reached or does not answer in time marks the run to stop.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let mut last = String::new();
        for _attempt in 0..2 {
            let mut conn = match self.conn.take() {
                Some(c) if !c.is_closed() => c,
                _ => match self.connector.connect().await {
                    Ok(c) => c,
                    Err(e) => return Err(self.unreachable(&e)),
                },
            };
            match conn.send(clone_request(&req)).await {
                Ok(reply) => {
                    self.conn = Some(conn);
                    return Ok(reply);
                }
                Err(e @ ConnError::TimedOut { .. }) => return Err(self.unreachable(&e)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("transport error: {last}"))
    }

    fn unreachable(&mut self, e: &ConnError) -> String {
        let why = e.to_string();
        self.unreachable = Some(why.clone());
        format!("transport error: {why}")
    }

    /// A correctly signed POST of raw `body` bytes to `path`.
    pub async fn post_raw(&mut self, path: &str, body: Bytes) -> Result<Reply, String> {
        let req = wire::post(self.target(), &self.signer, path, body).map_err(|e| e.to_string())?;
        self.send(req).await
    }

    /// A correctly signed POST of `body` to operation `op` on `key`.
    pub async fn call(&mut self, op: Op, key: &str, body: &Value) -> Result<Reply, String> {
        let path = op.path(self.target(), key);
        self.post_raw(&path, wire::to_bytes(body)).await
    }

    /// Encrypts and checks the response shape (and CDIV when asked for); returns the output.
    pub async fn seal(
        &mut self,
        key: &str,
        plaintext: &[u8],
        aad: Option<&[u8]>,
        cdiv: bool,
    ) -> Result<Sealed, String> {
        let body = wire::encrypt_body(plaintext, aad, cdiv);
        let reply = self.call(Op::Encrypt, key, &body).await?;
        super::expect::ok_json(&reply).map_err(|e| format!("encrypt: {e}"))?;
        let sealed = Sealed::parse(&reply.body, plaintext.len())?;
        if cdiv {
            let want = sealed.expected_cdiv(aad);
            match &sealed.cdiv {
                Some(got) if got.as_slice() == want.as_slice() => {}
                Some(got) => {
                    return Err(format!(
                        "expected CDIV {} got {}",
                        wire::b64(&want),
                        wire::b64(got)
                    ));
                }
                None => return Err("expected ciphertextDataIntegrityValue got none".into()),
            }
        }
        Ok(sealed)
    }
}

fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn key_for(keys: &Keys, needs: Needs) -> Option<&'static str> {
    let (present, flag) = match needs {
        Needs::Nothing => return None,
        Needs::EncryptOnly => (keys.encrypt_only.is_some(), "--encrypt-only-key-id"),
        Needs::DecryptOnly => (keys.decrypt_only.is_some(), "--decrypt-only-key-id"),
        Needs::NoUsage => (keys.no_usage.is_some(), "--no-usage-key-id"),
    };
    (!present).then_some(flag)
}

/// Runs every case in order against one context, stopping at the first case that finds
/// the proxy unreachable (the report then says where and why, instead of failing every case).
pub async fn run_cases(ctx: &mut Ctx, table: &[Case]) -> ConformanceReport {
    let mut report = ConformanceReport::default();
    for (index, case) in table.iter().enumerate() {
        let verdict = match key_for(&ctx.keys, case.needs) {
            Some(flag) => Verdict::Skipped(format!("{flag} not given")),
            None => match (case.run)(ctx).await {
                Ok(Done::Pass) => Verdict::Passed,
                Ok(Done::NotApplicable(why)) => Verdict::Skipped(why),
                Err(why) => Verdict::Failed(why),
            },
        };
        if let Some(reason) = ctx.unreachable.take() {
            report.stopped = Some(Stopped {
                case: case.name.to_owned(),
                not_run: table.len().saturating_sub(index),
                total: table.len(),
                reason,
            });
            break;
        }
        report.results.push(CaseResult {
            name: case.name.to_owned(),
            verdict,
        });
    }
    report
}

/// `keygate conformance`: exit 0 when no case failed, 1 otherwise.
pub async fn run_conformance(args: ConformanceArgs) -> anyhow::Result<ExitCode> {
    let mut ctx = Ctx {
        connector: args.conn.connector()?,
        conn: None,
        unreachable: None,
        signer: args.conn.signer(),
        keys: Keys {
            main: args.key_id.clone(),
            encrypt_only: args.encrypt_only_key_id.clone(),
            decrypt_only: args.decrypt_only_key_id.clone(),
            no_usage: args.no_usage_key_id.clone(),
        },
    };
    let report = run_cases(&mut ctx, &cases::all()).await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(stopped) = &report.stopped {
        eprintln!("keygate: {stopped}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
