//! Every XKS request body parser. The first byte picks the parser; the rest is the body.
//! Errors must be spec errors with a sanitized message; accepted values respect the limits.
#![no_main]

use keygate::xks::api::{Limits, parse_decrypt, parse_encrypt, parse_health, parse_metadata};
use keygate::xks::error::XksError;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_plaintext: 4300,
    max_aad: 8192,
};

fn check_error(e: &XksError) {
    let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
    assert_eq!(body["errorName"], e.name());
    let msg = body["errorMessage"].as_str().unwrap();
    assert!(msg.len() < 512, "{msg}");
    assert!(msg.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{msg:?}");
    assert!(matches!(
        e.status(),
        400 | 401 | 403 | 404 | 429 | 500 | 501 | 503
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Err(e) = parse_health(body) {
                check_error(&e)
            }
        }
        1 => {
            if let Err(e) = parse_metadata(body) {
                check_error(&e)
            }
        }
        2 => match parse_encrypt(body, LIMITS) {
            Ok(r) => {
                assert!(r.plaintext.len() <= LIMITS.max_plaintext);
                assert!(r.aad.as_ref().is_none_or(|a| a.len() <= LIMITS.max_aad));
            }
            Err(e) => check_error(&e),
        },
        _ => match parse_decrypt(body, LIMITS) {
            Ok(r) => {
                assert!(r.ciphertext.len() <= LIMITS.max_plaintext);
                assert!(r.iv.len() == 12 || r.iv.len() == 16);
                assert_eq!(r.tag.len(), 16);
                assert!(r.ciphertext_metadata.as_ref().is_none_or(|m| m.len() <= 20));
            }
            Err(e) => check_error(&e),
        },
    }
});
