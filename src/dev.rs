//! `keygate serve --dev`: on first start, write an ordinary config with a generated key store
//! and the conventional test keys into the data dir; later starts reuse it.
//!
//! This is the development-only wing; of the serving path only serve.rs calls into it, to
//! print the `--dev` banner:
//!
//! ```text
//! dev/certs.rs           dev CA, server and client certificates (`certs dev`, `serve --dev`)
//! dev/openbao.rs         `serve --dev --backend openbao` (Transit mount, keys, policy, token)
//! dev/softhsm2.rs        `serve --dev --backend softhsm2`
//!   softhsm2/token.rs    a SoftHSMv2 token in a directory of its own (also for tests, benches)
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::credentials::{AccessKeyId, Secret};
use crate::keys::software::SoftwareAdmin;
use crate::keys::{KeyAdmin, KeyUsage};

pub mod certs;
pub mod openbao;
pub mod softhsm2;

/// The keys a conformance run conventionally expects, with their usage.
pub const DEV_KEYS: [(&str, KeyUsage); 4] = [
    ("foo", KeyUsage::BOTH),
    ("encrypt_only_key", KeyUsage::ENCRYPT_ONLY),
    ("decrypt_only_key", KeyUsage::DECRYPT_ONLY),
    ("impotent_key", KeyUsage::NONE),
];
pub const HEALTH_KEY: &str = "keygate-health";
pub const CONFIG_NAME: &str = "keygate.toml";
const SECRET_NAME: &str = "keystore.secret";
/// The dev server's certificates, in the data dir.
pub const TLS_DIR: &str = "tls";
/// The dev server's decision log, in the data dir.
pub const DECISION_LOG: &str = "decisions.log";

/// Writes `dir/keygate.toml` (and its key file and secret) unless it exists. Returns its path.
pub fn bootstrap(dir: &Path, listen: SocketAddr) -> Result<PathBuf, String> {
    let config_path = dir.join(CONFIG_NAME);
    if config_path.exists() {
        return Ok(config_path);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut admin = SoftwareAdmin::open(&dir.join("keys.json"))?;
    for (id, usage) in DEV_KEYS {
        admin.create(id, usage)?;
    }
    admin.create(HEALTH_KEY, KeyUsage::BOTH)?;
    write_dev_config(dir, listen, SOFTWARE_BACKEND)?;
    Ok(config_path)
}

/// The `[backend]` part of the software dev config.
const SOFTWARE_BACKEND: &str = "# The keys are in keys.json and are NOT protected by an HSM.\n\n\
[backend]\nkind = \"software\"\nhealth_key = \"keygate-health\"\n\n\
[backend.software]\nkey_file = \"keys.json\"\n";

/// Generates the dev credential and writes `dir/keygate.toml` with `backend` as its backend
/// (and the dev server certificate, which the config's `[tls]` names).
fn write_dev_config(dir: &Path, listen: SocketAddr, backend: &str) -> Result<(), String> {
    let config_path = dir.join(CONFIG_NAME);
    certs::ensure_dev_server(&dir.join(TLS_DIR))
        .map_err(|e| format!("cannot make the development certificate: {e}"))?;
    let rand_err = |e: getrandom::Error| format!("no randomness: {e}");
    let access_key_id = AccessKeyId::generate().map_err(rand_err)?;
    let secret = Secret::generate().map_err(rand_err)?;
    write_private(&dir.join(SECRET_NAME), secret.expose())?;
    let prefix = format!(
        "/keygate-dev-{}",
        access_key_id
            .as_str()
            .get(..8)
            .unwrap_or("x")
            .to_ascii_lowercase()
    );
    let text = dev_config(listen, &prefix, &access_key_id, backend);
    write_private(&config_path, &text)
}

fn dev_config(
    listen: SocketAddr,
    prefix: &str,
    access_key_id: &AccessKeyId,
    backend: &str,
) -> String {
    let keys: Vec<String> = DEV_KEYS.iter().map(|(id, _)| format!("{id:?}")).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# keygate development configuration, written by `keygate serve --dev`."
    );
    let _ = writeln!(
        t,
        "[server]\nlisten = \"{listen}\"\nregion = \"us-east-1\"\n"
    );
    let _ = writeln!(t, "{backend}");
    let _ = writeln!(
        t,
        "# A development certificate (remade by `serve --dev` when it expires); clients trust\n\
         # {TLS_DIR}/ca.pem.\n[tls]\ncert_chain = \"{TLS_DIR}/server.pem\"\nkey = \"{TLS_DIR}/server.key\"\n"
    );
    let _ = writeln!(
        t,
        "# One hash-chained line per judged request; check it with `keygate audit verify`.\n\
         [decision_log]\npath = \"{DECISION_LOG}\"\n"
    );
    let _ = writeln!(
        t,
        "[[keystore]]\nname = \"dev\"\nuri_prefix = \"{prefix}\"\nkeys = [{}]\n",
        keys.join(", ")
    );
    let _ = writeln!(
        t,
        "[[keystore.credential]]\naccess_key_id = \"{access_key_id}\"\nsecret_file = \"{SECRET_NAME}\""
    );
    t
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// What the dev banner shows.
#[derive(Debug, Clone, Copy)]
pub struct Banner<'a> {
    pub config_dir: &'a Path,
    pub addr: SocketAddr,
    pub prefix: &'a str,
    pub access_key_id: &'a str,
    pub backend_kind: &'a str,
    /// The development CA of an HTTPS dev server: the command then uses https and --cacert.
    pub ca: Option<&'a Path>,
    pub decision_log: Option<&'a Path>,
    /// The KMS v2 plugin's socket, when served.
    pub kms_v2_socket: Option<&'a Path>,
}

/// The banner printed when a dev server starts: where it is, and a curl command to call it.
pub fn banner(b: &Banner<'_>) -> String {
    let Banner {
        config_dir,
        addr,
        prefix,
        access_key_id,
        backend_kind,
        ca,
        decision_log,
        kms_v2_socket,
    } = *b;
    let protection = match backend_kind {
        "pkcs11" => "in a SoftHSMv2 token via PKCS#11",
        "openbao" => "in OpenBao Transit",
        _ => "software, NOT HSM-protected",
    };
    let secret_file = config_dir.join(SECRET_NAME);
    let (scheme, cacert) = match ca {
        Some(ca) => ("https", format!("--cacert {} ", ca.display())),
        None => ("http", String::new()),
    };
    let base = format!("{scheme}://{addr}{prefix}/kms/xks/v1");
    let log = decision_log.map_or_else(
        || "none (--decision-log FILE to write one)".to_owned(),
        |p| p.display().to_string(),
    );
    let kms_v2 = kms_v2_socket.map_or_else(String::new, |p| {
        format!("  kms v2 socket:  unix://{}\n", p.display())
    });
    format!(
        "keygate dev server\n  endpoint:       {scheme}://{addr}\n  uri path:       {prefix}/kms/xks/v1\n  access key id:  {access_key_id}\n  secret:         in {secret}\n  decision log:   {log}\n{kms_v2}  keys:           foo, encrypt_only_key, decrypt_only_key, impotent_key ({protection})\n\nTry it:\n  curl -sS {cacert}--aws-sigv4 \"aws:amz:us-east-1:kms-xks-proxy\" \\\n    --user \"{access_key_id}:$(cat {secret})\" \\\n    -H \"Content-Type: application/json\" \\\n    -d '{{\"requestMetadata\":{{\"awsPrincipalArn\":\"arn:aws:iam::111122223333:user/alice\",\"kmsKeyArn\":\"arn:aws:kms:us-east-1:111122223333:key/dev\",\"kmsOperation\":\"Encrypt\",\"kmsRequestId\":\"dev-1\"}},\"plaintext\":\"SGVsbG8gV29ybGQh\",\"encryptionAlgorithm\":\"AES_GCM\"}}' \\\n    {base}/keys/foo/encrypt\n",
        secret = secret_file.display(),
    )
}
