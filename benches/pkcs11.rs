//! Cost of one AES-GCM encrypt on SoftHSMv2: the raw C_Encrypt in-process, and the same
//! through keygate's PKCS#11 backend (blocking pool, session pool, handle cache).
//! Sequential calls on an otherwise idle process, so time per call ≈ CPU per call.
//!
//! Like the tests, the bench re-runs itself with SOFTHSM2_CONF pointing at a fresh token.
//! KEYGATE_BENCH_PKCS11_MODULE (another SoftHSMv2 build, e.g. one with the db object store)
//! and KEYGATE_BENCH_OBJECTSTORE (its objectstore.backend, default file) measure another
//! module: the bench then makes the token itself, through that module.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keygate::dev::softhsm2::{SoftHsmToken, init_softhsm_token};
use keygate::keys::KeyBackend;
use keygate::keys::KeyUsage;
use keygate::keys::pkcs11::{Pkcs11Admin, Pkcs11Backend};

const DIR_VAR: &str = "KEYGATE_PKCS11_BENCH_DIR";
const MODULE_VAR: &str = "KEYGATE_BENCH_PKCS11_MODULE";
const STORE_VAR: &str = "KEYGATE_BENCH_OBJECTSTORE";
const PLAINTEXT: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const AAD: &[u8; 31] = b"keygate bench additional data..";

fn main() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("SOFTHSM2_CONF", SoftHsmToken::conf_path(&dir))
            .env(DIR_VAR, &dir)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    };
    let token = match std::env::var_os(MODULE_VAR) {
        Some(module) => init_other_module(&PathBuf::from(dir), PathBuf::from(module)),
        None => init_softhsm_token(&PathBuf::from(dir), "keygate-bench").unwrap(),
    };
    {
        let mut admin = Pkcs11Admin::open(&token.settings().unwrap()).unwrap();
        use keygate::keys::KeyAdmin;
        admin.create("bench", KeyUsage::BOTH).unwrap();
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    raw_encrypt(&mut c, &token);
    backend_encrypt(&mut c, &token);
    c.final_summary();
}

/// A fresh token through `module` (a SoftHSMv2 build) with the object store STORE_VAR names:
/// C_InitToken on the free slot, the user PIN set by the SO.
fn init_other_module(dir: &Path, module: PathBuf) -> SoftHsmToken {
    let store = std::env::var(STORE_VAR).unwrap_or_else(|_| "file".to_owned());
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = SoftHsmToken::conf_path(dir);
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = {store}\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    let token = SoftHsmToken {
        dir: dir.to_path_buf(),
        conf,
        pin_file: dir.join("pin"),
        label: "keygate-bench".to_owned(),
        module,
    };
    let p11 = Pkcs11::new(&token.module).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let free = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| !p11.get_token_info(*s).unwrap().token_initialized())
        .unwrap();
    let so_pin = AuthPin::from("bench-so-pin");
    p11.init_token(free, &so_pin, &token.label).unwrap();
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == token.label)
        .unwrap();
    let session = p11.open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&so_pin)).unwrap();
    session.init_pin(&AuthPin::from("bench-user-pin")).unwrap();
    drop(session);
    p11.finalize().unwrap();
    std::fs::write(&token.pin_file, "bench-user-pin\n").unwrap();
    token
}

/// One C_Encrypt (AES-GCM, 32 B plaintext, 31 B AAD) on a logged-in session, cached handle.
fn raw_encrypt(c: &mut Criterion, token: &SoftHsmToken) {
    let p11 = Pkcs11::new(&token.module).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == token.label)
        .unwrap();
    let session = p11.open_rw_session(slot).unwrap();
    let pin = std::fs::read_to_string(&token.pin_file).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(pin.trim())))
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"bench".to_vec()),
        ])
        .unwrap()[0];
    let mut g = c.benchmark_group("softhsm2");
    g.throughput(Throughput::Elements(1));
    let mut counter = 0u64;
    g.bench_function("raw_c_encrypt", |b| {
        b.iter(|| {
            counter += 1;
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&counter.to_be_bytes());
            let params = GcmParams::new(&mut iv, AAD, 128.into()).unwrap();
            session
                .encrypt(&Mechanism::AesGcm(params), key, PLAINTEXT)
                .unwrap()
        })
    });
    g.finish();
    drop(session);
    p11.finalize().unwrap();
}

/// `KeyBackend::encrypt` end to end: permit, spawn_blocking, pooled session, cached handle,
/// C_GenerateRandom for the IV, C_Encrypt.
fn backend_encrypt(c: &mut Criterion, token: &SoftHsmToken) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = Pkcs11Backend::open(token.settings().unwrap()).unwrap();
    let mut g = c.benchmark_group("softhsm2");
    g.throughput(Throughput::Elements(1));
    g.bench_function("backend_encrypt", |b| {
        b.iter(|| {
            rt.block_on(backend.encrypt("bench", 1, PLAINTEXT, AAD))
                .unwrap()
        })
    });
    g.finish();
    rt.block_on(backend.shutdown(Duration::from_secs(10)));
}
