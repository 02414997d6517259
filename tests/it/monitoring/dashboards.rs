//! The Grafana dashboards are well formed: unique uids, titles and panel ids; every panel
//! that queries names the `datasource` variable and has an expression; the queries use only
//! keygate's metrics and recording rules.

use std::collections::BTreeSet;

#[test]
fn dashboards_are_well_formed_and_query_only_keygate() {
    let mut uids = BTreeSet::new();
    for (file, d) in super::dashboards() {
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_owned()),
            "{file}: uid"
        );
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("keygate"))
        );
        let variables = d["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{file}: no datasource variable"
        );
        let mut ids = BTreeSet::new();
        for p in super::panels(&d) {
            let title = p["title"].as_str().unwrap();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: panel id of {title}"
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some(),
                "{file}: {title} has no gridPos"
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}: {title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title} queries nothing");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title}");
                let expr = t["expr"].as_str().unwrap();
                assert!(!expr.is_empty(), "{file}: {title}");
            }
        }
    }
    // Every metric name a panel reads is keygate's own or a keygate recording rule.
    for (file, title, expr) in super::panel_queries() {
        for name in metric_names(&expr) {
            assert!(
                name.starts_with("keygate_") || name.starts_with("keygate:"),
                "{file}: {title} reads {name} in {expr}"
            );
        }
    }
}

/// The metric names an expression selects: identifiers (with `:`) that are not functions,
/// keywords or label names (followed by `(`, inside `{}` or a `by`/`on` list).
fn metric_names(expr: &str) -> Vec<String> {
    const WORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
    ];
    // Aggregations may be followed by `by (...)` before their parenthesis.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = Vec::new();
    let (mut depth_braces, mut depth_lists) = (0, 0);
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut in_string = false;
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            in_string = c != '"';
            i += 1;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '(' if WORDS.contains(&last_word.as_str()) => depth_lists += 1,
            ')' if depth_lists > 0 => depth_lists -= 1,
            '[' => {
                // Skip a range or subquery duration.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            _ if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest = chars[i..].iter().find(|c| !c.is_whitespace());
                let is_call = rest == Some(&'(');
                let keyword =
                    WORDS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str());
                if depth_braces == 0 && depth_lists == 0 && !is_call && !keyword {
                    names.push(word.clone());
                }
                last_word = word;
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            last_word.clear();
        }
        i += 1;
    }
    names
}

#[test]
fn metric_names_finds_selectors_not_functions_or_labels() {
    assert_eq!(
        metric_names(
            r#"sum by (namespace, job) (rate(keygate_x_total{a="b:c"}[5m])) / on () group_left () (1 - keygate:y:z) and time() - up"#
        ),
        ["keygate_x_total", "keygate:y:z", "up"]
    );
}
