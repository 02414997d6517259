//! The XKS error type: the spec's twelve error names, and the ONE place where any failure
//! becomes an HTTP status and a compact `{"errorName":..,"errorMessage":..}` body.

use crate::keys::KeyError;
pub use crate::sanitize::{MAX_MESSAGE_LEN, sanitize_message};

/// The spec's error names (XKS Proxy API v1, "Error codes"). Each carries a message for the
/// caller's CloudWatch logs; messages never contain plaintext, AAD, secrets or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XksError {
    #[error("ValidationException: {0}")]
    Validation(String),
    #[error("InvalidStateException: {0}")]
    InvalidState(String),
    #[error("InvalidCiphertextException: {0}")]
    InvalidCiphertext(String),
    #[error("InvalidKeyUsageException: {0}")]
    InvalidKeyUsage(String),
    #[error("AuthenticationFailedException: {0}")]
    AuthenticationFailed(String),
    #[error("AccessDeniedException: {0}")]
    AccessDenied(String),
    #[error("KeyNotFoundException: {0}")]
    KeyNotFound(String),
    #[error("InvalidUriPathException: {0}")]
    InvalidUriPath(String),
    #[error("ThrottlingException: {0}")]
    Throttling(String),
    #[error("UnsupportedOperationException: {0}")]
    UnsupportedOperation(String),
    #[error("DependencyTimeoutException: {0}")]
    DependencyTimeout(String),
    #[error("InternalException: {0}")]
    Internal(String),
}

impl XksError {
    /// The spec's `errorName`.
    pub fn name(&self) -> &'static str {
        self.wire().1
    }

    /// The HTTP status code the spec assigns to this error.
    pub fn status(&self) -> u16 {
        self.wire().0
    }

    /// The caller-facing message.
    pub fn message(&self) -> &str {
        match self {
            XksError::Validation(m)
            | XksError::InvalidState(m)
            | XksError::InvalidCiphertext(m)
            | XksError::InvalidKeyUsage(m)
            | XksError::AuthenticationFailed(m)
            | XksError::AccessDenied(m)
            | XksError::KeyNotFound(m)
            | XksError::InvalidUriPath(m)
            | XksError::Throttling(m)
            | XksError::UnsupportedOperation(m)
            | XksError::DependencyTimeout(m)
            | XksError::Internal(m) => m,
        }
    }

    /// (status, errorName): the spec's table, in one match.
    fn wire(&self) -> (u16, &'static str) {
        match self {
            XksError::Validation(_) => (400, "ValidationException"),
            XksError::InvalidState(_) => (400, "InvalidStateException"),
            XksError::InvalidCiphertext(_) => (400, "InvalidCiphertextException"),
            XksError::InvalidKeyUsage(_) => (400, "InvalidKeyUsageException"),
            XksError::AuthenticationFailed(_) => (401, "AuthenticationFailedException"),
            XksError::AccessDenied(_) => (403, "AccessDeniedException"),
            XksError::KeyNotFound(_) => (404, "KeyNotFoundException"),
            XksError::InvalidUriPath(_) => (404, "InvalidUriPathException"),
            XksError::Throttling(_) => (429, "ThrottlingException"),
            XksError::UnsupportedOperation(_) => (501, "UnsupportedOperationException"),
            XksError::DependencyTimeout(_) => (503, "DependencyTimeoutException"),
            XksError::Internal(_) => (500, "InternalException"),
        }
    }

    /// The response body: compact single-line JSON with a sanitized message.
    pub fn body(&self) -> String {
        let body = serde_json::json!({
            "errorName": self.name(),
            "errorMessage": sanitize_message(self.message()),
        });
        body.to_string()
    }

    /// Maps a key-backend failure for `key_id` to the spec's error.
    pub fn from_key(err: &KeyError, key_id: &str) -> XksError {
        match err {
            KeyError::NotFound => XksError::KeyNotFound(format!("key {key_id} not found")),
            KeyError::UsageNotPermitted(op) => {
                XksError::InvalidKeyUsage(format!("key {key_id} does not permit {op}"))
            }
            KeyError::Disabled => XksError::InvalidState(format!("key {key_id} is disabled")),
            KeyError::Authentication => XksError::InvalidCiphertext(
                "ciphertext, IV, tag, AAD or ciphertextMetadata do not authenticate".into(),
            ),
            KeyError::InvalidCiphertext(m) => XksError::InvalidCiphertext(m.clone()),
            KeyError::Busy(m) => XksError::Throttling(format!("key backend busy: {m}")),
            KeyError::Timeout(d) => XksError::DependencyTimeout(format!(
                "key backend did not answer within {} ms",
                d.as_millis()
            )),
            KeyError::Unavailable(m) => XksError::Internal(format!("key backend unavailable: {m}")),
            KeyError::Unsupported(m) => XksError::UnsupportedOperation(m.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (errorName, HTTP status) pair of the spec's table.
    #[test]
    fn every_error_name_has_the_spec_status() {
        let m = String::new;
        let table = [
            (XksError::Validation(m()), "ValidationException", 400),
            (XksError::InvalidState(m()), "InvalidStateException", 400),
            (
                XksError::InvalidCiphertext(m()),
                "InvalidCiphertextException",
                400,
            ),
            (
                XksError::InvalidKeyUsage(m()),
                "InvalidKeyUsageException",
                400,
            ),
            (
                XksError::AuthenticationFailed(m()),
                "AuthenticationFailedException",
                401,
            ),
            (XksError::AccessDenied(m()), "AccessDeniedException", 403),
            (XksError::KeyNotFound(m()), "KeyNotFoundException", 404),
            (
                XksError::InvalidUriPath(m()),
                "InvalidUriPathException",
                404,
            ),
            (XksError::Throttling(m()), "ThrottlingException", 429),
            (
                XksError::UnsupportedOperation(m()),
                "UnsupportedOperationException",
                501,
            ),
            (
                XksError::DependencyTimeout(m()),
                "DependencyTimeoutException",
                503,
            ),
            (XksError::Internal(m()), "InternalException", 500),
        ];
        for (err, name, status) in table {
            assert_eq!(err.name(), name);
            assert_eq!(err.status(), status, "{name}");
        }
    }

    #[test]
    fn body_is_compact_single_line_json() {
        let e = XksError::KeyNotFound("key foo not found".into());
        assert_eq!(
            e.body(),
            r#"{"errorMessage":"key foo not found","errorName":"KeyNotFoundException"}"#
        );
    }

    #[test]
    fn key_errors_map_to_spec_names() {
        use std::time::Duration;
        let cases = [
            (KeyError::NotFound, "KeyNotFoundException"),
            (
                KeyError::UsageNotPermitted(crate::keys::KeyOp::Decrypt),
                "InvalidKeyUsageException",
            ),
            (KeyError::Disabled, "InvalidStateException"),
            (KeyError::Authentication, "InvalidCiphertextException"),
            (
                KeyError::InvalidCiphertext("x".into()),
                "InvalidCiphertextException",
            ),
            (KeyError::Busy("x".into()), "ThrottlingException"),
            (
                KeyError::Timeout(Duration::from_millis(5)),
                "DependencyTimeoutException",
            ),
            (KeyError::Unavailable("x".into()), "InternalException"),
            (
                KeyError::Unsupported("x".into()),
                "UnsupportedOperationException",
            ),
        ];
        for (k, name) in cases {
            assert_eq!(XksError::from_key(&k, "foo").name(), name);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::time::Duration;

        const SPEC: [(&str, u16); 12] = [
            ("ValidationException", 400),
            ("InvalidStateException", 400),
            ("InvalidCiphertextException", 400),
            ("InvalidKeyUsageException", 400),
            ("AuthenticationFailedException", 401),
            ("AccessDeniedException", 403),
            ("KeyNotFoundException", 404),
            ("InvalidUriPathException", 404),
            ("ThrottlingException", 429),
            ("UnsupportedOperationException", 501),
            ("DependencyTimeoutException", 503),
            ("InternalException", 500),
        ];

        fn any_key_error() -> impl Strategy<Value = KeyError> {
            let m = "\\PC{0,600}";
            prop_oneof![
                Just(KeyError::NotFound),
                Just(KeyError::UsageNotPermitted(crate::keys::KeyOp::Encrypt)),
                Just(KeyError::UsageNotPermitted(crate::keys::KeyOp::Decrypt)),
                Just(KeyError::Disabled),
                Just(KeyError::Authentication),
                m.prop_map(KeyError::InvalidCiphertext),
                m.prop_map(KeyError::Busy),
                any::<u64>().prop_map(|ms| KeyError::Timeout(Duration::from_millis(ms))),
                m.prop_map(KeyError::Unavailable),
                m.prop_map(KeyError::Unsupported),
            ]
        }

        fn any_xks_error() -> impl Strategy<Value = XksError> {
            (0..12usize, "\\PC{0,700}").prop_map(|(i, m)| match i {
                0 => XksError::Validation(m),
                1 => XksError::InvalidState(m),
                2 => XksError::InvalidCiphertext(m),
                3 => XksError::InvalidKeyUsage(m),
                4 => XksError::AuthenticationFailed(m),
                5 => XksError::AccessDenied(m),
                6 => XksError::KeyNotFound(m),
                7 => XksError::InvalidUriPath(m),
                8 => XksError::Throttling(m),
                9 => XksError::UnsupportedOperation(m),
                10 => XksError::DependencyTimeout(m),
                _ => XksError::Internal(m),
            })
        }

        /// A body the spec accepts: compact JSON, a name from the table with its status,
        /// a printable ASCII message under 512 characters.
        fn check_wire(e: &XksError) -> Result<(), TestCaseError> {
            prop_assert!(SPEC.contains(&(e.name(), e.status())));
            let body = e.body();
            prop_assert!(!body.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(v["errorName"].as_str(), Some(e.name()));
            let msg = v["errorMessage"].as_str().unwrap();
            prop_assert!(msg.len() < 512);
            prop_assert!(msg.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            Ok(())
        }

        proptest! {
            #[test]
            fn every_key_error_maps_to_a_spec_error(k in any_key_error(), id in "\\PC{0,200}") {
                check_wire(&XksError::from_key(&k, &id))?;
            }

            #[test]
            fn every_error_has_a_spec_body(e in any_xks_error()) {
                check_wire(&e)?;
            }
        }
    }
}
