//! The Kubernetes KMS v2 door over its real Unix socket: a Rust gRPC client on the software
//! backend in this process (round trip, tampering, rotation, policy, the decision log and
//! metrics), the real binary on SoftHSMv2 (round trip, the token lost and back), the real
//! binary's socket handling, and an independent Python grpcio client.

mod e2e;
mod process;
mod python;
