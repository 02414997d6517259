//! Harness for the SoftHSMv2 tests: re-exec with SOFTHSM2_CONF, token setup, sequential
//! runner, and an `admin` mode that runs keygate's key admin in a separate process.

use std::ffi::OsString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use keygate::dev::softhsm2::{SoftHsmToken, init_softhsm_token};
use keygate::keys::pkcs11::{Pkcs11Admin, Pkcs11Backend, Pkcs11Settings};
use keygate::keys::{KeyAdmin, KeyUsage, Sealed, SealedRef};

pub const LABEL: &str = "keygate-test";
const DIR_VAR: &str = "KEYGATE_PKCS11_TEST_DIR";

pub type Test = (&'static str, fn(&Env));

pub struct Env {
    pub dir: PathBuf,
    pub token: SoftHsmToken,
    rt: tokio::runtime::Runtime,
}

pub fn main(tests: &[Test]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return reexec(&args);
    };
    let dir = PathBuf::from(dir);
    if args.first().map(String::as_str) == Some("admin") {
        return admin_main(&dir, &args[1..]);
    }
    run(&dir, tests, &args)
}

/// Parent: make the token dir and run this binary again with SOFTHSM2_CONF set.
fn reexec(args: &[String]) -> ExitCode {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env("SOFTHSM2_CONF", SoftHsmToken::conf_path(&dir))
        .env(DIR_VAR, &dir)
        .status()
        .unwrap();
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(dir: &Path, tests: &[Test], args: &[String]) -> ExitCode {
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let token = match init_softhsm_token(dir, LABEL) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot create the SoftHSMv2 test token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = Env {
        dir: dir.to_owned(),
        token,
        rt,
    };
    let selected: Vec<_> = tests
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!(
        "\nrunning {} tests (SoftHSMv2 token in {})",
        selected.len(),
        dir.display()
    );
    let mut failed = Vec::new();
    for (name, test) in selected {
        let ok = catch_unwind(AssertUnwindSafe(|| test(&env))).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        println!("\ntest result: ok");
        ExitCode::SUCCESS
    } else {
        println!("\ntest result: FAILED: {failed:?}");
        ExitCode::FAILURE
    }
}

impl Env {
    pub fn settings(&self) -> Pkcs11Settings {
        self.token.settings().unwrap()
    }

    pub fn backend(&self, tweak: impl FnOnce(&mut Pkcs11Settings)) -> Pkcs11Backend {
        let mut s = self.settings();
        tweak(&mut s);
        Pkcs11Backend::open(s).unwrap()
    }

    /// Waits for running HSM calls, then closes the module so the next test can open it.
    pub fn close(&self, b: Pkcs11Backend) {
        assert!(
            self.rt.block_on(b.shutdown(Duration::from_secs(60))),
            "HSM calls still running"
        );
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// keygate's admin in this process (no backend may be open meanwhile).
    pub fn with_admin(&self, f: impl FnOnce(&mut Pkcs11Admin)) {
        let mut admin = Pkcs11Admin::open(&self.settings()).unwrap();
        f(&mut admin);
    }

    /// keygate's admin in another process, as an operator would run it; returns its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "admin {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// OpenSC's pkcs11-tool on the test token (keys keygate would not create itself).
    pub fn pkcs11_tool(&self, args: &[&str]) {
        let pin = std::fs::read_to_string(&self.token.pin_file).unwrap();
        let mut all: Vec<OsString> = vec![
            "--module".into(),
            self.token.module.clone().into(),
            "--token-label".into(),
            LABEL.into(),
            "--login".into(),
            "--pin".into(),
            pin.trim().into(),
        ];
        all.extend(args.iter().map(OsString::from));
        let out = Command::new("pkcs11-tool")
            .args(&all)
            .output()
            .expect("pkcs11-tool (opensc) must be installed");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn sealed_ref(s: &Sealed) -> SealedRef<'_> {
    SealedRef {
        iv: &s.iv,
        ciphertext: &s.ciphertext,
        tag: &s.tag,
    }
}

/// `admin create ID USAGE | list | disable ID | enable ID | destroy ID`
fn admin_main(dir: &Path, args: &[String]) -> ExitCode {
    let token = SoftHsmToken {
        dir: dir.to_owned(),
        conf: SoftHsmToken::conf_path(dir),
        pin_file: dir.join("pin"),
        label: LABEL.to_owned(),
        module: keygate::dev::softhsm2::find_softhsm_module().unwrap(),
    };
    let mut admin = Pkcs11Admin::open(&token.settings().unwrap()).unwrap();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["create", id, usage] => admin
            .create(id, KeyUsage::parse_list(usage).unwrap())
            .map(|l| vec![l]),
        ["list"] => admin.list(),
        ["disable", id] => admin.set_enabled(id, false).map(|l| vec![l]),
        ["enable", id] => admin.set_enabled(id, true).map(|l| vec![l]),
        ["destroy", id] => admin.destroy(id).map(|()| vec![]),
        other => Err(format!("unknown admin command {other:?}")),
    };
    match result {
        Ok(rows) => {
            for l in rows {
                let status = if l.enabled { "enabled" } else { "disabled" };
                println!("{} {} {status} {}", l.id, l.usage, l.protection);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
