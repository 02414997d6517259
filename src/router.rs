//! From an HTTP request to an XKS response: match the path (404 before any authentication),
//! refuse other methods (405), read the body under a hard cap and a time limit, run the
//! operation, and write the one log line every request gets.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::app::{App, Keystore, Keystores};
use crate::keys::valid_key_id;
use crate::server::ConnInfo;
use crate::sigv4::SignedRequest;
use crate::xks::error::XksError;
use crate::xks::{self, RequestFacts};

/// The fixed part of every XKS path after the key store's prefix.
const API_ROOT: &str = "/kms/xks/v1/";

/// The four XKS operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Health,
    Metadata,
    Encrypt,
    Decrypt,
}

impl Operation {
    /// The spec's operation name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Health => "GetHealthStatus",
            Operation::Metadata => "GetKeyMetadata",
            Operation::Encrypt => "Encrypt",
            Operation::Decrypt => "Decrypt",
        }
    }
}

/// A request path resolved to a key store, an operation and (except health) a key id.
#[derive(Debug, Clone)]
pub struct Route {
    pub keystore: Arc<Keystore>,
    pub operation: Operation,
    key_id: String,
}

impl Route {
    /// The key id from the path (empty for health).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// Resolves `{prefix}/kms/xks/v1/health` and `{prefix}/kms/xks/v1/keys/{id}/{op}`.
pub fn route(keystores: &Keystores, path: &str) -> Result<Route, XksError> {
    let invalid = || {
        XksError::InvalidUriPath(format!(
            "no XKS resource at {}",
            crate::xks::error::sanitize_message(path)
        ))
    };
    // Only unreserved characters and '/': the path is then its own canonical SigV4 form.
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'))
    {
        return Err(invalid());
    }
    let at = path.find(API_ROOT).ok_or_else(invalid)?;
    let (prefix, rest) = (
        path.get(..at).unwrap_or_default(),
        path.get(at + API_ROOT.len()..).unwrap_or_default(),
    );
    let keystore = keystores
        .by_prefix(prefix)
        .ok_or_else(|| {
            XksError::InvalidUriPath(format!("no key store is configured at prefix {prefix:?}"))
        })?
        .clone();
    let (operation, key_id) = match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["health"] => (Operation::Health, String::new()),
        ["keys", id, op] if valid_key_id(id) && *id != "." && *id != ".." => {
            let operation = match *op {
                "metadata" => Operation::Metadata,
                "encrypt" => Operation::Encrypt,
                "decrypt" => Operation::Decrypt,
                _ => return Err(invalid()),
            };
            (operation, (*id).to_owned())
        }
        _ => return Err(invalid()),
    };
    Ok(Route {
        keystore,
        operation,
        key_id,
    })
}

/// Serves one HTTP request.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let mut facts = RequestFacts::default();
    let route = route(&app.keystores(), req.uri().path());
    if route.is_ok() && req.method() != Method::POST {
        let response = method_not_allowed(req.method());
        log_line(
            route.as_ref().ok(),
            &facts,
            (405, "", "method not allowed"),
            &conn,
            started,
        );
        return response;
    }
    let result = match &route {
        Err(e) => Err(e.clone()),
        Ok(r) => admit_and_run(&app, r, req, &conn, &mut facts).await,
    };
    let result = xks::authorize::log_decision(&app, &mut facts, result);
    let (response, status) = match &result {
        Ok(body) => (json_response(StatusCode::OK, body.clone()), (200, "", "")),
        Err(e) => (error_response(e), (e.status(), e.name(), e.message())),
    };
    log_line(route.as_ref().ok(), &facts, status, &conn, started);
    record_metrics(&app, route.as_ref().ok(), &facts, &result, started);
    response
}

/// Sheds the request (429, before SigV4 and the backend) when keygate is at its in-flight
/// cap or the key store over its rate; otherwise runs it, holding an in-flight slot.
async fn admit_and_run(
    app: &App,
    route: &Route,
    req: Request<Incoming>,
    conn: &ConnInfo,
    facts: &mut RequestFacts,
) -> Result<String, XksError> {
    match app.admit(&route.keystore) {
        Ok(_in_flight) => run(app, route, req, conn, facts).await,
        Err(shed) => {
            let name = &route.keystore.name;
            app.metrics.record_shed(name, shed.reason());
            // Read the (capped) body anyway so the keep-alive connection stays usable.
            let (parts, body) = req.into_parts();
            let _ = read_body(app, &parts, body).await;
            Err(XksError::Throttling(shed.message(name)))
        }
    }
}

fn record_metrics(
    app: &App,
    route: Option<&Route>,
    facts: &RequestFacts,
    result: &Result<String, XksError>,
    started: Instant,
) {
    app.metrics.record_request(crate::metrics::RequestRecord {
        operation: route.map(|r| r.operation.as_str()).unwrap_or(""),
        keystore: route.map(|r| r.keystore.name.as_str()).unwrap_or(""),
        error_name: result.as_ref().err().map(XksError::name).unwrap_or(""),
        access_key_id: facts.access_key_id.as_deref(),
        latency: started.elapsed(),
    });
}

async fn run(
    app: &App,
    route: &Route,
    req: Request<Incoming>,
    conn: &ConnInfo,
    facts: &mut RequestFacts,
) -> Result<String, XksError> {
    let (parts, body) = req.into_parts();
    let body = read_body(app, &parts, body).await?;
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        authority: parts.uri.authority().map(|a| a.as_str()),
        headers: &parts.headers,
        body: &body,
    };
    xks::handle(app, route, &signed, conn, facts).await
}

/// How much of an oversized body is read and thrown away before the 501 goes out. A client
/// that is still writing when the server closes gets a TCP reset and may never see the
/// answer; draining a bounded amount lets it read the 501 and keeps the connection usable.
/// Bodies declared larger than this are refused without reading a byte and the connection
/// closes.
const DRAIN_LIMIT: u64 = 2 << 20;

/// Reads the body with a hard cap (checked on Content-Length first, then while reading) and
/// a time limit, before anything hashes or parses it. Bytes past the cap are never kept.
async fn read_body(
    app: &App,
    parts: &http::request::Parts,
    mut body: Incoming,
) -> Result<Bytes, XksError> {
    let limits = app.limits();
    let cap = limits.max_body;
    let too_big = || {
        XksError::UnsupportedOperation(format!(
            "request body exceeds this proxy's limit of {cap} bytes"
        ))
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_big());
    }
    let read = async {
        let mut kept =
            bytes::BytesMut::with_capacity(declared.map_or(0, |n| n.min(cap as u64) as usize));
        let mut seen: u64 = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(XksError::Validation(
                    "request body could not be read".into(),
                ));
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len() as u64);
            if seen > DRAIN_LIMIT {
                break;
            }
            if seen <= cap as u64 {
                kept.extend_from_slice(&data);
            }
        }
        if seen > cap as u64 {
            return Err(too_big());
        }
        Ok(kept.freeze())
    };
    match tokio::time::timeout(limits.body_read_timeout, read).await {
        Err(_) if declared.is_some_and(|n| n > cap as u64) => Err(too_big()),
        Err(_) => Err(XksError::Validation(format!(
            "request body not received within {} ms",
            limits.body_read_timeout.as_millis()
        ))),
        Ok(r) => r,
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The one place an `XksError` becomes an HTTP response.
pub fn error_response(e: &XksError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, e.body())
}

/// 405 for anything but POST on an XKS path (the spec defines no errorName for it).
fn method_not_allowed(method: &Method) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "errorMessage": format!("method {} is not allowed; XKS operations use POST", crate::xks::error::sanitize_message(method.as_str())),
    });
    let mut resp = json_response(StatusCode::METHOD_NOT_ALLOWED, body.to_string());
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// The one log line every request gets: (status, errorName, errorMessage) plus what is known.
fn log_line(
    route: Option<&Route>,
    facts: &RequestFacts,
    (status, error_name, error_message): (u16, &str, &str),
    conn: &ConnInfo,
    started: Instant,
) {
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "keygate::request",
        kms_request_id = facts.kms_request_id.as_deref().unwrap_or(""),
        kms_operation = facts.kms_operation.as_deref().unwrap_or(""),
        operation = route.map(|r| r.operation.as_str()).unwrap_or(""),
        keystore = route.map(|r| r.keystore.name.as_str()).unwrap_or(""),
        key_id = route.map(Route::key_id).unwrap_or(""),
        access_key_id = facts.access_key_id.as_deref().unwrap_or(""),
        source_ip = %conn.peer.ip(),
        status,
        outcome = if status == 200 { "ok" } else { "error" },
        error_name,
        error_message,
        latency_us,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn keystores() -> Keystores {
        let text = r#"
[[keystore]]
name = "a"
uri_prefix = "/a/b"
keys = ["foo"]
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
[[keystore]]
name = "root"
uri_prefix = ""
[[keystore.credential]]
access_key_id = "BETWEEN2TENAND3TENCHARACTERS"
secret = "PleaseReplaceThisWithSomeSecretOfLength43To64"
"#;
        Keystores::from_config(&Config::parse(text, Path::new("k.toml")).unwrap())
    }

    #[test]
    fn paths_resolve_to_keystore_operation_and_key() {
        let k = keystores();
        let r = route(&k, "/a/b/kms/xks/v1/keys/foo.bar-1_2/encrypt").unwrap();
        assert_eq!(
            (r.keystore.name.as_str(), r.operation, r.key_id()),
            ("a", Operation::Encrypt, "foo.bar-1_2")
        );
        let r = route(&k, "/kms/xks/v1/health").unwrap();
        assert_eq!(
            (r.keystore.name.as_str(), r.operation),
            ("root", Operation::Health)
        );
        assert_eq!(
            route(&k, "/kms/xks/v1/keys/x/metadata").unwrap().operation,
            Operation::Metadata
        );
        assert_eq!(
            route(&k, "/a/b/kms/xks/v1/keys/x/decrypt")
                .unwrap()
                .operation,
            Operation::Decrypt
        );
    }

    #[test]
    fn everything_else_is_invalid_uri_path() {
        let k = keystores();
        let long_id = format!("/kms/xks/v1/keys/{}/encrypt", "a".repeat(129));
        for p in [
            "/",
            "/a/kms/xks/v1/health",
            "/a/b/c/kms/xks/v1/health",
            "/a/b/kms/xks/v2/health",
            "/a/b/kms/xks/v1/health/",
            "/a/b/kms/xks/v1/keys/foo",
            "/a/b/kms/xks/v1/keys/foo/sign",
            "/a/b/kms/xks/v1/keys//encrypt",
            "/a/b/kms/xks/v1/keys/../encrypt",
            "/a/b/kms/xks/v1/keys/a%3Ab/encrypt",
            "/a/b/kms/xks/v1/keys/foo/encrypt/extra",
            long_id.as_str(),
        ] {
            assert_eq!(
                route(&k, p).unwrap_err().name(),
                "InvalidUriPathException",
                "{p}"
            );
        }
    }
}
