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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
