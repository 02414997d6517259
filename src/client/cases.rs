//! The conformance case table and the happy-path cases (every operation, response shapes).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::cases_crypto as crypto;
use super::cases_errors as errors;
use super::conformance::{Case, CaseFuture, Check, Ctx, Done, Needs};
use super::expect;
use super::wire::{self, Op, Sealed};

/// Builds a [`Case`] from an `async fn(&mut Ctx) -> Check`.
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

/// Every case, in the order they run.
pub fn all() -> Vec<Case> {
    let mut table = vec![
        case!("health.ok", Nothing, health_ok),
        case!(
            "health.every-kms-operation",
            Nothing,
            health_every_operation
        ),
        case!("metadata.ok", Nothing, metadata_ok),
        case!(
            "metadata.extra-request-fields",
            Nothing,
            metadata_extra_fields
        ),
        case!("metadata.opaque-request-id", Nothing, metadata_opaque_id),
        case!("encrypt.ok-with-cdiv", Nothing, encrypt_ok),
        case!(
            "encrypt.unfamiliar-kms-operation",
            Nothing,
            encrypt_unfamiliar_op
        ),
        case!("encrypt.fresh-iv", Nothing, encrypt_fresh_iv),
        case!("decrypt.ok", Nothing, decrypt_ok),
        case!("decrypt.ok-without-aad", Nothing, decrypt_ok_without_aad),
    ];
    table.extend(crypto::cases());
    table.extend(errors::cases());
    table
}

/// The spec example's plaintext ("Hello World!").
pub const PLAINTEXT: &[u8] = b"Hello World!";
/// The spec example's AAD.
pub const AAD: &[u8] = b"project=nile,department=marketing";

fn string_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name} missing or not a string"))
}

/// Checks a GetHealthStatus response against facts §4.
pub fn check_health(v: &Value) -> Result<(), String> {
    match v.get("xksProxyFleetSize").and_then(Value::as_u64) {
        Some(n) if n > 0 => {}
        _ => return Err("xksProxyFleetSize missing or not a positive integer".into()),
    }
    for name in ["xksProxyVendor", "xksProxyModel", "ekmVendor"] {
        string_field(v, name)?;
    }
    let fleet = v
        .get("ekmFleetDetails")
        .and_then(Value::as_array)
        .ok_or("ekmFleetDetails missing or not an array")?;
    if fleet.is_empty() || fleet.len() > 10 {
        return Err(format!(
            "ekmFleetDetails has {} entries, not 1-10",
            fleet.len()
        ));
    }
    for entry in fleet {
        string_field(entry, "id")?;
        string_field(entry, "model")?;
        let status = string_field(entry, "healthStatus")?;
        if !matches!(status, "ACTIVE" | "DEGRADED" | "UNAVAILABLE") {
            return Err(format!(
                "healthStatus {status} is not ACTIVE, DEGRADED or UNAVAILABLE"
            ));
        }
    }
    Ok(())
}

/// Checks a GetKeyMetadata response; `usage` lists the usages the key must report.
pub fn check_metadata(v: &Value, usage: &[&str]) -> Result<(), String> {
    let spec = string_field(v, "keySpec")?;
    if spec != "AES_256" {
        return Err(format!("expected keySpec AES_256 got {spec}"));
    }
    let status = string_field(v, "keyStatus")?;
    if !matches!(status, "ENABLED" | "DISABLED") {
        return Err(format!("keyStatus {status} is not ENABLED or DISABLED"));
    }
    let usages: Vec<&str> = v
        .get("keyUsage")
        .and_then(Value::as_array)
        .ok_or("keyUsage missing or not an array")?
        .iter()
        .map(|u| u.as_str().ok_or("keyUsage holds a non-string"))
        .collect::<Result<_, _>>()?;
    if usages.len() > 10 {
        return Err(format!("keyUsage has {} values, over 10", usages.len()));
    }
    for want in usage {
        if !usages.contains(want) {
            return Err(format!(
                "expected keyUsage to contain {want} got {usages:?}"
            ));
        }
    }
    Ok(())
}

async fn health_ok(ctx: &mut Ctx) -> Check {
    let reply = ctx.call(Op::Health, "", &wire::health_body()).await?;
    check_health(&expect::ok_json(&reply)?)?;
    Ok(Done::Pass)
}

async fn health_every_operation(ctx: &mut Ctx) -> Check {
    let ops = [
        "CreateCustomKeyStore",
        "ConnectCustomKeyStore",
        "UpdateCustomKeyStore",
        "KmsHealthCheck",
    ];
    for op in ops {
        let body = json!({"requestMetadata": wire::request_metadata(Op::Health, op)});
        let reply = ctx.call(Op::Health, "", &body).await?;
        expect::ok_json(&reply).map_err(|e| format!("kmsOperation {op}: {e}"))?;
    }
    Ok(Done::Pass)
}

async fn metadata_ok(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let reply = ctx.call(Op::Metadata, &key, &wire::metadata_body()).await?;
    let v = expect::ok_json(&reply)?;
    check_metadata(&v, &["ENCRYPT", "DECRYPT"])?;
    match v.get("keyStatus").and_then(Value::as_str) {
        Some("ENABLED") => Ok(Done::Pass),
        other => Err(format!("expected keyStatus ENABLED got {other:?}")),
    }
}

async fn metadata_extra_fields(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let mut md = wire::request_metadata(Op::Metadata, "DescribeKey");
    wire::set(&mut md, "kmsKeyArn", wire::KMS_KEY_ARN);
    wire::set(&mut md, "kmsViaService", "ebs");
    wire::set(&mut md, "awsSourceVpc", "vpc-0123456789abcdef0");
    wire::set(&mut md, "awsSourceVpce", "vpce-0123456789abcdef0");
    wire::set(&mut md, "someFutureField", json!({"nested": [1, 2, 3]}));
    let reply = ctx
        .call(Op::Metadata, &key, &json!({"requestMetadata": md}))
        .await?;
    check_metadata(&expect::ok_json(&reply)?, &[])?;
    Ok(Done::Pass)
}

async fn metadata_opaque_id(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let mut md = wire::request_metadata(Op::Metadata, "CreateKey");
    wire::set(&mut md, "kmsRequestId", "not a uuid: 42 / ~!");
    let reply = ctx
        .call(Op::Metadata, &key, &json!({"requestMetadata": md}))
        .await?;
    expect::ok_json(&reply)?;
    Ok(Done::Pass)
}

async fn encrypt_ok(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    ctx.seal(&key, PLAINTEXT, Some(AAD), true).await?;
    Ok(Done::Pass)
}

async fn encrypt_unfamiliar_op(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    for op in ["GenerateDataKeyWithoutPlaintext", "SomeFutureKmsOperation"] {
        let mut body = wire::encrypt_body(PLAINTEXT, None, false);
        wire::set_in(&mut body, "requestMetadata", "kmsOperation", op);
        let reply = ctx.call(Op::Encrypt, &key, &body).await?;
        expect::ok_json(&reply).map_err(|e| format!("kmsOperation {op}: {e}"))?;
    }
    Ok(Done::Pass)
}

async fn encrypt_fresh_iv(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let a = ctx.seal(&key, PLAINTEXT, Some(AAD), false).await?;
    let b = ctx.seal(&key, PLAINTEXT, Some(AAD), false).await?;
    if a.iv == b.iv {
        return Err("expected a fresh IV per Encrypt got the same IV twice".into());
    }
    Ok(Done::Pass)
}

/// Decrypts `sealed` and expects `plaintext` back.
pub async fn open_expect(
    ctx: &mut Ctx,
    key: &str,
    sealed: &Sealed,
    aad: Option<&[u8]>,
    plaintext: &[u8],
) -> Check {
    let reply = ctx
        .call(Op::Decrypt, key, &wire::decrypt_body(sealed, aad))
        .await?;
    let v = expect::ok_json(&reply).map_err(|e| format!("decrypt: {e}"))?;
    let got = B64
        .decode(string_field(&v, "plaintext")?)
        .map_err(|e| format!("plaintext is not standard Base64: {e}"))?;
    if got != plaintext {
        return Err(format!(
            "expected the original {}-byte plaintext got {} different bytes",
            plaintext.len(),
            got.len()
        ));
    }
    Ok(Done::Pass)
}

async fn decrypt_ok(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let sealed = ctx.seal(&key, PLAINTEXT, Some(AAD), true).await?;
    open_expect(ctx, &key, &sealed, Some(AAD), PLAINTEXT).await
}

async fn decrypt_ok_without_aad(ctx: &mut Ctx) -> Check {
    let key = ctx.keys.main.clone();
    let sealed = ctx.seal(&key, PLAINTEXT, None, true).await?;
    open_expect(ctx, &key, &sealed, None, PLAINTEXT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_well_formed() {
        let table = all();
        let mut names: Vec<&str> = table.iter().map(|c| c.name).collect();
        assert!(names.len() >= 50, "only {} cases", names.len());
        for name in &names {
            assert!(name.contains('.') && !name.contains(' '), "{name}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), table.len(), "duplicate case names");
    }

    #[test]
    fn optional_key_cases_exist_for_each_key() {
        let table = all();
        for needs in [Needs::EncryptOnly, Needs::DecryptOnly, Needs::NoUsage] {
            assert!(table.iter().any(|c| c.needs == needs), "{needs:?}");
        }
    }

    #[test]
    fn health_shape() {
        let good = json!({"xksProxyFleetSize":2,"xksProxyVendor":"A","xksProxyModel":"B",
            "ekmVendor":"C","ekmFleetDetails":[{"id":"1","model":"m","healthStatus":"ACTIVE"}]});
        assert!(check_health(&good).is_ok());
        let mut bad = good.clone();
        bad["xksProxyFleetSize"] = 0.into();
        assert!(check_health(&bad).is_err());
        let mut bad = good.clone();
        bad["ekmFleetDetails"] = json!([]);
        assert!(check_health(&bad).is_err());
        let mut bad = good;
        bad["ekmFleetDetails"][0]["healthStatus"] = "OK".into();
        assert!(check_health(&bad).is_err());
    }

    #[test]
    fn metadata_shape() {
        let good =
            json!({"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"});
        assert!(check_metadata(&good, &["ENCRYPT", "DECRYPT"]).is_ok());
        let only_enc = json!({"keySpec":"AES_256","keyUsage":["ENCRYPT"],"keyStatus":"ENABLED"});
        assert!(check_metadata(&only_enc, &["ENCRYPT", "DECRYPT"]).is_err());
        let wrong_spec = json!({"keySpec":"AES_128","keyUsage":[],"keyStatus":"ENABLED"});
        assert!(check_metadata(&wrong_spec, &[]).is_err());
    }
}
