//! The router: any path resolves to a configured key store and a valid key id, or to
//! InvalidUriPathException; nothing panics and error messages stay sanitized.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use keygate::app::Keystores;
use keygate::config::Config;
use keygate::xks::{Operation, route};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[keystore]]
name = "a"
uri_prefix = "/a/b"
keys = ["foo"]
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
[[keystore]]
name = "root"
uri_prefix = ""
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
"#;

fn keystores() -> &'static Keystores {
    static K: OnceLock<Keystores> = OnceLock::new();
    K.get_or_init(|| Keystores::from_config(&Config::parse(CONFIG, Path::new("k.toml")).unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match route(keystores(), path) {
        Ok(r) => {
            assert!(path.starts_with(&format!("{}/kms/xks/v1/", r.keystore.uri_prefix)));
            match r.operation {
                Operation::Health => assert!(path.ends_with("/health") && r.key_id().is_empty()),
                _ => assert!(keygate::keys::valid_key_id(r.key_id())),
            }
        }
        Err(e) => {
            assert_eq!(e.name(), "InvalidUriPathException");
            let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
            let msg = body["errorMessage"].as_str().unwrap();
            assert!(msg.len() < 512 && msg.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        }
    }
});
