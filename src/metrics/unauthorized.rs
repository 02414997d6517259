//! `keygate_unauthorized_requests_total{stage, reason}`: requests refused as unauthorized,
//! by where they were refused (`sigv4`: authentication; `policy`: the Rego policy) and why.
//! The label set is fixed and every pair is exported from 0, so a rate over it is defined
//! before the first refusal.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why the policy refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRefusal {
    /// The policy denied it.
    Denied,
    /// The policy could not be evaluated (error or timeout); the request was refused.
    EvaluationFailed,
}

impl PolicyRefusal {
    fn reason(self) -> &'static str {
        match self {
            PolicyRefusal::Denied => "denied",
            PolicyRefusal::EvaluationFailed => "evaluation_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    stage: &'static str,
    reason: &'static str,
}

/// The refusal counters.
#[derive(Debug, Default)]
pub(super) struct Unauthorized {
    family: Family<Labels, Counter>,
}

impl Unauthorized {
    pub(super) fn register(&self, r: &mut Registry) {
        let sigv4 = crate::sigv4::REFUSAL_REASONS.map(|reason| ("sigv4", reason));
        let policy = [PolicyRefusal::Denied, PolicyRefusal::EvaluationFailed]
            .map(|refusal| ("policy", refusal.reason()));
        for (stage, reason) in sigv4.into_iter().chain(policy) {
            let _exported_from_zero = self.family.get_or_create(&Labels { stage, reason });
        }
        r.register(
            "unauthorized_requests",
            "Requests refused as unauthorized, by stage (sigv4: SigV4 authentication, answered AuthenticationFailedException; policy: the Rego policy, answered AccessDeniedException) and reason",
            self.family.clone(),
        );
    }

    /// Counts a request whose SigV4 verification failed (`reason` from `SigV4Error::reason`).
    pub(super) fn sigv4(&self, reason: &'static str) {
        let stage = "sigv4";
        self.family.get_or_create(&Labels { stage, reason }).inc();
    }

    /// Counts a request the policy refused.
    pub(super) fn policy(&self, refusal: PolicyRefusal) {
        let (stage, reason) = ("policy", refusal.reason());
        self.family.get_or_create(&Labels { stage, reason }).inc();
    }
}
