//! Faults of keygate's own inputs, through the real binary: a software key file that is
//! corrupt, partly bad, missing or readable by others refuses the start with a clear message
//! (and never a half-read key set); a key file broken while serving leaves the old keys in
//! force until a good one appears.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::process::run_bounded;
use crate::support::*;

/// Runs `keygate serve` on `config` and expects it to exit on its own: (code, stderr).
fn serve_expecting_exit(config: &Path) -> (i32, String) {
    let config = config.to_str().unwrap();
    let ran = run_bounded(&["serve", "--config", config], &[], Duration::from_secs(15));
    let code = ran.code.expect("keygate kept running with a bad key file");
    (code, ran.stderr)
}

fn key_file_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("keys.json")).unwrap()).unwrap()
}

fn write_key_file(dir: &Path, text: &str, mode: u32) {
    let path = dir.join("keys.json");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[track_caller]
fn assert_refused(config: &Path, message: &str) -> String {
    let (code, err) = serve_expecting_exit(config);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(message), "expected {message:?} in: {err}");
    assert!(!err.contains("keygate listening"), "it bound a port: {err}");
    err
}

#[test]
fn a_key_file_readable_by_others_refuses_the_start() {
    let (dir, config) = server_dir(&config(""));
    let path = dir.path().join("keys.json");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_refused(
        &config,
        "is accessible to other users (mode 644); run chmod 600",
    );
}

#[test]
fn a_missing_key_file_refuses_the_start() {
    let (dir, config) = server_dir(&config(""));
    std::fs::remove_file(dir.path().join("keys.json")).unwrap();
    assert_refused(&config, "cannot read key file");
}

#[test]
fn a_corrupt_key_file_refuses_the_start_without_quoting_it() {
    let (dir, config) = server_dir(&config(""));
    let good = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
    // Cut in the middle of the file (inside some key's material), and pure garbage.
    write_key_file(dir.path(), &good[..good.len() / 2], 0o600);
    let err = assert_refused(&config, "is corrupt");
    for material in materials(&serde_json::from_str(&good).unwrap()) {
        assert!(!err.contains(&material[..16]), "key material in: {err}");
    }
    write_key_file(dir.path(), "\u{1}\u{2}garbage\u{ff}", 0o600);
    assert_refused(&config, "is corrupt");
    write_key_file(dir.path(), "", 0o600);
    assert_refused(&config, "is corrupt");
}

#[test]
fn one_bad_key_refuses_the_whole_file() {
    let (dir, config) = server_dir(&config(""));
    let mut file = key_file_json(dir.path());
    let last = file["keys"].as_array().unwrap().len() - 1;
    file["keys"][last]["versions"][0]["material"] = "c2hvcnQ=".into();
    write_key_file(dir.path(), &file.to_string(), 0o600);
    assert_refused(&config, "material is not 32 bytes");
    let mut file = key_file_json(dir.path());
    file["format"] = "something-else/9".into();
    write_key_file(dir.path(), &file.to_string(), 0o600);
    assert_refused(&config, "expected \"keygate-software-keys/1\"");
}

fn materials(file: &serde_json::Value) -> Vec<String> {
    file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|k| k["versions"].as_array().unwrap().iter())
        .map(|v| v["material"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_broken_while_serving_leaves_the_old_keys_in_force() {
    let (dir, config) = server_dir(&config(""));
    let good = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
    let keygate = KeygateProcess::serve(dir, &config, "info", &[]);
    let mut c = Client::connect(keygate.addr).await;
    let enc = c
        .post(
            &path("encrypt", "foo"),
            &encrypt_body(b"before", None, false),
        )
        .await;
    let enc = enc.expect_ok().clone();
    write_key_file(keygate.dir.path(), "{\"format\": \"keygate-soft", 0o600);
    keygate.wait_for_log("the previous keys stay in force");
    let d = c
        .post(&path("decrypt", "foo"), &decrypt_body(&enc, None))
        .await;
    assert_eq!(unb64(&d.expect_ok()["plaintext"]), b"before");
    c.post(
        &path("encrypt", "foo"),
        &encrypt_body(b"during", None, false),
    )
    .await
    .expect_ok();
    // A good file again (with a different length, so the change is seen) is picked up.
    write_key_file(keygate.dir.path(), &format!("{good}\n"), 0o600);
    keygate.wait_for_log("key file reloaded");
    let d = c
        .post(&path("decrypt", "foo"), &decrypt_body(&enc, None))
        .await;
    assert_eq!(unb64(&d.expect_ok()["plaintext"]), b"before");
}
