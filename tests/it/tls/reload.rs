//! Certificate reload without restart: a new certificate, key or client CA takes effect for
//! new connections while a keep-alive connection opened before stays up; a bad certificate
//! leaves the old one in force; file changes and SIGHUP trigger the reload on their own.

use std::time::Duration;

use keygate::dev::certs::{self, DevCa};
use keygate::server::tls::RefusalReason;
use rustls::pki_types::CertificateDer;
use rustls::version::TLS13;
use rustls::{AlertDescription, Error};

use crate::support::own_process;
use crate::support::tls::*;
use crate::support::{PATIENCE, wait_for};

/// The leaf certificate the server presents to a new connection.
async fn served_leaf(server: &Server) -> CertificateDer<'static> {
    let config = client_config(&server.set.ca.cert, Some(&server.set.client), &[&TLS13]);
    let stream = connect(server.addr, config, "localhost").await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Writes a new server certificate (from `ca`) over the server's files.
fn replace_server_cert(server: &Server, ca: &DevCa) -> CertificateDer<'static> {
    let names = vec!["localhost".to_owned()];
    let issued = ca.issue_server(&names, 30).unwrap();
    let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
    certs::write_file(&server.set.server.key, issued.key_pem.as_bytes(), 0o600).unwrap();
    certs::write_file(&server.set.server.cert, chain.as_bytes(), 0o644).unwrap();
    read_certs(&server.set.server.cert).remove(0)
}

#[tokio::test]
async fn reload_serves_the_new_certificate_while_a_keep_alive_connection_stays_open() {
    let server = start(true).await;
    let old_leaf = served_leaf(&server).await;
    let config = client_config(&server.set.ca.cert, Some(&server.set.client), &[&TLS13]);
    let mut kept = connect(server.addr, config, "localhost").await.unwrap();
    let before = get(&mut kept, "/before").await.unwrap();

    // A new CA: clients that only trust the old one can no longer connect afresh.
    let new_ca = DevCa::generate("second CA").unwrap();
    let new_leaf = replace_server_cert(&server, &new_ca);
    server.reloader.reload().unwrap();
    assert_eq!(server.reloader.reloads(), 1);

    let after = get(&mut kept, "/after").await.unwrap();
    let peer = |b: &str| {
        b.split_whitespace()
            .find(|w| w.starts_with("peer="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(peer(&before), peer(&after), "same connection, still served");
    assert_eq!(kept.get_ref().1.peer_certificates().unwrap()[0], old_leaf);

    std::fs::write(server.dir.path().join("new-ca.pem"), new_ca.cert_pem()).unwrap();
    let config = client_config(
        &server.dir.path().join("new-ca.pem"),
        Some(&server.set.client),
        &[&TLS13],
    );
    let stream = connect(server.addr, config, "localhost").await.unwrap();
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], new_leaf);
    assert_ne!(new_leaf, old_leaf);
}

#[tokio::test]
async fn a_bad_new_certificate_keeps_the_old_one_in_force() {
    let server = start(false).await;
    let old_leaf = served_leaf(&server).await;
    let good_chain = std::fs::read(&server.set.server.cert).unwrap();
    let good_key = std::fs::read(&server.set.server.key).unwrap();
    let ca = DevCa::generate("reload CA").unwrap();
    let expired = ca.issue_client("localhost", -10, -1).unwrap();
    let other_key = ca
        .issue_server(&["localhost".to_owned()], 30)
        .unwrap()
        .key_pem;

    let bad: [(&str, Vec<u8>, Vec<u8>); 4] = [
        ("garbage chain", b"not pem".to_vec(), good_key.clone()),
        (
            "expired leaf",
            expired.cert_pem.clone().into_bytes(),
            expired.key_pem.as_bytes().to_vec(),
        ),
        (
            "key of another certificate",
            good_chain.clone(),
            other_key.as_bytes().to_vec(),
        ),
        ("empty key file", good_chain.clone(), Vec::new()),
    ];
    for (i, (what, chain, key)) in bad.into_iter().enumerate() {
        certs::write_file(&server.set.server.cert, &chain, 0o644).unwrap();
        certs::write_file(&server.set.server.key, &key, 0o600).unwrap();
        let err = server.reloader.reload().expect_err(what);
        assert_eq!(
            server.reloader.rejected_reloads(),
            i as u64 + 1,
            "{what}: {err}"
        );
        assert_eq!(
            served_leaf(&server).await,
            old_leaf,
            "{what}: old certificate still served"
        );
    }
    assert_eq!(server.reloader.reloads(), 0);
}

#[tokio::test]
async fn a_new_client_ca_is_picked_up_by_reload() {
    let server = start(true).await;
    let set = server.set.clone();
    // The server certificate stays issued by the first CA, which the client keeps trusting.
    let trust = server.dir.path().join("trust.pem");
    std::fs::copy(&set.ca.cert, &trust).unwrap();
    std::fs::copy(&set.other_ca.cert, &set.ca.cert).unwrap();
    server.reloader.reload().unwrap();

    let config = client_config(&trust, Some(&set.client_other_ca), &[&TLS13]);
    let mut s = connect(server.addr, config, "localhost").await.unwrap();
    assert!(
        get(&mut s, "/")
            .await
            .unwrap()
            .starts_with(&format!("subject={CLIENT_NAME} "))
    );
    let config = client_config(&trust, Some(&set.client), &[&TLS13]);
    assert_eq!(
        refused(server.addr, config).await,
        Error::AlertReceived(AlertDescription::HandshakeFailure)
    );
    assert_eq!(
        server.reloader.refusals().count(RefusalReason::UnknownCa),
        1
    );
}

#[tokio::test]
async fn changed_files_are_reloaded_without_a_signal() {
    let server = start(false).await;
    let old_leaf = served_leaf(&server).await;
    let watch = server.watch(Duration::from_millis(100));
    // Deliberate: three polls pass without a change, and nothing may be reloaded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.reloader.reloads(), 0, "nothing changed yet");

    // A new CA; ca.pem (not watched without mTLS) is what the test client trusts.
    let ca = DevCa::generate("watch CA").unwrap();
    std::fs::write(&server.set.ca.cert, ca.cert_pem()).unwrap();
    let new_leaf = replace_server_cert(&server, &ca);

    wait_for(PATIENCE, "a reload after the files changed", || {
        server.reloader.reloads() > 0
    })
    .await;
    assert_eq!(served_leaf(&server).await, new_leaf);
    assert_ne!(new_leaf, old_leaf);
    watch.stop().await;
}

/// SIGHUP reloads the certificate. The signal goes to the whole process, where every reload
/// watcher would see it, so this test runs in a process of its own.
#[test]
fn sighup_reloads_the_certificate() {
    own_process::run(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sighup_reloads_the_certificate_here());
    });
}

async fn sighup_reloads_the_certificate_here() {
    // Registering first installs tokio's handler, so no SIGHUP can end the test process even
    // if it arrives before the watcher has subscribed.
    let mut guard = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let server = start(false).await;
    let watch = server.watch(Duration::from_secs(3600));
    let pid = std::process::id().to_string();
    // A signal may arrive before the watcher listens: send again until one reloads.
    for _ in 0..20 {
        let out = run("kill", &["-HUP", &pid]).await;
        assert!(out.status.success());
        guard.recv().await.unwrap();
        let seen = wait_for(PATIENCE, "a reload", || server.reloader.reloads() > 0);
        if tokio::time::timeout(Duration::from_secs(1), seen)
            .await
            .is_ok()
        {
            break;
        }
    }
    assert!(server.reloader.reloads() > 0, "SIGHUP did not reload");
    watch.stop().await;
}
