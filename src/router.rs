//! HTTP in, XKS out: match the path (404 before any authentication), refuse other methods
//! (405), shed (429) before SigV4, read the body under a hard cap and a time limit, hand the
//! request to the XKS gate, turn its answer into the one HTTP response, and write the one log
//! line every request gets. The router knows HTTP; `xks` knows the operations.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::policy::decision_log::mask::masked;
use crate::sanitize::sanitize_message;
use crate::sigv4::SignedRequest;
use crate::xks::error::XksError;
use crate::xks::{self, ConnInfo, RequestFacts, Route, Service, route};

mod strict;

/// Serves one HTTP request.
pub async fn handle(
    svc: Arc<Service>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let mut facts = RequestFacts::default();
    if let Err(e) = strict::check(req.uri(), req.headers()) {
        let mut response = error_response(&e);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        log_line(
            &svc,
            None,
            &facts,
            (e.status(), e.name(), e.message()),
            &conn,
            started,
        );
        record_metrics(&svc, None, &facts, &Err(e), started);
        return response;
    }
    let route = route(&svc.keystores(), req.uri().path());
    if route.is_ok() && req.method() != Method::POST {
        let response = method_not_allowed(req.method());
        log_line(
            &svc,
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
        Ok(r) => admit_and_run(&svc, r, req, &conn, &mut facts).await,
    };
    let (response, status) = match &result {
        Ok(body) => (json_response(StatusCode::OK, body.clone()), (200, "", "")),
        Err(e) => (error_response(e), (e.status(), e.name(), e.message())),
    };
    log_line(&svc, route.as_ref().ok(), &facts, status, &conn, started);
    record_metrics(&svc, route.as_ref().ok(), &facts, &result, started);
    response
}

/// Sheds the request (429, before SigV4 and the backend) when keygate is at its in-flight
/// cap or the key store over its rate; otherwise runs it, holding an in-flight slot.
async fn admit_and_run(
    svc: &Service,
    route: &Route,
    req: Request<Incoming>,
    conn: &ConnInfo,
    facts: &mut RequestFacts,
) -> Result<String, XksError> {
    match svc.admit() {
        Ok(_in_flight) => {
            let result = run(svc, route, req, conn, facts).await;
            if let Some(reason) = facts.shed {
                svc.metrics.record_shed(&route.keystore.name, reason);
            }
            if let Some(reason) = facts.sigv4_refusal {
                svc.metrics.record_sigv4_refusal(reason);
            }
            result
        }
        Err(shed) => {
            let name = &route.keystore.name;
            svc.metrics.record_shed(name, shed.reason());
            // Read the (capped) body anyway so the keep-alive connection stays usable.
            let (parts, body) = req.into_parts();
            let _ = read_body(svc, &parts, body).await;
            Err(XksError::Throttling(shed.message(name)))
        }
    }
}

fn record_metrics(
    svc: &Service,
    route: Option<&Route>,
    facts: &RequestFacts,
    result: &Result<String, XksError>,
    started: Instant,
) {
    svc.metrics.record_request(crate::metrics::RequestRecord {
        operation: route.map(|r| r.operation.as_str()).unwrap_or(""),
        keystore: route.map(|r| r.keystore.name.as_str()).unwrap_or(""),
        error_name: result.as_ref().err().map(XksError::name).unwrap_or(""),
        access_key_id: facts.access_key_id.as_deref(),
        latency: started.elapsed(),
    });
}

async fn run(
    svc: &Service,
    route: &Route,
    req: Request<Incoming>,
    conn: &ConnInfo,
    facts: &mut RequestFacts,
) -> Result<String, XksError> {
    let (parts, body) = req.into_parts();
    let body = read_body(svc, &parts, body).await?;
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        authority: parts.uri.authority().map(|a| a.as_str()),
        headers: &parts.headers,
        body: &body,
    };
    xks::handle(&svc.handles, svc.api_limits(), route, &signed, conn, facts).await
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
    svc: &Service,
    parts: &http::request::Parts,
    mut body: Incoming,
) -> Result<Bytes, XksError> {
    let limits = svc.limits();
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
        "errorMessage": format!("method {} is not allowed; XKS operations use POST", sanitize_message(method.as_str())),
    });
    let mut resp = json_response(StatusCode::METHOD_NOT_ALLOWED, body.to_string());
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// The one log line every request gets: (status, errorName, errorMessage) plus what is known,
/// its values masked as the decision log's `[decision_log.mask]` rules mask them in the
/// decision line (an erased one is left out, an HMAC'd one is its tag).
fn log_line(
    svc: &Service,
    route: Option<&Route>,
    facts: &RequestFacts,
    (status, error_name, error_message): (u16, &str, &str),
    conn: &ConnInfo,
    started: Instant,
) {
    if !tracing::enabled!(target: "keygate::request", tracing::Level::INFO) {
        return;
    }
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let source_ip = conn.peer.ip().to_string();
    let mask = svc
        .handles
        .authorizer
        .decision_log()
        .and_then(|log| log.masking());
    let kms_request_id = masked(
        mask,
        "/input/request_metadata/kmsRequestId",
        facts.kms_request_id.as_deref().unwrap_or(""),
    );
    let kms_operation = masked(
        mask,
        "/input/request_metadata/kmsOperation",
        facts.kms_operation.as_deref().unwrap_or(""),
    );
    let keystore = masked(
        mask,
        "/input/keystore",
        route.map(|r| r.keystore.name.as_str()).unwrap_or(""),
    );
    let key_id = masked(
        mask,
        "/input/key_id",
        route.map(Route::key_id).unwrap_or(""),
    );
    let access_key_id = masked(
        mask,
        "/input/access_key_id",
        facts.access_key_id.as_deref().unwrap_or(""),
    );
    let source_ip = masked(mask, "/input/source_ip", &source_ip);
    tracing::info!(
        target: "keygate::request",
        kms_request_id = kms_request_id.as_deref(),
        kms_operation = kms_operation.as_deref(),
        operation = route.map(|r| r.operation.as_str()).unwrap_or(""),
        keystore = keystore.as_deref(),
        key_id = key_id.as_deref(),
        access_key_id = access_key_id.as_deref(),
        source_ip = source_ip.as_deref(),
        status,
        outcome = if status == 200 { "ok" } else { "error" },
        error_name,
        error_message,
        latency_us,
        "request"
    );
}
