//! Messages that reach a peer: printable ASCII (0x20-0x7E) only, under 512 characters, as the
//! XKS spec asks of `errorMessage`. A leaf module: the SigV4 layer, the credential parser and
//! every front door use it, and it knows none of them.

/// The longest message keygate sends (the XKS spec requires fewer than 512 characters).
pub const MAX_MESSAGE_LEN: usize = 500;

/// Makes a message fit the spec: printable ASCII (0x20-0x7E) only, under 512 characters.
pub fn sanitize_message(msg: &str) -> String {
    let mut out: String = msg
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(MAX_MESSAGE_LEN + 1)
        .collect();
    if out.len() > MAX_MESSAGE_LEN {
        out.truncate(MAX_MESSAGE_LEN - 3);
        out.push_str("...");
    }
    out
}

/// Escapes U+2028 and U+2029 as `\u2028` and `\u2029` in a JSON text. They are valid raw
/// inside JSON strings, but tools that split on Unicode line breaks (JavaScript, many log
/// shippers) would cut the line there; escaped, each JSON line stays one line for every
/// reader and decodes to the same value. Only strings can hold them, so the text stays
/// valid JSON.
pub fn escape_line_separators(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const LS: [u8; 3] = [0xE2, 0x80, 0xA8];
    const PS: [u8; 3] = [0xE2, 0x80, 0xA9];
    if !json.windows(3).any(|w| w == LS || w == PS) {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len() + 8);
    let mut rest = json;
    while let Some((first, tail)) = rest.split_first() {
        match rest.get(..3) {
            Some(w) if w == LS => {
                out.extend_from_slice(b"\\u2028");
                rest = rest.get(3..).unwrap_or_default();
            }
            Some(w) if w == PS => {
                out.extend_from_slice(b"\\u2029");
                rest = rest.get(3..).unwrap_or_default();
            }
            _ => {
                out.push(*first);
                rest = tail;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`escape_line_separators`] for a `String` that holds JSON.
pub fn escape_line_separators_str(json: String) -> String {
    match escape_line_separators(json.as_bytes()) {
        std::borrow::Cow::Borrowed(_) => json,
        std::borrow::Cow::Owned(bytes) => String::from_utf8(bytes).unwrap_or(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn line_separators_are_escaped_and_decode_back() {
        let value = serde_json::json!({"m": "a\u{2028}b\u{2029}c\u{e9}"});
        let raw = serde_json::to_string(&value).unwrap();
        assert!(raw.contains('\u{2028}'));
        let escaped = escape_line_separators_str(raw);
        assert_eq!(escaped, "{\"m\":\"a\\u2028b\\u2029c\u{e9}\"}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn messages_are_printable_ascii_and_short() {
        let s = sanitize_message(&format!("a\nb\u{e9}{}", "x".repeat(2000)));
        assert!(s.len() < 512);
        assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert!(s.starts_with("a?b?x"));
        assert!(s.ends_with("..."));
    }

    proptest! {
        #[test]
        fn sanitizing_is_idempotent_and_keeps_short_ascii(m in "\\PC{0,700}") {
            let once = sanitize_message(&m);
            prop_assert_eq!(sanitize_message(&once), once.clone());
            prop_assert!(once.len() <= MAX_MESSAGE_LEN);
            if m.len() <= MAX_MESSAGE_LEN && m.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                prop_assert_eq!(once, m);
            }
        }
    }
}
