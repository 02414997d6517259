//! Conformance cases on the cryptography: AAD binding, tampering, size minimums, key usage.

use super::cases::{AAD, PLAINTEXT, check_metadata, open_expect};
use super::conformance::{Case, CaseFuture, Check, Ctx, Done, Needs};
use super::expect;
use super::wire::{self, Op, Sealed};

macro_rules! case {
    ($name:literal, $needs:ident, $f:path) => {{
        fn run(ctx: &mut Ctx) -> CaseFuture<'_> {
            Box::pin($f(ctx))
        }
        Case {
            name: $name,
            needs: Needs::$needs,
            run,
        }
    }};
}

/// The cryptographic cases.
pub fn cases() -> Vec<Case> {
    vec![
        case!("decrypt.aad-missing", Nothing, aad_missing),
        case!("decrypt.aad-different", Nothing, aad_different),
        case!("decrypt.aad-added", Nothing, aad_added),
        case!("decrypt.tampered-ciphertext", Nothing, tampered_ciphertext),
        case!("decrypt.tampered-iv", Nothing, tampered_iv),
        case!("decrypt.tampered-tag", Nothing, tampered_tag),
        case!(
            "decrypt.tampered-ciphertext-metadata",
            Nothing,
            tampered_metadata
        ),
        case!(
            "decrypt.removed-ciphertext-metadata",
            Nothing,
            removed_metadata
        ),
        case!(
            "decrypt.ciphertext-metadata-as-aad",
            Nothing,
            metadata_as_aad
        ),
        case!("size.plaintext-4300-aad-8192", Nothing, size_spec_minimum),
        case!("size.plaintext-4096-aad-8192", Nothing, size_test_client),
        case!(
            "usage.encrypt-only.metadata",
            EncryptOnly,
            encrypt_only_metadata
        ),
        case!(
            "usage.encrypt-only.encrypt",
            EncryptOnly,
            encrypt_only_encrypt
        ),
        case!(
            "usage.encrypt-only.decrypt",
            EncryptOnly,
            encrypt_only_decrypt
        ),
        case!(
            "usage.encrypt-only.encrypt-with-cdiv",
            EncryptOnly,
            encrypt_only_cdiv
        ),
        case!(
            "usage.decrypt-only.encrypt",
            DecryptOnly,
            decrypt_only_encrypt
        ),
        case!(
            "usage.decrypt-only.decrypt-foreign",
            DecryptOnly,
            decrypt_only_foreign
        ),
        case!("usage.no-usage.encrypt", NoUsage, no_usage_encrypt),
        case!("usage.no-usage.decrypt", NoUsage, no_usage_decrypt),
    ]
}

const ICE: &str = "InvalidCiphertextException";
const IKU: &str = "InvalidKeyUsageException";

fn flip_last(bytes: &mut [u8]) {
    if let Some(b) = bytes.last_mut() {
        *b ^= 0x01;
    }
}

fn random(len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).map_err(|e| format!("random bytes: {e}"))?;
    Ok(buf)
}

/// Decrypts and expects `status name`.
async fn open_fails(
    ctx: &mut Ctx,
    key: &str,
    sealed: &Sealed,
    aad: Option<&[u8]>,
    status: u16,
    name: &str,
) -> Check {
    let reply = ctx
        .call(Op::Decrypt, key, &wire::decrypt_body(sealed, aad))
        .await?;
    expect::error(&reply, status, name)?;
    Ok(Done::Pass)
}

async fn sealed_main(ctx: &mut Ctx, aad: Option<&[u8]>) -> Result<(String, Sealed), String> {
    let key = ctx.keys.main.clone();
    let sealed = ctx.seal(&key, PLAINTEXT, aad, false).await?;
    Ok((key, sealed))
}

async fn aad_missing(ctx: &mut Ctx) -> Check {
    let (key, sealed) = sealed_main(ctx, Some(AAD)).await?;
    open_fails(ctx, &key, &sealed, None, 400, ICE).await
}

async fn aad_different(ctx: &mut Ctx) -> Check {
    let (key, sealed) = sealed_main(ctx, Some(AAD)).await?;
    let mut aad = AAD.to_vec();
    flip_last(&mut aad);
    open_fails(ctx, &key, &sealed, Some(&aad), 400, ICE).await
}

async fn aad_added(ctx: &mut Ctx) -> Check {
    let (key, sealed) = sealed_main(ctx, None).await?;
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

async fn tampered_ciphertext(ctx: &mut Ctx) -> Check {
    let (key, mut sealed) = sealed_main(ctx, Some(AAD)).await?;
    flip_last(&mut sealed.ciphertext);
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

async fn tampered_iv(ctx: &mut Ctx) -> Check {
    let (key, mut sealed) = sealed_main(ctx, Some(AAD)).await?;
    flip_last(&mut sealed.iv);
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

async fn tampered_tag(ctx: &mut Ctx) -> Check {
    let (key, mut sealed) = sealed_main(ctx, Some(AAD)).await?;
    flip_last(&mut sealed.tag);
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

/// Flips a bit of the returned metadata, or adds one byte when none was returned.
async fn tampered_metadata(ctx: &mut Ctx) -> Check {
    let (key, mut sealed) = sealed_main(ctx, Some(AAD)).await?;
    match &mut sealed.metadata {
        Some(md) if !md.is_empty() => flip_last(md),
        _ => sealed.metadata = Some(b"x".to_vec()),
    }
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

async fn removed_metadata(ctx: &mut Ctx) -> Check {
    let (key, mut sealed) = sealed_main(ctx, Some(AAD)).await?;
    if sealed.metadata.as_ref().is_none_or(Vec::is_empty) {
        return Ok(Done::NotApplicable(
            "the proxy returns no ciphertextMetadata".into(),
        ));
    }
    sealed.metadata = None;
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

/// The spec's reason for length fields: metadata from an AAD-less encrypt, passed back as the
/// AAD with no metadata, must not decrypt.
async fn metadata_as_aad(ctx: &mut Ctx) -> Check {
    let (key, mut sealed) = sealed_main(ctx, None).await?;
    let Some(md) = sealed.metadata.take().filter(|m| !m.is_empty()) else {
        return Ok(Done::NotApplicable(
            "the proxy returns no ciphertextMetadata".into(),
        ));
    };
    open_fails(ctx, &key, &sealed, Some(&md), 400, ICE).await
}

async fn round_trip(ctx: &mut Ctx, plaintext_len: usize, aad_len: usize) -> Check {
    let key = ctx.keys.main.clone();
    let plaintext = random(plaintext_len)?;
    let aad = random(aad_len)?;
    let sealed = ctx.seal(&key, &plaintext, Some(&aad), true).await?;
    open_expect(ctx, &key, &sealed, Some(&aad), &plaintext).await
}

async fn size_spec_minimum(ctx: &mut Ctx) -> Check {
    round_trip(ctx, 4300, 8192).await
}

async fn size_test_client(ctx: &mut Ctx) -> Check {
    round_trip(ctx, 4096, 8192).await
}

fn optional(key: &Option<String>) -> Result<String, String> {
    key.clone().ok_or_else(|| "key id not given".to_owned())
}

async fn encrypt_only_metadata(ctx: &mut Ctx) -> Check {
    let key = optional(&ctx.keys.encrypt_only)?;
    let reply = ctx.call(Op::Metadata, &key, &wire::metadata_body()).await?;
    let v = expect::ok_json(&reply)?;
    check_metadata(&v, &["ENCRYPT"])?;
    if check_metadata(&v, &["DECRYPT"]).is_ok() {
        return Err("expected keyUsage without DECRYPT for an encrypt-only key".into());
    }
    Ok(Done::Pass)
}

async fn encrypt_only_encrypt(ctx: &mut Ctx) -> Check {
    let key = optional(&ctx.keys.encrypt_only)?;
    ctx.seal(&key, PLAINTEXT, Some(AAD), false).await?;
    Ok(Done::Pass)
}

async fn encrypt_only_decrypt(ctx: &mut Ctx) -> Check {
    let key = optional(&ctx.keys.encrypt_only)?;
    let sealed = ctx.seal(&key, PLAINTEXT, Some(AAD), false).await?;
    open_fails(ctx, &key, &sealed, Some(AAD), 400, IKU).await
}

/// The CDIV self-check decrypt is not permitted on an encrypt-only key (facts §3.7).
async fn encrypt_only_cdiv(ctx: &mut Ctx) -> Check {
    let key = optional(&ctx.keys.encrypt_only)?;
    let body = wire::encrypt_body(PLAINTEXT, Some(AAD), true);
    let reply = ctx.call(Op::Encrypt, &key, &body).await?;
    expect::error(&reply, 400, IKU)?;
    Ok(Done::Pass)
}

async fn decrypt_only_encrypt(ctx: &mut Ctx) -> Check {
    let key = optional(&ctx.keys.decrypt_only)?;
    let reply = ctx
        .call(
            Op::Encrypt,
            &key,
            &wire::encrypt_body(PLAINTEXT, None, false),
        )
        .await?;
    expect::error(&reply, 400, IKU)?;
    Ok(Done::Pass)
}

/// A decrypt-only key may decrypt, so another key's ciphertext fails as a ciphertext.
async fn decrypt_only_foreign(ctx: &mut Ctx) -> Check {
    let (_, sealed) = sealed_main(ctx, Some(AAD)).await?;
    let key = optional(&ctx.keys.decrypt_only)?;
    open_fails(ctx, &key, &sealed, Some(AAD), 400, ICE).await
}

async fn no_usage_encrypt(ctx: &mut Ctx) -> Check {
    let key = optional(&ctx.keys.no_usage)?;
    let reply = ctx
        .call(
            Op::Encrypt,
            &key,
            &wire::encrypt_body(PLAINTEXT, None, false),
        )
        .await?;
    expect::error(&reply, 400, IKU)?;
    Ok(Done::Pass)
}

async fn no_usage_decrypt(ctx: &mut Ctx) -> Check {
    let (_, sealed) = sealed_main(ctx, Some(AAD)).await?;
    let key = optional(&ctx.keys.no_usage)?;
    open_fails(ctx, &key, &sealed, Some(AAD), 400, IKU).await
}
