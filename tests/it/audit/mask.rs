//! Masking against the real binary and real files: a masked value is absent from the log's
//! bytes and from what the collector received, its HMAC is what `keygate audit mask` prints
//! and what `openssl dgst -mac HMAC` computes independently, `erased`/`masked` list the
//! pointers, the chain verifies and the lines match the event schema; bad rules are refused
//! by `config check` and `serve` (exit 64), every one reported.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::collector::Collector;
use crate::support::process::{KeygateProcess, QUIET, keygate};
use crate::support::*;

/// A 32-byte key as `openssl rand -hex 32` writes it.
const KEY_HEX: &str = "6b65796761746520746573742d6f6e6c79206d61736b206b6579202d2d2d2121";

fn key_file(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join("mask.key");
    std::fs::write(&path, format!("{KEY_HEX}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `keygate audit mask --key KEY [--json] VALUE`.
fn audit_mask(key: &Path, value: &str, json: bool) -> String {
    let mut args = vec!["audit", "mask", "--key", key.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    args.push(value);
    let out = keygate(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The same HMAC from OpenSSL, which shares no code with keygate's.
fn openssl_hmac(value: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{KEY_HEX}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the masking test needs the openssl command");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().rsplit("= ").next().unwrap();
    format!("hmac-sha256:{hex}")
}

fn mask_table(key: &Path) -> String {
    format!(
        "[decision_log.mask]\n\
         erase = [\"/requested_by\", \"/input/request_metadata/kmsViaService\", \
         \"/input/access_key_id\"]\n\
         hmac = [\"/input/request_metadata/awsPrincipalArn\", \"/input/source_ip\", \
         \"/input/peer\"]\n\
         hmac_key_file = {:?}\n",
        key.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_never_reach_the_file_or_the_collector() {
    let root = tempfile::tempdir().unwrap();
    let key = key_file(root.path(), 0o600);
    let log = root.path().join("decisions.log");
    let collector = Collector::start().await;
    let text = config(&format!(
        "\n[decision_log]\npath = {:?}\n[decision_log.upload]\nurl = {:?}\n\
         min_delay_seconds = 1\nmax_delay_seconds = 1\n{}",
        log.display().to_string(),
        collector.url(),
        mask_table(&key)
    ));
    // keygate's own request log too: it follows the decision log's rules.
    let server = KeygateProcess::start(&text, &format!("{QUIET},keygate::request=info"));
    let principal = format!(
        "arn:aws:iam::123456789012:role/Masked-{}",
        uuid::Uuid::new_v4()
    );
    let mut client = Client::connect(server.addr).await;
    for _ in 0..3 {
        let mut body = encrypt_body(b"x", None, false);
        body["requestMetadata"]["awsPrincipalArn"] = json!(principal);
        client
            .post(&path("encrypt", "foo"), &body)
            .await
            .expect_ok();
    }
    wait_for(PATIENCE, "3 events at the collector", || {
        collector.lines().len() == 3
    })
    .await;
    let stopped = server.stop();
    assert!(stopped.status.success());

    let bytes = std::fs::read_to_string(&log).unwrap();
    for secret in [principal.as_str(), "127.0.0.1"] {
        assert!(
            !bytes.contains(secret),
            "{secret} reached the file: {bytes}"
        );
        let shipped = collector.lines().join("\n");
        assert!(!shipped.contains(secret), "{secret} was shipped: {shipped}");
    }
    let lines: Vec<Value> = bytes
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let arn_tag = audit_mask(&key, &principal, false);
    assert_eq!(arn_tag, openssl_hmac(&principal));
    let ip_tag = audit_mask(&key, "127.0.0.1", false);
    assert_eq!(ip_tag, openssl_hmac("127.0.0.1"));
    for l in &lines {
        let metadata = &l["input"]["request_metadata"];
        assert_eq!(metadata["awsPrincipalArn"], arn_tag.as_str(), "{l}");
        assert_eq!(l["input"]["source_ip"], ip_tag.as_str(), "{l}");
        assert!(metadata.get("kmsViaService").is_none(), "{l}");
        assert!(l.get("requested_by").is_none(), "{l}");
        // The XKS door has no peer: a null hides nothing and is not listed.
        assert_eq!(l["input"]["peer"], Value::Null);
        assert!(l["input"].get("access_key_id").is_none(), "{l}");
        assert_eq!(
            l["erased"],
            json!([
                "/requested_by",
                "/input/request_metadata/kmsViaService",
                "/input/access_key_id"
            ])
        );
        assert_eq!(
            l["masked"],
            json!([
                "/input/request_metadata/awsPrincipalArn",
                "/input/source_ip"
            ])
        );
    }
    // The request log masks the same values the same way: the source IP is the decision
    // line's tag (the two logs still join on it), the access key id is left out.
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    let requests: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "keygate::request")
        .collect();
    assert_eq!(requests.len(), 3, "{stderr}");
    for r in &requests {
        assert_eq!(r["source_ip"], ip_tag.as_str(), "{r}");
        assert!(r.get("access_key_id").is_none(), "{r}");
        assert_eq!(r["key_id"], "foo", "{r}");
    }
    // Nor anywhere else in a request line (the listening line names keygate's own address).
    for line in stderr
        .lines()
        .filter(|l| l.contains("\"keygate::request\""))
    {
        assert!(!line.contains("127.0.0.1"), "{line}");
    }
    // The uploaded events are the file's lines, byte for byte: masked too.
    assert_eq!(collector.lines(), bytes.lines().collect::<Vec<_>>());
    let verify = keygate(&["audit", "verify", log.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    super::event::validate(&log);
    // Any JSON value is HMAC'd as its compact text.
    assert_eq!(audit_mask(&key, "31", true), openssl_hmac("31"));
    assert_eq!(
        audit_mask(&key, r#"{ "uid": 0, "gid": 10 }"#, true),
        openssl_hmac(r#"{"gid":10,"uid":0}"#)
    );
}

#[test]
fn bad_rules_and_keys_are_refused_every_one_reported() {
    let root = tempfile::tempdir().unwrap();
    let key = key_file(root.path(), 0o644);
    let table = format!(
        "[decision_log.mask]\n\
         erase = [\"input/source_ip\", \"/seq\", \"/prev_hash\", \"/result/allow\", \"/a~2\"]\n\
         hmac = [\"/input/source_ip\"]\n\
         hmac_key_file = {:?}\n",
        key.display().to_string()
    );
    let text = config(&format!(
        "\n[decision_log]\npath = {:?}\n{table}",
        root.path().join("d.log").display().to_string()
    ));
    let file = root.path().join("keygate.toml");
    std::fs::write(&file, &text).unwrap();
    let out = keygate(&["config", "check", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for want in [
        "\"input/source_ip\" is not a JSON pointer",
        "/seq: it would touch seq, a chain member",
        "/prev_hash: it would touch prev_hash, a chain member",
        "/result/allow: it would touch result, the decision itself",
        "\"/a~2\" is not a JSON pointer",
        "add \"/requested_by\"",
        "readable by group or others",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!err.contains(KEY_HEX), "the key never shows: {err}");
    let serve = crate::support::process::run_bounded(
        &["serve", "--config", file.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(serve.code, Some(64), "{}", serve.stderr);
    // audit mask refuses the same key file.
    let out = keygate(&["audit", "mask", "--key", key.to_str().unwrap(), "x"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
