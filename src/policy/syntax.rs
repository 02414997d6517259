//! Loading one policy file as Rego v1, or as Rego v0 when v1 does not parse, refusing the v0
//! fail-open pitfall: a v0 file that uses `if` (or `contains`, `in`, `every`) without importing it
//! parses with only a warning on stderr and can make `allow` unconditionally true.

use regorus::Engine;
use regorus::unstable::{Lexer, Source, TokenKind};

use super::PolicyError;
use super::set::PolicyFile;

/// Keywords that Rego v0 reads as identifiers unless imported.
const FUTURE_KEYWORDS: [&str; 4] = ["contains", "every", "if", "in"];

/// Which Rego dialect a file was loaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Rego v1 (regorus's default).
    V1,
    /// Rego v0, with every future keyword it uses imported.
    V0,
}

/// Add `file` to `engine`, as v1 if it parses so, else as v0 if that is safe.
pub(crate) fn add_file(engine: &mut Engine, file: &PolicyFile) -> Result<Syntax, PolicyError> {
    engine.set_rego_v0(false);
    let v1_error = match engine.add_policy(file.name.clone(), file.text.clone()) {
        Ok(_) => return Ok(Syntax::V1),
        Err(err) => err,
    };
    let scan = scan(file)?;
    if scan.imports_rego_v1 {
        return Err(PolicyError::Compile(format!("{v1_error:#}")));
    }
    if let Some(unsafe_use) = scan.unimported_keyword {
        return Err(unsafe_use);
    }
    engine.set_rego_v0(true);
    let v0_result = engine.add_policy(file.name.clone(), file.text.clone());
    engine.set_rego_v0(false);
    match v0_result {
        Ok(_) => Ok(Syntax::V0),
        Err(v0_error) => Err(PolicyError::Compile(format!(
            "{v1_error:#}\n(not valid Rego v0 either: {v0_error:#})"
        ))),
    }
}

struct Scan {
    imports_rego_v1: bool,
    unimported_keyword: Option<PolicyError>,
}

/// Tokenize `file` (comments and strings skipped by the lexer) and find the first future keyword
/// used without an import.
fn scan(file: &PolicyFile) -> Result<Scan, PolicyError> {
    let source = Source::from_contents(file.name.clone(), file.text.clone())
        .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
    let mut lexer = Lexer::new(&source);
    let mut tokens = Vec::new();
    loop {
        let token = lexer
            .next_token()
            .map_err(|err| PolicyError::Compile(format!("{err:#}")))?;
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push(token);
    }
    let texts: Vec<&str> = tokens.iter().map(|t| t.1.text()).collect();
    let mut imported: Vec<&str> = Vec::new();
    let mut imports_rego_v1 = false;
    for (i, window) in texts.windows(3).enumerate() {
        match window {
            ["import", "rego", "."] if texts.get(i + 3) == Some(&"v1") => imports_rego_v1 = true,
            ["import", "future", "."] if texts.get(i + 3) == Some(&"keywords") => {
                match (texts.get(i + 4), texts.get(i + 5)) {
                    (Some(&"."), Some(keyword)) => imported.push(keyword),
                    _ => imported.extend(FUTURE_KEYWORDS),
                }
            }
            _ => {}
        }
    }
    if imports_rego_v1 {
        imported.extend(FUTURE_KEYWORDS);
    }
    let unimported_keyword = tokens
        .iter()
        .filter(|t| t.0 == TokenKind::Ident)
        .find(|t| FUTURE_KEYWORDS.contains(&t.1.text()) && !imported.contains(&t.1.text()))
        .map(|t| PolicyError::FailOpenV0 {
            file: file.name.clone(),
            line: t.1.line,
            col: t.1.col,
            keyword: t.1.text().to_owned(),
        });
    Ok(Scan {
        imports_rego_v1,
        unimported_keyword,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::Value;

    fn file(text: &str) -> PolicyFile {
        PolicyFile {
            name: "p.rego".into(),
            text: text.into(),
        }
    }

    fn allow_on_empty_input(text: &str) -> Result<(Syntax, Value), PolicyError> {
        let mut engine = Engine::new();
        let syntax = add_file(&mut engine, &file(text))?;
        engine.set_input(Value::new_object());
        let allow = engine.eval_rule("data.keygate.allow".into()).unwrap();
        Ok((syntax, allow))
    }

    #[test]
    fn v1_loads_as_v1() {
        let (syntax, allow) = allow_on_empty_input(
            "package keygate\nimport rego.v1\ndefault allow := false\nallow if input.x == 1\n",
        )
        .unwrap();
        assert_eq!((syntax, allow), (Syntax::V1, Value::from(false)));
    }

    #[test]
    fn v0_with_imports_loads_as_v0() {
        let text = "package keygate\nimport future.keywords.if\nimport future.keywords.in\n\
                    default allow = false\ndeny[msg] { msg := \"no\" }\nallow if { input.x in [1] }\n";
        let (syntax, allow) = allow_on_empty_input(text).unwrap();
        assert_eq!((syntax, allow), (Syntax::V0, Value::from(false)));
    }

    #[test]
    fn v0_with_all_future_keywords_loads() {
        let text = "package keygate\nimport future.keywords\ndefault allow = false\n\
                    deny[msg] { msg := \"no\" }\nallow if { input.x in [1] }\n";
        assert_eq!(allow_on_empty_input(text).unwrap().0, Syntax::V0);
    }

    /// The crate-notes pitfall: v0 without `import future.keywords.if` reads `allow if {` as a
    /// body-less (always true) `allow` plus a rule named `if`. It must be refused.
    #[test]
    fn v0_fail_open_pitfall_is_refused() {
        let text = "package keygate\ndefault allow = false\ndeny[msg] { msg := \"no\" }\n\
                    allow if {\n  input.role == \"admin\"\n}\n";
        let err = allow_on_empty_input(text).unwrap_err();
        match err {
            PolicyError::FailOpenV0 { line, keyword, .. } => {
                assert_eq!((line, keyword.as_str()), (4, "if"));
            }
            other => panic!("unexpected {other}"),
        }
        // Proof that regorus itself would have let it through, allowing everything:
        let mut engine = Engine::new();
        engine.set_rego_v0(true);
        engine.add_policy("p.rego".into(), text.into()).unwrap();
        engine.set_input(Value::new_object());
        assert_eq!(
            engine.eval_rule("data.keygate.allow".into()).unwrap(),
            Value::from(true)
        );
    }

    #[test]
    fn keyword_in_comment_or_string_is_fine() {
        let text = "package keygate\n# allow if something\ndefault allow = false\n\
                    deny[msg] { msg := \"refused if not admin\" }\n";
        assert_eq!(allow_on_empty_input(text).unwrap().0, Syntax::V0);
    }

    #[test]
    fn broken_v1_reports_file_and_line() {
        let err =
            allow_on_empty_input("package keygate\nimport rego.v1\nallow if {\n  input.x ==\n}\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("p.rego:"), "{text}");
    }
}
