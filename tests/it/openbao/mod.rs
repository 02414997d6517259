//! OpenBao Transit on a real `bao server -dev` per test: the backend in this process (faults,
//! health, renewal, AppRole) and the real binary (error names, rotation, `keygate keys`,
//! conformance, `serve --dev --backend openbao`). The XKS suite also runs against it
//! (`xks::openbao`).

mod backend;
mod server;
