//! keygate's integration tests: one binary, a module per area, the real server (in this
//! process or as the real binary) driven over real sockets. Shared pieces live in `support`.
//!
//! Run one area with a filter: `cargo test --test it ops::reload`.

// Test code (clippy's allow-*-in-tests settings only reach #[test] functions, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

mod audit;
mod cli;
mod client;
mod dev;
mod edges;
mod faults;
mod first_hour;
mod flood;
mod kms_v2;
mod limits;
mod monitoring;
mod openbao;
mod ops;
mod pkcs11;
mod policy;
mod secrets;
mod tls;
mod xks;
