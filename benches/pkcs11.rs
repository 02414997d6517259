//! Cost of one AES-GCM encrypt on a PKCS#11 token, in-process:
//! - `raw_c_encrypt`: cryptoki's single-part encrypt on a logged-in session with a known
//!   handle, that is C_EncryptInit, C_Encrypt for the output length, C_Encrypt;
//! - `raw_request`: the whole sequence keygate issues per encrypt request once the key's
//!   handle and attributes are cached: C_GenerateRandom (12-byte IV) and the above;
//! - `backend_encrypt`: the same through keygate's PKCS#11 backend (permit, session pool,
//!   handle cache, inline call).
//!
//! Sequential calls on an otherwise idle process, so time per call ≈ CPU per call.
//!
//! By default the token is SoftHSMv2's: like the tests, the bench re-runs itself with
//! SOFTHSM2_CONF pointing at a fresh token (benchmark group `softhsm2`). With
//! KEYGATE_PKCS11_BENCH_MODULE (a module path), KEYGATE_PKCS11_BENCH_LABEL (an initialised
//! token's label, `bench` by default) and KEYGATE_PKCS11_BENCH_PIN_FILE (its user PIN) it runs
//! on that token instead, whatever the module's own environment (e.g. KRYOPTIC_CONF) names,
//! in benchmark group KEYGATE_PKCS11_BENCH_NAME (`module` by default).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
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
use keygate::keys::pkcs11::{Pin, Pkcs11Admin, Pkcs11Backend, Pkcs11Settings, TokenSelector};

const DIR_VAR: &str = "KEYGATE_PKCS11_BENCH_DIR";
const PLAINTEXT: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const AAD: &[u8; 31] = b"keygate bench additional data..";

/// The token under test and the name of its benchmark group.
struct Target {
    name: String,
    module: PathBuf,
    label: String,
    pin_file: PathBuf,
    settings: Pkcs11Settings,
}

fn main() {
    let target = match std::env::var_os("KEYGATE_PKCS11_BENCH_MODULE") {
        Some(module) => module_target(PathBuf::from(module)),
        None => softhsm_target(),
    };
    {
        let mut admin = Pkcs11Admin::open(&target.settings).unwrap();
        use keygate::keys::KeyAdmin;
        admin.create("bench", KeyUsage::BOTH).unwrap();
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    raw_encrypt(&mut c, &target);
    backend_encrypt(&mut c, &target);
    c.final_summary();
}

/// A fresh SoftHSMv2 token; re-runs the bench with SOFTHSM2_CONF set first.
fn softhsm_target() -> Target {
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
    let token = init_softhsm_token(&PathBuf::from(dir), "keygate-bench").unwrap();
    Target {
        name: "softhsm2".to_owned(),
        settings: token.settings().unwrap(),
        module: token.module,
        label: token.label,
        pin_file: token.pin_file,
    }
}

/// An initialised token of another module, named by the environment.
fn module_target(module: PathBuf) -> Target {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let label = var("KEYGATE_PKCS11_BENCH_LABEL", "bench");
    let pin_file = PathBuf::from(
        std::env::var_os("KEYGATE_PKCS11_BENCH_PIN_FILE")
            .expect("KEYGATE_PKCS11_BENCH_PIN_FILE names the token's user PIN file"),
    );
    let pin = std::fs::read_to_string(&pin_file).unwrap();
    let settings = Pkcs11Settings::new(
        module.clone(),
        TokenSelector::Label(label.clone()),
        Pin::new(pin.trim().to_owned()),
    );
    Target {
        name: var("KEYGATE_PKCS11_BENCH_NAME", "module"),
        module,
        label,
        pin_file,
        settings,
    }
}

/// One encrypt (AES-GCM, 32 B plaintext, 31 B AAD) on a logged-in session, cached handle:
/// cryptoki's encrypt alone, then with the C_GenerateRandom for the IV that keygate adds.
fn raw_encrypt(c: &mut Criterion, target: &Target) {
    let p11 = Pkcs11::new(&target.module).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == target.label)
        .unwrap();
    let session = p11.open_rw_session(slot).unwrap();
    let pin = std::fs::read_to_string(&target.pin_file).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(pin.trim())))
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"bench".to_vec()),
        ])
        .unwrap()[0];
    let mut g = c.benchmark_group(&target.name);
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
    g.bench_function("raw_request", |b| {
        b.iter(|| {
            let mut iv = [0u8; 12];
            session.generate_random_slice(&mut iv).unwrap();
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

/// `KeyBackend::encrypt` end to end: permit, inline call or blocking pool, pooled session,
/// cached handle, C_GenerateRandom for the IV, the encrypt.
fn backend_encrypt(c: &mut Criterion, target: &Target) {
    let rt = keygate::runtime::multi_thread().build().unwrap();
    let backend = Pkcs11Backend::open(target.settings.clone()).unwrap();
    let mut g = c.benchmark_group(&target.name);
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
