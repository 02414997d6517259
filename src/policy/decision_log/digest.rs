//! Signed digests of the decision log, after CloudTrail's log-file integrity digests: one small
//! JSON file per interval (default an hour; also at start, at every rotation and at shutdown),
//! written even when no line was added, each signed and chained to the one before by its
//! signature. Whoever can rewrite the log and its hash chain cannot sign a digest.
//!
//! A digest is one line of JSON, its members in this order:
//!
//! ```text
//! {"format":"keygate-decision-log-digest/1","digest_seq":7,"reason":"interval",
//!  "start":"<RFC 3339>","end":"<RFC 3339>","interval_secs":3600,"log":"decisions.log",
//!  "instance_id":"<uuid>","files":[{"name","first_seq","last_seq","bytes","sha256","complete"}],
//!  "first_seq":118,"first_hash":"<hex>","last_seq":130,"last_hash":"<hex>",
//!  "previous_digest":"<file name>","previous_signature":"<base64>",
//!  "algorithm":"ed25519","key_fingerprint":"sha256:<hex>","signature":"<base64>"}
//! ```
//!
//! The signature (Ed25519, or ECDSA P-256 SHA-256 in DER) is over the line's exact bytes
//! without its `,"signature":"..."` member and without the newline: the same rule as the
//! chain's `hash` member, and what `openssl pkeyutl -verify -rawin` (Ed25519) or
//! `openssl dgst -sha256 -verify` (ECDSA) checks once that member is cut off.
//!
//! `files` lists every file that changed since the previous digest: files rotated meanwhile
//! (`complete`, their final size and SHA-256) and the live file (the SHA-256 of its first
//! `bytes` bytes). `first_seq`/`first_hash` is the first line added in the interval (`null`
//! for a heartbeat); `last_seq`/`last_hash` is the log's head, which commits to every line
//! before it through the hash chain.

mod feed;
mod notary;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::signing::DigestSigner;

pub(crate) use feed::{Feed, Job};
pub(crate) use notary::Notary;

/// The `format` member of every digest keygate writes.
pub const FORMAT: &str = "keygate-decision-log-digest/1";

const SIGNATURE_PREFIX: &str = ",\"signature\":\"";

/// Digest settings the writer runs with.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// The directory digests are written to (one directory per decision log).
    pub dir: PathBuf,
    /// Most time between two digests.
    pub interval: Duration,
    /// The key digests are signed with.
    pub signer: Arc<dyn DigestSigner>,
}

/// Why a digest was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// keygate started: the log as found on disk (covers the time it was stopped).
    Start,
    /// The interval passed (a heartbeat when no line was added).
    Interval,
    /// The live file was rotated: the rotated file's final size and SHA-256.
    Rotation,
    /// keygate stopped: the last word on the log, after the last line.
    Shutdown,
}

/// One file a digest covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name at the time of the digest (`decisions.log`, `decisions.log.3`).
    pub name: String,
    /// `seq` of its first line: how a verifier finds it again after a rotation renamed it.
    pub first_seq: u64,
    /// `seq` of its last line at the time of the digest.
    pub last_seq: u64,
    /// Its size at the time of the digest.
    pub bytes: u64,
    /// SHA-256 (hex) of its first `bytes` bytes.
    pub sha256: String,
    /// Rotated: it will not grow again.
    pub complete: bool,
}

/// A digest's content, without its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// [`FORMAT`].
    pub format: String,
    /// Its number in the chain of digests: 1, 2, ...
    pub digest_seq: u64,
    /// Why it was written.
    pub reason: Reason,
    /// The interval it covers: from the previous digest's `end` ...
    pub start: String,
    /// ... to now (RFC 3339, UTC).
    pub end: String,
    /// The configured interval (a verifier expects a digest at least this often).
    pub interval_secs: u64,
    /// The log's file name.
    pub log: String,
    /// The keygate process that wrote it (`labels.id` of its lines).
    pub instance_id: String,
    /// Files changed since the previous digest.
    pub files: Vec<FileEntry>,
    /// The first line added in the interval (`None`: none was).
    pub first_seq: Option<u64>,
    /// Its hash.
    pub first_hash: Option<String>,
    /// The log's head: the last line written (0 and GENESIS for an empty log).
    pub last_seq: u64,
    /// Its hash.
    pub last_hash: String,
    /// The previous digest's file name (`None` for the first digest).
    pub previous_digest: Option<String>,
    /// The previous digest's signature, base64 (`None` for the first digest).
    pub previous_signature: Option<String>,
    /// `ed25519` or `ecdsa-p256-sha256`.
    pub algorithm: String,
    /// `sha256:<hex>` of the signing key's SubjectPublicKeyInfo.
    pub key_fingerprint: String,
}

impl Digest {
    /// The signed text: the digest as one JSON object, without the signature member.
    pub fn body(&self) -> String {
        // Serializing strings, numbers and enums cannot fail; an empty body fails to verify.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The line of a digest file: `body` with the signature member added, and a newline.
pub fn seal(body: &str, signature_b64: &str) -> String {
    let open = body.strip_suffix('}').unwrap_or(body);
    format!("{open}{SIGNATURE_PREFIX}{signature_b64}\"}}\n")
}

/// A digest file's text split into the signed body and the signature (base64), then parsed.
pub fn open(text: &str) -> Result<(Digest, String, String), String> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let head = line
        .strip_suffix("\"}")
        .ok_or("not a keygate digest (no trailing signature member)")?;
    let (head, signature) = head
        .rsplit_once(SIGNATURE_PREFIX)
        .ok_or("not a keygate digest (no signature member)")?;
    let body = format!("{head}}}");
    let digest: Digest =
        serde_json::from_str(&body).map_err(|e| format!("not a keygate digest: {e}"))?;
    if digest.format != FORMAT {
        return Err(format!("unknown digest format {:?}", digest.format));
    }
    Ok((digest, body, signature.to_owned()))
}

/// The file name of digest `seq` ending at `end`: `digest-00000007-20261122T060102Z.json`.
pub fn file_name(seq: u64, end: SystemTime) -> String {
    let stamp = time::OffsetDateTime::from(end)
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    format!("digest-{seq:08}-{stamp}.json")
}

/// The digest number in a digest file name, if it is one.
pub fn seq_of_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("digest-")?.strip_suffix(".json")?;
    let (seq, _) = rest.split_once('-')?;
    seq.parse().ok()
}

/// The digests of `dir`, by file name, in digest-number order.
pub fn list(dir: &std::path::Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let n = seq_of_name(&e.file_name().to_string_lossy())?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Base64 (standard, padded), as digests carry signatures.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a digest's base64 signature.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests;
