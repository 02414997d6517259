//! The decision log's rotated files: zstd against gzip on real decision lines (written by the
//! real writer, a realistic 700-byte input each). For each codec: the compression ratio, the
//! compression speed (MB of plain text per second, as the lifecycle thread compresses a
//! rotated file), and the speed of the chain verifier (`keygate audit verify`) on the plain
//! and the compressed file. Runs are paired (plain, zstd, gzip in turn) and the medians
//! reported, so load on the machine weighs on all three alike.
//!
//! `cargo bench --bench decision_log_files` (LINES=200000 to change the file's size).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use keygate::policy::decision_log::chain::Verifier;
use keygate::policy::decision_log::{
    Codec, DecisionLog, DecisionLogConfig, DecisionRecord, compress,
};

const RUNS: usize = 5;

fn record(n: u64) -> DecisionRecord {
    let input = serde_json::json!({
        "operation": "Encrypt", "keystore": "payments", "uri_prefix": "/payments", "key_id": "foo",
        "request_metadata": {"awsPrincipalArn": "arn:aws:iam::123456789012:role/Reader",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d",
            "kmsOperation": "Encrypt", "kmsRequestId": format!("4c6b7b0e-8d2f-4f55-9a3b-{n:012}"),
            "kmsViaService": "ebs"},
        "access_key_id": "BETWEEN2TENAND3TENCHARACTERS", "source_ip": "10.0.3.7",
        "client_subject": null, "aad_length": 31,
    });
    DecisionRecord {
        timestamp: SystemTime::now(),
        input: serde_json::value::to_raw_value(&input).unwrap(),
        decision: Some((true, vec![])),
        error: None,
        requested_by: Some("10.0.3.7:41622".into()),
        req_id: n,
        eval_ns: 6000,
        revision: "rev".into(),
        error_name: None,
        mask: Default::default(),
    }
}

/// A plain log of `lines` lines written by the real writer.
fn write_log(dir: &Path, lines: u64) -> PathBuf {
    let path = dir.join("decisions.log");
    let mut c = DecisionLogConfig::new(path.clone());
    c.rotate_bytes = None;
    c.rotate_interval = None;
    c.lifecycle.compression = None;
    c.queue_capacity = 16384;
    let log = DecisionLog::open(c).unwrap();
    for n in 0..lines {
        while log.record(record(n)).is_err() {}
        if n % 8192 == 0 {
            assert!(log.flush(Duration::from_secs(60)));
        }
    }
    assert!(log.close(Duration::from_secs(60)));
    assert_eq!(log.lost(), 0, "every line written");
    path
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn verify_secs(path: &Path) -> f64 {
    let started = Instant::now();
    Verifier::verify_files(&[path]).unwrap();
    started.elapsed().as_secs_f64()
}

fn main() {
    let lines: u64 = std::env::var("LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let plain = write_log(dir.path(), lines);
    let plain_bytes = std::fs::metadata(&plain).unwrap().len();
    let mb = plain_bytes as f64 / 1e6;
    println!(
        "{lines} lines, {:.1} MB plain, {:.0} bytes/line; {RUNS} paired runs, medians",
        mb,
        plain_bytes as f64 / lines as f64
    );
    let codecs = [Codec::Zstd, Codec::Gzip];
    let mut compress_s: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut verify_s: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut sizes = [0u64; 2];
    let stop = AtomicBool::new(false);
    for _ in 0..RUNS {
        verify_s[0].push(verify_secs(&plain));
        for (i, codec) in codecs.iter().enumerate() {
            let rotated = dir.path().join("decisions.log.1");
            std::fs::copy(&plain, &rotated).unwrap();
            let started = Instant::now();
            let done = compress::compress(&rotated, *codec, &stop).unwrap();
            compress_s[i].push(started.elapsed().as_secs_f64());
            sizes[i] = std::fs::metadata(&done).unwrap().len();
            verify_s[i + 1].push(verify_secs(&done));
            std::fs::remove_file(done).unwrap();
        }
    }
    let plain_verify = median(verify_s[0].clone());
    println!(
        "plain: verify {:.0} lines/s ({:.0} MB/s)",
        lines as f64 / plain_verify,
        mb / plain_verify
    );
    for (i, codec) in codecs.iter().enumerate() {
        let c = median(compress_s[i].clone());
        let v = median(verify_s[i + 1].clone());
        println!(
            "{}: ratio {:.1}:1 ({} bytes), compress {:.0} MB/s, verify {:.0} lines/s ({:.2}x plain)",
            codec.as_str(),
            plain_bytes as f64 / sizes[i] as f64,
            sizes[i],
            mb / c,
            lines as f64 / v,
            plain_verify / v
        );
    }
}
