//! Masking of decision events, as OPA and Vault users expect it: configured rules, each a JSON
//! pointer (RFC 6901) into the event, either erase a member or replace its value with a keyed
//! HMAC-SHA256 (`hmac-sha256:<hex>`, Vault's audit format), and the event lists what was done
//! in OPA's `erased` and `masked` members. Rules are applied on the request's thread when the
//! record is made, so the unmasked value never reaches the writer's queue, the file, the
//! chain or the collector (benches/decision_log.rs measures why there, not on the writer).
//!
//! Only members under `/input/...` and `/requested_by` may be masked: the chain members, the
//! decision (`result`, `error`, `error_name`) and the event's own bookkeeping stay as written.
//!
//! The HMAC key is a file (mode 0600) holding at least 32 bytes as hex (`openssl rand -hex 32`),
//! so an auditor with the key checks a value with `keygate audit mask --key FILE VALUE` or
//! `printf %s VALUE | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(cat FILE)`. A string is
//! HMAC'd as its UTF-8 bytes; any other value as its compact JSON text (object keys sorted).

mod pointer;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::hmac;
use serde::Deserialize;
use serde_json::Value as Json;
use zeroize::Zeroizing;

pub use pointer::Pointer;

/// What a masked value starts with.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// Event members a rule may never touch, and why.
const PROTECTED: &[(&str, &str)] = &[
    ("seq", "a chain member"),
    ("hash", "a chain member"),
    ("prev_hash", "a chain member"),
    ("prev_file", "a chain member"),
    ("decision_id", "the decision's identity"),
    ("timestamp", "the decision's time"),
    ("result", "the decision itself"),
    ("error", "the decision itself"),
    ("error_name", "the decision itself"),
    ("erased", "masking's own record"),
    ("masked", "masking's own record"),
];

/// `[decision_log.mask]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskToml {
    /// Pointers whose member is removed from the event.
    pub erase: Option<Vec<String>>,
    /// Pointers whose value is replaced by its HMAC.
    pub hmac: Option<Vec<String>>,
    /// The HMAC key: hex, at least 32 bytes, mode 0600.
    pub hmac_key_file: Option<PathBuf>,
}

/// What a rule does to the member it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Erase,
    Hmac,
}

/// Checked masking settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskSettings {
    /// Erase rules first, then HMAC rules, each in the order written.
    pub rules: Vec<(Pointer, Action)>,
    pub hmac_key_file: Option<PathBuf>,
}

impl MaskToml {
    /// Checks the table (the key file relative to `base`, read and checked now), reporting
    /// every problem.
    pub fn check(
        self,
        base: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<MaskSettings, Vec<String>> {
        let p = "decision_log.mask";
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let lists = [
            ("erase", self.erase.unwrap_or_default(), Action::Erase),
            ("hmac", self.hmac.unwrap_or_default(), Action::Hmac),
        ];
        for (name, list, action) in lists {
            for text in list {
                match Pointer::parse(&text).and_then(in_scope) {
                    Ok(ptr) => rules.push((ptr, action)),
                    Err(e) => problems.push(format!("{p}.{name}: {e}")),
                }
            }
        }
        overlaps(&rules, &mut problems);
        let source_ip = Pointer::parse("/input/source_ip").ok();
        let requested_by = Pointer::parse("/requested_by").ok();
        let covered = |target: &Option<Pointer>| {
            target
                .as_ref()
                .is_some_and(|t| rules.iter().any(|(r, _)| r.covers(t)))
        };
        if covered(&source_ip) && !covered(&requested_by) {
            problems.push(format!(
                "{p}: /input/source_ip is masked but the caller's address is also in \
                 requested_by (ip:port); add \"/requested_by\" to erase or hmac"
            ));
        }
        let hmac_rules = rules.iter().any(|(_, a)| *a == Action::Hmac);
        let hmac_key_file = self.hmac_key_file.map(|f| base.join(f));
        match &hmac_key_file {
            Some(file) => {
                if let Err(e) = MaskKey::read(file) {
                    problems.push(format!("{p}.hmac_key_file: {e}"));
                }
                if !hmac_rules {
                    warnings.push(format!("{p}.hmac_key_file is set but no hmac rule uses it"));
                }
            }
            None if hmac_rules => problems.push(format!(
                "{p}.hmac_key_file is required for hmac rules (make one: openssl rand -hex 32 \
                 > mask.key; chmod 600 mask.key)"
            )),
            None => {}
        }
        if rules.is_empty() && problems.is_empty() {
            warnings.push(format!("{p} has no erase or hmac rules: nothing is masked"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(MaskSettings {
            rules,
            hmac_key_file,
        })
    }
}

/// Refuses pointers outside `/input/...` and `/requested_by`, saying why.
fn in_scope(ptr: Pointer) -> Result<Pointer, String> {
    let tokens = ptr.tokens();
    let first = tokens.first().map_or("", String::as_str);
    let why = match (first, tokens.len()) {
        ("requested_by", 1) => return Ok(ptr),
        ("input", 1) => "the whole input: name members under it (e.g. /input/source_ip)".into(),
        ("input", _) if tokens.get(1).is_some_and(|t| t == "time") => {
            "the line holds no input.time (it is the event's timestamp, which is not masked)".into()
        }
        ("input", _) => return Ok(ptr),
        _ => match PROTECTED.iter().find(|(name, _)| *name == first) {
            Some((name, what)) => format!("it would touch {name}, {what}"),
            None => "only members under /input/ and /requested_by may be masked".into(),
        },
    };
    Err(format!("{ptr}: {why}"))
}

/// Two rules on the same member, or one inside the other, are refused: which applies would
/// depend on their order.
fn overlaps(rules: &[(Pointer, Action)], problems: &mut Vec<String>) {
    for (i, (a, _)) in rules.iter().enumerate() {
        for (b, _) in rules.iter().skip(i + 1) {
            if a.covers(b) || b.covers(a) {
                problems.push(format!(
                    "decision_log.mask: {a} and {b} overlap (the same member, or one inside \
                     the other)"
                ));
            }
        }
    }
}

/// The HMAC key, read from its file.
pub struct MaskKey(hmac::Key);

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(***)")
    }
}

impl MaskKey {
    /// Reads a key file: private (no group or other access), hex of 32 to 512 bytes.
    pub fn read(path: &Path) -> Result<Self, String> {
        super::settings::private_file(path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            format!(
                "{} does not hold a hex key (make one: openssl rand -hex 32)",
                path.display()
            )
        })?);
        if !(32..=512).contains(&bytes.len()) {
            return Err(format!(
                "{} holds a {}-byte key; use 32 to 512 bytes (openssl rand -hex 32)",
                path.display(),
                bytes.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// `hmac-sha256:<hex>` of `value` (a string's bytes, or any other value's compact JSON).
    pub fn tag(&self, value: &Json) -> String {
        match value {
            Json::String(s) => self.tag_bytes(s.as_bytes()),
            other => self.tag_bytes(other.to_string().as_bytes()),
        }
    }

    fn tag_bytes(&self, bytes: &[u8]) -> String {
        let tag = hmac::sign(&self.0, bytes);
        format!("{HMAC_PREFIX}{}", hex::encode(tag.as_ref()))
    }
}

/// The rules in force, with the key: applied to every event before it is queued.
#[derive(Debug)]
pub struct Masking {
    rules: Vec<(Pointer, Action, Arc<str>)>,
    key: Option<MaskKey>,
}

/// What masking did to one event: OPA's `erased` and `masked` (the pointers, as configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub erased: Vec<Arc<str>>,
    pub masked: Vec<Arc<str>>,
}

impl Masking {
    /// The rules of `settings`, reading their key.
    pub fn new(settings: &MaskSettings) -> Result<Self, String> {
        let key = match &settings.hmac_key_file {
            Some(file) => Some(MaskKey::read(file)?),
            None => None,
        };
        let rules = settings
            .rules
            .iter()
            .map(|(p, a)| (p.clone(), *a, Arc::from(p.as_str())))
            .collect();
        Ok(Self { rules, key })
    }

    /// Applies every rule to `event`. An absent member is left alone and not listed; a null
    /// is erased, but never HMAC'd (it hides nothing). Without a key (never, once checked), an
    /// HMAC rule erases instead: the value never passes unmasked.
    pub fn apply(&self, event: &mut Json) -> Applied {
        let mut applied = Applied::default();
        for (ptr, action, text) in &self.rules {
            match (action, &self.key) {
                (Action::Hmac, Some(key)) => {
                    if let Some(value) = ptr.find_mut(event).filter(|v| !v.is_null()) {
                        *value = Json::String(key.tag(value));
                        applied.masked.push(text.clone());
                    }
                }
                _ => {
                    if ptr.remove(event) {
                        applied.erased.push(text.clone());
                    }
                }
            }
        }
        applied
    }

    /// A value keygate's own request log carries that a decision event holds at `pointer`
    /// (`/input/source_ip`, `/input/access_key_id`, ...), masked as the decision log masks it:
    /// `None` when a rule erases the member or one that holds it (an HMAC rule on an object
    /// that holds it, too: its tag is of the whole object), its tag when an HMAC rule names
    /// it (the same tag the decision line holds, so the two logs still join), else the value.
    /// An empty value (nothing known) stays empty.
    pub fn field<'v>(&self, pointer: &str, value: &'v str) -> Option<Cow<'v, str>> {
        if value.is_empty() {
            return Some(Cow::Borrowed(value));
        }
        let named = |rule: &Pointer| {
            rule.as_str() == pointer
                || pointer
                    .strip_prefix(rule.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        match self.rules.iter().find(|(rule, _, _)| named(rule)) {
            None => Some(Cow::Borrowed(value)),
            Some((rule, Action::Hmac, _)) if rule.as_str() == pointer => self
                .key
                .as_ref()
                .map(|key| Cow::Owned(key.tag_bytes(value.as_bytes()))),
            Some(_) => None,
        }
    }
}

/// `value` as the masking rules (if any) leave the member at `pointer` in keygate's other
/// logs (see [`Masking::field`]): `None` when erased.
pub fn masked<'v>(mask: Option<&Masking>, pointer: &str, value: &'v str) -> Option<Cow<'v, str>> {
    match mask {
        None => Some(Cow::Borrowed(value)),
        Some(m) => m.field(pointer, value),
    }
}

#[cfg(test)]
mod tests;
