//! The canonical-request builder and the verifier over arbitrary headers, SignedHeaders,
//! paths and bodies. Input: lines; line 1 is the method, line 2 the path, line 3 the
//! SignedHeaders list, then `name:value` header lines, an empty line, and the body.
//! A forged request must never verify, and nothing may panic.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use keygate::credentials::{AccessKeyId, Secret};
use keygate::sigv4::{Credential, SignedRequest, canonical_request, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let method = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("POST");
    let path = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("/");
    let signed = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("");
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let req = SignedRequest {
        method,
        path,
        authority: Some("keygate.example:443"),
        headers: &headers,
        body,
    };
    if let Ok(c) = canonical_request(&req, signed, "e3b0c44298fc1c149afbf4c8996fb924") {
        assert!(c.starts_with(method));
        assert!(c.ends_with("e3b0c44298fc1c149afbf4c8996fb924"));
    }
    let creds = [Credential::new(
        AccessKeyId::parse("BETWEEN2TENAND3TENCHARACTERS").unwrap(),
        Secret::parse("PleaseReplaceThisWithSomeSecretOfLength43To64".into()).unwrap(),
    )];
    // A fixed clock near the dates a fuzzer is likely to write.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert!(
        verify(&req, &creds, "us-east-1", now).is_err(),
        "forged request verified"
    );
});
