//! Criterion benchmarks of the per-request hot paths: SigV4 verification, JSON decode and
//! encode, AAD framing and CDIV, and a software-backend encryption.
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

fn benches(c: &mut Criterion) {
    let body = body();
    let headers = signed_headers(body.as_bytes());
    let creds = vec![Credential::new(
        AccessKeyId::parse(AK).unwrap(),
        Secret::parse(SECRET.into()).unwrap(),
    )];
    c.bench_function("sigv4_verify", |b| {
        b.iter(|| {
            let req = SignedRequest {
                method: "POST",
                path: PATH,
                authority: None,
                headers: &headers,
                body: body.as_bytes(),
            };
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

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
