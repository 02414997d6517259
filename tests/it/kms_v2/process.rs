//! The real binary's KMS v2 door: on a SoftHSMv2 token (round trip, rotation by `keygate keys
//! rotate` while serving, the token lost and back: Status unhealthy and Encrypt UNAVAILABLE,
//! then recovery), the socket file's handling (a
//! second keygate on a live socket is refused, SIGTERM removes the file), and
//! `serve --dev --kms-v2-socket`.

use std::path::Path;
use std::time::Duration;

use crate::support::dev::DevServer;
use crate::support::kms::*;
use crate::support::process::{QUIET, run_bounded};
use crate::support::*;

/// The log filter that also shows the KMS v2 listening line.
const LOG: &str = "warn,keygate::serve=info";

#[tokio::test(flavor = "multi_thread")]
async fn softhsm_round_trip_rotation_token_loss_and_recovery() {
    let text = config(&kms_table(""));
    let server = KeygateProcess::on_softhsm(&text, LOG);
    server.wait_for_log("KMS v2 plugin listening");
    let socket = server.dir.path().canonicalize().unwrap().join("kms.sock");
    let mut c = connect(&socket).await;
    let st = status(&mut c).await;
    assert_eq!(
        (st.healthz.as_str(), st.key_id.as_str()),
        ("ok", "keygate/foo/v1")
    );
    let (ct, id) = encrypt(&mut c, &[7; 32], "u1").await.unwrap();
    assert_eq!(id, st.key_id);
    assert_eq!(decrypt(&mut c, &ct, &id, "u2").await.unwrap(), [7; 32]);
    let mut bad = ct.clone();
    *bad.last_mut().unwrap() ^= 1;
    let e = decrypt(&mut c, &bad, &id, "u3").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());

    // Rotation on the token, by an operator in another process while keygate serves.
    let token = server.token.as_ref().unwrap();
    let config_path = server.config_path.to_str().unwrap();
    let rotated = token.cli(&["keys", "-c", config_path, "rotate", "foo"]);
    assert!(rotated.contains("foo"), "{rotated}");
    let st = eventually(PATIENCE, "Status shows the new version", async || {
        let st = status(&mut c).await;
        (st.key_id == "keygate/foo/v2").then_some(st)
    })
    .await;
    assert_eq!(st.healthz, "ok");
    let (ct_v2, id_v2) = encrypt(&mut c, &[9; 32], "u3").await.unwrap();
    assert_eq!(id_v2, "keygate/foo/v2");
    assert_eq!(decrypt(&mut c, &ct, &id, "u3").await.unwrap(), [7; 32]);
    assert_eq!(
        decrypt(&mut c, &ct_v2, &id_v2, "u3").await.unwrap(),
        [9; 32]
    );

    let (tokens, away) = (token.dir.join("tokens"), token.dir.join("tokens.away"));
    std::fs::rename(&tokens, &away).unwrap();
    let st = eventually(PATIENCE, "Status unhealthy", async || {
        let st = status(&mut c).await;
        (st.healthz != "ok").then_some(st)
    })
    .await;
    assert_eq!(st.key_id, "keygate/foo/v2", "the last known key_id stays");
    let e = encrypt(&mut c, &[7; 32], "u4").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());

    std::fs::rename(&away, &tokens).unwrap();
    eventually(PATIENCE, "Status ok again", async || {
        (status(&mut c).await.healthz == "ok").then_some(())
    })
    .await;
    let (ct2, id2) = encrypt(&mut c, &[8; 32], "u5").await.unwrap();
    assert_eq!(decrypt(&mut c, &ct, &id, "u6").await.unwrap(), [7; 32]);
    assert_eq!(decrypt(&mut c, &ct2, &id2, "u7").await.unwrap(), [8; 32]);
    let stopped = server.stop();
    assert!(stopped.status.success());
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("kms.sock");
    let text = config(&kms_table("")).replace(
        "socket = \"kms.sock\"",
        &format!("socket = {:?}", socket.display().to_string()),
    );
    let first = KeygateProcess::start(&text, LOG);
    first.wait_for_log("KMS v2 plugin listening");
    let (dir, second) = server_dir(&text);
    let ran = run_bounded(
        &["serve", "--config", second.to_str().unwrap()],
        &[("RUST_LOG", QUIET)],
        Duration::from_secs(20),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("another process is listening on this socket"),
        "{}",
        ran.stderr
    );
    assert!(socket.exists(), "the live socket was left alone");
    // The first one is killed (SIGKILL): its socket file stays behind, stale.
    drop(first);
    assert!(socket.exists());
    let third = KeygateProcess::serve(dir, &second, LOG, &[]);
    third.wait_for_log("KMS v2 plugin listening");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(third.stop().status.success());
    assert!(!socket.exists());
}

#[test]
fn something_else_at_the_socket_path_is_refused() {
    let (dir, config_path) = server_dir(&config(&kms_table("")));
    std::fs::write(dir.path().join("kms.sock"), "precious").unwrap();
    let ran = run_bounded(
        &["serve", "--config", config_path.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(ran.stderr.contains("is not a socket"), "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kms.sock")).unwrap(),
        "precious"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_dev_serves_the_plugin_on_the_dev_keys() {
    let cwd = tempfile::tempdir().unwrap();
    let socket = cwd.path().join("kms.sock");
    let dev = DevServer::start(
        cwd.path(),
        Path::new("data"),
        &["--kms-v2-socket", socket.to_str().unwrap()],
    );
    let mut c = connect(&socket).await;
    let st = status(&mut c).await;
    assert_eq!(
        (st.healthz.as_str(), st.key_id.as_str()),
        ("ok", "keygate/foo/v1")
    );
    let (ct, id) = encrypt(&mut c, b"dev seed", "u").await.unwrap();
    assert_eq!(decrypt(&mut c, &ct, &id, "u").await.unwrap(), b"dev seed");
    let log_path = dev.data("decisions.log");
    assert!(dev.stop().success());
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("\"interface\":\"kms_v2\""), "{log}");
    assert!(!socket.exists());
}

#[test]
fn kms_v2_socket_without_a_table_is_a_usage_error() {
    let (_dir, config_path) = server_dir(&config(""));
    let ran = run_bounded(
        &[
            "serve",
            "--config",
            config_path.to_str().unwrap(),
            "--kms-v2-socket",
            "/tmp/x.sock",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("needs a [kms_v2] table"),
        "{}",
        ran.stderr
    );
}

/// keygate's request log on the KMS v2 door masks what `[decision_log.mask]` masks in the
/// decision line: an HMAC'd `uid` holds the decision line's tag, an erased peer is left out.
#[tokio::test(flavor = "multi_thread")]
async fn the_request_log_masks_what_the_decision_log_masks() {
    use std::os::unix::fs::PermissionsExt;
    let own = tempfile::tempdir().unwrap();
    let key = own.path().join("mask.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = own.path().join("decisions.log");
    let text = config(&format!(
        "{}\n[decision_log]\npath = {:?}\n[decision_log.mask]\nerase = [\"/input/peer\"]\n\
         hmac = [\"/input/request_uid\"]\nhmac_key_file = {:?}\n",
        kms_table(""),
        log.display().to_string(),
        key.display().to_string()
    ));
    let server = KeygateProcess::start(&text, &format!("{LOG},keygate::request=info"));
    server.wait_for_log("KMS v2 plugin listening");
    let socket = server.dir.path().canonicalize().unwrap().join("kms.sock");
    let mut c = connect(&socket).await;
    let uid = format!("uid-{}", uuid::Uuid::new_v4());
    encrypt(&mut c, &[7; 32], &uid).await.unwrap();
    let stopped = server.stop();
    assert!(stopped.status.success());

    let text = std::fs::read_to_string(&log).unwrap();
    let decision: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let tag = decision["input"]["request_uid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tag.starts_with("hmac-sha256:"), "{decision}");
    assert!(decision["input"].get("peer").is_none(), "{decision}");
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    let line = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "keygate::request" && l["operation"] == "Encrypt")
        .unwrap_or_else(|| panic!("no Encrypt request line: {stderr}"));
    assert_eq!(line["uid"], tag.as_str(), "{line}");
    assert_eq!(line["key_id"], "foo", "{line}");
    assert!(
        line.get("peer_uid").is_none() && line.get("peer_pid").is_none(),
        "{line}"
    );
    assert!(!stderr.contains(&uid), "{stderr}");
    assert!(!text.contains(&uid));
}
