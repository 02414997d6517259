//! A checked policy set: files read, parsed (v1, or safe v0), compiled to an RVM program, its own
//! `*_test.rego` tests passed, and a revision hash computed.

use std::path::Path;
use std::sync::Arc;

use regorus::Engine;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use sha2::{Digest, Sha256};

use super::testing::{self, TestReport};
use super::{DECISION_RULE, PolicyError, embedded, syntax};

/// The synthetic module that gives one entry point for the whole decision.
const DECISION_MODULE: &str = "package keygate_internal_decision

import rego.v1

default allow := false

allow := data.keygate.allow

default deny := set()

deny := data.keygate.deny

decision := {\"allow\": allow, \"deny\": deny}
";

/// One policy source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// File name as shown in errors (relative to the policy directory).
    pub name: String,
    /// The Rego source.
    pub text: String,
}

impl PolicyFile {
    /// Whether this is a test file (`*_test.rego`), loaded only to run tests.
    pub fn is_test(&self) -> bool {
        self.name.ends_with("_test.rego")
    }
}

/// A policy set ready to evaluate.
pub struct PolicySet {
    origin: String,
    revision: String,
    files: Vec<PolicyFile>,
    engine: Engine,
    program: Arc<Program>,
}

impl PolicySet {
    /// The embedded default policy.
    pub fn embedded() -> Result<Self, PolicyError> {
        Self::checked("embedded", embedded::default_files())
    }

    /// Every `*.rego` file directly in `dir` (not in sub-directories), tests run.
    pub fn from_dir(dir: &Path) -> Result<Self, PolicyError> {
        Self::checked(&dir.display().to_string(), read_dir(dir)?)
    }

    /// Build from `files`, refusing the set if it does not compile or its tests fail.
    pub fn checked(origin: &str, files: Vec<PolicyFile>) -> Result<Self, PolicyError> {
        let set = Self::compile(origin, files)?;
        let report = testing::run(&set.files)?;
        if report.failed() > 0 {
            return Err(PolicyError::TestsFailed(report.failure_summary()));
        }
        Ok(set)
    }

    /// Build from `files` without running their tests.
    pub fn compile(origin: &str, mut files: Vec<PolicyFile>) -> Result<Self, PolicyError> {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut engine = Engine::new();
        let mut any_policy = false;
        for file in files.iter().filter(|f| !f.is_test()) {
            syntax::add_file(&mut engine, file)?;
            any_policy = true;
        }
        if !any_policy {
            return Err(PolicyError::Empty(origin.into()));
        }
        engine
            .add_policy(
                "keygate_internal_decision.rego".into(),
                DECISION_MODULE.into(),
            )
            .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
        let compiled = engine
            .compile_with_entrypoint(&DECISION_RULE.into())
            .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
        let program = Compiler::compile_from_policy(&compiled, &[DECISION_RULE])
            .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
        Ok(Self {
            origin: origin.to_owned(),
            revision: revision(&files),
            files,
            engine,
            program,
        })
    }

    /// Run the set's own `test_*` rules on the interpreter.
    pub fn run_tests(&self) -> Result<TestReport, PolicyError> {
        testing::run(&self.files)
    }

    /// Where the set came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// sha256 over the sorted file names and contents, as lowercase hex.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The source files, sorted by name.
    pub fn files(&self) -> &[PolicyFile] {
        &self.files
    }

    /// The compiled RVM program (entry point: the decision object).
    pub(crate) fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// A tree-interpreter engine with the policies loaded (for comparison and benches).
    pub fn interpreter(&self) -> Engine {
        self.engine.clone()
    }

    /// The rule the interpreter evaluates for the full decision.
    pub fn decision_rule() -> &'static str {
        DECISION_RULE
    }
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("origin", &self.origin)
            .field("revision", &self.revision)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

/// Read the `*.rego` files directly in `dir`.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<PolicyFile>, PolicyError> {
    let read_err = |path: &Path, source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let path = entry.map_err(|e| read_err(dir, e))?.path();
        if !path.is_file() || path.extension().and_then(|e| e.to_str()) != Some("rego") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push(PolicyFile { name, text });
    }
    if files.iter().all(PolicyFile::is_test) {
        return Err(PolicyError::Empty(dir.to_owned()));
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// sha256 over `name NUL length NUL text` of each file in name order.
fn revision(sorted: &[PolicyFile]) -> String {
    let mut hasher = Sha256::new();
    for file in sorted {
        hasher.update(file.name.as_bytes());
        hasher.update([0]);
        hasher.update(file.text.len().to_string().as_bytes());
        hasher.update([0]);
        hasher.update(file.text.as_bytes());
    }
    hex::encode(hasher.finalize())
}
