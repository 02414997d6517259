//! An `opa test` equivalent: every `test_*` rule of the `*_test.rego` files is evaluated on the
//! tree interpreter (tests use `with`, which the VM cannot compile); `true` passes, anything else
//! (false, undefined, an error) fails.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::time::Duration;

use regorus::Engine;
use regorus::unstable::{Lexer, Source, TokenKind};
use regorus::utils::limits::ExecutionTimerConfig;

use super::PolicyError;
use super::set::PolicyFile;
use super::syntax;

/// Time limit for one test rule.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(5);

/// The outcome of one test rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `data.<package>.<rule>`.
    pub rule: String,
    /// The test file.
    pub file: String,
    /// Line of the rule head.
    pub line: u32,
    /// Whether the rule evaluated to `true`.
    pub passed: bool,
    /// What it evaluated to, or the error, when it failed.
    pub detail: Option<String>,
    /// Output of `print()` calls made by the test.
    pub prints: Vec<String>,
    /// The rule's source text (shows the `with input as ...` of a failure).
    pub source: String,
}

/// All results of a run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// One entry per test rule, in file order.
    pub results: Vec<TestResult>,
}

impl TestReport {
    /// Number of passing tests.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// Number of failing tests.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// `rule (file:line): detail` for each failure, joined by "; ".
    pub fn failure_summary(&self) -> String {
        let mut out = String::new();
        for r in self.results.iter().filter(|r| !r.passed) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "{} ({}:{})", r.rule, r.file, r.line);
            if let Some(detail) = &r.detail {
                let _ = write!(out, ": {detail}");
            }
        }
        out
    }
}

/// Load `files` (policies and tests) into one interpreter and run every test rule.
pub fn run(files: &[PolicyFile]) -> Result<TestReport, PolicyError> {
    let mut engine = Engine::new();
    for file in files {
        syntax::add_file(&mut engine, file)?;
    }
    engine.set_gather_prints(true);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: TEST_TIME_LIMIT,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });
    let mut report = TestReport::default();
    for file in files.iter().filter(|f| f.is_test()) {
        for (rule, line) in discover(file)? {
            report.results.push(run_one(&engine, file, rule, line));
        }
    }
    Ok(report)
}

fn run_one(template: &Engine, file: &PolicyFile, rule: String, line: u32) -> TestResult {
    let mut engine = template.clone();
    let outcome = engine.eval_rule(rule.clone());
    let prints = engine.take_prints().unwrap_or_default();
    let (passed, detail) = match outcome {
        Ok(regorus::Value::Bool(true)) => (true, None),
        Ok(regorus::Value::Undefined) => (false, Some("undefined".to_owned())),
        Ok(other) => (false, Some(format!("evaluated to {other}"))),
        Err(err) => (false, Some(format!("error: {err:#}"))),
    };
    TestResult {
        rule,
        file: file.name.clone(),
        line,
        passed,
        detail,
        prints,
        source: rule_source(&file.text, line),
    }
}

/// The test rules of a file: `(data.<package>.<name>, line)`, each name once.
fn discover(file: &PolicyFile) -> Result<Vec<(String, u32)>, PolicyError> {
    let source = Source::from_contents(file.name.clone(), file.text.clone())
        .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
    let mut lexer = Lexer::new(&source);
    let mut depth = 0i64;
    let mut package = String::new();
    let mut package_line = None;
    let mut found: Vec<(String, u32)> = Vec::new();
    loop {
        let token = lexer
            .next_token()
            .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
        let text = token.1.text();
        match token.0 {
            TokenKind::Eof => break,
            // Count the brackets a token holds, not only lone symbols: the lexer gives `set(`
            // as one identifier, and its `)` must not leave the depth one level short.
            TokenKind::Symbol | TokenKind::Ident => {
                for c in text.chars() {
                    match c {
                        '{' | '[' | '(' => depth += 1,
                        '}' | ']' | ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        if package_line == Some(token.1.line) {
            package.push_str(text);
            continue;
        }
        if token.0 == TokenKind::Ident && text == "package" && depth == 0 {
            package_line = Some(token.1.line);
            continue;
        }
        let is_test_head = token.0 == TokenKind::Ident
            && depth == 0
            && token.1.col == 1
            && text.starts_with("test_");
        if is_test_head {
            let rule = format!("data.{package}.{text}");
            if !found.iter().any(|(r, _)| *r == rule) {
                found.push((rule, token.1.line));
            }
        }
    }
    Ok(found)
}

/// Source lines of the rule starting at `line`, up to its closing brace at column 1.
fn rule_source(text: &str, line: u32) -> String {
    let start = usize::try_from(line).unwrap_or(1).saturating_sub(1);
    let mut out = String::new();
    for (i, l) in text.lines().skip(start).take(60).enumerate() {
        out.push_str(l);
        out.push('\n');
        let single_line = i == 0 && !l.trim_end().ends_with('{');
        if single_line || (i > 0 && l.starts_with('}')) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(test: &str) -> Vec<PolicyFile> {
        vec![
            PolicyFile {
                name: "policy.rego".into(),
                text: "package keygate\nimport rego.v1\ndefault allow := false\n\
                       allow if input.operation == \"Encrypt\"\n"
                    .into(),
            },
            PolicyFile {
                name: "policy_test.rego".into(),
                text: test.into(),
            },
        ]
    }

    #[test]
    fn passing_failing_and_erroring_tests_are_told_apart() {
        let report = run(&files(
            "package keygate_test\nimport rego.v1\n\
             test_encrypt_allowed if {\n  data.keygate.allow with input as {\"operation\": \"Encrypt\"}\n}\n\
             test_decrypt_allowed if {\n  print(\"checking decrypt\")\n  data.keygate.allow with input as {\"operation\": \"Decrypt\"}\n}\n\
             test_error if {\n  1 / 0\n}\n\
             helper if true\n",
        ))
        .unwrap();
        let names: Vec<_> = report.results.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(
            names,
            [
                "data.keygate_test.test_encrypt_allowed",
                "data.keygate_test.test_decrypt_allowed",
                "data.keygate_test.test_error"
            ]
        );
        assert_eq!((report.passed(), report.failed()), (1, 2));
        let decrypt = &report.results[1];
        assert_eq!(decrypt.line, 6);
        assert!(decrypt.source.contains("\"Decrypt\""), "{}", decrypt.source);
        assert!(
            decrypt
                .prints
                .iter()
                .any(|p| p.contains("checking decrypt"))
        );
        assert!(report.failure_summary().contains("policy_test.rego:6"));
    }

    #[test]
    fn nested_test_names_are_not_rules() {
        let found = discover(&PolicyFile {
            name: "x_test.rego".into(),
            text: "package a.b\ntest_one if {\n  test_two := 1\n  test_two == 1\n}\n".into(),
        })
        .unwrap();
        assert_eq!(found, [("data.a.b.test_one".to_owned(), 2)]);
    }
}

#[cfg(test)]
mod discovery_regressions {
    use super::*;

    /// `set(` is lexed as one identifier: its brackets must still balance, or every test rule
    /// after it was silently skipped.
    #[test]
    fn tests_after_an_empty_set_are_found() {
        let found = discover(&PolicyFile {
            name: "x_test.rego".into(),
            text: "package p\nimport rego.v1\ntest_one if {\n  count(set()) == 0\n}\n\
                   test_two if {\n  {x | some x in []} == set()\n}\n"
                .into(),
        })
        .unwrap();
        let names: Vec<_> = found.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["data.p.test_one", "data.p.test_two"]);
    }
}
