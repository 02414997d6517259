//! The XKS gate without a server: narrow handles (software keys, the embedded policy, a
//! decision log) and requests signed by aws-sigv4's signer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::config::Config;
use crate::health::HealthMonitor;
use crate::keys::software::{SoftwareAdmin, SoftwareBackend};
use crate::keys::{KeyAdmin, KeyUsage};
use crate::metrics::Metrics;
use crate::policy::decision_log::{DecisionLog, DecisionLogConfig};
use crate::policy::{Authorizer, PolicyEngine};

const AK: &str = "BETWEEN2TENAND3TENCHARACTERS";
const SECRET: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";

struct Gate {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    handles: Handles,
    keystores: keystore::Keystores,
}

fn gate() -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let mut admin = SoftwareAdmin::open(&keys).unwrap();
    for id in ["foo", "keygate-health"] {
        admin.create(id, KeyUsage::BOTH).unwrap();
    }
    let text = format!(
        "[backend]\nkind = \"software\"\n[backend.software]\nkey_file = \"keys.json\"\n\
         [[keystore]]\nname = \"main\"\nuri_prefix = \"/p\"\nkeys = [\"foo\"]\n\
         [[keystore.credential]]\naccess_key_id = \"{AK}\"\nsecret = \"{SECRET}\"\n"
    );
    let config = Config::parse(&text, &dir.path().join("k.toml")).unwrap();
    let backend: Arc<dyn crate::keys::KeyBackend> = Arc::new(SoftwareBackend::open(&keys).unwrap());
    let log = dir.path().join("d.log");
    let decision_log = DecisionLog::open(DecisionLogConfig::new(log.clone())).unwrap();
    let authorizer = Authorizer::new(
        PolicyEngine::embedded().unwrap(),
        Some(decision_log),
        Arc::new(Metrics::new("software")),
    );
    let health = Arc::new(HealthMonitor::new(
        backend.clone(),
        "keygate-health".into(),
        1,
    ));
    Gate {
        _dir: dir,
        log,
        handles: Handles {
            keys: backend,
            authorizer,
            health,
        },
        keystores: keystore::Keystores::from_config(&config),
    }
}

fn signed_headers(path: &str, body: &[u8]) -> HeaderMap {
    let identity = aws_credential_types::Credentials::new(AK, SECRET, None, None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms-xks-proxy")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("host", "xks.example.com")];
    let req = SignableRequest::new(
        "POST",
        format!("https://xks.example.com{path}"),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let mut map = HeaderMap::new();
    for (k, v) in headers.into_iter().chain(instructions.headers()) {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

async fn call(g: &Gate, path: &str, body: serde_json::Value) -> Result<String, XksError> {
    let body = body.to_string();
    let headers = signed_headers(path, body.as_bytes());
    let req = SignedRequest {
        method: "POST",
        path,
        authority: None,
        headers: &headers,
        body: body.as_bytes(),
    };
    let route = route(&g.keystores, path)?;
    let conn = ConnInfo {
        peer: "127.0.0.1:1".parse().unwrap(),
        client_subject: None,
    };
    let limits = api::Limits {
        max_plaintext: 4300,
        max_aad: 8192,
    };
    let mut facts = RequestFacts::default();
    handle(&g.handles, limits, &route, &req, &conn, &mut facts).await
}

fn metadata(id: &str, op: &str) -> serde_json::Value {
    serde_json::json!({"awsPrincipalArn": "arn:aws:iam::1:role/a", "kmsKeyArn": "arn:aws:kms:us-east-1:1:key/k", "kmsOperation": op, "kmsRequestId": id})
}

#[tokio::test]
async fn judged_operations_close_their_judgement_and_health_is_not_judged() {
    let g = gate();
    let ok = call(
        &g,
        "/p/kms/xks/v1/keys/foo/encrypt",
        serde_json::json!({"requestMetadata": metadata("r1", "Encrypt"), "plaintext": "AAAA", "encryptionAlgorithm": "AES_GCM"}),
    )
    .await
    .unwrap();
    assert!(ok.contains("ciphertext"));
    let unlisted = call(
        &g,
        "/p/kms/xks/v1/keys/keygate-health/metadata",
        serde_json::json!({"requestMetadata": metadata("r2", "DescribeKey")}),
    )
    .await;
    assert_eq!(unlisted.unwrap_err().name(), "KeyNotFoundException");
    let health = call(
        &g,
        "/p/kms/xks/v1/health",
        serde_json::json!({"requestMetadata": {"kmsRequestId": "r3", "kmsOperation": "KmsHealthCheck"}}),
    )
    .await;
    assert!(health.unwrap().contains("ACTIVE"));
    assert!(g.handles.authorizer.close(Duration::from_secs(5)));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&g.log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["input"]["request_metadata"]["kmsRequestId"].clone(),
                l["error_name"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("r1".into(), serde_json::Value::Null),
            ("r2".into(), "KeyNotFoundException".into())
        ]
    );
}
