//! The decision log as auditors use it: OPA-shaped events checked against the JSON Schema,
//! shipping to an OPA decision-log collector, and signed digests checked by
//! `keygate audit verify`; the log under disk pressure on a real small filesystem.

mod bounded;
pub mod digest;
pub mod event;
mod lifecycle;
mod mask;
mod pressure;
mod upload;
