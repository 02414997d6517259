//! The multi-thread runtime keygate serves on.
//!
//! tokio keeps the task a worker last woke or spawned in that worker's LIFO slot, which no
//! other worker can steal. A worker that blocks inside a PKCS#11 call (calls to a fast module
//! run inline on the worker, `keys/pkcs11/inline.rs`) strands whatever sits in its slot until
//! the call returns (tokio-rs/tokio#4941): under load, with one call held in the slow-HSM test
//! (`tests/it/pkcs11/slow.rs`), a second request's bytes stayed unread and the metrics
//! endpoint silent for 20 s in 4 of 117 runs; with the slot off, in none of 100. So keygate's
//! runtime turns the slot off.
//! The switch is one of tokio's unstable APIs: the build sets `--cfg tokio_unstable`
//! (`.cargo/config.toml`). A build without it (RUSTFLAGS set in the environment replaces the
//! config's) keeps the slot, and PKCS#11 calls then never run inline: they go to the blocking
//! pool, as they did before calls ran inline.

/// Whether runtimes from [`multi_thread`] have no LIFO slot, so a worker blocked in a call
/// strands no task: only then may a call block a runtime worker.
pub const NO_LIFO_SLOT: bool = cfg!(tokio_unstable);

/// A multi-thread runtime builder with I/O and time, and without the LIFO slot when the build
/// allows it ([`NO_LIFO_SLOT`]).
pub fn multi_thread() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder
}
