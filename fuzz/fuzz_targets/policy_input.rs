//! Policy input building and evaluation (operator policies over peer-controlled metadata):
//! any requestMetadata object, key id, peer address, KMS v2 uid or peer identity becomes an
//! input every embedded policy judges without a panic; the input never gains or loses a
//! member, and the default policy always decides (allow, no error).
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use keygate::policy::{Interface, PeerCred, PolicyEngine, PolicyInput, PolicySet, embedded};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const OPERATIONS: [&str; 3] = ["Encrypt", "Decrypt", "GetKeyMetadata"];

fn engines() -> &'static [(&'static str, PolicyEngine)] {
    static ENGINES: OnceLock<Vec<(&'static str, PolicyEngine)>> = OnceLock::new();
    ENGINES.get_or_init(|| {
        embedded::all()
            .map(|set| {
                let compiled = PolicySet::compile(set.name, set.to_files()).unwrap();
                (set.name, PolicyEngine::new(compiled, Duration::from_secs(5)))
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // Most inputs as a metadata object; the rest as a principal ARN string in a fixed shape.
    let metadata: Map<String, Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => m,
        _ => {
            let mut m = Map::new();
            m.insert("awsPrincipalArn".into(), Value::from(text.as_ref()));
            m.insert("kmsOperation".into(), Value::from("Decrypt"));
            m.insert("kmsRequestId".into(), Value::from("fuzz"));
            m
        }
    };
    let source_ip: IpAddr = if selector & 0x10 == 0 {
        [10, selector, 1, 2].into()
    } else {
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(selector)].into()
    };
    let key_id: String = text.chars().take(64).collect();
    // Every other input as the KMS v2 door builds it: no metadata, a uid and the socket's peer.
    let kms_v2 = selector & 0x40 != 0;
    let empty = Map::new();
    let uid: String = text.chars().take(128).collect();
    let input = PolicyInput {
        interface: if kms_v2 { Interface::KmsV2 } else { Interface::Xks },
        operation: OPERATIONS[usize::from(selector % 3)],
        keystore: "main",
        uri_prefix: "/fuzz",
        key_id: &key_id,
        request_metadata: if kms_v2 { &empty } else { &metadata },
        access_key_id: (!kms_v2).then_some("AKIAFUZZ"),
        source_ip: (!kms_v2).then_some(source_ip),
        client_subject: (selector & 0x20 != 0).then_some("CN=cks.kms.us-east-1.amazonaws.com"),
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(selector) * 3_600),
        aad_length: usize::from(selector),
        request_uid: kms_v2.then_some(uid.as_str()),
        peer: kms_v2.then_some(PeerCred {
            uid: u32::from(selector),
            gid: 0,
            pid: Some(i32::from(selector)),
        }),
    };
    let json = input.to_json();
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), 13);
    if !kms_v2 {
        assert_eq!(object["request_metadata"], Value::Object(metadata.clone()));
    }
    for (name, engine) in engines() {
        match engine.evaluate(&input) {
            Ok(decision) => {
                if *name == "default" {
                    assert!(decision.allow && decision.reasons.is_empty());
                }
            }
            Err(e) => {
                assert_ne!(*name, "default", "the default policy failed: {e}");
                let _ = e.to_string();
            }
        }
    }
});
