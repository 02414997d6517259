//! `keygate serve --dev --backend softhsm2`: one command creates a SoftHSMv2 token in the data
//! dir, the dev keys in it, a pkcs11 config, and serves the curl command it prints. Started
//! without SOFTHSM2_CONF, so the re-execution with the variable set is exercised too.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::BIN;

#[test]
fn dev_softhsm2_serves_hsm_keys_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args([
                "serve",
                "--dev",
                "--backend",
                "softhsm2",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env_remove("SOFTHSM2_CONF")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let started = Instant::now();
    while !banner.contains("/encrypt") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no banner: {banner}"
        );
        banner.push_str(&lines.next().expect("server exited").unwrap());
        banner.push('\n');
    }
    std::thread::spawn(move || lines.for_each(drop));
    assert!(banner.contains("SoftHSMv2"), "{banner}");
    let curl = &banner[banner.find("curl ").unwrap()..];
    let out = Command::new("bash")
        .args(["-c", curl])
        .output()
        .expect("bash and curl");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(reply["ciphertext"].as_str().unwrap().len(), 16, "{reply}");

    let config = std::fs::read_to_string(data.join("keygate.toml")).unwrap();
    assert!(config.contains("kind = \"pkcs11\""), "{config}");
    let pin_mode = std::fs::metadata(data.join("pin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(pin_mode & 0o777, 0o600);
    assert!(data.join("tokens").is_dir());

    // `keygate keys` on the same token from another process, with the variable set...
    let conf = data.canonicalize().unwrap().join("softhsm2.conf");
    let cfg = data.join("keygate.toml");
    let out = Command::new(BIN)
        .args(["keys", "-c"])
        .arg(&cfg)
        .arg("list")
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "foo",
        "encrypt_only_key",
        "decrypt_only_key",
        "impotent_key",
        "keygate-health",
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{list}"));
        assert!(line.contains("sensitive, non-extractable"), "{line}");
    }
    // ...and refused (exit 64, saying what to set) without it.
    let out = Command::new(BIN)
        .args(["keys", "-c"])
        .arg(&cfg)
        .arg("list")
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOFTHSM2_CONF="));
    // Commands that never open the token do not ask for it.
    for args in [
        &["keystore", "console-json", "-c"][..],
        &["config", "check"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .arg(&cfg)
            .env_remove("SOFTHSM2_CONF")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(child);
}

/// The server ends with the test, also when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
