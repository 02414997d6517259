//! The KMS v2 wire types and gRPC stubs, generated at build time from proto/kms_v2.proto
//! (build.rs). Nothing here is written by hand.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::default_trait_access,
    clippy::doc_markdown
)]

include!(concat!(env!("OUT_DIR"), "/v2.rs"));
