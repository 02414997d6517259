//! The rule files against promtool: they load (`check rules`), their unit tests pass
//! (`test rules`), every alert is tested both firing and quiet, and has a runbook section.

use std::collections::BTreeSet;

use crate::support::prometheus::{deploy_dir, describe, tool};

#[test]
fn rule_files_pass_promtool_check_and_their_unit_tests() {
    let dir = deploy_dir().join("prometheus");
    let files: Vec<String> = super::rule_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let check = tool("promtool", &args, &dir);
    assert!(check.status.success(), "{}", describe(&check));

    let tests: Vec<String> = super::rule_test_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let unit = tool("promtool", &args, &dir);
    assert!(unit.status.success(), "{}", describe(&unit));
}

/// An `alert_rule_test` case with `exp_alerts` tests the alert firing; one without, quiet.
#[test]
fn every_alert_has_a_unit_test_firing_and_one_quiet() {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for file in super::rule_test_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(at) = line.find("alertname: ") else {
                continue;
            };
            let name: String = line[at + "alertname: ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let next = lines[i + 1..].iter().find(|l| !l.is_empty());
            if next.is_some_and(|l| l.starts_with("exp_alerts:")) {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for alert in super::alert_names() {
        assert!(firing.contains(&alert), "no unit test of {alert} firing");
        assert!(
            quiet.contains(&alert),
            "no unit test of {alert} staying quiet"
        );
    }
}

/// Each alert's runbook link names a section of docs/runbook.md that exists, and each section
/// says what the alert means, what to check and what to do.
#[test]
fn every_alert_has_a_runbook_section() {
    let runbook =
        std::fs::read_to_string(deploy_dir().join("../docs/runbook.md")).unwrap_or_default();
    let alerts_text: String = super::rule_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for alert in super::alert_names() {
        let url = super::runbook_url(&alert);
        assert!(
            alerts_text.contains(&format!("runbook_url: {url}\n")),
            "{alert} links {url}? no"
        );
        let heading = format!("\n## {alert}\n");
        let start = runbook
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/runbook.md has no section {heading:?}"));
        let section = &runbook[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        for part in ["**What it means**", "**What to check**", "**What to do**"] {
            assert!(
                section.contains(part),
                "runbook section {alert} lacks {part}"
            );
        }
    }
}

/// deploy/kubernetes/monitoring/prometheusrule.yaml holds exactly the rule files' groups (as
/// scripts/prometheus-rule.sh writes them: each file's lines after `groups:`, indented by two).
#[test]
fn prometheus_rule_manifest_holds_the_rule_files() {
    let mut expected = String::new();
    for file in super::rule_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let (_, groups) = text.split_once("\ngroups:\n").unwrap();
        for line in groups.lines() {
            if !line.is_empty() {
                expected.push_str("  ");
                expected.push_str(line);
            }
            expected.push('\n');
        }
    }
    let manifest =
        std::fs::read_to_string(deploy_dir().join("kubernetes/monitoring/prometheusrule.yaml"))
            .unwrap();
    let (head, groups) = manifest.split_once("\nspec:\n  groups:\n").unwrap();
    assert!(head.contains("kind: PrometheusRule"), "{head}");
    assert!(
        groups == expected,
        "prometheusrule.yaml is out of date: run scripts/prometheus-rule.sh"
    );
}
