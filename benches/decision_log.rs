//! What the decision log's writer thread pays per line, with and without signed digests (the
//! writer then also hashes every batch it appends into the live file's SHA-256): 1,000 lines
//! queued and flushed per iteration, a realistic 700-byte input each. Digest signing itself
//! runs on the notary thread once per interval, and uploading on the uploader's thread.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keygate::policy::decision_log::{DecisionLog, DecisionLogConfig, DecisionRecord, DigestConfig};
use keygate::signing::Ed25519FileKey;

const LINES: u64 = 1000;

fn record(n: u64) -> DecisionRecord {
    let input = serde_json::json!({
        "operation": "Encrypt", "keystore": "payments", "uri_prefix": "/payments", "key_id": "foo",
        "request_metadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:role/Reader",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d",
            "kmsOperation": "Encrypt", "kmsRequestId": format!("4c6b7b0e-8d2f-4f55-9a3b-{n:012}"),
            "kmsViaService": "ebs"},
        "access_key_id": "BETWEEN2TENAND3TENCHARACTERS", "source_ip": "10.0.3.7",
        "client_subject": null, "time": "2026-11-22T06:01:02.123456789Z", "aad_length": 31,
    });
    DecisionRecord {
        timestamp: SystemTime::now(),
        input: serde_json::value::to_raw_value(&input).unwrap(),
        decision: Some((true, vec![])),
        error: None,
        requested_by: "10.0.3.7:41622".into(),
        req_id: n,
        eval_ns: 6000,
        revision: "rev".into(),
        kms_request_id: Some(format!("4c6b7b0e-8d2f-4f55-9a3b-{n:012}")),
        error_name: None,
    }
}

fn write(c: &mut Criterion, name: &str, digests: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = DecisionLogConfig::new(dir.path().join("decisions.log"));
    config.queue_capacity = 2 * LINES as usize;
    // The writer alone: no rotation (and so no compression on the lifecycle thread) while it
    // is measured; benches/decision_log_files.rs measures the files' lifecycle.
    config.rotate_bytes = None;
    config.rotate_interval = None;
    if digests {
        let (_, key) = Ed25519FileKey::generate().unwrap();
        config.digest = Some(DigestConfig {
            dir: dir.path().join("digests"),
            interval: Duration::from_secs(3600),
            signer: Arc::new(key),
        });
    }
    let log = DecisionLog::open(config).unwrap();
    c.bench_function(name, |b| {
        b.iter_batched(
            || (0..LINES).map(record).collect::<Vec<_>>(),
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
}

fn writer(c: &mut Criterion) {
    write(c, "decision_log 1000 lines", false);
    write(c, "decision_log 1000 lines with digests", true);
}

criterion_group!(benches, writer);
criterion_main!(benches);
