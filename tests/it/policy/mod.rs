//! The policy engine and decision log inside the real server, every example policy, and
//! the policy and audit commands of the real binary.

mod examples;
mod server;
