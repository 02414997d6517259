//! JSON pointers (RFC 6901) into a decision event: parsing (`~0` is `~`, `~1` is `/`), and
//! finding, replacing or removing the member one names. An array is indexed by a decimal
//! number without leading zeros; `-` and anything else name no element. A pointer whose
//! member is absent changes nothing.

use serde_json::Value as Json;

/// A parsed pointer: its text as configured and its reference tokens, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `text`; the empty pointer (the whole document) is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer (RFC 6901): it must start with '/'"
            ));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape(raw).ok_or_else(|| bad_escape(text)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as configured (and as `erased`/`masked` list it).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Whether `self` names `other` or a member inside it.
    pub fn covers(&self, other: &Pointer) -> bool {
        other.tokens.starts_with(&self.tokens)
    }

    /// The member it names in `doc`, when present.
    pub fn find_mut<'a>(&self, doc: &'a mut Json) -> Option<&'a mut Json> {
        self.tokens
            .iter()
            .try_fold(doc, |node, token| child_mut(node, token))
    }

    /// Removes the member it names from `doc`; `true` when there was one.
    pub fn remove(&self, doc: &mut Json) -> bool {
        let Some((last, parents)) = self.tokens.split_last() else {
            return false;
        };
        let parent = parents
            .iter()
            .try_fold(doc, |node, token| child_mut(node, token));
        match parent {
            Some(Json::Object(map)) => map.remove(last).is_some(),
            Some(Json::Array(items)) => match index(last) {
                Some(i) if i < items.len() => {
                    items.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn child_mut<'a>(node: &'a mut Json, token: &str) -> Option<&'a mut Json> {
    match node {
        Json::Object(map) => map.get_mut(token),
        Json::Array(items) => items.get_mut(index(token)?),
        _ => None,
    }
}

/// An array index as RFC 6901 writes it: `0`, or digits not starting with `0`.
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// `~1` is `/` and `~0` is `~`; any other `~` is malformed.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn bad_escape(text: &str) -> String {
    format!("{text:?} is not a JSON pointer (RFC 6901): '~' must be followed by 0 or 1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    #[test]
    fn escapes_are_undone_in_order() {
        assert_eq!(p("/a~1b/m~0n").tokens(), ["a/b", "m~n"]);
        // `~01` is `~1` (RFC 6901 section 4: ~1 first would wrongly give `/`).
        assert_eq!(p("/~01").tokens(), ["~1"]);
        assert_eq!(p("/").tokens(), [""]);
        assert_eq!(p("/a~1b").as_str(), "/a~1b");
    }

    #[test]
    fn malformed_pointers_are_refused() {
        for bad in ["", "input/x", "/a~", "/a~2", "/~x/b"] {
            assert!(Pointer::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn escaped_members_are_found() {
        let mut doc = json!({"a/b": {"m~n": 1}, "": 2});
        assert_eq!(p("/a~1b/m~0n").find_mut(&mut doc), Some(&mut json!(1)));
        assert_eq!(p("/").find_mut(&mut doc), Some(&mut json!(2)));
        assert!(p("/a~1b/m~0n").remove(&mut doc));
        assert_eq!(doc, json!({"a/b": {}, "": 2}));
    }

    #[test]
    fn arrays_take_plain_indexes_only() {
        let mut doc = json!({"l": ["x", "y", {"z": 1}]});
        assert_eq!(p("/l/1").find_mut(&mut doc), Some(&mut json!("y")));
        assert_eq!(p("/l/2/z").find_mut(&mut doc), Some(&mut json!(1)));
        for absent in ["/l/01", "/l/-", "/l/3", "/l/+1", "/l/"] {
            assert_eq!(p(absent).find_mut(&mut doc), None, "{absent}");
            assert!(!p(absent).remove(&mut doc), "{absent}");
        }
        assert!(p("/l/0").remove(&mut doc));
        assert_eq!(doc, json!({"l": ["y", {"z": 1}]}));
    }

    #[test]
    fn absent_members_change_nothing() {
        let mut doc = json!({"input": {"source_ip": null, "n": 3}});
        let before = doc.clone();
        for absent in [
            "/input/peer",
            "/input/n/x",
            "/nothing/at/all",
            "/input/source_ip/x",
        ] {
            assert_eq!(p(absent).find_mut(&mut doc), None, "{absent}");
            assert!(!p(absent).remove(&mut doc), "{absent}");
        }
        assert_eq!(doc, before);
        // A null member is present.
        assert_eq!(
            p("/input/source_ip").find_mut(&mut doc),
            Some(&mut Json::Null)
        );
    }

    #[test]
    fn covers_is_by_token_not_by_text() {
        assert!(p("/input/request_metadata").covers(&p("/input/request_metadata/x")));
        assert!(p("/input/a").covers(&p("/input/a")));
        assert!(!p("/input/a").covers(&p("/input/ab")));
        assert!(!p("/input/a/b").covers(&p("/input/a")));
    }
}
