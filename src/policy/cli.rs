//! Commands for policy authors: `keygate policy test|eval|check`. Exit codes: 0 success, 1 a
//! failure was found. (`keygate audit` is in cli/audit.rs.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::embedded;
use super::input_check;
pub use super::input_check::InputProblems;
use super::set::{self, PolicyFile, PolicySet};
use super::testing::{self, TestReport};
use super::{DEFAULT_EVAL_TIMEOUT, PolicyEngine};

/// `keygate policy ...`
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// Policy subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Run every `test_*` rule (like `opa test`); default: the embedded policies and examples.
    Test(TestArgs),
    /// Evaluate one input (JSON file) and print the decision and reasons as JSON.
    Eval(EvalArgs),
    /// Compile a policy directory and run its tests; report errors with file and line.
    Check(CheckArgs),
}

/// `keygate policy test [DIR] [-v]`
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Policy directory; each directory below it holding `*.rego` files is tested as its own set.
    pub dir: Option<PathBuf>,
    /// Show the source, prints and result of failing tests.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `keygate policy eval --input FILE [--policy-dir DIR]`
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The policy input as JSON (see xks-spec/policy-input.schema.json).
    #[arg(long)]
    pub input: PathBuf,
    /// Policy directory (default: the embedded policy).
    #[arg(long)]
    pub policy_dir: Option<PathBuf>,
    /// Evaluate the input even when it lacks fields of the policy input or has them of the
    /// wrong type (by default that is an error, exit 64).
    #[arg(long)]
    pub no_input_check: bool,
}

/// `keygate policy check DIR`
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy directory.
    pub dir: PathBuf,
}

/// Run a `keygate policy` subcommand, writing its report to `out`.
pub fn run_policy(args: &PolicyArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match &args.command {
        PolicyCommand::Test(a) => run_test(a, out),
        PolicyCommand::Eval(a) => run_eval(a, out),
        PolicyCommand::Check(a) => run_check(a, out),
    }
}

/// `keygate policy test`: one line per test, then `N passed, M failed`.
pub fn run_test(args: &TestArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let sets: Vec<(String, Vec<PolicyFile>)> = match &args.dir {
        None => embedded::all()
            .map(|s| (s.name.to_owned(), s.to_files()))
            .collect(),
        Some(dir) => policy_dirs(dir)?,
    };
    let (mut passed, mut failed) = (0, 0);
    for (name, files) in sets {
        match testing::run(&files) {
            Ok(report) => {
                print_report(&name, &report, args.verbose, out)?;
                passed += report.passed();
                failed += report.failed();
            }
            Err(err) => {
                writeln!(out, "ERROR {name}: {err}")?;
                failed += 1;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(exit(failed == 0))
}

fn print_report(
    set: &str,
    report: &TestReport,
    verbose: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // `policies/` names the set; its files print as `policies/x_test.rego`, one slash.
    let set_dir: PathBuf = Path::new(set).components().collect();
    for r in &report.results {
        let verdict = if r.passed { "PASS" } else { "FAIL" };
        let file = set_dir.join(&r.file);
        write!(out, "{verdict} {}:{} {}", file.display(), r.line, r.rule)?;
        match &r.detail {
            Some(detail) => writeln!(out, ": {detail}")?,
            None => writeln!(out)?,
        }
        if verbose && !r.passed {
            for l in r.source.lines() {
                writeln!(out, "    | {l}")?;
            }
            for p in &r.prints {
                writeln!(out, "    print: {p}")?;
            }
        }
    }
    Ok(())
}

/// `dir` itself (when it holds policies) and every directory below it that does, each a set.
fn policy_dirs(dir: &Path) -> anyhow::Result<Vec<(String, Vec<PolicyFile>)>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("cannot read {}", current.display()))?;
        let mut has_rego = false;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rego") {
                has_rego = true;
            }
        }
        if has_rego {
            let name = current
                .strip_prefix(dir)
                .ok()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(&current)
                .display()
                .to_string();
            found.push((name, set::read_dir(&current)?));
        }
    }
    anyhow::ensure!(!found.is_empty(), "no *.rego files under {}", dir.display());
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// `keygate policy eval`: the decision as JSON. An input not shaped like the policy input
/// is an [`InputProblems`] error (exit 64) unless `--no-input-check` is given.
pub fn run_eval(args: &EvalArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let input: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", args.input.display()))?;
    if !args.no_input_check {
        let problems = input_check::problems(&input);
        if !problems.is_empty() {
            return Err(InputProblems {
                file: args.input.clone(),
                problems,
            }
            .into());
        }
    }
    let set = match &args.policy_dir {
        Some(dir) => PolicySet::from_dir(dir)?,
        None => PolicySet::embedded()?,
    };
    let engine = PolicyEngine::new(set, DEFAULT_EVAL_TIMEOUT);
    let decision = engine.evaluate_json(input)?;
    let report = serde_json::json!({
        "allow": decision.allow,
        "deny": decision.reasons,
        "revision": decision.revision,
        "eval_ns": decision.eval_ns,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `keygate policy check`: compile, then run the set's own tests.
pub fn run_check(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let files = set::read_dir(&args.dir)?;
    let set = match PolicySet::compile(&args.dir.display().to_string(), files) {
        Ok(set) => set,
        Err(err) => {
            writeln!(out, "error: {err}")?;
            return Ok(exit(false));
        }
    };
    let report = set.run_tests()?;
    if report.failed() > 0 {
        print_report(&args.dir.display().to_string(), &report, true, out)?;
        writeln!(
            out,
            "error: {} of the policy's own tests failed",
            report.failed()
        )?;
        return Ok(exit(false));
    }
    let policies = set.files().iter().filter(|f| !f.is_test()).count();
    writeln!(
        out,
        "ok: {policies} policy files, {} tests passed, revision {}",
        report.passed(),
        set.revision()
    )?;
    Ok(exit(true))
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
