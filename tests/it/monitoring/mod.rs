//! The operations pack (deploy/prometheus/, deploy/grafana/, docs/runbook.md) against a real
//! Prometheus: the rule files pass `promtool check rules` and their unit tests, every alert
//! has a runbook section and is tested firing and quiet, the dashboards are well formed, and
//! a Prometheus scraping the real binary evaluates every recording rule and every dashboard
//! panel's expression to data.
//!
//! The rule files are read back from Prometheus's own `/api/v1/rules` (no YAML parser); the
//! few facts the static tests need (alert names, unit-test cases) come from the files' simple
//! one-key-per-line shape.

mod dashboards;
mod e2e;
mod rules;

use std::path::PathBuf;

use serde_json::Value;

use crate::support::prometheus::deploy_dir;

/// The rule files (`deploy/prometheus/*.yml`), sorted.
fn rule_files() -> Vec<PathBuf> {
    yml_files(deploy_dir().join("prometheus"), ".yml")
}

/// The promtool unit-test files (`deploy/prometheus/tests/*.test.yml`), sorted.
fn rule_test_files() -> Vec<PathBuf> {
    yml_files(deploy_dir().join("prometheus/tests"), ".test.yml")
}

fn yml_files(dir: PathBuf, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {suffix} files in {}", dir.display());
    files
}

/// Every alert name in the rule files (`- alert: Name` lines).
fn alert_names() -> Vec<String> {
    let mut names = Vec::new();
    for file in rule_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            if let Some(name) = line.trim().strip_prefix("- alert: ") {
                names.push(name.trim().to_owned());
            }
        }
    }
    assert!(!names.is_empty(), "no alerts in the rule files");
    names
}

/// The runbook link an alert's annotations must carry.
fn runbook_url(alert: &str) -> String {
    format!(
        "https://github.com/keygate/keygate/blob/main/docs/runbook.md#{}",
        alert.to_lowercase()
    )
}

/// The dashboards (`deploy/grafana/*.json`): (file name, parsed JSON).
fn dashboards() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(deploy_dir().join("grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in deploy/grafana");
    out
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// Every query of every dashboard: (dashboard file, panel title, expression).
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default().to_owned();
                let title = p["title"].as_str().unwrap_or_default().to_owned();
                out.push((file.clone(), title, expr));
            }
        }
    }
    out
}
