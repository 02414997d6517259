//! The ACL policy that grants keygate's token a key's usage: one line per path keygate
//! needs, in a fixed shape keygate reads back and rewrites (other lines are kept as they are).
//!
//! ```text
//! path "M/keys/ID" { capabilities = ["read"] }       every key keygate serves
//! path "M/encrypt/ID" { capabilities = ["update"] }  usage ENCRYPT
//! path "M/decrypt/ID" { capabilities = ["update"] }  usage DECRYPT
//! ```
//!
//! No line grants `create`: Transit would create a missing key on an encryption otherwise.

use std::collections::BTreeMap;

use crate::keys::{KeyUsage, valid_key_id};

/// The keys a policy grants, with their usage, and the lines that are not keygate's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub keys: BTreeMap<String, KeyUsage>,
    pub other: Vec<String>,
}

impl Grants {
    /// Reads `text`, taking the lines for `mount` in keygate's shape.
    pub fn parse(text: &str, mount: &str) -> Grants {
        let mut g = Grants::default();
        for line in text.lines() {
            match grant(line, mount) {
                Some((what, id)) => {
                    let usage = g.keys.entry(id.to_owned()).or_default();
                    match what {
                        "encrypt" => usage.encrypt = true,
                        "decrypt" => usage.decrypt = true,
                        _ => {}
                    }
                }
                None if line.trim().is_empty() => {}
                None => g.other.push(line.to_owned()),
            }
        }
        g
    }

    /// The policy text: keygate's lines, sorted by key, after the other lines.
    pub fn render(&self, mount: &str) -> String {
        let mut out = String::new();
        for line in &self.other {
            out.push_str(line);
            out.push('\n');
        }
        for (id, usage) in &self.keys {
            out.push_str(&format!(
                "path \"{mount}/keys/{id}\" {{ capabilities = [\"read\"] }}\n"
            ));
            if usage.encrypt {
                out.push_str(&format!(
                    "path \"{mount}/encrypt/{id}\" {{ capabilities = [\"update\"] }}\n"
                ));
            }
            if usage.decrypt {
                out.push_str(&format!(
                    "path \"{mount}/decrypt/{id}\" {{ capabilities = [\"update\"] }}\n"
                ));
            }
        }
        out
    }
}

/// `(what, key id)` of a line in keygate's shape for `mount`.
fn grant<'a>(line: &'a str, mount: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.trim().strip_prefix("path \"")?;
    let (path, caps) = rest.split_once('"')?;
    let (what, id) = path
        .strip_prefix(mount)?
        .strip_prefix('/')?
        .split_once('/')?;
    let want = match what {
        "keys" => "\"read\"",
        "encrypt" | "decrypt" => "\"update\"",
        _ => return None,
    };
    let caps = caps.trim();
    let exact = caps.starts_with('{') && caps.ends_with('}') && caps.contains(want);
    (exact && valid_key_id(id)).then_some((what, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_other_lines() {
        let mut g = Grants::default();
        g.other
            .push("path \"sys/x\" { capabilities = [\"read\"] }".into());
        g.keys.insert("foo".into(), KeyUsage::BOTH);
        g.keys.insert("enc".into(), KeyUsage::ENCRYPT_ONLY);
        g.keys.insert("dec".into(), KeyUsage::DECRYPT_ONLY);
        g.keys.insert("none".into(), KeyUsage::NONE);
        let text = g.render("kg");
        assert_eq!(Grants::parse(&text, "kg"), g);
        assert!(!text.contains("create"));
        // Another mount's lines are not keygate's.
        let other = Grants::parse(&text, "transit");
        assert!(other.keys.is_empty());
        assert_eq!(other.other.len(), text.lines().count());
    }

    #[test]
    fn foreign_shapes_are_left_alone() {
        for line in [
            "path \"kg/encrypt/foo\" { capabilities = [\"read\"] }",
            "path \"kg/encrypt/*\" { capabilities = [\"update\"] }",
            "path \"kg/rotate/foo\" { capabilities = [\"update\"] }",
            "# comment",
        ] {
            let g = Grants::parse(line, "kg");
            assert!(g.keys.is_empty(), "{line}");
            assert_eq!(g.other, vec![line.to_owned()]);
        }
    }
}
