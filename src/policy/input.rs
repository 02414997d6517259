//! The policy input: what a policy may see about a request. Never plaintext, AAD or secrets.

use std::net::IpAddr;
use std::time::SystemTime;

use regorus::Value;
use serde_json::{Map, Value as Json};

/// Facts about one request, borrowed from the request being served.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// "Encrypt", "Decrypt" or "GetKeyMetadata".
    pub operation: &'a str,
    /// Name of the logical key store.
    pub keystore: &'a str,
    /// The key store's URI path prefix.
    pub uri_prefix: &'a str,
    /// The external key id from the path.
    pub key_id: &'a str,
    /// `requestMetadata` exactly as received (camelCase, unknown fields kept).
    pub request_metadata: &'a Map<String, Json>,
    /// The SigV4 access key id that signed the request.
    pub access_key_id: &'a str,
    /// The address of the peer connected to keygate.
    pub source_ip: IpAddr,
    /// The mTLS client certificate subject, when any.
    pub client_subject: Option<&'a str>,
    /// When the request is judged.
    pub time: SystemTime,
    /// Number of AAD bytes (0 when absent); never the AAD itself.
    pub aad_length: usize,
}

impl PolicyInput<'_> {
    /// The input as JSON, in the shape documented in xks-spec/policy-input.schema.json.
    pub fn to_json(self) -> Json {
        let mut object = Map::with_capacity(10);
        object.insert("operation".into(), self.operation.into());
        object.insert("keystore".into(), self.keystore.into());
        object.insert("uri_prefix".into(), self.uri_prefix.into());
        object.insert("key_id".into(), self.key_id.into());
        object.insert(
            "request_metadata".into(),
            Json::Object(self.request_metadata.clone()),
        );
        object.insert("access_key_id".into(), self.access_key_id.into());
        object.insert("source_ip".into(), self.source_ip.to_string().into());
        object.insert(
            "client_subject".into(),
            self.client_subject.map_or(Json::Null, Json::from),
        );
        object.insert("time".into(), rfc3339(self.time).into());
        object.insert("aad_length".into(), self.aad_length.into());
        Json::Object(object)
    }

    /// The input as a regorus value, built directly (no JSON text in between). Clones share
    /// the object, so one value can go to the policy and to the decision log.
    pub fn to_value(self) -> Value {
        let mut value = Value::new_object();
        if let Ok(object) = value.as_object_mut() {
            let mut put = |key: &str, v: Value| {
                object.insert(Value::from(key), v);
            };
            put("operation", Value::from(self.operation));
            put("keystore", Value::from(self.keystore));
            put("uri_prefix", Value::from(self.uri_prefix));
            put("key_id", Value::from(self.key_id));
            put("request_metadata", metadata_value(self.request_metadata));
            put("access_key_id", Value::from(self.access_key_id));
            put("source_ip", Value::from(self.source_ip.to_string()));
            put(
                "client_subject",
                self.client_subject.map_or(Value::Null, Value::from),
            );
            put("time", Value::from(rfc3339(self.time)));
            put("aad_length", Value::from(self.aad_length as u64));
        }
        value
    }
}

/// `requestMetadata` as a policy value, converted in place rather than cloned first.
fn metadata_value(metadata: &Map<String, Json>) -> Value {
    use serde::Deserialize;
    Value::deserialize(metadata).unwrap_or(Value::Undefined)
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-22T05:46:02.123456789Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let at = time::OffsetDateTime::from(time);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// Parses an RFC 3339 time (as [`rfc3339`] writes it).
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_and_value_agree_and_hold_no_payload() {
        let metadata = serde_json::json!({"awsPrincipalArn": "arn:aws:iam::1:role/A",
            "kmsOperation": "Decrypt", "futureField": {"x": 1}});
        let Json::Object(metadata) = metadata else {
            panic!()
        };
        let input = PolicyInput {
            operation: "Decrypt",
            keystore: "main",
            uri_prefix: "/p",
            key_id: "k1",
            request_metadata: &metadata,
            access_key_id: "AKIA",
            source_ip: "10.0.0.1".parse().unwrap(),
            client_subject: None,
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            aad_length: 31,
        };
        let json = input.to_json();
        assert_eq!(Value::from(json.clone()), input.to_value());
        assert_eq!(json["time"], "2023-11-14T22:13:20Z");
        assert_eq!(json["request_metadata"]["futureField"]["x"], 1);
        assert_eq!(json["client_subject"], Json::Null);
        assert_eq!(json.as_object().unwrap().len(), 10);
    }
}
