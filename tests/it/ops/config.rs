//! The operations settings in the config: rate limits, the in-flight cap, the drain grace
//! and credential creation times are checked with every other problem.

use std::path::Path;
use std::time::{Duration, SystemTime};

use keygate::config::Config;
use keygate::shed::RateLimit;

use crate::support::config_with;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(text, Path::new("/etc/keygate/keygate.toml")).map_err(|e| e.problems)
}

#[test]
fn defaults_and_given_values() {
    let c = parse(&config_with(&[])).unwrap();
    assert_eq!(c.limits.max_in_flight, 1024);
    assert_eq!(c.limits.shutdown_grace, Duration::from_secs(10));
    assert!(c.keystores.iter().all(|k| k.rate_limit.is_none()));

    let c = parse(&config_with(&[
        (
            "[limits]\n",
            "[limits]\nmax_in_flight = 7\nshutdown_grace_secs = 3\n",
        ),
        (
            "name = \"main\"\n",
            "name = \"main\"\nrate_limit_rps = 100\n",
        ),
        (
            "name = \"root\"\n",
            "name = \"root\"\nrate_limit_rps = 10\nburst = 2\n",
        ),
        (
            "access_key_id = \"ROOTKEYSTOREACCESSKEY234\"",
            "access_key_id = \"ROOTKEYSTOREACCESSKEY234\"\ncreated = \"2026-01-31T12:00:00+01:00\"",
        ),
    ]))
    .unwrap();
    assert_eq!(c.limits.max_in_flight, 7);
    assert_eq!(c.limits.shutdown_grace, Duration::from_secs(3));
    let main = c.keystore(Some("main")).unwrap();
    assert_eq!(
        main.rate_limit,
        Some(RateLimit {
            rps: 100,
            burst: 100
        })
    );
    let root = c.keystore(Some("root")).unwrap();
    assert_eq!(root.rate_limit, Some(RateLimit { rps: 10, burst: 2 }));
    let created = root.credential_created["ROOTKEYSTOREACCESSKEY234"];
    let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_769_857_200);
    assert_eq!(created, expected);
}

#[test]
fn bad_values_are_reported_together() {
    let problems = parse(&config_with(&[
        ("[limits]\n", "[limits]\nmax_in_flight = 0\n"),
        ("name = \"main\"\n", "name = \"main\"\nburst = 5\n"),
        ("name = \"root\"\n", "name = \"root\"\nrate_limit_rps = 0\n"),
        (
            "access_key_id = \"ROOTKEYSTOREACCESSKEY234\"",
            "access_key_id = \"ROOTKEYSTOREACCESSKEY234\"\ncreated = \"last tuesday\"",
        ),
    ]))
    .unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    for needle in ["max_in_flight", "burst needs", "at least 1", "last tuesday"] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:#?}"
        );
    }
}
