//! Unit tests for the verifier, with requests signed by aws-sigv4's signing side.

use super::*;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use http::HeaderValue;
use std::time::{Duration, UNIX_EPOCH};

const AK: &str = "AKIAKEYGATETESTKEY234567";
const SECRET: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";
const PATH: &str = "/p/kms/xks/v1/keys/foo/encrypt";
const BODY: &[u8] = br#"{"requestMetadata":{"kmsRequestId":"1"}}"#;

fn creds() -> Vec<Credential> {
    vec![Credential::new(
        AccessKeyId::parse(AK).unwrap(),
        Secret::parse(SECRET.to_owned()).unwrap(),
    )]
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

/// Signs with aws-sigv4 over exactly `headers`, returning the full header map.
fn signed(
    headers: &[(&str, &str)],
    body: &[u8],
    at: SystemTime,
    region: &str,
    service: &str,
    sha_header: bool,
) -> HeaderMap {
    let mut settings = SigningSettings::default();
    if sha_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let identity = aws_credential_types::Credentials::new(AK, SECRET, None, None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(at)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let url = format!("https://xks.example.com{PATH}");
    let req = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    for (k, v) in instructions.headers() {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn check(headers: &HeaderMap, body: &[u8]) -> Result<(), SigV4Error> {
    let req = SignedRequest {
        method: "POST",
        path: PATH,
        authority: None,
        headers,
        body,
    };
    verify(&req, &creds(), "us-east-1", now()).map(|_| ())
}

const HOST: (&str, &str) = ("host", "xks.example.com");
const CT: (&str, &str) = ("content-type", "application/json");

#[test]
fn kms_curl_and_sdk_styles_verify() {
    let kms = signed(&[HOST], BODY, now(), "us-east-1", SERVICE, false);
    assert!(
        kms.get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date")
    );
    check(&kms, BODY).unwrap();
    let curl = signed(&[CT, HOST], BODY, now(), "us-east-1", SERVICE, false);
    check(&curl, BODY).unwrap();
    let sdk = signed(&[CT, HOST], BODY, now(), "us-east-1", SERVICE, true);
    assert!(sdk.contains_key("x-amz-content-sha256"));
    check(&sdk, BODY).unwrap();
}

#[test]
fn tampering_and_wrong_scope_fail() {
    let h = signed(&[CT, HOST], BODY, now(), "us-east-1", SERVICE, false);
    assert_eq!(check(&h, b"{}"), Err(SigV4Error::SignatureMismatch));
    let wrong_region = signed(&[HOST], BODY, now(), "eu-west-1", SERVICE, false);
    assert!(matches!(
        check(&wrong_region, BODY),
        Err(SigV4Error::Scope(_))
    ));
    let wrong_service = signed(&[HOST], BODY, now(), "us-east-1", "kms", false);
    assert!(matches!(
        check(&wrong_service, BODY),
        Err(SigV4Error::Scope(_))
    ));
    let mut changed = h.clone();
    changed.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(check(&changed, BODY), Err(SigV4Error::SignatureMismatch));
    let mut missing = h.clone();
    missing.remove("content-type");
    assert_eq!(
        check(&missing, BODY),
        Err(SigV4Error::MissingSignedHeader("content-type".into()))
    );
    let sdk = signed(&[HOST], BODY, now(), "us-east-1", SERVICE, true);
    assert_eq!(check(&sdk, b"{ }"), Err(SigV4Error::PayloadHash));
}

#[test]
fn skew_beyond_five_minutes_fails_both_ways() {
    let six = Duration::from_secs(360);
    let four = Duration::from_secs(240);
    assert_eq!(
        check(
            &signed(&[HOST], BODY, now() + six, "us-east-1", SERVICE, false),
            BODY
        ),
        Err(SigV4Error::Skew("ahead of"))
    );
    assert_eq!(
        check(
            &signed(&[HOST], BODY, now() - six, "us-east-1", SERVICE, false),
            BODY
        ),
        Err(SigV4Error::Skew("behind"))
    );
    check(
        &signed(&[HOST], BODY, now() + four, "us-east-1", SERVICE, false),
        BODY,
    )
    .unwrap();
    check(
        &signed(&[HOST], BODY, now() - four, "us-east-1", SERVICE, false),
        BODY,
    )
    .unwrap();
}

#[test]
fn unknown_key_and_wrong_secret_fail() {
    let h = signed(&[HOST], BODY, now(), "us-east-1", SERVICE, false);
    let other = vec![Credential::new(
        AccessKeyId::parse("OTHERKEYIDXXXXXXXXXXXX").unwrap(),
        Secret::parse(SECRET.to_owned()).unwrap(),
    )];
    let req = SignedRequest {
        method: "POST",
        path: PATH,
        authority: None,
        headers: &h,
        body: BODY,
    };
    assert_eq!(
        verify(&req, &other, "us-east-1", now()).err(),
        Some(SigV4Error::UnknownAccessKey)
    );
    let wrong = vec![Credential::new(
        AccessKeyId::parse(AK).unwrap(),
        Secret::parse("WrongSecretWrongSecretWrongSecretWrongSecret12".to_owned()).unwrap(),
    )];
    assert_eq!(
        verify(&req, &wrong, "us-east-1", now()).err(),
        Some(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn http2_authority_stands_in_for_host() {
    let mut h = signed(&[HOST], BODY, now(), "us-east-1", SERVICE, false);
    h.remove("host");
    let req = SignedRequest {
        method: "POST",
        path: PATH,
        authority: Some("xks.example.com"),
        headers: &h,
        body: BODY,
    };
    verify(&req, &creds(), "us-east-1", now()).unwrap();
}

#[test]
fn authorization_parser_rejects_malformed_values() {
    let good = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=".to_owned() + &"a".repeat(64);
    assert!(parse_authorization(&good).is_ok());
    let bad = [
        "",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date",
        "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/kms-xks-proxy, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=a, Credential=b, SignedHeaders=host, Signature=00",
    ];
    for b in bad {
        assert!(parse_authorization(b).is_err(), "{b}");
    }
    assert!(parse_authorization(&good.replace(&"a".repeat(64), &"A".repeat(64))).is_err());
}

#[test]
fn signed_headers_must_be_sorted_and_include_host_and_date() {
    let h = signed(&[HOST], BODY, now(), "us-east-1", SERVICE, false);
    let req = SignedRequest {
        method: "POST",
        path: PATH,
        authority: None,
        headers: &h,
        body: BODY,
    };
    assert!(canonical_request(&req, "x-amz-date;host", "00").is_err());
    assert_eq!(
        canonical_request(&req, "host", "00"),
        Err(SigV4Error::RequiredHeaderNotSigned)
    );
    assert!(canonical_request(&req, "host;host;x-amz-date", "00").is_err());
}

#[test]
fn header_values_are_trimmed_and_collapsed() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("h"));
    h.insert("x-amz-date", HeaderValue::from_static("20260101T000000Z"));
    h.append("x-custom", HeaderValue::from_static("  a   b  "));
    h.append("x-custom", HeaderValue::from_static("c"));
    let req = SignedRequest {
        method: "POST",
        path: "/",
        authority: None,
        headers: &h,
        body: b"",
    };
    let c = canonical_request(&req, "host;x-amz-date;x-custom", "e3").unwrap();
    assert!(c.contains("\nx-custom:a b,c\n"), "{c}");
}

/// A credential's Debug output, once a request has verified and its derived signing key is
/// cached, shows neither the secret nor the signing key.
#[test]
fn debug_of_a_used_credential_hides_the_signing_key() {
    let creds = creds();
    let h = signed(&[HOST], BODY, now(), "us-east-1", SERVICE, false);
    let req = SignedRequest {
        method: "POST",
        path: PATH,
        authority: None,
        headers: &h,
        body: BODY,
    };
    verify(&req, &creds, "us-east-1", now()).unwrap();
    let key = aws_sigv4::sign::v4::generate_signing_key(SECRET, now(), "us-east-1", SERVICE);
    let printed = format!("{creds:?}");
    assert!(printed.contains("CachedKey"), "{printed}");
    assert!(
        !printed.contains(&format!("{:?}", key.as_ref())),
        "{printed}"
    );
    assert!(!printed.contains(SECRET));
    let first = key.as_ref()[0].to_string();
    assert!(!printed.contains(&format!("[{first}, ")), "{printed}");
}

/// Each refusal has its own metric reason, and every reason is in the exported list.
#[test]
fn every_refusal_has_a_distinct_listed_reason() {
    let all = [
        SigV4Error::MissingAuthorization,
        SigV4Error::Malformed("x"),
        SigV4Error::BadDate,
        SigV4Error::Scope("x".into()),
        SigV4Error::Skew("behind"),
        SigV4Error::MissingSignedHeader("x".into()),
        SigV4Error::RequiredHeaderNotSigned,
        SigV4Error::PayloadHash,
        SigV4Error::UnknownAccessKey,
        SigV4Error::SignatureMismatch,
    ];
    let reasons: std::collections::BTreeSet<_> = all.iter().map(SigV4Error::reason).collect();
    assert_eq!(reasons.len(), all.len());
    let listed: std::collections::BTreeSet<_> = REFUSAL_REASONS.into_iter().collect();
    assert_eq!(reasons, listed);
}
