//! Criterion benchmarks of the TLS layer: full handshakes in memory (TLS 1.3, TLS 1.2, TLS 1.3
//! with the mTLS client-name verifier) and building a configuration from files (the cost of a
//! certificate reload).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::dev::certs::{self, DevOptions, Pair};
use keygate::server::tls::{self, ClientName, Refusals, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConnection};

fn client(
    ca: &std::path::Path,
    cert: Option<&Pair>,
    v: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[v])
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some(p) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&p.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&p.key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

fn transfer(from: &mut Connection, to: &mut Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets().unwrap();
    }
}

fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) {
    let mut s = Connection::Server(ServerConnection::new(server.clone()).unwrap());
    let mut c = Connection::Client(
        ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap(),
    );
    while s.is_handshaking() || c.is_handshaking() {
        transfer(&mut c, &mut s);
        transfer(&mut s, &mut c);
    }
}

fn handshakes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let set = certs::write_dev_set(dir.path(), &DevOptions::default()).unwrap();
    let plain = TlsSettings::new(set.server.cert.clone(), set.server.key.clone());
    let mtls = plain.clone().with_client_auth(
        set.ca.cert.clone(),
        ClientName::parse(certs::DEFAULT_CLIENT_NAME).unwrap(),
    );
    let refusals = Refusals::new();
    let server = tls::server_config(&plain, &refusals).unwrap();
    let server_mtls = tls::server_config(&mtls, &refusals).unwrap();
    let v13 = &rustls::version::TLS13;
    let v12 = &rustls::version::TLS12;

    let cl = client(&set.ca.cert, None, v13);
    c.bench_function("tls13 handshake", |b| b.iter(|| handshake(&server, &cl)));
    let cl = client(&set.ca.cert, None, v12);
    c.bench_function("tls12 handshake", |b| b.iter(|| handshake(&server, &cl)));
    let cl = client(&set.ca.cert, Some(&set.client), v13);
    c.bench_function("tls13 handshake with mTLS", |b| {
        b.iter(|| handshake(&server_mtls, &cl))
    });
    c.bench_function("build config from files (reload)", |b| {
        b.iter(|| tls::server_config(&mtls, &refusals).unwrap())
    });
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
