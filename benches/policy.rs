//! Policy evaluation cost with the "financial report" example: the RVM (what requests use, VMs
//! pooled) against regorus's tree interpreter, for an allowed and a denied Decrypt.
//!
//! Run: `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 4`
//! Numbers so far (shared, loaded machine) are in xks-spec/policy.md.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::policy::{DEFAULT_EVAL_TIMEOUT, PolicyEngine, PolicyInput, PolicySet, embedded};

fn metadata(principal: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("awsPrincipalArn".into(), principal.into());
    m.insert("kmsOperation".into(), "Decrypt".into());
    m.insert(
        "kmsRequestId".into(),
        "4112f4d6-db54-4af4-ae30-c55a22a8dfae".into(),
    );
    m.insert(
        "kmsKeyArn".into(),
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
    );
    m
}

fn input<'a>(
    m: &'a serde_json::Map<String, serde_json::Value>,
    ip: &str,
    at: u64,
) -> PolicyInput<'a> {
    PolicyInput {
        interface: keygate::policy::Interface::Xks,
        operation: "Decrypt",
        keystore: "finance",
        uri_prefix: "/finance",
        key_id: "financial-reports",
        request_metadata: m,
        access_key_id: Some("BETWEEN2TENAND3TENCHARACTERS"),
        source_ip: Some(ip.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))),
        client_subject: Some("CN=cks.kms.us-east-1.amazonaws.com"),
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
        aad_length: 31,
        request_uid: None,
        peer: None,
    }
}

fn financial_report() -> PolicySet {
    let Some(set) = embedded::EXAMPLES
        .iter()
        .find(|s| s.name == "financial-report")
    else {
        std::process::exit(2);
    };
    match PolicySet::checked("financial-report", set.to_files()) {
        Ok(set) => set,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    }
}

fn bench(c: &mut Criterion) {
    let allowed_md = metadata("arn:aws:sts::111122223333:assumed-role/FinanceAnalyst/alice");
    let denied_md = metadata("arn:aws:iam::111122223333:role/Intern");
    // Wednesday 15:00 UTC (10:00 New York) versus Sunday 03:00 UTC from outside the networks.
    let cases = [
        ("allowed", input(&allowed_md, "10.20.3.4", 1_795_014_000)),
        ("denied", input(&denied_md, "203.0.113.9", 1_795_316_400)),
    ];
    let set = financial_report();
    let template = set.interpreter();
    let engine = PolicyEngine::new(set, DEFAULT_EVAL_TIMEOUT);
    let mut group = c.benchmark_group("financial_report");
    for (name, case) in &cases {
        group.bench_function(format!("rvm_{name}"), |b| {
            b.iter(|| black_box(engine.evaluate(black_box(case))))
        });
        group.bench_function(format!("interpreter_{name}"), |b| {
            b.iter(|| {
                let mut e = template.clone();
                e.set_input(regorus::Value::from(case.to_json()));
                black_box(e.eval_rule(PolicySet::decision_rule().into()))
            })
        });
    }
    // The floor: the embedded default policy (allow everything) on the same input.
    if let Ok(default) = PolicyEngine::embedded() {
        group.bench_function("rvm_default_policy", |b| {
            b.iter(|| black_box(default.evaluate(black_box(&cases[0].1))))
        });
    }
    group.bench_function("input_to_json", |b| {
        b.iter(|| black_box(black_box(&cases[0].1).to_json()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
