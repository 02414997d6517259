//! The SoftHSMv2 harness. A `Token` is a fresh token in a directory, made with softhsm2-util
//! (not with keygate's own dev tooling), plus what an operator uses on it: a keygate config
//! naming it, `keygate keys`, OpenSC's pkcs11-tool. `in_process` runs a test that opens the
//! token in this process's keygate library; SoftHSMv2 reads SOFTHSM2_CONF at C_Initialize, so
//! such a test runs in a process of its own (see `own_process`) with the variable set.
//! A missing SoftHSMv2 or OpenSC fails the test; nothing is skipped.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keygate::dev::softhsm2::SoftHsmToken;
use keygate::keys::pkcs11::{Pkcs11Admin, Pkcs11Backend, Pkcs11Settings};
use keygate::keys::{KeyAdmin, Sealed, SealedRef};

use super::fixtures::{self, KEYS, SOFTWARE_BACKEND};
use super::own_process;
use super::process::BIN;

/// The label of every test token.
pub const LABEL: &str = "keygate-test";

/// Tells the child process of an `in_process` test where its token is.
const TOKEN_DIR: &str = "KEYGATE_IT_TOKEN_DIR";

/// A SoftHSMv2 token: `dir/softhsm2.conf`, `dir/tokens/`, the user PIN in `dir/pin` (0600).
#[derive(Debug)]
pub struct Token {
    pub dir: PathBuf,
    /// SOFTHSM2_CONF for every process that touches the token.
    pub conf: PathBuf,
    pub pin: String,
    pub module: PathBuf,
}

impl Token {
    /// Initialises a token with random PINs in `dir`.
    pub fn init(dir: &Path) -> Token {
        let dir = dir.canonicalize().unwrap();
        let conf = SoftHsmToken::conf_path(&dir);
        std::fs::create_dir(dir.join("tokens")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        let so_pin = uuid::Uuid::new_v4().simple().to_string();
        let pin = uuid::Uuid::new_v4().simple().to_string();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--so-pin", &so_pin, "--pin", &pin])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util must be installed (apt-get install -y softhsm2)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("pin"))
            .unwrap();
        std::io::Write::write_all(&mut f, pin.as_bytes()).unwrap();
        Self::open(&dir)
    }

    /// The token `init` made in `dir`.
    pub fn open(dir: &Path) -> Token {
        let module = keygate::dev::softhsm2::find_softhsm_module()
            .expect("SoftHSMv2 must be installed (apt-get install -y softhsm2)");
        Token {
            dir: dir.to_owned(),
            conf: SoftHsmToken::conf_path(dir),
            pin: std::fs::read_to_string(dir.join("pin")).unwrap(),
            module,
        }
    }

    /// keygate's description of this token.
    fn keygate(&self) -> SoftHsmToken {
        SoftHsmToken {
            dir: self.dir.clone(),
            conf: self.conf.clone(),
            pin_file: self.dir.join("pin"),
            label: LABEL.to_owned(),
            module: self.module.clone(),
        }
    }

    /// Backend settings for the token.
    pub fn settings(&self) -> Pkcs11Settings {
        self.keygate().settings().unwrap()
    }

    /// The `[backend.pkcs11]` table a config file in `dir` carries (what `serve --dev`
    /// writes).
    pub fn config_table(&self) -> String {
        self.keygate().config_table()
    }

    /// Writes `config_text` with its software backend swapped for this token to
    /// `dir/keygate.toml`; returns the path.
    pub fn write_config(&self, config_text: &str) -> PathBuf {
        let backend = format!(
            "[backend]\nkind = \"pkcs11\"\nhealth_key = \"{}\"\n[backend.pkcs11]\n{}",
            fixtures::HEALTH_KEY,
            self.config_table()
        );
        assert!(
            config_text.contains(SOFTWARE_BACKEND),
            "a SoftHSMv2 server swaps the fixture's software backend"
        );
        let path = self.dir.join("keygate.toml");
        std::fs::write(&path, config_text.replace(SOFTWARE_BACKEND, &backend)).unwrap();
        path
    }

    /// Creates the fixture's keys with `keygate keys -c config`.
    pub fn create_test_keys(&self, config: &Path) {
        let config = config.to_str().unwrap();
        for (id, usage, enabled) in KEYS {
            let usage = usage.to_string();
            self.cli(&["keys", "-c", config, "create", id, "--usage", &usage]);
            if !enabled {
                self.cli(&["keys", "-c", config, "disable", id]);
            }
        }
    }

    /// Runs `keygate args` with SOFTHSM2_CONF set; it must succeed. Returns stdout and stderr.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "keygate {args:?}: {printed}");
        printed
    }

    /// OpenSC's pkcs11-tool, logged in to the token (for keys keygate would not make); what
    /// it printed.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let mut all: Vec<OsString> = vec![
            "--module".into(),
            self.module.clone().into(),
            "--token-label".into(),
            LABEL.into(),
            "--login".into(),
            "--pin".into(),
            self.pin.trim().into(),
        ];
        all.extend(args.iter().map(OsString::from));
        let out = Command::new("pkcs11-tool")
            .args(&all)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool (apt-get install -y opensc) must be installed");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What an `in_process` test gets: a fresh token (no keys yet) this process may open, a
/// keygate config naming it, and a runtime.
pub struct Env {
    pub dir: PathBuf,
    pub token: Token,
    /// `dir/keygate.toml`: the fixture config on this token, for `keygate keys`.
    pub config: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// Runs `body` with a fresh token, in a process of its own whose SOFTHSM2_CONF names it.
pub fn in_process(body: impl FnOnce(&Env)) {
    if own_process::is_child() {
        let dir = PathBuf::from(std::env::var_os(TOKEN_DIR).unwrap());
        let token = Token::open(&dir);
        let config = token.write_config(&fixtures::config(""));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        body(&Env {
            dir,
            token,
            config,
            rt,
        });
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let token = Token::init(tmp.path());
    own_process::rerun(&[
        ("SOFTHSM2_CONF", token.conf.as_os_str()),
        (TOKEN_DIR, token.dir.as_os_str()),
    ]);
}

impl Env {
    pub fn settings(&self) -> Pkcs11Settings {
        self.token.settings()
    }

    pub fn backend(&self, tweak: impl FnOnce(&mut Pkcs11Settings)) -> Pkcs11Backend {
        let mut s = self.settings();
        tweak(&mut s);
        Pkcs11Backend::open(s).unwrap()
    }

    /// Waits for running HSM calls, then closes the module so it can be opened again.
    pub fn close(&self, b: Pkcs11Backend) {
        assert!(
            self.rt.block_on(b.shutdown(Duration::from_secs(60))),
            "HSM calls still running"
        );
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// keygate's key admin in this process (no backend may be open meanwhile).
    pub fn with_admin(&self, f: impl FnOnce(&mut Pkcs11Admin)) {
        let mut admin = Pkcs11Admin::open(&self.settings()).unwrap();
        f(&mut admin);
    }

    /// Creates the fixture's keys with keygate's admin in this process.
    pub fn create_test_keys(&self) {
        self.with_admin(|admin| {
            for (id, usage, enabled) in KEYS {
                admin.create(id, usage).unwrap();
                if !enabled {
                    admin.set_enabled(id, false).unwrap();
                }
            }
        });
    }

    /// `keygate keys -c CONFIG args` in another process, as an operator would run it while
    /// the server runs; returns what it printed.
    pub fn keys(&self, args: &[&str]) -> String {
        let config = self.config.to_str().unwrap();
        self.token
            .cli(&[&["keys", "-c", config][..], args].concat())
    }

    /// OpenSC's pkcs11-tool on the token, in another process.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        self.token.pkcs11_tool(args)
    }
}

pub fn sealed_ref(s: &Sealed) -> SealedRef<'_> {
    SealedRef {
        iv: &s.iv,
        ciphertext: &s.ciphertext,
        tag: &s.tag,
    }
}
