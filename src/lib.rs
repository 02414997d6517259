//! keygate: an AWS KMS External Key Store (XKS) proxy and Kubernetes KMS v2 plugin, built as a
//! gate engine with front doors and key backends. Arrows point one way (down):
//!
//! ```text
//! front door  server.rs        accept under caps (server/conn_cap.rs), TLS (server/tls.rs), drain
//!             router.rs        HTTP: message checks, path, 405, in-flight cap, capped body read,
//!                              the one response and the one request log line
//! gate        xks.rs           SigV4 (sigv4.rs) -> key store rate limit -> parse (xks/api.rs)
//!                              -> judge -> key operation (xks/envelope.rs, keys.rs) -> close the
//!                              judgement; xks/error.rs maps every error to the wire in one match
//! policy      policy.rs        Rego on regorus; policy/authorizer.rs: Authorizer::judge and
//!                              Judgement::record, the only way a decision line is written;
//!                              policy/decision_log/ the hash-chained log (one writer thread;
//!                              compression and retention on a lifecycle thread)
//! front door  kms_v2/listener.rs  Kubernetes KMS v2 on a Unix socket (kms_v2/socket.rs):
//!                              SO_PEERCRED, gRPC over HTTP/2 (kms_v2/service.rs), drain
//! gate        kms_v2.rs        check -> judge (the same Authorizer) -> key operation
//!                              (kms_v2/envelope.rs) -> close; kms_v2/error.rs -> gRPC codes
//! keys        keys.rs          trait KeyBackend: keys/software/ (aes-gcm), keys/pkcs11/ (cryptoki)
//! ```
//!
//! `App` (app.rs) is the composition root, built once from a checked `Config` (config.rs) and
//! handing out narrow handles; `serve.rs` wires `keygate serve` and its ordered shutdown on
//! the runtime `runtime.rs` builds (no LIFO slot, so a worker blocked in an HSM call strands
//! no task); `reload.rs` is the one reload supervisor. There are no globals. Development-only
//! tooling lives in `dev/`; `client/` is an independent XKS client (conformance and load).

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod health;
pub mod keys;
pub mod kms_v2;
pub mod metrics;
pub mod policy;
pub mod random;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod sanitize;
pub mod serve;
pub mod server;
pub mod shed;
pub mod signing;
pub mod sigv4;
pub mod telemetry;
pub mod xks;
