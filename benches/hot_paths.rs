//! Criterion benchmarks of the per-request hot paths: SigV4 verification, JSON decode and
//! encode, AAD framing and CDIV, a software-backend encryption, and `request_path_encrypt`:
//! everything keygate does for one Encrypt request between reading its body and writing
//! its answer (route, SigV4, JSON, policy with its input, key lookup, AES-GCM, response,
//! decision-log hand-off, metrics), in-process, without the connection. The decision-log
//! writer thread's share (sealing and writing the line) runs beside it and is not counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use keygate::credentials::{AccessKeyId, Secret};
use keygate::keys::KeyAdmin;
use keygate::keys::software::{SoftwareAdmin, SoftwareBackend};
use keygate::sigv4::{Credential, SignedRequest, verify};
use keygate::xks::api::{self, Limits};
use keygate::xks::envelope::{CiphertextMetadata, cdiv, frame_aad};

const AK: &str = "BETWEEN2TENAND3TENCHARACTERS";
const SECRET: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";
const PATH: &str = "/p/kms/xks/v1/keys/foo/encrypt";

fn body() -> String {
    serde_json::json!({
        "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:role/app", "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d", "kmsOperation": "GenerateDataKey", "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae", "kmsViaService": "ebs"},
        "plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
    })
    .to_string()
}

fn signed_headers(body: &[u8]) -> HeaderMap {
    let identity = aws_credential_types::Credentials::new(AK, SECRET, None, None, "bench").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms-xks-proxy")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [
        ("host", "xks.example.com"),
        ("content-type", "application/json"),
    ];
    let req = SignableRequest::new(
        "POST",
        format!("https://xks.example.com{PATH}"),
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

/// The benchmark's Encrypt request as the router hands it on.
fn signed<'a>(headers: &'a HeaderMap, body: &'a str) -> SignedRequest<'a> {
    SignedRequest {
        method: "POST",
        path: PATH,
        authority: None,
        headers,
        body: body.as_bytes(),
    }
}

fn benches(c: &mut Criterion) {
    let body = body();
    let headers = signed_headers(body.as_bytes());
    let creds = vec![Credential::new(
        AccessKeyId::parse(AK).unwrap(),
        Secret::parse(SECRET.into()).unwrap(),
    )];
    c.bench_function("sigv4_verify", |b| {
        b.iter(|| {
            let req = signed(&headers, &body);
            verify(&req, &creds, "us-east-1", SystemTime::now()).unwrap();
        })
    });
    let limits = Limits {
        max_plaintext: 8192,
        max_aad: 16384,
    };
    c.bench_function("json_decode_encrypt", |b| {
        b.iter(|| api::parse_encrypt(body.as_bytes(), limits).unwrap())
    });
    let resp = api::EncryptResponse {
        authentication_tag: api::b64(&[1; 16]),
        ciphertext: api::b64(&[2; 64]),
        ciphertext_data_integrity_value: Some(api::b64(&[3; 32])),
        ciphertext_metadata: api::b64(&CiphertextMetadata::new(1).encode()),
        initialization_vector: api::b64(&[4; 12]),
    };
    c.bench_function("json_encode_encrypt_response", |b| {
        b.iter(|| serde_json::to_string(&resp).unwrap())
    });
    let aad = [7u8; 64];
    let meta = CiphertextMetadata::new(1).encode();
    c.bench_function("aad_framing", |b| {
        b.iter(|| frame_aad(&aad, &meta).unwrap())
    });
    c.bench_function("cdiv_64b", |b| {
        b.iter(|| cdiv(&aad, &meta, &[1; 12], &[2; 64], &[3; 16]))
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    SoftwareAdmin::open(&path)
        .unwrap()
        .create("foo", keygate::keys::KeyUsage::BOTH)
        .unwrap();
    let backend = SoftwareBackend::open(&path).unwrap();
    let framed = frame_aad(&aad, &meta).unwrap();
    for size in [64usize, 4096] {
        let pt = vec![9u8; size];
        c.bench_function(&format!("software_encrypt_{size}b"), |b| {
            b.iter(|| backend.encrypt_now("foo", 1, &pt, &framed).unwrap())
        });
    }
}

/// One Encrypt request through keygate's own code, as the router runs it after the body is
/// read: software backend, embedded default policy, decision log on and off.
fn request_path(c: &mut Criterion) {
    request_path_with(
        c,
        "request_path_encrypt",
        "[decision_log]\npath = \"decisions.log\"\n",
    );
    request_path_with(c, "request_path_encrypt_without_decision_log", "");
}

fn request_path_with(c: &mut Criterion, name: &str, decision_log: &str) {
    use keygate::xks::{self, ConnInfo, RequestFacts, route};

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let mut admin = SoftwareAdmin::open(&keys).unwrap();
    for id in ["foo", "keygate-health"] {
        admin.create(id, keygate::keys::KeyUsage::BOTH).unwrap();
    }
    let config_text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
region = "us-east-1"
[backend]
kind = "software"
health_key = "keygate-health"
[backend.software]
key_file = "keys.json"
{decision_log}
[[keystore]]
name = "main"
uri_prefix = "/p"
keys = ["foo"]
[[keystore.credential]]
access_key_id = "{AK}"
secret = "{SECRET}"
"#
    );
    let config_path = dir.path().join("keygate.toml");
    std::fs::write(&config_path, config_text).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        let config = keygate::config::Config::load(&config_path).unwrap();
        keygate::app::App::build(&config).unwrap()
    });
    // As `keygate load` sends it: 32-byte plaintext, AAD, no CDIV.
    let body = serde_json::json!({
        "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:role/app", "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d", "kmsOperation": "Encrypt", "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"},
        "plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n"
    })
    .to_string();
    let headers = signed_headers(body.as_bytes());
    let conn = ConnInfo {
        peer: "127.0.0.1:40000".parse().unwrap(),
        client_subject: None,
    };
    c.bench_function(name, |b| {
        b.iter(|| {
            let route = route(&app.keystores(), PATH).unwrap();
            let req = signed(&headers, &body);
            let mut facts = RequestFacts::default();
            let svc = &app.xks;
            let result = rt.block_on(xks::handle(
                &svc.handles,
                svc.api_limits(),
                &route,
                &req,
                &conn,
                &mut facts,
            ));
            app.metrics.record_request(keygate::metrics::RequestRecord {
                operation: route.operation.as_str(),
                keystore: &route.keystore.name,
                error_name: "",
                access_key_id: facts.access_key_id.as_deref(),
                latency: std::time::Duration::from_micros(100),
            });
            result.unwrap().len()
        })
    });
}

criterion_group!(hot_paths, benches, request_path);
criterion_main!(hot_paths);
