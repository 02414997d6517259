//! The policy input: what a policy may see about a request, whichever front door it came
//! through. Never plaintext, AAD or secrets.

use std::net::IpAddr;
use std::time::SystemTime;

use regorus::Value;
use serde_json::{Map, Value as Json};

/// The front door a request came through (`input.interface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// AWS KMS XKS over HTTPS.
    Xks,
    /// The Kubernetes KMS v2 plugin over a Unix socket.
    KmsV2,
}

impl Interface {
    /// The value policies see: `"xks"` or `"kms_v2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Xks => "xks",
            Interface::KmsV2 => "kms_v2",
        }
    }
}

/// The operating-system identity of a Unix-socket peer, as the kernel reports it
/// (SO_PEERCRED): it cannot be forged by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    /// The peer's process id, when the kernel gives one.
    pub pid: Option<i32>,
}

/// Facts about one request, borrowed from the request being served.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// The front door.
    pub interface: Interface,
    /// "Encrypt", "Decrypt" or "GetKeyMetadata".
    pub operation: &'a str,
    /// Name of the logical key store (the KMS v2 door's `name`).
    pub keystore: &'a str,
    /// The key store's URI path prefix ("" at the KMS v2 door).
    pub uri_prefix: &'a str,
    /// The key id: from the path (XKS), the configured key or the one a ciphertext names
    /// (KMS v2).
    pub key_id: &'a str,
    /// `requestMetadata` exactly as received (camelCase, unknown fields kept); empty at the
    /// KMS v2 door.
    pub request_metadata: &'a Map<String, Json>,
    /// The SigV4 access key id that signed the request (XKS only).
    pub access_key_id: Option<&'a str>,
    /// The address of the peer connected to keygate (none on a Unix socket).
    pub source_ip: Option<IpAddr>,
    /// The mTLS client certificate subject, when any.
    pub client_subject: Option<&'a str>,
    /// When the request is judged.
    pub time: SystemTime,
    /// Number of AAD bytes (0 when absent); never the AAD itself.
    pub aad_length: usize,
    /// The KMS v2 request's `uid` (the apiserver's id for the call).
    pub request_uid: Option<&'a str>,
    /// The Unix-socket peer's identity (KMS v2).
    pub peer: Option<PeerCred>,
}

impl PolicyInput<'_> {
    /// The input as JSON, in the shape documented in xks-spec/policy-input.schema.json.
    pub fn to_json(self) -> Json {
        let mut object = Map::with_capacity(FIELDS);
        object.insert("interface".into(), self.interface.as_str().into());
        object.insert("operation".into(), self.operation.into());
        object.insert("keystore".into(), self.keystore.into());
        object.insert("uri_prefix".into(), self.uri_prefix.into());
        object.insert("key_id".into(), self.key_id.into());
        object.insert(
            "request_metadata".into(),
            Json::Object(self.request_metadata.clone()),
        );
        object.insert(
            "access_key_id".into(),
            self.access_key_id.map_or(Json::Null, Json::from),
        );
        object.insert(
            "source_ip".into(),
            self.source_ip
                .map_or(Json::Null, |ip| ip.to_string().into()),
        );
        object.insert(
            "client_subject".into(),
            self.client_subject.map_or(Json::Null, Json::from),
        );
        object.insert("time".into(), rfc3339(self.time).into());
        object.insert("aad_length".into(), self.aad_length.into());
        object.insert(
            "request_uid".into(),
            self.request_uid.map_or(Json::Null, Json::from),
        );
        object.insert(
            "peer".into(),
            self.peer.map_or(
                Json::Null,
                |p| serde_json::json!({"uid": p.uid, "gid": p.gid, "pid": p.pid}),
            ),
        );
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
            put("interface", Value::from(self.interface.as_str()));
            put("operation", Value::from(self.operation));
            put("keystore", Value::from(self.keystore));
            put("uri_prefix", Value::from(self.uri_prefix));
            put("key_id", Value::from(self.key_id));
            put("request_metadata", metadata_value(self.request_metadata));
            put(
                "access_key_id",
                self.access_key_id.map_or(Value::Null, Value::from),
            );
            put(
                "source_ip",
                self.source_ip
                    .map_or(Value::Null, |ip| Value::from(ip.to_string())),
            );
            put(
                "client_subject",
                self.client_subject.map_or(Value::Null, Value::from),
            );
            put("time", Value::from(rfc3339(self.time)));
            put("aad_length", Value::from(self.aad_length as u64));
            put(
                "request_uid",
                self.request_uid.map_or(Value::Null, Value::from),
            );
            put("peer", self.peer.map_or(Value::Null, peer_value));
        }
        value
    }
}

/// Number of members of the input object.
const FIELDS: usize = 13;

fn peer_value(peer: PeerCred) -> Value {
    let mut value = Value::new_object();
    if let Ok(object) = value.as_object_mut() {
        object.insert(Value::from("uid"), Value::from(u64::from(peer.uid)));
        object.insert(Value::from("gid"), Value::from(u64::from(peer.gid)));
        object.insert(
            Value::from("pid"),
            peer.pid.map_or(Value::Null, |p| Value::from(i64::from(p))),
        );
    }
    value
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
            interface: Interface::Xks,
            operation: "Decrypt",
            keystore: "main",
            uri_prefix: "/p",
            key_id: "k1",
            request_metadata: &metadata,
            access_key_id: Some("AKIA"),
            source_ip: Some("10.0.0.1".parse().unwrap()),
            client_subject: None,
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            aad_length: 31,
            request_uid: None,
            peer: None,
        };
        let json = input.to_json();
        assert_eq!(Value::from(json.clone()), input.to_value());
        assert_eq!(json["interface"], "xks");
        assert_eq!(json["time"], "2023-11-14T22:13:20Z");
        assert_eq!(json["request_metadata"]["futureField"]["x"], 1);
        assert_eq!(json["client_subject"], Json::Null);
        assert_eq!(json["peer"], Json::Null);
        assert_eq!(json.as_object().unwrap().len(), FIELDS);
    }

    #[test]
    fn a_kms_v2_input_carries_the_uid_and_the_peer() {
        let empty = Map::new();
        let input = PolicyInput {
            interface: Interface::KmsV2,
            operation: "Encrypt",
            keystore: "kubernetes",
            uri_prefix: "",
            key_id: "k8s-kek",
            request_metadata: &empty,
            access_key_id: None,
            source_ip: None,
            client_subject: None,
            time: SystemTime::UNIX_EPOCH,
            aad_length: 0,
            request_uid: Some("6f1c"),
            peer: Some(PeerCred {
                uid: 0,
                gid: 10,
                pid: Some(4242),
            }),
        };
        let json = input.to_json();
        assert_eq!(Value::from(json.clone()), input.to_value());
        assert_eq!(json["interface"], "kms_v2");
        assert_eq!(json["request_uid"], "6f1c");
        assert_eq!(
            json["peer"],
            serde_json::json!({"uid": 0, "gid": 10, "pid": 4242})
        );
        assert_eq!(json["access_key_id"], Json::Null);
        assert_eq!(json["source_ip"], Json::Null);
    }
}
