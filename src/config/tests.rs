//! Config parsing and checking.

use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
region = "eu-west-1"

[[keystore]]
name = "payments"
uri_prefix = "/payments/xks"
keys = ["foo", "bar"]
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
[[keystore.credential]]
access_key_id = "SECONDCREDENTIALFORROTATION"
secret = "AnotherSecretThatIsLongEnoughToBeValid1234567"

[[keystore]]
name = "root"
uri_prefix = ""
region = "us-east-1"
keys = ["k"]
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/keygate/keygate.toml"))
}

#[test]
fn a_good_config_parses_into_checked_types() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.keystores.len(), 2);
    assert_eq!(c.keystores[0].credentials.len(), 2);
    assert_eq!(c.keystores[0].region, "eu-west-1");
    assert_eq!(c.keystores[1].region, "us-east-1");
    assert_eq!(c.keystores[1].uri_prefix, "");
    assert!(
        matches!(&c.backend.kind, BackendKind::Software { key_file } if key_file == Path::new("/etc/keygate/keys.json"))
    );
    assert!(c.limits.max_body >= (8192 + 16384) * 4 / 3);
    assert!(!format!("{c:?}").contains("PleaseReplace"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let bad = r#"
[server]
listen = "nonsense"
region = "US EAST"
[limits]
max_plaintext_bytes = 100
[[keystore]]
name = "a b"
uri_prefix = "no-slash"
keys = ["bad/key"]
[[keystore.credential]]
access_key_id = "short"
secret = "tinysecretvalue"
[[keystore]]
name = "x"
uri_prefix = "/dup"
[[keystore]]
name = "y"
uri_prefix = "/dup"
"#;
    let e = parse(bad).unwrap_err();
    let text = e.to_string();
    for needle in [
        "server.listen",
        "server.region",
        "max_plaintext_bytes",
        "name must be",
        "must be empty or start with /",
        "key id",
        "access key id",
        "secret must be",
        "used twice",
        "at least one [[keystore.credential]]",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("tinysecretvalue"),
        "secrets must not be echoed: {text}"
    );
}

#[test]
fn unknown_fields_and_bad_toml_are_refused() {
    assert!(
        parse("[server]\nlisten_typo = 1")
            .unwrap_err()
            .to_string()
            .contains("listen_typo")
    );
    assert!(parse("[[keystore]").is_err());
}

#[test]
fn prefixes_follow_the_spec() {
    for ok in ["", "/a", "/example/uri/path/prefix", "/a_b-c/D9"] {
        assert!(check_prefix(ok).is_ok(), "{ok}");
    }
    let long = format!("/{}", "a".repeat(117));
    for bad in [
        "a",
        "/",
        "/a/",
        "//a",
        "/a//b",
        "/a.b",
        "/a%20",
        "/p/kms/xks/v1",
        long.as_str(),
    ] {
        assert!(check_prefix(bad).is_err(), "{bad}");
    }
}

#[test]
fn secrets_come_from_env_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("s");
    std::fs::write(
        &secret_path,
        "PleaseReplaceThisWithSomeSecretOfLength43To64\n",
    )
    .unwrap();
    let text = String::from(
        "[[keystore]]\nname = \"a\"\nuri_prefix = \"\"\n[[keystore.credential]]\naccess_key_id = \"BETWEEN2TENAND3TENCHARACTERS\"\nsecret_file = \"s\"\n",
    );
    let c = Config::parse(&text, &dir.path().join("k.toml")).unwrap();
    assert_eq!(c.keystores[0].credentials[0].1.expose().len(), 45);
    let missing_env = text.replace(
        "secret_file = \"s\"",
        "secret_env = \"KEYGATE_TEST_SURELY_UNSET_VAR\"",
    );
    assert!(
        Config::parse(&missing_env, &dir.path().join("k.toml"))
            .unwrap_err()
            .to_string()
            .contains("is not set")
    );
    let both = text.replace("secret_file = \"s\"", "secret_file = \"s\"\nsecret = \"x\"");
    assert!(
        Config::parse(&both, &dir.path().join("k.toml"))
            .unwrap_err()
            .to_string()
            .contains("exactly one")
    );
}

#[test]
fn pkcs11_backend_is_checked_with_the_rest() {
    let missing = format!("{GOOD}\n[backend]\nkind = \"pkcs11\"\n");
    let e = parse(&missing).unwrap_err().to_string();
    assert!(e.contains("needs a [backend.pkcs11] table"), "{e}");
    let bad = format!(
        "{GOOD}\n[backend]\nkind = \"pkcs11\"\n[backend.pkcs11]\nmodule = \"nope.so\"\n\
         session_pool_size = 0\n"
    );
    let e = parse(&bad).unwrap_err().problems.join("\n");
    for needle in [
        "nope.so",
        "token_label",
        "pin_env or pin_file",
        "session_pool_size",
    ] {
        assert!(e.contains(needle), "{needle} missing from {e}");
    }
    let ok = format!(
        "{GOOD}\n[backend]\nkind = \"pkcs11\"\n[backend.pkcs11]\nmodule = \"/bin/sh\"\n\
         token_label = \"xks\"\npin = \"1234\"\niv_mode = \"zero_buffer\"\n"
    );
    let c = parse(&ok).unwrap();
    match &c.backend.kind {
        BackendKind::Pkcs11(s) => {
            assert_eq!(s.iv_mode, crate::keys::pkcs11::IvMode::ZeroBuffer);
            assert_eq!(s.pin.expose(), "1234");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.warnings.iter().any(|w| w.contains("pin_env or pin_file")));
    assert!(!format!("{c:?}").contains("1234"));
}

#[test]
fn digest_settings_report_every_problem() {
    let bad = format!(
        "{GOOD}\n[decision_log]\npath = \"d.log\"\n[decision_log.digest]\ndir = \"digests\"\n\
         pkcs11_key_label = \"k\"\ninterval_secs = 0\n"
    );
    let problems = parse(&bad).unwrap_err().problems.join("\n");
    assert!(problems.contains("interval_secs"), "{problems}");
    let bad = format!(
        "{GOOD}\n[decision_log]\npath = \"d.log\"\n[decision_log.digest]\ndir = \"digests\"\n\
         pkcs11_key_label = \"k\"\n"
    );
    let problems = parse(&bad).unwrap_err().problems.join("\n");
    assert!(
        problems.contains("needs backend.kind = \"pkcs11\""),
        "{problems}"
    );
    let bad = format!(
        "{GOOD}\n[decision_log]\npath = \"d.log\"\n[decision_log.digest]\ndir = \"digests\"\n\
         key_file = \"/nonexistent/key.pem\"\npkcs11_key_label = \"k\"\n"
    );
    let problems = parse(&bad).unwrap_err().problems.join("\n");
    assert!(
        problems.contains("exactly one of key_file and pkcs11_key_label"),
        "{problems}"
    );
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let (pem, _) = crate::signing::Ed25519FileKey::generate().unwrap();
    std::fs::write(&key, pem.as_bytes()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = format!(
        "{GOOD}\n[decision_log]\npath = \"d.log\"\n[decision_log.digest]\ndir = \"digests\"\n\
         key_file = {:?}\n",
        key.display().to_string()
    );
    let c = parse(&good).unwrap();
    let d = c.decision_log.unwrap().digest.unwrap();
    assert_eq!(d.dir, Path::new("/etc/keygate/digests"));
    assert_eq!(d.interval, std::time::Duration::from_secs(3600));
}

#[test]
fn upload_settings_follow_opa_and_report_every_problem() {
    let with = |table: &str| {
        format!("{GOOD}\n[decision_log]\npath = \"d.log\"\n[decision_log.upload]\n{table}\n")
    };
    let c = parse(&with("url = \"http://127.0.0.1:8181/base/\"")).unwrap();
    let u = c.decision_log.unwrap().upload.unwrap();
    assert_eq!(u.path, "/base/logs");
    assert_eq!(u.upload_size_limit, 32 * 1024);
    assert_eq!((u.min_delay.as_secs(), u.max_delay.as_secs()), (300, 600));
    assert!(!u.require_upload);
    let c = parse(&with(
        "url = \"http://localhost:8181\"\npartition_name = \"keygate\"",
    ))
    .unwrap();
    assert_eq!(
        c.decision_log.unwrap().upload.unwrap().path,
        "/logs/keygate"
    );
    let c = parse(&with("url = \"http://collector.example:8181\"")).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("plain HTTP")),
        "{:?}",
        c.warnings
    );
    let problems = parse(&with(
        "url = \"https://collector.example\"\nresource = \"/x\"\npartition_name = \"p\"\n\
         min_delay_seconds = 10\nmax_delay_seconds = 5\nupload_size_limit_bytes = 10\n\
         bearer_token_path = \"/nonexistent/token\"",
    ))
    .unwrap_err()
    .problems
    .join("\n");
    for needle in [
        "ca_cert is required",
        "resource or partition_name",
        "min_delay_seconds",
        "upload_size_limit_bytes",
        "bearer_token_path",
    ] {
        assert!(problems.contains(needle), "{needle}: {problems}");
    }
    let problems = parse(&with("url = \"ftp://x\""))
        .unwrap_err()
        .problems
        .join("\n");
    assert!(problems.contains("not an http(s)"), "{problems}");
}

#[test]
fn openbao_backend_is_checked() {
    let missing = format!("{GOOD}\n[backend]\nkind = \"openbao\"\n");
    let e = parse(&missing).unwrap_err().problems.join("\n");
    assert!(e.contains("[backend.openbao]"), "{e}");
    let bad = format!(
        "{GOOD}\n[backend]\nkind = \"openbao\"\n[backend.openbao]\naddress = \"https://bao:8200\"\n"
    );
    let e = parse(&bad).unwrap_err().problems.join("\n");
    assert!(e.contains("ca_file") && e.contains("token_file"), "{e}");
    let ok = format!(
        "{GOOD}\n[backend]\nkind = \"openbao\"\n[backend.openbao]\naddress = \"http://127.0.0.1:8200\"\n\
         token_env = \"PATH\"\nmount = \"kms\"\n"
    );
    match &parse(&ok).unwrap().backend.kind {
        BackendKind::OpenBao(s) => assert_eq!((s.mount.as_str(), s.pool_size), ("kms", 16)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_kms_v2_table_parses_and_alone_serves_no_xks() {
    let c = parse(&format!(
        "{GOOD}\n[kms_v2]\nsocket = \"run/kms.sock\"\nkey = \"k8s-kek\"\nprevious_keys = [\"old\"]\n"
    ))
    .unwrap();
    let k = c.kms_v2.unwrap();
    assert_eq!(k.socket, Path::new("/etc/keygate/run/kms.sock"));
    assert_eq!((k.name.as_str(), k.key.as_str()), ("kubernetes", "k8s-kek"));
    assert!(k.decrypts_with("old") && k.decrypts_with("k8s-kek") && !k.decrypts_with("x"));
    assert_eq!(k.key_id_format.render("k8s-kek", 3), "keygate/k8s-kek/v3");
    assert_eq!(k.timeout, std::time::Duration::from_millis(2500));
    let only = parse("[kms_v2]\nsocket = \"/run/k.sock\"\nkey = \"kek\"\n").unwrap();
    assert!(only.keystores.is_empty() && only.kms_v2.is_some());
    let neither = parse("").unwrap_err();
    assert!(
        neither.problems[0].contains("or a [kms_v2] table"),
        "{neither}"
    );
}

#[test]
fn every_kms_v2_problem_is_reported_at_once() {
    let bad = format!(
        "{GOOD}\n[kms_v2]\nname = \"payments\"\nkey = \"no/slash\"\nprevious_keys = [\"\"]\n\
         key_id_format = \"{{key}}\"\ntimeout_ms = 5\nmax_in_flight = 0\n"
    );
    let e = parse(&bad).unwrap_err();
    let all = e.problems.join("\n");
    for needle in [
        "kms_v2.socket is required",
        "also a [[keystore]] name",
        "kms_v2.key \"no/slash\"",
        "kms_v2.previous_keys",
        "kms_v2.key_id_format must contain both",
        "kms_v2.timeout_ms",
        "kms_v2.max_in_flight",
    ] {
        assert!(all.contains(needle), "{needle:?} not in:\n{all}");
    }
    let long = format!("[kms_v2]\nsocket = \"/{}\"\nkey = \"k\"\n", "s".repeat(100));
    assert!(parse(&long).unwrap_err().problems[0].contains("too long"));
}

#[test]
fn disk_pressure_settings_default_and_report_every_problem() {
    let with = |lines: &str| format!("{GOOD}\n[decision_log]\npath = \"d.log\"\n{lines}\n");
    let d = parse(&with("")).unwrap().decision_log.unwrap();
    assert_eq!(d.space, crate::policy::decision_log::SpaceLimits::default());
    assert_eq!(
        (d.space.min_free_bytes, d.space.min_free_percent),
        (256 * 1024 * 1024, 5)
    );
    assert_eq!((d.space.min_free_inodes, d.space.reserved_bytes), (1000, 0));
    assert_eq!(d.queue_lines, 8192);
    let d = parse(&with(
        "min_free_bytes = 4096\nmin_free_percent = 0\nmin_free_inodes = 0\n\
         reserved_bytes = 1024\nqueue_lines = 4",
    ))
    .unwrap()
    .decision_log
    .unwrap();
    assert_eq!(
        d.space,
        crate::policy::decision_log::SpaceLimits {
            min_free_bytes: 4096,
            min_free_percent: 0,
            min_free_inodes: 0,
            reserved_bytes: 1024,
        }
    );
    assert_eq!(d.queue_lines, 4);
    // Every problem at once.
    let problems = parse(&with(
        "min_free_bytes = 1024\nmin_free_percent = 51\nreserved_bytes = 1024\nqueue_lines = 0",
    ))
    .unwrap_err()
    .problems;
    let all = problems.join("\n");
    assert_eq!(problems.len(), 3, "{all}");
    assert!(
        all.contains("min_free_percent must be between 0 and 50"),
        "{all}"
    );
    assert!(all.contains("reserved_bytes (1024) must be below"), "{all}");
    assert!(
        all.contains("queue_lines must be between 1 and 262144"),
        "{all}"
    );
    assert!(
        parse(&with("min_free_megabytes = 1"))
            .unwrap_err()
            .problems
            .join("\n")
            .contains("min_free_megabytes"),
        "unknown keys are refused"
    );
}

#[test]
fn lifecycle_settings_have_bounded_defaults_and_report_every_problem() {
    use crate::policy::decision_log::{Codec, LifecycleConfig};
    let with = |extra: &str| format!("{GOOD}\n[decision_log]\npath = \"d.log\"\n{extra}\n");
    let c = parse(&with("")).unwrap();
    let d = c.decision_log.unwrap();
    assert_eq!(d.lifecycle, LifecycleConfig::default());
    assert_eq!(d.lifecycle.compression, Some(Codec::Zstd));
    let c = parse(&with(
        "compression = \"gzip\"\n[decision_log.retention]\nkeep_files = 3\nmax_age_days = 7\n\
         max_bytes = 1000",
    ))
    .unwrap();
    let l = c.decision_log.unwrap().lifecycle;
    assert_eq!(l.compression, Some(Codec::Gzip));
    assert_eq!(l.retention.keep_files, 3);
    assert_eq!(l.retention.max_age.as_secs(), 7 * 86400);
    assert_eq!(l.retention.max_bytes, 1000);
    let c = parse(&with("compression = \"none\"")).unwrap();
    assert_eq!(c.decision_log.unwrap().lifecycle.compression, None);
    let bad = with(
        "compression = \"lz4\"\n[decision_log.retention]\nkeep_files = 0\nmax_age_days = 0\n\
         max_bytes = 0",
    );
    let problems = parse(&bad).unwrap_err().problems.join("\n");
    for key in ["compression", "keep_files", "max_age_days", "max_bytes"] {
        assert!(problems.contains(key), "{key}: {problems}");
    }
    let unknown = with("[decision_log.retention]\nkeep = 3");
    assert!(parse(&unknown).is_err());
}
