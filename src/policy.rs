//! Secondary authorization: every Encrypt, Decrypt and GetKeyMetadata request is judged by Rego
//! policies (package `keygate`, `allow` decides, `deny` explains) on regorus's bytecode VM.
//!
//! A [`PolicySet`] is parsed, compiled and self-tested once; the [`PolicyEngine`] holds the current
//! set behind an `ArcSwap` so a reload swaps it atomically while requests keep flowing.

mod authorizer;
pub mod cli;
pub mod decision_log;
pub mod embedded;
mod input;
pub mod input_check;
pub mod reload;
mod set;
mod stats;
mod syntax;
pub mod testing;
mod vm_pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use regorus::Value;

pub use authorizer::{ABANDONED, Authorizer, Judgement, LogRefused, Verdict};
pub(crate) use input::parse_rfc3339;
pub use input::{Interface, PeerCred, PolicyInput};
pub use set::{PolicyFile, PolicySet};
pub use stats::{PolicyCounts, PolicyStats};

use vm_pool::VmPool;

/// The rule every decision comes from, in the synthetic entry-point package.
const DECISION_RULE: &str = "data.keygate_internal_decision.decision";

/// Default limit for one evaluation; an evaluation over it fails closed.
pub const DEFAULT_EVAL_TIMEOUT: Duration = Duration::from_millis(50);

/// Errors of the policy layer. Any of them on the request path means: refuse (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file or directory could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory holds no policy (`*.rego` other than `*_test.rego`).
    #[error("no policy files (*.rego) in {0}")]
    Empty(PathBuf),
    /// A policy failed to parse or compile; the message names file, line and column.
    #[error("{0}")]
    Compile(String),
    /// A Rego v0 policy uses a future keyword without importing it: regorus would read the keyword
    /// as an identifier, which can turn `allow if { ... }` into an unconditional allow.
    #[error(
        "{file}:{line}:{col}: `{keyword}` in a Rego v0 policy without `import future.keywords.{keyword}` \
         (or `import rego.v1`) would be read as an identifier and could allow every request; \
         add the import or write Rego v1"
    )]
    FailOpenV0 {
        /// The policy file.
        file: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// The keyword (`if`, `contains`, `in` or `every`).
        keyword: String,
    },
    /// The policy's own `test_*` rules did not all pass.
    #[error("policy tests failed: {0}")]
    TestsFailed(String),
    /// Evaluation failed (a builtin error, a conflict, the instruction limit...).
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    /// Evaluation ran over its time limit.
    #[error("policy evaluation exceeded its time limit of {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The policy produced something other than a boolean `allow` and a set of string reasons.
    #[error("policy result is not valid: {0}")]
    BadResult(String),
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `data.keygate.allow` (undefined counts as false).
    pub allow: bool,
    /// `data.keygate.deny`, sorted.
    pub reasons: Vec<String>,
    /// Time spent evaluating, in nanoseconds.
    pub eval_ns: u64,
    /// Revision (sha256) of the policy set that decided.
    pub revision: String,
}

/// The policy engine: cheap to clone and share; reloads swap the policy set atomically.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<PolicySet>,
    pool: VmPool,
    timeout: Duration,
}

impl PolicyEngine {
    /// An engine running the embedded default policy.
    pub fn embedded() -> Result<Self, PolicyError> {
        Ok(Self::new(PolicySet::embedded()?, DEFAULT_EVAL_TIMEOUT))
    }

    /// An engine running the policies of `dir` (checked, tests run).
    pub fn from_dir(dir: &Path) -> Result<Self, PolicyError> {
        Ok(Self::new(PolicySet::from_dir(dir)?, DEFAULT_EVAL_TIMEOUT))
    }

    /// An engine running `set`, with `timeout` as the limit for one evaluation.
    pub fn new(set: PolicySet, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(set),
                pool: VmPool::new(vm_pool::DEFAULT_CAPACITY),
                timeout,
            }),
        }
    }

    /// Replace the policy set; requests already evaluating finish on the old one.
    pub fn reload(&self, new: PolicySet) {
        self.shared.current.store(Arc::new(new));
    }

    /// Revision (sha256 of the sorted policy files) of the set in force.
    pub fn revision(&self) -> String {
        self.shared.current.load().revision().to_owned()
    }

    /// Where the set in force came from (a directory or "embedded").
    pub fn origin(&self) -> String {
        self.shared.current.load().origin().to_owned()
    }

    /// Evaluation time limit.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Judge one request. Errors mean the request must be refused.
    pub fn evaluate(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.evaluate_value(input.to_value())
    }

    /// Judge an input already built with [`PolicyInput::to_value`].
    pub fn evaluate_prepared(&self, input: &Value) -> Result<Decision, PolicyError> {
        self.evaluate_value(input.clone())
    }

    /// Judge an input given as JSON (used by `keygate policy eval`).
    pub fn evaluate_json(&self, input: serde_json::Value) -> Result<Decision, PolicyError> {
        self.evaluate_value(Value::from(input))
    }

    fn evaluate_value(&self, input: Value) -> Result<Decision, PolicyError> {
        let set = self.shared.current.load_full();
        let started = Instant::now();
        let mut vm = self.shared.pool.take(set.program(), self.shared.timeout);
        vm.set_input(input);
        let outcome = vm.execute();
        self.shared.pool.give_back(vm, set.program());
        let eval_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let value = outcome.map_err(|err| vm_error(err, self.shared.timeout))?;
        let (allow, reasons) = read_decision(&value)?;
        Ok(Decision {
            allow,
            reasons,
            eval_ns,
            revision: set.revision().to_owned(),
        })
    }
}

fn vm_error(err: regorus::rvm::vm::VmError, limit: Duration) -> PolicyError {
    match err {
        regorus::rvm::vm::VmError::TimeLimitExceeded { .. } => PolicyError::Timeout(limit),
        other => PolicyError::Eval(other.to_string()),
    }
}

/// Read `{"allow": bool, "deny": set of strings}`; anything else is a policy error.
fn read_decision(value: &Value) -> Result<(bool, Vec<String>), PolicyError> {
    let object = value
        .as_object()
        .map_err(|_| PolicyError::BadResult("the decision is undefined".into()))?;
    let allow = match object.get(&Value::from("allow")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Undefined) | None => false,
        Some(other) => {
            return Err(PolicyError::BadResult(format!(
                "`allow` must be a boolean, got {other}"
            )));
        }
    };
    let reasons = match object.get(&Value::from("deny")) {
        Some(Value::Set(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.to_string()),
                other => Err(PolicyError::BadResult(format!(
                    "`deny` must hold strings, got {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Undefined) | None => Vec::new(),
        Some(other) => {
            return Err(PolicyError::BadResult(format!(
                "`deny` must be a set (use `deny contains msg if ...`), got {other}"
            )));
        }
    };
    Ok((allow, reasons))
}

#[cfg(test)]
mod tests;
