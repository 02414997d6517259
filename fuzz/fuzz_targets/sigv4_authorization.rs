//! The SigV4 Authorization header parser: never panics, and whatever it accepts has the
//! shape it promises (five scope parts, a 64-digit lowercase hex signature).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = keygate::sigv4::parse_authorization(text) {
        assert_eq!(a.signature.len(), 64);
        assert!(
            a.signature
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        for part in [a.access_key_id, a.date, a.region, a.service] {
            assert!(!part.contains('/'));
        }
        assert!(text.starts_with("AWS4-HMAC-SHA256 "));
    }
    if let Err(e) = keygate::sigv4::parse_authorization(text) {
        // The caller-facing message never echoes the header (it could carry a signature).
        let m = e.public_message();
        assert!(m.len() < 200, "{m}");
    }
});
