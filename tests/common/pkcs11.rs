//! A keygate server on a fresh SoftHSMv2 token, as a child process: SoftHSMv2 reads
//! SOFTHSM2_CONF at C_Initialize, so every process touching the token gets it with `.env`.
//! The token is made with softhsm2-util, the keys with `keygate keys`, and the server is
//! `keygate serve`: the same path an operator takes.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{SOFTWARE_BACKEND, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");
const LABEL: &str = "keygate";

const KEYS: [(&str, &str); 6] = [
    ("foo", "encrypt,decrypt"),
    ("encrypt_only_key", "encrypt"),
    ("decrypt_only_key", "decrypt"),
    ("impotent_key", "none"),
    ("disabled_key", "encrypt,decrypt"),
    ("keygate-health", "encrypt,decrypt"),
];

/// A fresh SoftHSMv2 token in a directory, a keygate config using it, and the test keys.
pub struct Token {
    /// SOFTHSM2_CONF for every process that touches the token.
    pub conf: std::path::PathBuf,
    pub config_path: std::path::PathBuf,
    /// The user PIN (also in `pin`, mode 0600, which the config names).
    pub pin: String,
}

impl Token {
    /// Makes the token in `d`, writes `config_text` (its software backend swapped for this
    /// token, its listener on `port`) to `keygate.toml`, and creates the test keys with
    /// `keygate keys`.
    pub fn new(d: &Path, config_text: &str, port: u16) -> Token {
        let conf = d.join("softhsm2.conf");
        let pin = init_token(d, &conf);
        let module = keygate::dev::softhsm2::find_softhsm_module()
            .expect("SoftHSMv2 must be installed (apt-get install -y softhsm2)");
        // The token is made with softhsm2-util above; its config table is keygate's own.
        let table = keygate::dev::softhsm2::SoftHsmToken {
            dir: d.to_owned(),
            conf: conf.clone(),
            pin_file: d.join("pin"),
            label: LABEL.to_owned(),
            module,
        }
        .config_table();
        let backend = format!(
            "[backend]\nkind = \"pkcs11\"\nhealth_key = \"keygate-health\"\n[backend.pkcs11]\n{table}"
        );
        assert!(
            config_text.contains(SOFTWARE_BACKEND),
            "pkcs11 servers swap the software backend"
        );
        let text = config_text.replace(SOFTWARE_BACKEND, &backend).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let config_path = d.join("keygate.toml");
        std::fs::write(&config_path, text).unwrap();
        let token = Token {
            conf,
            config_path,
            pin,
        };
        let config = token.config_path.to_str().unwrap().to_owned();
        for (id, usage) in KEYS {
            token.cli(&["keys", "-c", &config, "create", id, "--usage", usage]);
        }
        token.cli(&["keys", "-c", &config, "disable", "disabled_key"]);
        token
    }

    /// Runs `keygate args` against the token; it must succeed. Returns stdout and stderr.
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
}

pub fn server(dir: tempfile::TempDir, config_text: &str) -> TestServer {
    let d = dir.path().canonicalize().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Token {
        conf, config_path, ..
    } = Token::new(&d, config_text, port);
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config_path)
        .env("SOFTHSM2_CONF", &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = TestServer {
        addr,
        dir,
        config_path,
        app: super::InProcess(None),
        child: Some(child),
        shutdown: None,
        task: None,
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("keygate serve exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// softhsm2.conf, tokens/, a token with random PINs, the user PIN in `pin` (0600).
fn init_token(d: &Path, conf: &Path) -> String {
    std::fs::create_dir(d.join("tokens")).unwrap();
    std::fs::write(
        conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            d.join("tokens").display()
        ),
    )
    .unwrap();
    let so_pin = uuid::Uuid::new_v4().simple().to_string();
    let pin = uuid::Uuid::new_v4().simple().to_string();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--so-pin",
            &so_pin,
            "--pin",
            &pin,
        ])
        .env("SOFTHSM2_CONF", conf)
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
        .open(d.join("pin"))
        .unwrap();
    std::io::Write::write_all(&mut f, pin.as_bytes()).unwrap();
    pin
}
