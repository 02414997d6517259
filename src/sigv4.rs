//! SigV4 verification for XKS requests: parse the Authorization header, rebuild the canonical
//! request from exactly the headers the client signed, and compare signatures in constant time.
//! HMAC work uses aws-sigv4's own building blocks (signing-key derivation, signature).

use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::credentials::{AccessKeyId, Secret};

/// The service name KMS signs XKS requests with.
pub const SERVICE: &str = "kms-xks-proxy";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The spec's allowed clock difference.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why a request failed authentication. Every variant becomes 401 AuthenticationFailedException.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("missing Authorization header")]
    MissingAuthorization,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("missing or malformed X-Amz-Date header")]
    BadDate,
    #[error("credential scope {0}")]
    Scope(String),
    #[error("request time is more than 5 minutes {0} the server's clock")]
    Skew(&'static str),
    #[error("signed header {0} is missing from the request")]
    MissingSignedHeader(String),
    #[error("SignedHeaders must include host and x-amz-date")]
    RequiredHeaderNotSigned,
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHash,
    #[error("unknown access key id")]
    UnknownAccessKey,
    #[error("signature does not match")]
    SignatureMismatch,
}

impl SigV4Error {
    /// The message sent to the caller. Unknown key ids and wrong signatures read the same,
    /// so a peer can't probe which access key ids exist; the log keeps the precise reason.
    pub fn public_message(&self) -> String {
        match self {
            SigV4Error::UnknownAccessKey | SigV4Error::SignatureMismatch => {
                "the request signature could not be verified with any credential of this key store"
                    .to_owned()
            }
            other => other.to_string(),
        }
    }

    /// A short, bounded name for the refusal, for metrics (`keygate_unauthorized_requests_total`
    /// with `stage="sigv4"`); every value is in [`REFUSAL_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            SigV4Error::MissingAuthorization => "missing_authorization",
            SigV4Error::Malformed(_) => "malformed_authorization",
            SigV4Error::BadDate => "bad_date",
            SigV4Error::Scope(_) => "scope_mismatch",
            SigV4Error::Skew(_) => "clock_skew",
            SigV4Error::MissingSignedHeader(_) => "missing_signed_header",
            SigV4Error::RequiredHeaderNotSigned => "required_header_not_signed",
            SigV4Error::PayloadHash => "payload_hash_mismatch",
            SigV4Error::UnknownAccessKey => "unknown_access_key",
            SigV4Error::SignatureMismatch => "signature_mismatch",
        }
    }
}

/// Every value [`SigV4Error::reason`] can take (the metric exports each from 0).
pub const REFUSAL_REASONS: [&str; 10] = [
    "missing_authorization",
    "malformed_authorization",
    "bad_date",
    "scope_mismatch",
    "clock_skew",
    "missing_signed_header",
    "required_header_not_signed",
    "payload_hash_mismatch",
    "unknown_access_key",
    "signature_mismatch",
];

/// One SigV4 credential of a key store, with its derived signing key cached for the day.
#[derive(Debug)]
pub struct Credential {
    pub access_key_id: AccessKeyId,
    secret: Secret,
    signing_key: ArcSwapOption<CachedKey>,
}

#[derive(Debug)]
struct CachedKey {
    date: String,
    region: String,
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl Credential {
    pub fn new(access_key_id: AccessKeyId, secret: Secret) -> Self {
        Credential {
            access_key_id,
            secret,
            signing_key: ArcSwapOption::empty(),
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    fn signing_key(&self, date: &str, time: SystemTime, region: &str) -> std::sync::Arc<CachedKey> {
        if let Some(k) = self.signing_key.load_full()
            && k.date == date
            && k.region == region
        {
            return k;
        }
        let derived =
            aws_sigv4::sign::v4::generate_signing_key(self.secret.expose(), time, region, SERVICE);
        let k = std::sync::Arc::new(CachedKey {
            date: date.to_owned(),
            region: region.to_owned(),
            key: zeroize::Zeroizing::new(derived.as_ref().to_vec()),
        });
        self.signing_key.store(Some(k.clone()));
        k
    }
}

/// The parts of the Authorization header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AK/yyyymmdd/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigV4Error> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or(SigV4Error::Malformed("algorithm must be AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SigV4Error::Malformed("expected key=value"))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(SigV4Error::Malformed("unknown component")),
        };
        if slot.replace(v).is_some() {
            return Err(SigV4Error::Malformed("repeated component"));
        }
    }
    let credential = credential.ok_or(SigV4Error::Malformed("missing Credential"))?;
    let signed_headers = signed.ok_or(SigV4Error::Malformed("missing SignedHeaders"))?;
    let signature = signature.ok_or(SigV4Error::Malformed("missing Signature"))?;
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(term), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(SigV4Error::Malformed(
            "Credential must be AK/date/region/service/aws4_request",
        ));
    };
    if term != "aws4_request" {
        return Err(SigV4Error::Scope("must end with aws4_request".into()));
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(SigV4Error::Malformed(
            "Signature must be 64 lowercase hex digits",
        ));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, fmt).ok()?;
    Some(SystemTime::from(t.assume_utc()))
}

/// What the verifier needs from a request.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The raw path; the router has already refused anything that would need encoding.
    pub path: &'a str,
    /// The request authority (HTTP/2 `:authority`), used when there is no Host header.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Verifies `req` against `credentials` for `region` at time `now`. Returns the credential used.
pub fn verify<'c>(
    req: &SignedRequest<'_>,
    credentials: &'c [Credential],
    region: &str,
    now: SystemTime,
) -> Result<&'c Credential, SigV4Error> {
    let auth_value = req
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or(SigV4Error::MissingAuthorization)?;
    let auth = parse_authorization(
        auth_value
            .to_str()
            .map_err(|_| SigV4Error::Malformed("not visible ASCII"))?,
    )?;
    let amz_date = header_str(req.headers, "x-amz-date").ok_or(SigV4Error::BadDate)?;
    let time = parse_amz_date(amz_date).ok_or(SigV4Error::BadDate)?;
    check_scope(&auth, amz_date, region)?;
    check_skew(time, now)?;
    let mut body_hash = [0u8; 64];
    let body_hash = sha256_hex(req.body, &mut body_hash);
    if let Some(claimed) = header_str(req.headers, "x-amz-content-sha256")
        && claimed != body_hash
    {
        return Err(SigV4Error::PayloadHash);
    }
    let creq = canonical_request(req, auth.signed_headers, body_hash)?;
    let mut creq_hash = [0u8; 64];
    let sts = [
        ALGORITHM,
        "\n",
        amz_date,
        "\n",
        auth.date,
        "/",
        auth.region,
        "/",
        auth.service,
        "/aws4_request\n",
        sha256_hex(creq.as_bytes(), &mut creq_hash),
    ]
    .concat();
    let credential = credentials
        .iter()
        .find(|c| c.access_key_id.as_str() == auth.access_key_id)
        .ok_or(SigV4Error::UnknownAccessKey)?;
    let key = credential.signing_key(auth.date, time, region);
    let expected = aws_sigv4::sign::v4::calculate_signature(&key.key[..], sts.as_bytes());
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(credential)
    } else {
        Err(SigV4Error::SignatureMismatch)
    }
}

/// The lowercase hex SHA-256 of `data`, written into `out`.
fn sha256_hex<'o>(data: &[u8], out: &'o mut [u8; 64]) -> &'o str {
    // 32 bytes always fit 64 hex digits, and hex digits are ASCII.
    if hex::encode_to_slice(Sha256::digest(data), out).is_err() {
        return "";
    }
    std::str::from_utf8(out).unwrap_or_default()
}

fn check_scope(auth: &Authorization<'_>, amz_date: &str, region: &str) -> Result<(), SigV4Error> {
    if amz_date.get(..8) != Some(auth.date) {
        return Err(SigV4Error::Scope("date does not match X-Amz-Date".into()));
    }
    if auth.service != SERVICE {
        return Err(SigV4Error::Scope(format!("service must be {SERVICE}")));
    }
    if auth.region != region {
        return Err(SigV4Error::Scope(format!("region must be {region}")));
    }
    Ok(())
}

fn check_skew(time: SystemTime, now: SystemTime) -> Result<(), SigV4Error> {
    match time.duration_since(now) {
        Ok(ahead) if ahead > MAX_SKEW => Err(SigV4Error::Skew("ahead of")),
        Ok(_) => Ok(()),
        Err(e) if e.duration() > MAX_SKEW => Err(SigV4Error::Skew("behind")),
        Err(_) => Ok(()),
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Builds the canonical request from exactly the client's SignedHeaders.
pub fn canonical_request(
    req: &SignedRequest<'_>,
    signed_headers: &str,
    body_hash: &str,
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(256 + req.path.len());
    out.push_str(req.method);
    out.push('\n');
    out.push_str(req.path);
    out.push_str("\n\n");
    let mut previous = "";
    let (mut saw_host, mut saw_date) = (false, false);
    for name in signed_headers.split(';') {
        if name.is_empty() || name <= previous || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(SigV4Error::Malformed(
                "SignedHeaders must be lowercase, sorted, unique",
            ));
        }
        previous = name;
        saw_host |= name == "host";
        saw_date |= name == "x-amz-date";
        out.push_str(name);
        out.push(':');
        append_header_value(&mut out, req, name)?;
        out.push('\n');
    }
    if !(saw_host && saw_date) {
        return Err(SigV4Error::RequiredHeaderNotSigned);
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(body_hash);
    Ok(out)
}

fn append_header_value(
    out: &mut String,
    req: &SignedRequest<'_>,
    name: &str,
) -> Result<(), SigV4Error> {
    let missing = || SigV4Error::MissingSignedHeader(name.to_owned());
    let mut values = req.headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        // HTTP/2 carries the host as :authority.
        let authority = req
            .authority
            .filter(|_| name == "host")
            .ok_or_else(missing)?;
        out.push_str(authority);
        return Ok(());
    }
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .to_str()
            .map_err(|_| SigV4Error::Malformed("header value not visible ASCII"))?;
        // Trim, and collapse runs of spaces into one.
        let mut last_space = false;
        for c in v.trim().chars() {
            if c == ' ' {
                if !last_space {
                    out.push(' ');
                }
                last_space = true;
            } else {
                out.push(c);
                last_space = false;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
