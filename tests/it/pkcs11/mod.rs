//! PKCS#11 on real SoftHSMv2 tokens: the backend in this process (each test in a process of
//! its own), and `serve --dev --backend softhsm2`. The XKS suite and conformance also run
//! against a token (`xks::pkcs11`, `client::conformance`).

mod backend;
mod dev;
mod digest;
mod slow;
