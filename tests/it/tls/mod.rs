//! TLS on the XKS listener: handshakes, mTLS, connection limits and certificate reload on
//! keygate's TLS pieces alone (`support::tls`'s echo server), then end to end through the
//! server and the binary.

mod cli;
mod e2e;
mod handshake;
mod hygiene;
mod mtls;
mod reload;
