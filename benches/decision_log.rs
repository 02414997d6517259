//! The decision log's costs, per line: what the one writer thread pays to seal and append
//! lines (1,000 queued and flushed per iteration; plain, with signed digests, with masked
//! lines), what making a record costs the request's thread with and without masking, the
//! least masking would cost the writer instead (parse and re-serialize the input), and
//! `audit verify` over a plain file. Records are made as the Authorizer makes them, from a
//! policy input shaped like an XKS Encrypt's. Bytes per line are printed once (stderr).
//!
//! `cargo bench --bench decision_log`. Lines/s = 1,000 / the time of a `1000 lines` bench;
//! verify lines/s = 10,000 / the time of `audit verify 10000 lines`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keygate::policy::decision_log::chain::Verifier;
use keygate::policy::decision_log::mask::{MaskToml, Masking};
use keygate::policy::decision_log::{
    DecisionLog, DecisionLogConfig, DecisionRecord, DigestConfig, Requester,
};
use keygate::policy::{Decision, Interface, PolicyInput};
use keygate::signing::Ed25519FileKey;

const LINES: u64 = 1000;
const VERIFY_LINES: u64 = 10_000;

fn metadata(n: u64) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(map) = serde_json::json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:role/Reader",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d",
        "kmsOperation": "Encrypt", "kmsRequestId": format!("4c6b7b0e-8d2f-4f55-9a3b-{n:012}"),
        "kmsViaService": "ebs"
    }) else {
        unreachable!()
    };
    map
}

/// A record as `Authorizer::judge_from` makes it for an allowed Encrypt.
fn record(n: u64, masking: Option<&Masking>) -> DecisionRecord {
    let metadata = metadata(n);
    let input = PolicyInput {
        interface: Interface::Xks,
        operation: "Encrypt",
        keystore: "payments",
        uri_prefix: "/payments",
        key_id: "foo",
        request_metadata: &metadata,
        access_key_id: Some("BETWEEN2TENAND3TENCHARACTERS"),
        source_ip: Some("10.0.3.7".parse().unwrap()),
        client_subject: None,
        time: SystemTime::now(),
        aad_length: 31,
        request_uid: None,
        peer: None,
    };
    let prepared = input.to_value();
    let outcome = Ok(Decision {
        allow: true,
        reasons: vec![],
        eval_ns: 6000,
        revision: "9f2c".repeat(16),
    });
    let peer: SocketAddr = "10.0.3.7:41622".parse().unwrap();
    let who = Requester {
        peer: Some(peer),
        req_id: n,
    };
    DecisionRecord::new(&input, &prepared, &outcome, "rev", who, masking)
}

/// Masks the principal and the caller's address (HMAC) and erases kmsViaService.
fn masking(dir: &Path) -> Masking {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("mask.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let toml = MaskToml {
        erase: Some(vec!["/input/request_metadata/kmsViaService".into()]),
        hmac: Some(vec![
            "/input/request_metadata/awsPrincipalArn".into(),
            "/input/source_ip".into(),
            "/requested_by".into(),
        ]),
        hmac_key_file: Some(key),
    };
    Masking::new(&toml.check(dir, &mut Vec::new()).unwrap()).unwrap()
}

fn open(dir: &Path, digests: bool) -> DecisionLog {
    let mut config = DecisionLogConfig::new(dir.join("decisions.log"));
    config.queue_capacity = 2 * LINES as usize;
    // The writer alone: no rotation (and so no compression on the lifecycle thread) while it
    // is measured; benches/decision_log_files.rs measures the files' lifecycle.
    config.rotate_bytes = None;
    config.rotate_interval = None;
    if digests {
        let (_, key) = Ed25519FileKey::generate().unwrap();
        config.digest = Some(DigestConfig {
            dir: dir.join("digests"),
            interval: Duration::from_secs(3600),
            signer: Arc::new(key),
        });
    }
    DecisionLog::open(config).unwrap()
}

fn write(c: &mut Criterion, name: &str, digests: bool, masked: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mask = masked.then(|| masking(dir.path()));
    let log = open(dir.path(), digests);
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                (0..LINES)
                    .map(|n| record(n, mask.as_ref()))
                    .collect::<Vec<_>>()
            },
            |records| {
                for r in records {
                    log.record(r).unwrap();
                }
                assert!(log.flush(Duration::from_secs(30)));
            },
            BatchSize::PerIteration,
        )
    });
    assert!(log.close(Duration::from_secs(30)));
    let path = dir.path().join("decisions.log");
    let bytes = std::fs::metadata(&path).unwrap().len();
    let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
    eprintln!("{name}: {} bytes per line", bytes / lines.max(1));
}

fn writer(c: &mut Criterion) {
    write(c, "decision_log 1000 lines", false, false);
    write(c, "decision_log 1000 lines with digests", true, false);
    write(c, "decision_log 1000 masked lines", false, true);
}

/// Where masking could run: on the request's thread as the record is made (what keygate
/// does), or on the writer, which would first have to parse the serialized input again.
fn making(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mask = masking(dir.path());
    c.bench_function("record: make", |b| b.iter(|| record(black_box(7), None)));
    c.bench_function("record: make masked", |b| {
        b.iter(|| record(black_box(7), Some(&mask)))
    });
    let made = record(7, None);
    c.bench_function(
        "record: parse and re-serialize the input (writer floor)",
        |b| {
            b.iter(|| {
                let tree: serde_json::Value = serde_json::from_str(made.input.get()).unwrap();
                serde_json::value::to_raw_value(&tree).unwrap()
            })
        },
    );
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), false);
    for n in 0..VERIFY_LINES {
        log.record(record(n, None)).unwrap();
        if n % LINES == LINES - 1 {
            assert!(log.flush(Duration::from_secs(30)));
        }
    }
    assert!(log.close(Duration::from_secs(30)));
    let path = dir.path().join("decisions.log");
    c.bench_function("audit verify 10000 lines", |b| {
        b.iter(|| {
            let v = Verifier::verify_files(&[path.as_path()]).unwrap();
            assert_eq!(v.lines as u64, VERIFY_LINES);
        })
    });
}

criterion_group!(benches, writer, making, verify);
criterion_main!(benches);
