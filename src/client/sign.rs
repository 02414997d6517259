//! SigV4 request signing for the XKS client side (aws-sigv4's signer, service `kms-xks-proxy`).

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use zeroize::Zeroizing;

/// The SigV4 service name XKS uses.
pub const XKS_SERVICE: &str = "kms-xks-proxy";

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing parameters were incomplete.
    #[error("signing parameters: {0}")]
    Params(String),
    /// aws-sigv4 refused the request.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A SigV4 secret access key: zeroized on drop, printed as `***`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret string.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s.to_owned()))
    }
}

/// Who signs and for which scope: access key id, secret, region and service.
#[derive(Clone, Debug)]
pub struct Signer {
    access_key_id: String,
    secret: Secret,
    region: String,
    service: String,
}

/// The parts of one HTTP request that SigV4 covers.
#[derive(Clone, Copy, Debug)]
pub struct Signable<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path only (XKS has no query string).
    pub path: &'a str,
    /// The `Host` header value.
    pub host: &'a str,
    /// `Some("application/json")` to sign the content type too, as curl and the SDKs do.
    pub content_type: Option<&'a str>,
    /// The exact body bytes that will be sent.
    pub body: &'a [u8],
    /// The signing time (`X-Amz-Date`).
    pub time: SystemTime,
}

/// The headers a signature adds to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Authorization` header value.
    pub authorization: String,
    /// `X-Amz-Date` header value.
    pub amz_date: String,
}

impl Signer {
    /// A signer for service `kms-xks-proxy` in `region`.
    pub fn new(access_key_id: String, secret: Secret, region: String) -> Self {
        Self {
            access_key_id,
            secret,
            region,
            service: XKS_SERVICE.to_owned(),
        }
    }

    /// The same credentials, signing for another region.
    pub fn with_region(&self, region: &str) -> Self {
        Self {
            region: region.to_owned(),
            ..self.clone()
        }
    }

    /// The same credentials, signing for another service name.
    pub fn with_service(&self, service: &str) -> Self {
        Self {
            service: service.to_owned(),
            ..self.clone()
        }
    }

    /// Another access key id with the same secret.
    pub fn with_access_key_id(&self, access_key_id: &str) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            ..self.clone()
        }
    }

    /// The same access key id with another secret.
    pub fn with_secret(&self, secret: Secret) -> Self {
        Self {
            secret,
            ..self.clone()
        }
    }

    /// Signs the request; returns the `Authorization` and `X-Amz-Date` values.
    pub fn sign(&self, req: &Signable<'_>) -> Result<SignedHeaders, SignError> {
        let identity = Credentials::new(
            self.access_key_id.as_str(),
            self.secret.expose(),
            None,
            None,
            "keygate",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.excluded_headers = None;
        let params: http_request::SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(req.time)
            .settings(settings)
            .build()
            .map_err(|e| SignError::Params(e.to_string()))?
            .into();
        let mut headers = vec![("host", req.host)];
        if let Some(ct) = req.content_type {
            headers.push(("content-type", ct));
        }
        let signable = SignableRequest::new(
            req.method,
            req.path,
            headers.into_iter(),
            SignableBody::Bytes(req.body),
        )
        .map_err(|e| SignError::Signing(e.to_string()))?;
        let (instructions, _signature) = http_request::sign(signable, &params)
            .map_err(|e| SignError::Signing(e.to_string()))?
            .into_parts();
        let mut out = SignedHeaders {
            authorization: String::new(),
            amz_date: String::new(),
        };
        for (name, value) in instructions.headers() {
            if name.eq_ignore_ascii_case("authorization") {
                out.authorization = value.to_owned();
            } else if name.eq_ignore_ascii_case("x-amz-date") {
                out.amz_date = value.to_owned();
            }
        }
        if out.authorization.is_empty() || out.amz_date.is_empty() {
            return Err(SignError::Signing(
                "signer produced no Authorization header".into(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const AK: &str = "BETWEEN2TENAND3TENCHARACTERS";
    const SK: &str = "PleaseReplaceThisWithSomeSecretOfLength43To64";
    const BODY: &str = r#"{"requestMetadata":{"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsOperation":"KmsHealthCheck"}}"#;

    fn at(amz: &str) -> SystemTime {
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let t = time::PrimitiveDateTime::parse(amz, &fmt)
            .unwrap()
            .assume_utc();
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).unwrap())
    }

    fn signer() -> Signer {
        Signer::new(AK.into(), Secret::new(SK.into()), "us-east-1".into())
    }

    fn health(time: SystemTime) -> Signable<'static> {
        Signable {
            method: "POST",
            path: "/example/uri/path/prefix/kms/xks/v1/health",
            host: "127.0.0.1:18099",
            content_type: Some("application/json"),
            body: BODY.as_bytes(),
            time,
        }
    }

    /// A request captured from `curl 7.88.1 --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy"`
    /// (the facts sheet's credentials, host and signed headers) is reproduced byte for byte.
    #[test]
    fn reproduces_curl_signature() {
        let signed = signer().sign(&health(at("20261122T053301Z"))).unwrap();
        assert_eq!(signed.amz_date, "20261122T053301Z");
        assert_eq!(
            signed.authorization,
            "AWS4-HMAC-SHA256 Credential=BETWEEN2TENAND3TENCHARACTERS/20261122/us-east-1/\
             kms-xks-proxy/aws4_request, SignedHeaders=content-type;host;x-amz-date, \
             Signature=9df34a43a22cbb1d59822ff16c3fe071441290883cdecf94a97eee57e3879784"
        );
    }

    #[test]
    fn without_content_type_signs_host_and_date_only() {
        let mut req = health(at("20261122T053301Z"));
        req.content_type = None;
        let signed = signer().sign(&req).unwrap();
        assert!(
            signed
                .authorization
                .contains("SignedHeaders=host;x-amz-date,")
        );
    }

    #[test]
    fn scope_variants_change_the_signature() {
        let req = health(at("20261122T053301Z"));
        let base = signer().sign(&req).unwrap().authorization;
        let region = signer()
            .with_region("eu-west-1")
            .sign(&req)
            .unwrap()
            .authorization;
        assert!(region.contains("/eu-west-1/kms-xks-proxy/"));
        let service = signer()
            .with_service("kms")
            .sign(&req)
            .unwrap()
            .authorization;
        assert!(service.contains("/us-east-1/kms/aws4_request"));
        let secret = signer()
            .with_secret(Secret::new("x".repeat(44)))
            .sign(&req)
            .unwrap()
            .authorization;
        let ak = signer()
            .with_access_key_id("AAAAAAAAAAAAAAAAAAAA")
            .sign(&req)
            .unwrap();
        assert!(
            ak.authorization
                .contains("Credential=AAAAAAAAAAAAAAAAAAAA/")
        );
        for other in [region, service, secret, ak.authorization] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn secret_is_not_printed() {
        let text = format!("{:?}", signer());
        assert!(!text.contains(SK));
        assert!(text.contains("***"));
    }
}
