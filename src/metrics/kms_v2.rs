//! The KMS v2 door's metrics, beside the XKS ones: calls by operation and gRPC code, their
//! latency, and connections refused at accept.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{HistogramFamily, OperationLabel, ReasonLabel, latency_histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    code: String,
}

/// Counters and histograms of the KMS v2 door.
#[derive(Debug, Clone)]
pub struct KmsV2Metrics {
    calls: Family<CallLabels, Counter>,
    latency: HistogramFamily<OperationLabel>,
    refused: Family<ReasonLabel, Counter>,
}

impl Default for KmsV2Metrics {
    fn default() -> Self {
        KmsV2Metrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            refused: Family::default(),
        }
    }
}

impl KmsV2Metrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "kms_v2_requests",
            "KMS v2 plugin calls by operation (Status|Encrypt|Decrypt) and gRPC code (OK, or e.g. PERMISSION_DENIED; UNHEALTHY for a Status whose healthz is not ok)",
            self.calls.clone(),
        );
        r.register(
            "kms_v2_request_duration_seconds",
            "KMS v2 plugin call latency by operation (the apiserver's default timeout is 3 s)",
            self.latency.clone(),
        );
        r.register(
            "kms_v2_connections_refused",
            "KMS v2 socket connections closed at accept, by reason (connection_limit|no_credentials)",
            self.refused.clone(),
        );
    }

    /// Counts one answered call.
    pub fn record(&self, operation: &str, code: &str, latency: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                operation: operation.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Counts one connection closed at accept.
    pub fn connection_refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
