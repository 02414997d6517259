//! `keygate audit verify`'s reader: any file text is verified or refused with a line number,
//! never a panic; a chain sealed by the writer's own `seal` verifies, and any change to its
//! bytes is detected.
#![no_main]

use keygate::policy::decision_log::chain::{self, GENESIS, Verifier};
use libfuzzer_sys::fuzz_target;

fn verify(text: &str) -> Result<chain::Verified, chain::Break> {
    let mut verifier = Verifier::default();
    verifier.verify_text("fuzz.log", text)?;
    verifier.finish()
}

/// A log of one line per `\n`-separated piece of `rest`, sealed the way the writer seals it.
fn sealed_log(rest: &[u8]) -> (String, usize) {
    let mut prev = GENESIS.to_owned();
    let mut text = String::new();
    let mut lines = 0;
    for (i, piece) in rest.split(|b| *b == b'\n').enumerate() {
        let note = String::from_utf8_lossy(piece);
        let body = serde_json::json!({"seq": i + 1, "prev_hash": prev, "note": note}).to_string();
        let (line, hash) = chain::seal(&prev, &body);
        text.push_str(&line);
        text.push('\n');
        prev = hash;
        lines += 1;
    }
    (text, lines)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // Arbitrary text: a verdict, and a failure points at a line that exists.
        let text = String::from_utf8_lossy(rest);
        if let Err(b) = verify(&text) {
            assert!(b.line <= text.lines().count());
            assert!(!b.reason.is_empty());
        }
        return;
    }
    // A genuine chain verifies; then one byte of it is changed, dropped or duplicated.
    let Some((&where_, rest)) = rest.split_first() else {
        return;
    };
    let Some((&how, rest)) = rest.split_first() else {
        return;
    };
    let (text, lines) = sealed_log(rest);
    let verified = verify(&text).unwrap();
    assert_eq!(verified.lines, lines);
    assert_eq!(verified.starts_from, GENESIS);
    let mut bytes = text.into_bytes();
    let at = usize::from(where_) * bytes.len() / 256;
    match how % 3 {
        0 => bytes[at] ^= how | 1,
        1 => {
            bytes.remove(at);
        }
        _ => bytes.insert(at, bytes[at]),
    }
    if let Ok(changed) = String::from_utf8(bytes) {
        assert!(verify(&changed).is_err(), "a changed log verified: {changed:?}");
    }
});
