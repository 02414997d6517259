use super::*;
use std::os::unix::fs::PermissionsExt;

fn private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn parse(text: &str) -> OpenBaoToml {
    toml::from_str(text).unwrap()
}

#[test]
fn token_file_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    private(dir.path(), "bao.token", "s.abc\n");
    let s = parse("address = \"http://127.0.0.1:8200/\"\ntoken_file = \"bao.token\"")
        .check(dir.path())
        .unwrap();
    assert_eq!(s.address, "http://127.0.0.1:8200");
    assert_eq!(s.mount, "transit");
    assert_eq!(s.policy, "keygate");
    assert_eq!((s.pool_size, s.request_timeout.as_millis()), (16, 2000));
    assert!(s.warnings.is_empty());
    let AuthMethod::Token(source) = &s.auth else {
        panic!("{:?}", s.auth)
    };
    assert_eq!(source.read().unwrap().as_str(), "s.abc");
    assert!(!format!("{s:?}").contains("s.abc"));
}

#[test]
fn approle_with_inline_role_id_and_secret_id_file() {
    let dir = tempfile::tempdir().unwrap();
    private(dir.path(), "secret-id", "sid\n");
    let s = parse(
        "address = \"https://bao.example:8200\"\nca_file = \"secret-id\"\nmount = \"/kms/\"\n\
         role_id = \"rid\"\nsecret_id_file = \"secret-id\"\nnamespace = \"team-a/prod\"",
    )
    .check(dir.path())
    .unwrap();
    assert_eq!(s.mount, "kms");
    assert!(s.tls());
    assert_eq!(s.namespace.as_deref(), Some("team-a/prod"));
    match &s.auth {
        AuthMethod::AppRole { mount, role_id, .. } => {
            assert_eq!(mount, "approle");
            assert_eq!(role_id.read().unwrap().as_str(), "rid");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    private(dir.path(), "t", "x");
    let errors = parse(
        "address = \"ftp://bao/path\"\nmount = \"a/../b\"\ntoken_file = \"t\"\nrole_id = \"r\"\n\
         pool_size = 0\nrequest_timeout_ms = 0\nnamespace = \"a b\"",
    )
    .check(dir.path())
    .unwrap_err();
    let all = errors.join("\n");
    for needle in [
        "https:// or http://",
        "scheme, host and port only",
        "openbao.mount",
        "not both",
        "pool_size",
        "request_timeout_ms",
        "namespace",
    ] {
        assert!(all.contains(needle), "{needle} missing from {all}");
    }
}

#[test]
fn https_needs_a_ca_and_http_elsewhere_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    private(dir.path(), "t", "x");
    let errors = parse("address = \"https://bao:8200\"\ntoken_file = \"t\"")
        .check(dir.path())
        .unwrap_err();
    assert!(errors.join("").contains("ca_file"), "{errors:?}");
    let s = parse("address = \"http://10.0.0.5:8200\"\ntoken_file = \"t\"")
        .check(dir.path())
        .unwrap();
    assert!(
        s.warnings.join("").contains("plain http"),
        "{:?}",
        s.warnings
    );
}

#[test]
fn secrets_must_be_private_and_present() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("open.token");
    std::fs::write(&p, "s.x").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let errors = parse("address = \"http://127.0.0.1:1\"\ntoken_file = \"open.token\"")
        .check(dir.path())
        .unwrap_err();
    assert!(errors.join("").contains("chmod 600"), "{errors:?}");
    let errors =
        parse("address = \"http://127.0.0.1:1\"\ntoken_env = \"KEYGATE_SURELY_UNSET_VAR\"")
            .check(dir.path())
            .unwrap_err();
    assert!(
        errors.join("").contains("KEYGATE_SURELY_UNSET_VAR"),
        "{errors:?}"
    );
    let errors = parse("address = \"http://127.0.0.1:1\"")
        .check(dir.path())
        .unwrap_err();
    assert!(errors.join("").contains("token_file"), "{errors:?}");
    assert!(toml::from_str::<OpenBaoToml>("address = \"x\"\ntoken = \"inline\"").is_err());
}
