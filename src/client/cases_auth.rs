//! Conformance cases on SigV4: clock skew, scope, body integrity, credentials.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::conformance::{Case, CaseFuture, Check, Ctx, Done, Needs};
use super::expect;
use super::sign::{Secret, Signer};
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

/// The SigV4 cases.
pub fn cases() -> Vec<Case> {
    vec![
        case!("auth.skew-within-4-minutes", skew_within),
        case!("auth.skew-plus-6-minutes", skew_plus),
        case!("auth.skew-minus-6-minutes", skew_minus),
        case!("auth.wrong-region", wrong_region),
        case!("auth.wrong-service", wrong_service),
        case!("auth.body-changed-after-signing", body_changed),
        case!("auth.unknown-access-key-id", unknown_access_key),
        case!("auth.wrong-secret", wrong_secret),
        case!("auth.missing-authorization", missing_authorization),
        case!("auth.malformed-authorization", malformed_authorization),
        case!("auth.health-requires-signature", health_unsigned),
    ]
}

const AFE: &str = "AuthenticationFailedException";

/// A metadata request on the main key, signed by `signer` at `time`.
fn metadata_request(
    ctx: &Ctx,
    signer: &Signer,
    time: SystemTime,
) -> Result<Request<Full<Bytes>>, String> {
    let path = Op::Metadata.path(ctx.target(), &ctx.keys.main);
    let body = wire::to_bytes(&wire::metadata_body());
    wire::signed_request(ctx.target(), signer, &path, &body.clone(), body, time)
        .map_err(|e| e.to_string())
}

async fn send_expect(ctx: &mut Ctx, req: Request<Full<Bytes>>, status: u16) -> Check {
    let reply = ctx.send(req).await?;
    if status == 200 {
        expect::ok_json(&reply)?;
    } else {
        expect::error(&reply, status, AFE)?;
    }
    Ok(Done::Pass)
}

async fn signed_by(ctx: &mut Ctx, signer: Signer, time: SystemTime, status: u16) -> Check {
    let req = metadata_request(ctx, &signer, time)?;
    send_expect(ctx, req, status).await
}

const FOUR_MIN: Duration = Duration::from_secs(4 * 60);
const SIX_MIN: Duration = Duration::from_secs(6 * 60);

async fn skew_within(ctx: &mut Ctx) -> Check {
    let now = SystemTime::now();
    signed_by(ctx, ctx.signer.clone(), now + FOUR_MIN, 200).await?;
    signed_by(ctx, ctx.signer.clone(), now - FOUR_MIN, 200).await
}

async fn skew_plus(ctx: &mut Ctx) -> Check {
    signed_by(ctx, ctx.signer.clone(), SystemTime::now() + SIX_MIN, 401).await
}

async fn skew_minus(ctx: &mut Ctx) -> Check {
    signed_by(ctx, ctx.signer.clone(), SystemTime::now() - SIX_MIN, 401).await
}

async fn wrong_region(ctx: &mut Ctx) -> Check {
    let signer = ctx.signer.with_region("ap-southeast-7");
    signed_by(ctx, signer, SystemTime::now(), 401).await
}

async fn wrong_service(ctx: &mut Ctx) -> Check {
    let signer = ctx.signer.with_service("kms");
    signed_by(ctx, signer, SystemTime::now(), 401).await
}

async fn body_changed(ctx: &mut Ctx) -> Check {
    let path = Op::Metadata.path(ctx.target(), &ctx.keys.main);
    let signed = wire::to_bytes(&wire::metadata_body());
    let sent = wire::to_bytes(&wire::metadata_body());
    let req = wire::signed_request(
        ctx.target(),
        &ctx.signer,
        &path,
        &signed,
        sent,
        SystemTime::now(),
    )
    .map_err(|e| e.to_string())?;
    send_expect(ctx, req, 401).await
}

async fn unknown_access_key(ctx: &mut Ctx) -> Check {
    let signer = ctx.signer.with_access_key_id("KEYGATEUNKNOWNACCESSKEY234");
    signed_by(ctx, signer, SystemTime::now(), 401).await
}

async fn wrong_secret(ctx: &mut Ctx) -> Check {
    let signer = ctx.signer.with_secret(Secret::new(
        "KeygateConformanceWrongSecret0123456789abcdefgh".into(),
    ));
    signed_by(ctx, signer, SystemTime::now(), 401).await
}

/// Removes the Authorization header from a correctly signed request.
fn without_authorization(mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    req.headers_mut().remove(http::header::AUTHORIZATION);
    req
}

async fn missing_authorization(ctx: &mut Ctx) -> Check {
    let req = metadata_request(ctx, &ctx.signer, SystemTime::now())?;
    send_expect(ctx, without_authorization(req), 401).await
}

async fn malformed_authorization(ctx: &mut Ctx) -> Check {
    let mut req = metadata_request(ctx, &ctx.signer, SystemTime::now())?;
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=, Signature=zz"),
    );
    send_expect(ctx, req, 401).await
}

async fn health_unsigned(ctx: &mut Ctx) -> Check {
    let path = Op::Health.path(ctx.target(), "");
    let req = wire::post(
        ctx.target(),
        &ctx.signer,
        &path,
        wire::to_bytes(&wire::health_body()),
    )
    .map_err(|e| e.to_string())?;
    send_expect(ctx, without_authorization(req), 401).await
}
