//! Bounded Base64 decoding: agrees with the base64 crate below the bound, never returns
//! more than the bound, and refuses oversized input before decoding it.
#![no_main]

use base64::{Engine, engine::general_purpose::STANDARD};
use keygate::xks::api::decode_bounded;
use libfuzzer_sys::fuzz_target;

const FIELDS: [&str; 6] = [
    "plaintext",
    "ciphertext",
    "additionalAuthenticatedData",
    "initializationVector",
    "authenticationTag",
    "ciphertextMetadata",
];

fuzz_target!(|data: &[u8]| {
    let [f, m, rest @ ..] = data else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let field = FIELDS[usize::from(*f) % FIELDS.len()];
    let max = usize::from(*m);
    match decode_bounded(field, s, max) {
        Ok(bytes) => {
            assert!(bytes.len() <= max);
            assert_eq!(Some(bytes), STANDARD.decode(s).ok());
        }
        Err(e) => {
            if let Ok(full) = STANDARD.decode(s) {
                assert!(full.len() > max, "{field} {max} refused valid input: {e}");
            }
        }
    }
});
