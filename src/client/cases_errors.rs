//! Conformance cases on error answers: path before auth, validation, unknown keys, size limit, 405.

use bytes::Bytes;
use serde_json::{Value, json};

use super::cases::{AAD, PLAINTEXT};
use super::cases_auth;
use super::conformance::{Case, CaseFuture, Check, Ctx, Done, Needs};
use super::expect;
use super::wire::{self, Op};

macro_rules! case {
    ($name:literal, $f:path) => {{
        fn run(ctx: &mut Ctx) -> CaseFuture<'_> {
            Box::pin($f(ctx))
        }
        Case {
            name: $name,
            needs: Needs::Nothing,
            run,
        }
    }};
}

/// Path, SigV4, validation, not-found, size-limit and method cases.
pub fn cases() -> Vec<Case> {
    let mut table = vec![
        case!("path.unknown-prefix-signed", unknown_prefix_signed),
        case!("path.unknown-prefix-unsigned", unknown_prefix_unsigned),
        case!("path.unknown-operation", unknown_operation),
        case!("path.unknown-path", unknown_path),
        case!("path.wrong-api-version", wrong_version),
    ];
    table.extend(cases_auth::cases());
    table.extend([
        case!("validation.malformed-json", malformed_json),
        case!(
            "validation.missing-request-metadata",
            missing_request_metadata
        ),
        case!("validation.missing-plaintext", missing_plaintext),
        case!("validation.plaintext-wrong-type", plaintext_wrong_type),
        case!("validation.bad-base64", bad_base64),
        case!("validation.url-safe-base64", url_safe_base64),
        case!("validation.wrong-encryption-algorithm", wrong_algorithm),
        case!("validation.wrong-cdiv-algorithm", wrong_cdiv_algorithm),
        case!("validation.decrypt-missing-iv", decrypt_missing_iv),
        case!("validation.decrypt-bad-base64-tag", decrypt_bad_tag),
        case!(
            "validation.decrypt-metadata-over-20-bytes",
            decrypt_long_metadata
        ),
        case!("validation.metadata-empty-body", metadata_empty),
        case!("validation.health-empty-object", health_empty),
        case!(
            "validation.health-empty-request-metadata",
            health_empty_metadata
        ),
        case!("not-found.metadata", not_found_metadata),
        case!("not-found.encrypt", not_found_encrypt),
        case!("not-found.decrypt", not_found_decrypt),
        case!("unsupported.plaintext-1-mib", plaintext_1_mib),
        case!("method.get-metadata", get_metadata),
        case!("method.get-encrypt", get_encrypt),
        case!("method.get-decrypt", get_decrypt),
        case!("method.get-health", get_health),
    ]);
    table
}

const VE: &str = "ValidationException";
const IUPE: &str = "InvalidUriPathException";
const MISSING_KEY: &str = "non_existing_key";

/// The URL path before `/kms/xks/v1` with the prefix replaced by an unknown one.
fn unknown_prefix_path(ctx: &Ctx) -> String {
    let api = ctx.target().api_base();
    let root = api.strip_suffix("/kms/xks/v1").unwrap_or(api);
    format!("{root}/keygate-no-such-prefix/kms/xks/v1/health")
}

async fn post_expect(ctx: &mut Ctx, path: &str, body: Bytes, status: u16, name: &str) -> Check {
    let reply = ctx.post_raw(path, body).await?;
    expect::error(&reply, status, name)?;
    Ok(Done::Pass)
}

async fn unknown_prefix_signed(ctx: &mut Ctx) -> Check {
    let path = unknown_prefix_path(ctx);
    post_expect(ctx, &path, wire::to_bytes(&wire::health_body()), 404, IUPE).await
}

async fn unknown_prefix_unsigned(ctx: &mut Ctx) -> Check {
    let path = unknown_prefix_path(ctx);
    let mut req = wire::post(
        ctx.target(),
        &ctx.signer,
        &path,
        wire::to_bytes(&wire::health_body()),
    )
    .map_err(|e| e.to_string())?;
    req.headers_mut().remove(http::header::AUTHORIZATION);
    let reply = ctx.send(req).await?;
    expect::error(&reply, 404, IUPE)?;
    Ok(Done::Pass)
}

async fn unknown_operation(ctx: &mut Ctx) -> Check {
    let path = format!("{}/keys/{}/sign", ctx.target().api_base(), ctx.keys.main);
    post_expect(
        ctx,
        &path,
        wire::to_bytes(&wire::metadata_body()),
        404,
        IUPE,
    )
    .await
}

async fn unknown_path(ctx: &mut Ctx) -> Check {
    let path = format!("{}/nonsense", ctx.target().api_base());
    post_expect(ctx, &path, wire::to_bytes(&wire::health_body()), 404, IUPE).await
}

async fn wrong_version(ctx: &mut Ctx) -> Check {
    let api = ctx.target().api_base();
    let path = format!(
        "{}/kms/xks/v2/health",
        api.strip_suffix("/kms/xks/v1").unwrap_or(api)
    );
    post_expect(ctx, &path, wire::to_bytes(&wire::health_body()), 404, IUPE).await
}

/// POSTs `body` to `op` on `key` and expects `status name`.
async fn call_expect(
    ctx: &mut Ctx,
    op: Op,
    key: &str,
    body: &Value,
    status: u16,
    name: &str,
) -> Check {
    let reply = ctx.call(op, key, body).await?;
    expect::error(&reply, status, name)?;
    Ok(Done::Pass)
}

async fn encrypt_expect_ve(ctx: &mut Ctx, body: &Value) -> Check {
    let key = ctx.keys.main.clone();
    call_expect(ctx, Op::Encrypt, &key, body, 400, VE).await
}

async fn malformed_json(ctx: &mut Ctx) -> Check {
    let path = Op::Encrypt.path(ctx.target(), &ctx.keys.main);
    post_expect(
        ctx,
        &path,
        Bytes::from_static(b"{\"requestMetadata\":"),
        400,
        VE,
    )
    .await
}

async fn missing_request_metadata(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, false);
    body.as_object_mut().map(|o| o.remove("requestMetadata"));
    encrypt_expect_ve(ctx, &body).await
}

async fn missing_plaintext(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, false);
    body.as_object_mut().map(|o| o.remove("plaintext"));
    encrypt_expect_ve(ctx, &body).await
}

async fn plaintext_wrong_type(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, false);
    wire::set(&mut body, "plaintext", 42);
    encrypt_expect_ve(ctx, &body).await
}

async fn bad_base64(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, false);
    wire::set(&mut body, "plaintext", "not base64 at all!");
    encrypt_expect_ve(ctx, &body).await
}

/// `[0xfb, 0xff]` is `+/8=` in standard Base64 and `-_8=` in the URL-safe alphabet.
async fn url_safe_base64(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, false);
    wire::set(&mut body, "plaintext", "-_8=");
    encrypt_expect_ve(ctx, &body).await
}

async fn wrong_algorithm(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, false);
    wire::set(&mut body, "encryptionAlgorithm", "AES_CBC");
    encrypt_expect_ve(ctx, &body).await
}

async fn wrong_cdiv_algorithm(ctx: &mut Ctx) -> Check {
    let mut body = wire::encrypt_body(PLAINTEXT, None, true);
    wire::set(
        &mut body,
        "ciphertextDataIntegrityValueAlgorithm",
        "SHA_512",
    );
    encrypt_expect_ve(ctx, &body).await
}

/// A Decrypt body for a fresh ciphertext of the main key, then `edit` applied to it.
async fn decrypt_expect_ve(ctx: &mut Ctx, edit: fn(&mut Value)) -> Check {
    let key = ctx.keys.main.clone();
    let sealed = ctx.seal(&key, PLAINTEXT, Some(AAD), false).await?;
    let mut body = wire::decrypt_body(&sealed, Some(AAD));
    edit(&mut body);
    call_expect(ctx, Op::Decrypt, &key, &body, 400, VE).await
}

async fn decrypt_missing_iv(ctx: &mut Ctx) -> Check {
    decrypt_expect_ve(ctx, |b| {
        b.as_object_mut().map(|o| o.remove("initializationVector"));
    })
    .await
}

async fn decrypt_bad_tag(ctx: &mut Ctx) -> Check {
    decrypt_expect_ve(ctx, |b| wire::set(b, "authenticationTag", "@@@@")).await
}

async fn decrypt_long_metadata(ctx: &mut Ctx) -> Check {
    decrypt_expect_ve(ctx, |b| {
        wire::set(b, "ciphertextMetadata", wire::b64(&[7u8; 21]))
    })
    .await
}

async fn metadata_empty(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    call_expect(ctx, Op::Metadata, &key, &json!({}), 400, VE).await
}

async fn health_empty(ctx: &mut Ctx) -> Check {
    call_expect(ctx, Op::Health, "", &json!({}), 400, VE).await
}

async fn health_empty_metadata(ctx: &mut Ctx) -> Check {
    call_expect(
        ctx,
        Op::Health,
        "",
        &json!({"requestMetadata": {}}),
        400,
        VE,
    )
    .await
}

const KNFE: &str = "KeyNotFoundException";

async fn not_found_metadata(ctx: &mut Ctx) -> Check {
    call_expect(
        ctx,
        Op::Metadata,
        MISSING_KEY,
        &wire::metadata_body(),
        404,
        KNFE,
    )
    .await
}

async fn not_found_encrypt(ctx: &mut Ctx) -> Check {
    let body = wire::encrypt_body(PLAINTEXT, Some(AAD), false);
    call_expect(ctx, Op::Encrypt, MISSING_KEY, &body, 404, KNFE).await
}

async fn not_found_decrypt(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let sealed = ctx.seal(&key, PLAINTEXT, Some(AAD), false).await?;
    let body = wire::decrypt_body(&sealed, Some(AAD));
    call_expect(ctx, Op::Decrypt, MISSING_KEY, &body, 404, KNFE).await
}

async fn plaintext_1_mib(ctx: &mut Ctx) -> Check {
    let body = wire::encrypt_body(&vec![0x5a; 1 << 20], None, false);
    let key = ctx.keys.main.clone();
    call_expect(
        ctx,
        Op::Encrypt,
        &key,
        &body,
        501,
        "UnsupportedOperationException",
    )
    .await
}

async fn get_expect_405(ctx: &mut Ctx, op: Op) -> Check {
    let path = op.path(ctx.target(), &ctx.keys.main);
    let req = wire::signed_get(ctx.target(), &ctx.signer, &path).map_err(|e| e.to_string())?;
    let reply = ctx.send(req).await?;
    expect::status(&reply, 405)?;
    Ok(Done::Pass)
}

async fn get_metadata(ctx: &mut Ctx) -> Check {
    get_expect_405(ctx, Op::Metadata).await
}

async fn get_encrypt(ctx: &mut Ctx) -> Check {
    get_expect_405(ctx, Op::Encrypt).await
}

async fn get_decrypt(ctx: &mut Ctx) -> Check {
    get_expect_405(ctx, Op::Decrypt).await
}

async fn get_health(ctx: &mut Ctx) -> Check {
    get_expect_405(ctx, Op::Health).await
}
