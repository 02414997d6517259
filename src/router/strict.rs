//! HTTP/1.1 message checks keygate makes on top of hyper's parser, before anything else looks
//! at a request: exactly one `Host` (RFC 9112 §3.2: otherwise 400), an absolute-form request
//! target whose authority is the `Host` (the signature is checked against `Host`, so a
//! request must not name two), and `Transfer-Encoding` only as a lone `chunked` (any other
//! coding: 501, RFC 9112 §6.1). A refused message closes the connection: its framing cannot
//! be trusted.

use http::{HeaderMap, Uri, header};

use crate::sanitize::sanitize_message;
use crate::xks::error::XksError;

/// Checks one request head; the error is the answer to send (then close).
pub fn check(uri: &Uri, headers: &HeaderMap) -> Result<(), XksError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(XksError::Validation(
            "the request has more than one Host header".into(),
        ));
    }
    if let (Some(target), Some(host)) = (uri.authority(), host) {
        let same = host
            .to_str()
            .is_ok_and(|h| h.eq_ignore_ascii_case(target.as_str()));
        if !same {
            return Err(XksError::Validation(format!(
                "the request target names {} but the Host header names another authority",
                sanitize_message(target.as_str())
            )));
        }
    }
    let codings: Vec<&[u8]> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    match codings.as_slice() {
        [] => Ok(()),
        [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(XksError::UnsupportedOperation(
            "Transfer-Encoding other than a lone chunked is not supported".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_targets_and_codings() {
        let origin: Uri = "/p/kms/xks/v1/health".parse().unwrap();
        let absolute: Uri = "http://a.example/p/kms/xks/v1/health".parse().unwrap();
        let ok = |u: &Uri, h: &[(&'static str, &'static str)]| check(u, &head(h)).is_ok();
        let status =
            |u: &Uri, h: &[(&'static str, &'static str)]| check(u, &head(h)).unwrap_err().status();
        assert!(ok(&origin, &[("host", "a.example")]));
        assert!(ok(&absolute, &[("host", "A.example")]));
        assert_eq!(
            status(&origin, &[("host", "a.example"), ("host", "b.example")]),
            400
        );
        assert_eq!(status(&absolute, &[("host", "b.example")]), 400);
        assert!(ok(
            &origin,
            &[("host", "a"), ("transfer-encoding", "Chunked")]
        ));
        for te in ["gzip, chunked", "chunked, chunked", "identity", "gzip"] {
            assert_eq!(
                status(&origin, &[("host", "a"), ("transfer-encoding", te)]),
                501,
                "{te}"
            );
        }
        assert_eq!(
            status(
                &origin,
                &[
                    ("host", "a"),
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            501
        );
    }
}
