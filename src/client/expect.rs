//! Strict checks on one XKS response: status, `Content-Type`, compact JSON, `errorName`.

use http::StatusCode;
use serde_json::Value;

use super::conn::Reply;

/// True when `body` has no whitespace outside JSON strings (single-line, compact JSON).
pub fn is_compact_json(body: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            return false;
        }
    }
    !in_string
}

/// The `errorName` of an error body, if there is one.
pub fn error_name(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("errorName")?.as_str().map(str::to_owned)
}

/// A short description of what came back, e.g. `404 InvalidUriPathException`.
pub fn describe(reply: &Reply) -> String {
    match error_name(&reply.body) {
        Some(name) => format!("{} {name}", reply.status.as_u16()),
        None => format!("{}", reply.status.as_u16()),
    }
}

fn json_shape(reply: &Reply) -> Result<Value, String> {
    let ct = reply.content_type.as_deref().unwrap_or("(none)");
    let media = ct.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(format!("Content-Type {ct}, expected application/json"));
    }
    let value: Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("body is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("body is not a JSON object".into());
    }
    if !is_compact_json(&reply.body) {
        return Err("body is not compact single-line JSON".into());
    }
    Ok(value)
}

/// Expects 200 with a compact JSON object; returns it.
pub fn ok_json(reply: &Reply) -> Result<Value, String> {
    if reply.status != StatusCode::OK {
        return Err(format!("expected 200 got {}", describe(reply)));
    }
    json_shape(reply)
}

/// Expects exactly `status` with `{"errorName": name}` as compact JSON; a present
/// `errorMessage` must be under 512 printable ASCII characters.
pub fn error(reply: &Reply, status: u16, name: &str) -> Result<(), String> {
    let got = describe(reply);
    let want = format!("{status} {name}");
    if got != want {
        return Err(format!("expected {want} got {got}"));
    }
    let value = json_shape(reply)?;
    match value.get("errorMessage") {
        None => Ok(()),
        Some(Value::String(m))
            if m.len() < 512 && m.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Ok(())
        }
        Some(_) => Err("errorMessage is not a string of < 512 printable ASCII characters".into()),
    }
}

/// Expects exactly `status`, whatever the body.
pub fn status(reply: &Reply, status: u16) -> Result<(), String> {
    if reply.status.as_u16() == status {
        Ok(())
    } else {
        Err(format!("expected {status} got {}", describe(reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(status: u16, ct: Option<&str>, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: ct.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn compactness() {
        assert!(is_compact_json(br#"{"a":"x y\" z","b":[1,2]}"#));
        assert!(!is_compact_json(br#"{"a": 1}"#));
        assert!(!is_compact_json(b"{\"a\":1}\n"));
        assert!(is_compact_json(br#"{"a":"\\"}"#));
        assert!(!is_compact_json(br#"{"a":"unterminated}"#));
    }

    #[test]
    fn error_expectations() {
        let json = Some("application/json");
        let r = reply(404, json, r#"{"errorName":"InvalidUriPathException"}"#);
        assert!(error(&r, 404, "InvalidUriPathException").is_ok());
        assert_eq!(
            error(&r, 401, "AuthenticationFailedException").unwrap_err(),
            "expected 401 AuthenticationFailedException got 404 InvalidUriPathException"
        );
        let r = reply(
            404,
            Some("text/plain"),
            r#"{"errorName":"KeyNotFoundException"}"#,
        );
        assert!(
            error(&r, 404, "KeyNotFoundException")
                .unwrap_err()
                .contains("Content-Type")
        );
        let r = reply(400, json, "{\"errorName\": \"ValidationException\"}");
        assert!(
            error(&r, 400, "ValidationException")
                .unwrap_err()
                .contains("compact")
        );
        let r = reply(
            400,
            json,
            r#"{"errorName":"ValidationException","errorMessage":"a\u0007b"}"#,
        );
        assert!(
            error(&r, 400, "ValidationException")
                .unwrap_err()
                .contains("printable")
        );
        let r = reply(405, None, "");
        assert!(status(&r, 405).is_ok());
        assert_eq!(status(&r, 404).unwrap_err(), "expected 404 got 405");
    }

    #[test]
    fn ok_expectations() {
        let r = reply(
            200,
            Some("application/json; charset=utf-8"),
            r#"{"plaintext":"AA=="}"#,
        );
        assert_eq!(ok_json(&r).unwrap()["plaintext"], "AA==");
        let r = reply(
            500,
            Some("application/json"),
            r#"{"errorName":"InternalException"}"#,
        );
        assert_eq!(
            ok_json(&r).unwrap_err(),
            "expected 200 got 500 InternalException"
        );
        let r = reply(200, Some("application/json"), "[1]");
        assert!(ok_json(&r).is_err());
    }
}
