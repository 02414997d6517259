//! The KMS v2 door's error type, and the ONE place any failure becomes a gRPC status: codes a
//! Kubernetes operator can act on, messages that hold no plaintext, key material or secrets.

use super::envelope::FormatError;
use crate::keys::{KeyError, KeyOp};
use crate::sanitize::sanitize_message;

/// A refusal at the KMS v2 door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// The request is malformed or oversized, or the ciphertext was not issued by keygate
    /// or was tampered with.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The policy denied the call (its reasons follow), or could not be evaluated.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The key is missing, disabled or may not do this: the operator must act.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Too many calls at once (HSM sessions, the door's in-flight cap).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The key backend is down, or the decision log cannot be written (fail_closed).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within its deadline.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// A fault inside keygate.
    #[error("internal: {0}")]
    Internal(String),
}

impl KmsError {
    /// The gRPC code and its canonical name (the decision log's `error_name`), in one match.
    fn wire(&self) -> (tonic::Code, &'static str) {
        match self {
            KmsError::InvalidArgument(_) => (tonic::Code::InvalidArgument, "INVALID_ARGUMENT"),
            KmsError::PermissionDenied(_) => (tonic::Code::PermissionDenied, "PERMISSION_DENIED"),
            KmsError::FailedPrecondition(_) => {
                (tonic::Code::FailedPrecondition, "FAILED_PRECONDITION")
            }
            KmsError::ResourceExhausted(_) => {
                (tonic::Code::ResourceExhausted, "RESOURCE_EXHAUSTED")
            }
            KmsError::Unavailable(_) => (tonic::Code::Unavailable, "UNAVAILABLE"),
            KmsError::DeadlineExceeded(_) => (tonic::Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            KmsError::Internal(_) => (tonic::Code::Internal, "INTERNAL"),
        }
    }

    /// The canonical gRPC code name, e.g. `PERMISSION_DENIED`.
    pub fn name(&self) -> &'static str {
        self.wire().1
    }

    /// The gRPC code.
    pub fn code(&self) -> tonic::Code {
        self.wire().0
    }

    fn message(&self) -> &str {
        match self {
            KmsError::InvalidArgument(m)
            | KmsError::PermissionDenied(m)
            | KmsError::FailedPrecondition(m)
            | KmsError::ResourceExhausted(m)
            | KmsError::Unavailable(m)
            | KmsError::DeadlineExceeded(m)
            | KmsError::Internal(m) => m,
        }
    }

    /// A key backend failure for `op` on `key`.
    pub fn from_key(e: &KeyError, key: &str, op: KeyOp) -> KmsError {
        match e {
            KeyError::Authentication => KmsError::InvalidArgument(
                "ciphertext authentication failed: it was not issued by this keygate's key or was altered".into(),
            ),
            KeyError::InvalidCiphertext(m) => {
                KmsError::InvalidArgument(format!("invalid ciphertext: {m}"))
            }
            KeyError::NotFound => {
                KmsError::FailedPrecondition(format!("key {key} is not in the key backend"))
            }
            KeyError::Disabled => KmsError::FailedPrecondition(format!("key {key} is disabled")),
            KeyError::UsageNotPermitted(_) => {
                KmsError::FailedPrecondition(format!("key {key} does not permit {op}"))
            }
            KeyError::Unsupported(m) => {
                KmsError::FailedPrecondition(format!("not supported by the key backend: {m}"))
            }
            KeyError::Busy(m) => KmsError::ResourceExhausted(format!("key backend busy: {m}")),
            KeyError::Timeout(d) => KmsError::DeadlineExceeded(format!(
                "key backend did not answer within {} ms",
                d.as_millis()
            )),
            KeyError::Unavailable(m) => {
                KmsError::Unavailable(format!("key backend unavailable: {m}"))
            }
        }
    }
}

impl From<FormatError> for KmsError {
    fn from(e: FormatError) -> KmsError {
        KmsError::InvalidArgument(e.to_string())
    }
}

impl From<KmsError> for tonic::Status {
    fn from(e: KmsError) -> tonic::Status {
        tonic::Status::new(e.code(), sanitize_message(e.message()))
    }
}

/// The one status the gRPC library answers on its own for a well-formed call: a message
/// over the decoding limit is OUT_OF_RANGE there; at this door it is INVALID_ARGUMENT like
/// every other oversized input. The door itself never answers OUT_OF_RANGE.
pub fn remap_library_status<B>(mut response: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &[u8] = b"11";
    let headers = response.headers_mut();
    if headers.get("grpc-status").map(http::HeaderValue::as_bytes) == Some(OUT_OF_RANGE) {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_error_has_its_code_and_name() {
        let table = [
            (KmsError::InvalidArgument("m".into()), 3, "INVALID_ARGUMENT"),
            (
                KmsError::PermissionDenied("m".into()),
                7,
                "PERMISSION_DENIED",
            ),
            (
                KmsError::FailedPrecondition("m".into()),
                9,
                "FAILED_PRECONDITION",
            ),
            (
                KmsError::ResourceExhausted("m".into()),
                8,
                "RESOURCE_EXHAUSTED",
            ),
            (KmsError::Unavailable("m".into()), 14, "UNAVAILABLE"),
            (
                KmsError::DeadlineExceeded("m".into()),
                4,
                "DEADLINE_EXCEEDED",
            ),
            (KmsError::Internal("m".into()), 13, "INTERNAL"),
        ];
        for (e, code, name) in table {
            assert_eq!(e.name(), name);
            let status = tonic::Status::from(e);
            assert_eq!(status.code() as i32, code, "{name}");
            assert_eq!(status.message(), "m");
        }
    }

    #[test]
    fn key_errors_map_to_what_an_operator_can_act_on() {
        let op = KeyOp::Decrypt;
        let name = |e: KeyError| KmsError::from_key(&e, "kek", op).name();
        assert_eq!(name(KeyError::Authentication), "INVALID_ARGUMENT");
        assert_eq!(
            name(KeyError::InvalidCiphertext("v9".into())),
            "INVALID_ARGUMENT"
        );
        assert_eq!(name(KeyError::NotFound), "FAILED_PRECONDITION");
        assert_eq!(name(KeyError::Disabled), "FAILED_PRECONDITION");
        assert_eq!(name(KeyError::UsageNotPermitted(op)), "FAILED_PRECONDITION");
        assert_eq!(
            name(KeyError::Unsupported("x".into())),
            "FAILED_PRECONDITION"
        );
        assert_eq!(name(KeyError::Busy("x".into())), "RESOURCE_EXHAUSTED");
        assert_eq!(
            name(KeyError::Timeout(Duration::from_secs(2))),
            "DEADLINE_EXCEEDED"
        );
        assert_eq!(name(KeyError::Unavailable("x".into())), "UNAVAILABLE");
    }

    #[test]
    fn messages_reach_the_peer_printable() {
        let status = tonic::Status::from(KmsError::PermissionDenied("a\nb\u{7}".into()));
        assert_eq!(status.message(), "a?b?");
    }

    #[test]
    fn the_library_s_size_refusal_becomes_invalid_argument() {
        let r = http::Response::builder()
            .header("grpc-status", "11")
            .body(())
            .unwrap();
        assert_eq!(remap_library_status(r).headers()["grpc-status"], "3");
        let ok = http::Response::builder()
            .header("grpc-status", "0")
            .body(())
            .unwrap();
        assert_eq!(remap_library_status(ok).headers()["grpc-status"], "0");
    }
}
