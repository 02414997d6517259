//! A slow HSM behind the real binary: SoftHSMv2 behind a shim module
//! (`tests/slow-pkcs11/slow_pkcs11.c`, built with gcc here; a missing gcc fails the test) whose
//! C_Encrypt waits while a hold file exists. keygate serves `session_pool_size` calls at once
//! and answers the rest 429 ThrottlingException, after the module had been answering fast
//! (so calls ran inline on the runtime workers) as before.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::process::{KeygateProcess, QUIET, http_get};
use crate::support::softhsm::Token;
use crate::support::*;

const POOL: usize = 2;

/// The shim, forwarding to `real` and waiting while `hold` exists.
fn build_shim(dir: &Path, real: &Path, hold: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slow-pkcs11/slow_pkcs11.c");
    let out = dir.join("slow-pkcs11.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .arg(format!("-DREAL_MODULE=\"{}\"", real.display()))
        .arg(format!("-DHOLD_FILE=\"{}\"", hold.display()))
        .status()
        .expect("gcc must be installed to build the slow PKCS#11 module");
    assert!(status.success(), "gcc failed on {}", source.display());
    out
}

fn sessions_in_use(admin: std::net::SocketAddr) -> f64 {
    metric(
        &parse_metrics(&http_get(admin, "/metrics")),
        "keygate_backend_sessions_in_use",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_hsm_serves_session_pool_size_calls_and_sheds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::init(dir.path());
    let hold = token.dir.join("hold");
    let shim = build_shim(&token.dir, &token.module, &hold);
    let config_path = token.write_config(&config("\n[admin]\nlisten = \"127.0.0.1:0\"\n"));
    let text = std::fs::read_to_string(&config_path).unwrap();
    let module_line = format!("module = \"{}\"\n", token.module.display());
    assert!(text.contains(&module_line));
    let text = text.replace(
        &module_line,
        &format!(
            "module = \"{}\"\nsession_pool_size = {POOL}\nqueue_wait_ms = 20\n",
            shim.display()
        ),
    );
    std::fs::write(&config_path, text).unwrap();
    token.create_test_keys(&config_path);
    let conf = token.conf.clone();
    let server = KeygateProcess::serve(dir, &config_path, QUIET, &[("SOFTHSM2_CONF", &conf)]);
    let (addr, admin) = (server.addr, server.admin_addr());

    // The module answers fast: calls run inline after the first few.
    let mut c = Client::connect(addr).await;
    for i in 0..40u8 {
        c.post(
            &path("encrypt", "foo"),
            &encrypt_body(&[i; 32], None, false),
        )
        .await
        .expect_ok();
    }

    // Now it holds every C_Encrypt: POOL calls run at once, the next one is shed.
    std::fs::write(&hold, b"").unwrap();
    let held: Vec<_> = (0..POOL)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                c.post(
                    &path("encrypt", "foo"),
                    &encrypt_body(&[i as u8], None, false),
                )
                .await
            })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        format!("{POOL} HSM calls in progress"),
        async || (sessions_in_use(admin) == POOL as f64).then_some(()),
    )
    .await;
    let mut c = Client::connect(addr).await;
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(b"one more", None, false),
    )
    .await
    .expect_error(429, "ThrottlingException");
    // The runtime still answers while the HSM holds its calls.
    assert_eq!(sessions_in_use(admin), POOL as f64);

    std::fs::remove_file(&hold).unwrap();
    for h in held {
        h.await.unwrap().expect_ok();
    }
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(b"after", None, false),
    )
    .await
    .expect_ok();
    eventually(
        Duration::from_secs(10),
        "no HSM call in progress",
        async || (sessions_in_use(admin) == 0.0).then_some(()),
    )
    .await;
}
