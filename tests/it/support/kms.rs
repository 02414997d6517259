//! The KMS v2 door in tests: `KmsServer` runs keygate's `App` in this process with its KMS v2
//! door on a socket in a temp dir (the fixture's software keys); `connect` is a Rust gRPC
//! client over the real socket; `python` finds the independent client's interpreter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keygate::app::App;
use keygate::config::Config;
use keygate::keys::KeyAdmin;
use keygate::keys::software::SoftwareAdmin;
use keygate::kms_v2::proto::key_management_service_client::KeyManagementServiceClient;
use keygate::kms_v2::proto::{DecryptRequest, EncryptRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

use super::fixtures;

pub type KmsClient = KeyManagementServiceClient<Channel>;

/// The `[kms_v2]` table every KMS v2 test server gets (socket `kms.sock` beside the config,
/// key `foo`), plus `extra` lines.
pub fn kms_table(extra: &str) -> String {
    format!("\n[kms_v2]\nsocket = \"kms.sock\"\nkey = \"foo\"\n{extra}\n")
}

/// A gRPC client on the socket at `path`.
pub async fn connect(path: &Path) -> KmsClient {
    let path = path.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    KeyManagementServiceClient::new(channel)
}

/// Status, which must succeed at the gRPC level.
pub async fn status(client: &mut KmsClient) -> StatusResponse {
    client.status(StatusRequest {}).await.unwrap().into_inner()
}

/// Encrypt: (ciphertext, key_id) or the status.
pub async fn encrypt(
    client: &mut KmsClient,
    plaintext: &[u8],
    uid: &str,
) -> Result<(Vec<u8>, String), tonic::Status> {
    let r = client
        .encrypt(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: uid.into(),
        })
        .await?
        .into_inner();
    assert!(r.annotations.is_empty());
    Ok((r.ciphertext, r.key_id))
}

/// Decrypt with no annotations.
pub async fn decrypt(
    client: &mut KmsClient,
    ciphertext: &[u8],
    key_id: &str,
    uid: &str,
) -> Result<Vec<u8>, tonic::Status> {
    decrypt_with(client, ciphertext, key_id, uid, HashMap::new()).await
}

pub async fn decrypt_with(
    client: &mut KmsClient,
    ciphertext: &[u8],
    key_id: &str,
    uid: &str,
    annotations: HashMap<String, Vec<u8>>,
) -> Result<Vec<u8>, tonic::Status> {
    Ok(client
        .decrypt(DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: uid.into(),
            key_id: key_id.into(),
            annotations,
        })
        .await?
        .into_inner()
        .plaintext)
}

/// The interpreter that runs the independent client: `$KEYGATE_PYTHON`, or the repository's
/// `.venv` that scripts/test.sh makes. Missing, or without grpcio: the test fails.
pub fn python() -> PathBuf {
    let python = std::env::var_os("KEYGATE_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        PathBuf::from,
    );
    let ok = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the KMS v2 tests need Python with grpcio and grpcio-tools at {} \
         (run scripts/test.sh, which makes .venv, or set KEYGATE_PYTHON)",
        python.display()
    );
    python
}

/// keygate in this process serving both doors as `keygate serve` does, the KMS v2 plugin on
/// a socket and XKS on plain HTTP, on the fixture's software keys and one Authorizer.
pub struct KmsServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The XKS listener.
    pub xks: std::net::SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl KmsServer {
    /// A server on the fixture config plus `kms_table(kms_extra)` and `extra` config text.
    pub async fn start(kms_extra: &str, extra: &str) -> KmsServer {
        let text = fixtures::config(&format!("{extra}\n{}", kms_table(kms_extra)));
        let (dir, config_path) = fixtures::server_dir(&text);
        let config = Config::load(&config_path).unwrap();
        let app = Arc::new(App::build(&config).unwrap());
        let door = app.kms_v2.clone().expect("the config has [kms_v2]");
        let socket = door.settings().socket.clone();
        let (listener, file) = keygate::kms_v2::socket::BoundSocket::bind(&socket)
            .and_then(keygate::kms_v2::socket::BoundSocket::into_tokio)
            .unwrap();
        app.health.refresh().await;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let xks = tcp.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let xks_door = keygate::server::run(tcp, app.clone(), wait());
        let kms_door = keygate::kms_v2::listener::run(listener, door, wait());
        let task = tokio::spawn(async move {
            tokio::join!(xks_door, kms_door);
            drop(file);
        });
        KmsServer {
            dir,
            socket,
            xks,
            app,
            stop: Some(stop),
            task,
        }
    }

    pub async fn client(&self) -> KmsClient {
        connect(&self.socket).await
    }

    /// The metrics text as `name{labels}` -> value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        super::parse_metrics(&self.app.metrics.encode())
    }

    /// Every decision-log line written so far (the config must have `[decision_log]`).
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        let log = self.app.authorizer.decision_log().unwrap();
        assert!(log.flush(Duration::from_secs(10)));
        let text = std::fs::read_to_string(self.dir.path().join("decisions.log")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Changes the software key file with keygate's admin, then has the running backend
    /// read it (as the reload supervisor would on its next tick).
    pub fn admin(&self, f: impl FnOnce(&mut SoftwareAdmin)) {
        let mut admin = SoftwareAdmin::open(&self.dir.path().join("keys.json")).unwrap();
        f(&mut admin);
        self.app.software.as_ref().unwrap().reload().unwrap();
    }

    /// Rotates `key` (a new version new encryptions use; old ones still decrypt).
    pub fn rotate(&self, key: &str) {
        self.admin(|a| {
            a.rotate(key).unwrap();
        });
    }

    /// Stops accepting, drains, and closes the decision log as `keygate serve` does.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("the KMS v2 door did not drain")
            .unwrap();
        self.app.finish();
        assert!(
            !self.socket.exists(),
            "the socket file is removed at shutdown"
        );
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}
