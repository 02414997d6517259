//! The KMS v2 ciphertext reader: any bytes parse or are refused, never a panic; what parses
//! re-assembles to the same bytes, and its AAD starts with the domain prefix.
#![no_main]

use keygate::kms_v2::envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = envelope::parse(data) else {
        return;
    };
    let header = envelope::Header {
        key: p.key.to_owned(),
        version: p.version,
    }
    .encode()
    .unwrap();
    let again = envelope::assemble(&header, p.sealed.iv, p.sealed.ciphertext, p.sealed.tag);
    assert_eq!(again, data);
    assert!(p.aad().starts_with(b"keygate/kms-v2\0"));
    assert_eq!(p.aad(), envelope::Header::aad(&header));
});
