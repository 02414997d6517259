//! Shipping the decision log to an OPA decision-log collector on loopback: events arrive
//! gzip'd and complete and the collector's copy verifies; a collector that is down for a while
//! gets everything afterwards (across a restart of keygate); one that answers 500 or hangs
//! holds up no request; `require_upload` refuses requests only while uploads fail; the
//! Python collector the docs give works as written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keygate::policy::decision_log::segments;

use crate::support::collector::{Collector, Mode};
use crate::support::process::keygate;
use crate::support::*;

const UPLOADED: &str = "keygate_decision_log_upload_events_uploaded_total";
const FAILED: &str = "keygate_decision_log_upload_requests_failed_total";
const FAILING: &str = "keygate_decision_log_upload_failing";
const BUFFER: &str = "keygate_decision_log_upload_buffer_bytes";
const SHIPPED: &str = "keygate_decision_log_upload_shipped_seq";

/// The fixture config with a decision log at `log` shipped to `url` every second.
fn upload_config(log: &Path, url: &str, extra: &str) -> String {
    config(&format!(
        "\n[decision_log]\npath = {:?}\n{extra}\n[decision_log.upload]\nurl = {url:?}\n\
         min_delay_seconds = 1\nmax_delay_seconds = 1\ntimeout_seconds = 2\n",
        log.display().to_string()
    ))
}

async fn encrypt(client: &mut Client, n: usize) {
    for _ in 0..n {
        client
            .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
            .await
            .expect_ok();
    }
}

/// The log's files, oldest first: rotated (plain or compressed once shipped), then live.
fn log_files(log: &Path) -> Vec<PathBuf> {
    segments::all(log).into_iter().map(|s| s.path).collect()
}

/// Every line of the log, compressed files read through. The lifecycle thread may compress a
/// file between the listing and the reading (the plain file goes, its `.zst` comes): then the
/// files are listed and read again.
async fn local_lines(log: &Path) -> Vec<String> {
    eventually(PATIENCE, "the log's files read", async || {
        let texts: Result<Vec<String>, _> = log_files(log)
            .iter()
            .map(|f| segments::read_text(f))
            .collect();
        match texts {
            Ok(texts) => Some(
                texts
                    .iter()
                    .flat_map(|t| t.lines().map(str::to_owned))
                    .collect(),
            ),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
                None
            }
        }
    })
    .await
}

/// `keygate audit verify` of the collector's copy.
fn copy_verifies(collector: &Collector, dir: &Path) {
    let copy = dir.join("collected.log");
    collector.write_log(&copy);
    let out = keygate(&["audit", "verify", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_gzipped_complete_and_verifiable_across_rotations() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("decisions.log");
    let token = root.path().join("collector.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let collector = Collector::start().await;
    let extra = "rotate_bytes = 6000";
    let mut text = upload_config(&log, &collector.url(), extra);
    text.push_str(&format!(
        "bearer_token_path = {:?}\nupload_size_limit_bytes = 2048\n",
        token.display().to_string()
    ));
    let server = TestServer::start(&text).await;
    let mut client = server.client().await;
    encrypt(&mut client, 40).await;
    wait_for(PATIENCE, "40 events at the collector", || {
        collector.lines().len() == 40
    })
    .await;
    assert!(log_files(&log).len() >= 3, "the log rotated meanwhile");
    // Shipped files are compressed; the uploader had finished with them.
    wait_for(PATIENCE, "a shipped file compressed", || {
        log_files(&log)
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "zst"))
    })
    .await;
    assert_eq!(
        collector.lines(),
        local_lines(&log).await,
        "the exact lines, in order"
    );
    assert!(
        collector.problems().is_empty(),
        "{:?}",
        collector.problems()
    );
    assert!(collector.requests() > 1, "bodies stay under 2 KiB gzip'd");
    assert!(
        collector
            .authorization()
            .iter()
            .all(|a| a == "Bearer s3cret-token")
    );
    copy_verifies(&collector, root.path());
    // Every file of the log, the upload position included, is 0600.
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(root.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("decisions.log") {
            assert_eq!(entry.metadata().unwrap().mode() & 0o777, 0o600, "{name}");
        }
    }
    let m = server.metrics();
    assert_eq!(metric(&m, UPLOADED), 40.0);
    assert_eq!(metric(&m, SHIPPED), 40.0);
    assert_eq!(metric(&m, BUFFER), 0.0);
    assert!(
        server
            .decision_log()
            .settled(&log_files(&log)[0])
            .unwrap()
            .shipped
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collectors_are_trusted_through_the_configured_ca_bundle() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("decisions.log");
    let (collector, ca) = Collector::start_tls(&root.path().join("certs")).await;
    let mut text = upload_config(&log, &collector.https_url(), "");
    text.push_str(&format!("ca_cert = {:?}\n", ca.display().to_string()));
    let server = TestServer::start(&text).await;
    let mut client = server.client().await;
    encrypt(&mut client, 5).await;
    wait_for(PATIENCE, "5 events over HTTPS", || {
        collector.lines().len() == 5
    })
    .await;
    copy_verifies(&collector, root.path());
    server.stop().await;
    // A collector whose certificate the bundle does not vouch for gets nothing.
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = Collector::start_tls(other.path()).await;
    let mut text = upload_config(&root.path().join("second.log"), &stranger.https_url(), "");
    text.push_str(&format!("ca_cert = {:?}\n", ca.display().to_string()));
    let server = TestServer::start(&text).await;
    let mut client = server.client().await;
    encrypt(&mut client, 1).await;
    wait_for(PATIENCE, "the untrusted collector refused", || {
        metric(&server.metrics(), FAILED) >= 1.0
    })
    .await;
    assert!(stranger.lines().is_empty() && stranger.requests() == 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_for_a_while_gets_everything_afterwards() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("decisions.log");
    // A port with nothing listening: the collector comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = upload_config(&log, &format!("http://{port}"), "");
    let server = TestServer::start(&text).await;
    let mut client = server.client().await;
    encrypt(&mut client, 10).await;
    wait_for(PATIENCE, "failed uploads", || {
        metric(&server.metrics(), FAILED) >= 1.0
    })
    .await;
    // keygate stops and starts again while the collector is still down.
    server.stop().await;
    let server = TestServer::start(&text).await;
    let mut client = server.client().await;
    encrypt(&mut client, 10).await;
    let collector = Collector::start_on(port).await;
    wait_for(PATIENCE, "all 20 events at the collector", || {
        collector.lines().len() == 20
    })
    .await;
    assert_eq!(collector.lines(), local_lines(&log).await);
    assert!(
        collector.problems().is_empty(),
        "{:?}",
        collector.problems()
    );
    copy_verifies(&collector, root.path());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_answering_500_or_hanging_holds_up_no_request() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("decisions.log");
    let collector = Collector::start().await;
    collector.set_mode(Mode::Status(500));
    let server = TestServer::start(&upload_config(&log, &collector.url(), "")).await;
    let mut client = server.client().await;
    encrypt(&mut client, 5).await;
    wait_for(PATIENCE, "uploads answered 500", || {
        metric(&server.metrics(), FAILED) >= 2.0
    })
    .await;
    let m = server.metrics();
    assert!(metric(&m, BUFFER) > 0.0);
    assert_eq!(metric(&m, FAILING), 1.0);
    // Without require_upload a failing collector refuses nothing.
    encrypt(&mut client, 5).await;

    // A collector that accepts the upload and never answers.
    collector.set_mode(Mode::Hang);
    wait_for(PATIENCE, "an upload hanging", || collector.hanging() >= 1).await;
    encrypt(&mut client, 20).await;
    assert!(server.decision_log().flush(Duration::from_secs(10)));
    assert_eq!(
        server.decision_log().head().0,
        30,
        "every line written meanwhile"
    );
    assert!(collector.lines().is_empty());

    collector.set_mode(Mode::Store);
    wait_for(PATIENCE, "all 30 events once it answers", || {
        collector.lines().len() == 30
    })
    .await;
    copy_verifies(&collector, root.path());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_upload_refuses_requests_only_while_uploads_fail() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("decisions.log");
    let collector = Collector::start().await;
    collector.set_mode(Mode::Status(503));
    let mut text = upload_config(&log, &collector.url(), "");
    text.push_str("require_upload = true\n");
    let server = TestServer::start(&text).await;
    let mut client = server.client().await;
    encrypt(&mut client, 1).await;
    wait_for(PATIENCE, "the collector failing", || {
        metric(&server.metrics(), FAILING) == 1.0
    })
    .await;
    let refused = client
        .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
        .await;
    refused.expect_error(500, "InternalException");
    assert!(refused.raw.contains("require_upload"), "{}", refused.raw);
    collector.set_mode(Mode::Store);
    wait_for(PATIENCE, "the collector taking the log again", || {
        metric(&server.metrics(), FAILING) == 0.0
    })
    .await;
    encrypt(&mut client, 1).await;
    wait_for(PATIENCE, "every line shipped", || {
        collector.lines().len() == 3
    })
    .await;
    copy_verifies(&collector, root.path());
    server.stop().await;
}

/// `python3 examples/opa-collector.py 0 FILE`, and the address it listens on.
fn python_collector(out: &Path) -> (Child, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/opa-collector.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("0")
        .arg(out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_python_collector_receives_a_verifiable_copy() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("decisions.log");
    let copy = root.path().join("collected.log");
    let (mut python, addr) = python_collector(&copy);
    let server = TestServer::start(&upload_config(&log, &format!("http://{addr}"), "")).await;
    let mut client = server.client().await;
    encrypt(&mut client, 12).await;
    wait_for(PATIENCE, "12 events in the Python collector's file", || {
        std::fs::read_to_string(&copy).is_ok_and(|t| t.lines().count() == 12)
    })
    .await;
    let _ = python.kill();
    let _ = python.wait();
    let out = keygate(&["audit", "verify", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        std::fs::read_to_string(&log).unwrap()
    );
    server.stop().await;
}
