//! XKS request paths: `{prefix}/kms/xks/v1/health` and `{prefix}/kms/xks/v1/keys/{id}/{op}`
//! resolved to a key store, one of the four operations and a key id, and the facts about the
//! connection a request came on. A path that resolves to nothing is InvalidUriPathException,
//! answered before any authentication.

use std::net::SocketAddr;
use std::sync::Arc;

use super::error::XksError;
use super::keystore::{Keystore, Keystores};
use crate::keys::valid_key_id;
use crate::sanitize::sanitize_message;

/// What the XKS door knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The mTLS client certificate's subject, when a certificate was presented.
    pub client_subject: Option<String>,
}

/// The fixed part of every XKS path after the key store's prefix.
const API_ROOT: &str = "/kms/xks/v1/";

/// The four XKS operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Health,
    Metadata,
    Encrypt,
    Decrypt,
}

impl Operation {
    /// The spec's operation name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Health => "GetHealthStatus",
            Operation::Metadata => "GetKeyMetadata",
            Operation::Encrypt => "Encrypt",
            Operation::Decrypt => "Decrypt",
        }
    }
}

/// A request path resolved to a key store, an operation and (except health) a key id.
#[derive(Debug, Clone)]
pub struct Route {
    pub keystore: Arc<Keystore>,
    pub operation: Operation,
    key_id: String,
}

impl Route {
    /// The key id from the path (empty for health).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// Resolves `{prefix}/kms/xks/v1/health` and `{prefix}/kms/xks/v1/keys/{id}/{op}`.
pub fn route(keystores: &Keystores, path: &str) -> Result<Route, XksError> {
    let invalid =
        || XksError::InvalidUriPath(format!("no XKS resource at {}", sanitize_message(path)));
    // Only unreserved characters and '/': the path is then its own canonical SigV4 form.
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'))
    {
        return Err(invalid());
    }
    let at = path.find(API_ROOT).ok_or_else(invalid)?;
    let (prefix, rest) = (
        path.get(..at).unwrap_or_default(),
        path.get(at + API_ROOT.len()..).unwrap_or_default(),
    );
    let keystore = keystores
        .by_prefix(prefix)
        .ok_or_else(|| {
            XksError::InvalidUriPath(format!("no key store is configured at prefix {prefix:?}"))
        })?
        .clone();
    let (operation, key_id) = match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["health"] => (Operation::Health, String::new()),
        ["keys", id, op] if valid_key_id(id) && *id != "." && *id != ".." => {
            let operation = match *op {
                "metadata" => Operation::Metadata,
                "encrypt" => Operation::Encrypt,
                "decrypt" => Operation::Decrypt,
                _ => return Err(invalid()),
            };
            (operation, (*id).to_owned())
        }
        _ => return Err(invalid()),
    };
    Ok(Route {
        keystore,
        operation,
        key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn keystores() -> Keystores {
        let text = r#"
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
        Keystores::from_config(&Config::parse(text, Path::new("k.toml")).unwrap())
    }

    #[test]
    fn paths_resolve_to_keystore_operation_and_key() {
        let k = keystores();
        let r = route(&k, "/a/b/kms/xks/v1/keys/foo.bar-1_2/encrypt").unwrap();
        assert_eq!(
            (r.keystore.name.as_str(), r.operation, r.key_id()),
            ("a", Operation::Encrypt, "foo.bar-1_2")
        );
        let r = route(&k, "/kms/xks/v1/health").unwrap();
        assert_eq!(
            (r.keystore.name.as_str(), r.operation),
            ("root", Operation::Health)
        );
        assert_eq!(
            route(&k, "/kms/xks/v1/keys/x/metadata").unwrap().operation,
            Operation::Metadata
        );
        assert_eq!(
            route(&k, "/a/b/kms/xks/v1/keys/x/decrypt")
                .unwrap()
                .operation,
            Operation::Decrypt
        );
    }

    #[test]
    fn everything_else_is_invalid_uri_path() {
        let k = keystores();
        let long_id = format!("/kms/xks/v1/keys/{}/encrypt", "a".repeat(129));
        for p in [
            "/",
            "/a/kms/xks/v1/health",
            "/a/b/c/kms/xks/v1/health",
            "/a/b/kms/xks/v2/health",
            "/a/b/kms/xks/v1/health/",
            "/a/b/kms/xks/v1/keys/foo",
            "/a/b/kms/xks/v1/keys/foo/sign",
            "/a/b/kms/xks/v1/keys//encrypt",
            "/a/b/kms/xks/v1/keys/../encrypt",
            "/a/b/kms/xks/v1/keys/a%3Ab/encrypt",
            "/a/b/kms/xks/v1/keys/foo/encrypt/extra",
            long_id.as_str(),
        ] {
            assert_eq!(
                route(&k, p).unwrap_err().name(),
                "InvalidUriPathException",
                "{p}"
            );
        }
    }
}
