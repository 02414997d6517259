use super::*;

fn sealed_ref(s: &Sealed) -> SealedRef<'_> {
    SealedRef {
        iv: &s.iv,
        ciphertext: &s.ciphertext,
        tag: &s.tag,
    }
}

/// A ciphertext the real server returned (OpenBao 2.7.2, 5-byte plaintext).
const REAL: &str = "vault:v2:+JOlidwA6uAolipSkpI5ZVS2DWZNfTZ6Nu4QZGkV9xgQ";

#[test]
fn transit_ciphertext_splits_and_rebuilds_exactly() {
    let s = split_ciphertext(REAL, 2).unwrap();
    assert_eq!((s.iv.len(), s.ciphertext.len(), s.tag.len()), (12, 5, 16));
    assert_eq!(ciphertext_string(2, sealed_ref(&s)).unwrap(), REAL);
}

#[test]
fn foreign_or_short_ciphertexts_are_the_servers_fault() {
    for (text, version) in [
        (REAL, 1),
        ("vault:v2:AAAA", 2),
        ("other:v2:AAAA", 2),
        ("vault:vx:AAAA", 2),
        ("vault:v2:!!", 2),
    ] {
        assert!(
            matches!(
                split_ciphertext(text, version),
                Err(KeyError::Unavailable(_))
            ),
            "{text}"
        );
    }
    // An empty plaintext is nonce and tag only.
    let empty = format!("vault:v1:{}", STANDARD.encode([7u8; 28]));
    assert!(split_ciphertext(&empty, 1).unwrap().ciphertext.is_empty());
}

#[test]
fn parts_of_the_wrong_length_are_invalid_ciphertext() {
    let s = split_ciphertext(REAL, 2).unwrap();
    for (iv, tag, version) in [
        (&s.iv[..8], &s.tag[..], 2),
        (&[][..], &s.tag[..], 2),
        (&[0u8; 16][..], &s.tag[..], 2),
        (&s.iv[..], &s.tag[..12], 2),
        (&s.iv[..], &s.tag[..], 0),
    ] {
        let r = ciphertext_string(
            version,
            SealedRef {
                iv,
                ciphertext: &s.ciphertext,
                tag,
            },
        );
        assert!(matches!(r, Err(KeyError::InvalidCiphertext(_))), "{r:?}");
    }
}

#[test]
fn request_bodies_carry_base64_and_the_version() {
    let body = encrypt_body(b"hello", b"aad", 3);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"plaintext": "aGVsbG8=", "associated_data": "YWFk", "key_version": 3})
    );
    let s = split_ciphertext(REAL, 2).unwrap();
    let body = decrypt_body(2, sealed_ref(&s), b"aad").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["ciphertext"], REAL);
    assert_eq!(v["associated_data"], "YWFk");
}

/// The server's error answers (as OpenBao 2.7.2 words them) and what keygate makes of them.
#[test]
fn error_table() {
    let e = |s: &str| vec![s.to_owned()];
    let d = KeyOp::Decrypt;
    let cases = [
        (
            400,
            e("cipher: message authentication failed"),
            d,
            "authentication",
        ),
        (
            400,
            e("invalid ciphertext: version is too new"),
            d,
            "invalid_ciphertext",
        ),
        (400, e("invalid ciphertext length"), d, "invalid_ciphertext"),
        (
            400,
            e("ciphertext or signature version is disallowed by policy (too old)"),
            d,
            "invalid_ciphertext",
        ),
        (400, e("refusing to use soft-deleted key"), d, "disabled"),
        (
            400,
            e("refusing to use soft-deleted key"),
            KeyOp::Encrypt,
            "disabled",
        ),
        (400, e("encryption key not found"), d, "not_found"),
        (404, vec![], KeyOp::Encrypt, "not_found"),
        (403, e("permission denied"), KeyOp::Encrypt, "unavailable"),
        (429, e("rate limit quota exceeded"), KeyOp::Encrypt, "busy"),
        (503, e("Vault is sealed"), KeyOp::Encrypt, "unavailable"),
        (
            400,
            e("requested version for encryption is higher than the latest key version"),
            KeyOp::Encrypt,
            "unavailable",
        ),
        (500, vec![], KeyOp::Encrypt, "unavailable"),
    ];
    for (status, errors, op, want) in cases {
        let got = classify(status, &errors, op);
        assert_eq!(
            crate::metrics::backend::error_kind(&got),
            want,
            "{status} {errors:?}"
        );
    }
    let revoked = classify(403, &e("permission denied"), KeyOp::Encrypt).to_string();
    assert!(revoked.contains("revoked or expired"), "{revoked}");
}

#[test]
fn go_multierror_text_is_tidied() {
    assert_eq!(
        tidy("1 error occurred:\n\t* permission denied\n\n"),
        "permission denied"
    );
    assert_eq!(tidy("2 errors occurred:\n\t* a\n\t* b\n"), "a; b");
    assert_eq!(tidy("plain"), "plain");
}

#[test]
fn key_types_other_than_aes256_gcm96_are_refused() {
    let read = |t: &str, derived: bool| KeyRead {
        key_type: t.into(),
        latest_version: 1,
        derived,
        soft_deleted: false,
    };
    assert_eq!(read(KEY_TYPE, false).refusal(), None);
    let why = read("chacha20-poly1305", false).refusal().unwrap();
    assert!(
        why.contains("chacha20-poly1305") && why.contains(KEY_TYPE),
        "{why}"
    );
    assert!(read(KEY_TYPE, true).refusal().unwrap().contains("derived"));
}

#[test]
fn tokens_never_print() {
    let a: AuthData = serde_json::from_str(
        r#"{"client_token":"s.secret-token","lease_duration":20,"renewable":true}"#,
    )
    .unwrap();
    assert!(!format!("{a:?}").contains("secret-token"));
}
