//! Key versions on a token. Version 1 of key `K` is the key labelled `K` (every key keygate
//! ever made); version N > 1 is a key of its own labelled `K/vN`, made by `keygate keys
//! rotate K` with the same usage. `/` is never part of a key id, so a version's label cannot
//! be another key's. The key's status (enabled, disabled) and usage are those of version 1;
//! the current version is the highest N whose label exists (at most [`MAX_VERSIONS`]).

use cryptoki::session::Session;

use super::engine::{Fault, find_key};
use crate::keys::KeyError;

/// The most versions keygate looks for.
pub const MAX_VERSIONS: u32 = 1000;

/// The CKA_LABEL of `version` of `key_id`.
pub fn label(key_id: &str, version: u32) -> String {
    if version <= 1 {
        key_id.to_owned()
    } else {
        format!("{key_id}/v{version}")
    }
}

/// Whether `label` names a version after the first (`K/vN`).
pub fn is_later_version(label: &str) -> bool {
    base_of(label).is_some()
}

/// `K` for a label `K/vN` (N > 1).
pub fn base_of(label: &str) -> Option<&str> {
    let (base, n) = label.rsplit_once("/v")?;
    let n: u32 = n.parse().ok()?;
    (n > 1 && !base.is_empty()).then_some(base)
}

/// The highest version of `key_id` on the token: 1 plus each `K/v2`, `K/v3`... found in turn.
pub fn current(session: &Session, key_id: &str) -> Result<u32, Fault> {
    let mut version = 1;
    while version < MAX_VERSIONS {
        match find_key(session, &label(key_id, version + 1)) {
            Ok(_) => version += 1,
            Err(Fault::Key(KeyError::NotFound)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("foo", 1), "foo");
        assert_eq!(label("foo", 2), "foo/v2");
        assert_eq!(base_of("foo/v2"), Some("foo"));
        assert_eq!(base_of("a.b/v17"), Some("a.b"));
        for not_a_version in ["foo", "foo/v1", "foo/vx", "/v2", "foo/v"] {
            assert!(!is_later_version(not_a_version), "{not_a_version}");
        }
        assert!(!crate::keys::valid_key_id("foo/v2"));
    }
}
