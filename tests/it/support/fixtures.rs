//! The fixture, written once: credentials, the two-key-store config every server starts
//! from, the test keys every backend holds, and the XKS request bodies.

use std::path::{Path, PathBuf};

use keygate::keys::software::SoftwareAdmin;
use keygate::keys::{KeyAdmin, KeyUsage};
use serde_json::{Value, json};

pub const AK: &str = "BETWEEN2TENAND3TENCHARACTERS";
pub const SECRET: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";
/// A second credential of the `main` key store.
pub const AK2: &str = "ROTATEDCREDENTIALKEYID2345";
pub const SECRET2: &str = "AnotherSecretThatIsLongEnoughToBeValid1234567";
/// The credential of the `root` key store (empty URI prefix).
pub const ROOT_AK: &str = "ROOTKEYSTOREACCESSKEY234";
pub const ROOT_SECRET: &str = "RootSecretRootSecretRootSecretRootSecret12345";
pub const PREFIX: &str = "/example/uri/path/prefix";
pub const REGION: &str = "us-east-1";
pub const HEALTH_KEY: &str = "keygate-health";

/// The keys every test backend holds: (id, usage, enabled). The config also names
/// `missing_in_backend`, which no backend has.
pub const KEYS: [(&str, KeyUsage, bool); 6] = [
    ("foo", KeyUsage::BOTH, true),
    ("encrypt_only_key", KeyUsage::ENCRYPT_ONLY, true),
    ("decrypt_only_key", KeyUsage::DECRYPT_ONLY, true),
    ("impotent_key", KeyUsage::NONE, true),
    ("disabled_key", KeyUsage::BOTH, false),
    (HEALTH_KEY, KeyUsage::BOTH, true),
];

/// The `[backend]` section of `config`; a SoftHSMv2 server swaps it for its own.
pub const SOFTWARE_BACKEND: &str = r#"[backend]
kind = "software"
health_key = "keygate-health"
[backend.software]
key_file = "keys.json"
"#;

/// The config every test server starts from: key stores `main` (prefix `PREFIX`, two
/// credentials) and `root` (empty prefix), the software backend, 2 s header and body read
/// deadlines. `extra` is appended.
pub fn config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
region = "{REGION}"

[limits]
body_read_timeout_ms = 2000
header_read_timeout_ms = 2000

{SOFTWARE_BACKEND}
[[keystore]]
name = "main"
uri_prefix = "{PREFIX}"
keys = ["foo", "encrypt_only_key", "decrypt_only_key", "impotent_key", "disabled_key", "missing_in_backend"]
[[keystore.credential]]
access_key_id = "{AK}"
secret = "{SECRET}"
[[keystore.credential]]
access_key_id = "{AK2}"
secret = "{SECRET2}"

[[keystore]]
name = "root"
uri_prefix = ""
keys = ["foo"]
[[keystore.credential]]
access_key_id = "{ROOT_AK}"
secret = "{ROOT_SECRET}"
{extra}"#
    )
}

/// `config("")` with `replace` applied (pairs of old -> new text; each must apply).
pub fn config_with(replace: &[(&str, &str)]) -> String {
    let mut c = config("");
    for (old, new) in replace {
        assert!(c.contains(old), "{old:?} not in the fixture config");
        c = c.replacen(old, new, 1);
    }
    c
}

/// `config("")` with `lines` added to its `[limits]` table.
pub fn config_with_limits(lines: &str) -> String {
    config_with(&[("[limits]\n", &format!("[limits]\n{lines}\n"))])
}

/// Writes the software key file holding `KEYS`.
pub fn write_software_keys(path: &Path) {
    let mut admin = SoftwareAdmin::open(path).unwrap();
    for (id, usage, enabled) in KEYS {
        admin.create(id, usage).unwrap();
        if !enabled {
            admin.set_enabled(id, false).unwrap();
        }
    }
}

/// A temp dir holding `keygate.toml` (from `config_text`) and the software key file.
pub fn server_dir(config_text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_software_keys(&dir.path().join("keys.json"));
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, config_text).unwrap();
    (dir, path)
}

pub fn path(op: &str, key: &str) -> String {
    format!("{PREFIX}/kms/xks/v1/keys/{key}/{op}")
}

pub fn health_path() -> String {
    format!("{PREFIX}/kms/xks/v1/health")
}

pub fn health_body() -> Value {
    json!({"requestMetadata": {"kmsRequestId": "h", "kmsOperation": "KmsHealthCheck"}})
}

pub fn metadata(op: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0bd8d8f4-ab8f-4bc9-9e62-2d6a7b0b1b8d",
        "kmsOperation": op,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsViaService": "ebs",
    })
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

pub fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut b = json!({
        "requestMetadata": metadata("Encrypt"),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = json!(b64(a));
    }
    if cdiv {
        b["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    b
}

/// The Decrypt body for an Encrypt response.
pub fn decrypt_body(enc: &Value, aad: Option<&[u8]>) -> Value {
    let mut b = json!({
        "requestMetadata": metadata("Decrypt"),
        "ciphertext": enc["ciphertext"],
        "encryptionAlgorithm": "AES_GCM",
        "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"],
        "ciphertextMetadata": enc["ciphertextMetadata"],
    });
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = json!(b64(a));
    }
    b
}
