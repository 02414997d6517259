//! keygate: an AWS KMS External Key Store (XKS) proxy.
//!
//! A request flows one way:
//!
//! ```text
//! server.rs         accept (connection permit), per-connection deadlines (server/timed_io.rs)
//! server/tls.rs     TLS handshake, mTLS client name, certificate reload
//! router.rs         match path -> InvalidUriPathException (before auth); 405; capped body read
//! sigv4.rs          verify against the key store's credentials -> AuthenticationFailedException
//! xks/api.rs        decode JSON into typed, bounded requests -> ValidationException
//! policy.rs         Rego secondary authorization (Encrypt, Decrypt, GetKeyMetadata; never
//!                   health) -> AccessDeniedException; policy/decision_log.rs records it
//! xks.rs            key in key store -> KeyNotFoundException; run the operation:
//!   xks/envelope.rs   AAD framing, ciphertext metadata, CDIV
//!   keys.rs           trait KeyBackend (keys/software.rs: aes-gcm)
//! xks/error.rs      any error -> (status, {"errorName","errorMessage"}) in one match
//! router.rs         one structured log line per request
//! ```
//!
//! `App` (app.rs) is built once from a checked `Config` (config.rs) and passed down; there
//! are no globals. `health.rs` caches the deep health check.

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
pub mod metrics;
pub mod policy;
pub mod random;
pub mod reload;
pub mod router;
pub mod sanitize;
pub mod serve;
pub mod server;
pub mod shed;
pub mod sigv4;
pub mod telemetry;
pub mod xks;
