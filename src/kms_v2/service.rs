//! The generated `KeyManagementService` trait, implemented on the door: protobuf in, gate
//! calls out. Here each call gets its deadline (the door's timeout, or the caller's
//! `grpc-timeout` when shorter), its peer credentials (put in the request by the listener),
//! its metrics and its one log line; errors become gRPC statuses only through `KmsError`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use zeroize::Zeroize;

use super::error::KmsError;
use super::proto::key_management_service_server::KeyManagementService;
use super::proto::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use super::{API_VERSION, Caller, Door, envelope};
use crate::policy::PeerCred;

/// The door as a tonic service.
#[derive(Debug, Clone)]
pub struct KmsService {
    door: Arc<Door>,
}

impl KmsService {
    pub fn new(door: Arc<Door>) -> KmsService {
        KmsService { door }
    }

    fn deadline<T>(&self, req: &Request<T>) -> tokio::time::Instant {
        let configured = self.door.settings().timeout;
        let asked = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout);
        let limit = asked.map_or(configured, |a| a.min(configured));
        tokio::time::Instant::now() + limit
    }

    fn finish<T>(
        &self,
        call: Call<'_>,
        started: Instant,
        result: Result<T, KmsError>,
    ) -> Result<Response<T>, Status> {
        let latency = started.elapsed();
        let code = result.as_ref().err().map_or("OK", KmsError::name);
        self.door
            .metrics()
            .kms_v2()
            .record(call.operation, code, latency);
        let message = result.as_ref().err().map(ToString::to_string);
        if tracing::enabled!(target: "keygate::request", tracing::Level::INFO) {
            log_line(
                self.door.masking(),
                &call,
                code,
                message.as_deref(),
                latency,
            );
        }
        result.map(Response::new).map_err(Status::from)
    }
}

/// The call's one request log line, its values masked as the decision log's
/// `[decision_log.mask]` rules mask them in the decision line (an erased one is left out).
fn log_line(
    mask: Option<&crate::policy::decision_log::mask::Masking>,
    call: &Call<'_>,
    code: &str,
    message: Option<&str>,
    latency: Duration,
) {
    use crate::policy::decision_log::mask::masked;
    let key_id = masked(mask, "/input/key_id", call.key);
    let uid = masked(mask, "/input/request_uid", call.uid);
    let (peer_uid, peer_pid) = (
        call.peer.map(|p| p.uid.to_string()),
        call.peer.and_then(|p| p.pid).map(|pid| pid.to_string()),
    );
    let peer_uid = peer_uid
        .as_deref()
        .and_then(|v| masked(mask, "/input/peer/uid", v));
    let peer_pid = peer_pid
        .as_deref()
        .and_then(|v| masked(mask, "/input/peer/pid", v));
    tracing::info!(
        target: "keygate::request",
        interface = "kms_v2",
        operation = call.operation,
        key_id = key_id.as_deref(),
        uid = uid.as_deref(),
        peer_uid = peer_uid.as_deref(),
        peer_pid = peer_pid.as_deref(),
        outcome = if code == "OK" { "ok" } else { "error" },
        error_name = code,
        error_message = message.unwrap_or(""),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}

/// What the log line says about a call.
struct Call<'a> {
    operation: &'static str,
    key: &'a str,
    uid: &'a str,
    peer: Option<PeerCred>,
}

#[tonic::async_trait]
impl KeyManagementService for KmsService {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let started = Instant::now();
        let answer = self.door.status().await;
        let latency = started.elapsed();
        let code = if answer.healthz == super::HEALTHY {
            "OK"
        } else {
            "UNHEALTHY"
        };
        self.door.metrics().kms_v2().record("Status", code, latency);
        tracing::debug!(target: "keygate::request", interface = "kms_v2", operation = "Status", healthz = %answer.healthz, key_id = %answer.key_id, "request");
        Ok(Response::new(StatusResponse {
            version: API_VERSION.to_owned(),
            healthz: answer.healthz,
            key_id: answer.key_id,
        }))
    }

    async fn encrypt(
        &self,
        req: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let peer = req.extensions().get::<PeerCred>().copied();
        let mut r = req.into_inner();
        let caller = Caller { uid: &r.uid, peer };
        let result =
            self.door
                .encrypt(&r.plaintext, caller, deadline)
                .await
                .map(|(ciphertext, key_id)| EncryptResponse {
                    ciphertext,
                    key_id,
                    annotations: HashMap::new(),
                });
        r.plaintext.zeroize();
        let call = Call {
            operation: "Encrypt",
            key: &self.door.settings().key,
            uid: &r.uid,
            peer,
        };
        self.finish(call, started, result)
    }

    async fn decrypt(
        &self,
        req: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let peer = req.extensions().get::<PeerCred>().copied();
        let r = req.into_inner();
        let caller = Caller { uid: &r.uid, peer };
        let result = self
            .door
            .decrypt(&r.ciphertext, &r.annotations, &r.key_id, caller, deadline)
            .await
            .map(|plaintext| DecryptResponse {
                plaintext: plaintext.to_vec(),
            });
        let key = envelope::parse(&r.ciphertext).map_or("", |p| p.key);
        let call = Call {
            operation: "Decrypt",
            key,
            uid: &r.uid,
            peer,
        };
        self.finish(call, started, result)
    }
}

/// Parses a `grpc-timeout` value: 1-8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "M" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "S" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_millis(n)),
        "u" => Some(Duration::from_micros(n)),
        "n" => Some(Duration::from_nanos(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout("2999m"), Some(Duration::from_millis(2999)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "123456789S", "3s", "-1S", "1.5S", "é"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
