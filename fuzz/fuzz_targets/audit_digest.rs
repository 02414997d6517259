//! `keygate audit verify --digests`' readers of digest files and public keys: any text is a
//! digest or refused, never a panic; a digest that opens seals back to the same line.
#![no_main]

use keygate::policy::decision_log::digest;
use keygate::signing::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = PublicKey::from_pem(rest);
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let Ok((parsed, body, signature)) = digest::open(&text) else {
        return;
    };
    let again = digest::seal(&body, &signature);
    let (reparsed, rebody, resig) = digest::open(&again).unwrap();
    assert_eq!((&reparsed, &rebody, &resig), (&parsed, &body, &signature));
    assert!(!parsed.body().is_empty());
});
