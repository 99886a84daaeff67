//! The Prometheus rules in `alerts/` and their unit tests in `alerts/tests/`.
//!
//! [`check`] runs `promtool check rules` on every rule file and
//! `promtool test rules` on every test file, then lints the rules against
//! the project's conventions: every alert is named `FraiseqlEdge…` in
//! CamelCase, once; its `severity` label is `critical` (pages) or `warning`
//! (opens a ticket); it has a `summary`, a `description` and a `runbook_url`
//! pointing at its page in the runbook book, and that page exists; the test
//! files have, for every alert, a case where it fires and one where it does
//! not. There must be at least [`MIN_ALERTS`] alerts.
//!
//! [`alert_names`] gives the other checks (runbooks, manifests) the list of
//! alerts without re-reading the rule files themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{cmd, paths};

/// Every alert's name starts with this.
pub const ALERT_PREFIX: &str = "FraiseqlEdge";

/// An alert's `runbook_url` is this followed by `<AlertName>.html`.
pub const RUNBOOK_URL_BASE: &str = "https://fraiseql.github.io/fraiseql-edge/runbooks/alerts/";

/// The fewest alerts the rule files may hold (the product plan's count).
pub const MIN_ALERTS: usize = 20;

/// The values the `severity` label may take: `critical` pages someone,
/// `warning` opens a ticket.
const SEVERITIES: [&str; 2] = ["critical", "warning"];

/// The annotations every alert carries.
const ANNOTATIONS: [&str; 3] = ["summary", "description", "runbook_url"];

/// A Prometheus rule file: only the fields the lint reads.
#[derive(Debug, Deserialize)]
struct RuleFile {
    #[serde(default)]
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// An alerting rule (`alert`) or a recording rule (`record`).
#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A `promtool test rules` file: only the alert assertions.
#[derive(Debug, Deserialize)]
struct TestFile {
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

/// One assertion: at `eval_time`, exactly `exp_alerts` of `alertname` fire.
#[derive(Debug, Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml_ng::Value>,
}

/// `alerts/`.
fn alerts_dir() -> PathBuf {
    paths::root().join("alerts")
}

/// Where the runbook page of an alert lives.
fn runbook_page(name: &str) -> PathBuf {
    paths::root()
        .join("runbooks")
        .join("src")
        .join("alerts")
        .join(format!("{name}.md"))
}

/// The YAML files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The rule files: `alerts/*.yaml`.
pub fn rule_files() -> Result<Vec<PathBuf>> {
    let files = yaml_files(&alerts_dir())?;
    if files.is_empty() {
        bail!("no rule files (*.yaml) in {}", alerts_dir().display());
    }
    Ok(files)
}

/// The unit-test files: `alerts/tests/*.yaml`.
pub fn test_files() -> Result<Vec<PathBuf>> {
    let dir = alerts_dir().join("tests");
    let files = yaml_files(&dir)?;
    if files.is_empty() {
        bail!("no promtool test files (*.yaml) in {}", dir.display());
    }
    Ok(files)
}

/// Reads and parses a YAML file.
fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every rule file, parsed, with its path relative to the workspace root.
fn load_rules() -> Result<Vec<(String, RuleFile)>> {
    rule_files()?
        .iter()
        .map(|path| Ok((display(path), read_yaml(path)?)))
        .collect()
}

/// Every test file, parsed.
fn load_tests() -> Result<Vec<(String, TestFile)>> {
    test_files()?
        .iter()
        .map(|path| Ok((display(path), read_yaml(path)?)))
        .collect()
}

/// A path relative to the workspace root, for messages.
fn display(path: &Path) -> String {
    let root = paths::root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The names of every alert in the rule files, in file order.
pub fn alert_names() -> Result<Vec<String>> {
    Ok(names(&load_rules()?))
}

fn names(files: &[(String, RuleFile)]) -> Vec<String> {
    files
        .iter()
        .flat_map(|(_, file)| &file.groups)
        .flat_map(|group| &group.rules)
        .filter_map(|rule| rule.alert.clone())
        .collect()
}

/// The `alerts` part of `cargo xtask ops-check`.
pub fn check() -> Result<()> {
    let promtool = which::which("promtool").context(
        "promtool is not on PATH: `cargo xtask setup` installs it (Debian's prometheus package)",
    )?;
    let rule_files = rule_files()?;
    let test_files = test_files()?;

    let mut failed = Vec::new();
    let mut check_rules = Command::new(&promtool);
    check_rules
        .args(["check", "rules"])
        .args(rule_files.iter().map(|path| display(path)))
        .current_dir(paths::root());
    if let Err(e) = cmd::run(&mut check_rules) {
        failed.push(format!("{e:#}"));
    }
    let mut test_rules = Command::new(&promtool);
    test_rules
        .args(["test", "rules"])
        .args(test_files.iter().map(|path| display(path)))
        .current_dir(paths::root());
    if let Err(e) = cmd::run(&mut test_rules) {
        failed.push(format!("{e:#}"));
    }

    let rules = load_rules()?;
    let tests = load_tests()?;
    let mut problems = lint_rules(&rules);
    let names = alert_names()?;
    if names.len() < MIN_ALERTS {
        problems.push(format!(
            "{} alerts, the operations package needs at least {MIN_ALERTS}",
            names.len()
        ));
    }
    problems.extend(lint_tests(&names, &tests));
    problems.extend(
        names
            .iter()
            .map(|name| (name, runbook_page(name)))
            .filter(|(_, page)| !page.is_file())
            .map(|(name, page)| format!("{name}: no runbook page {}", display(&page))),
    );
    if !problems.is_empty() {
        let mut msg = format!("{} problems in the alert rules:", problems.len());
        for problem in &problems {
            let _ = write!(msg, "\n  - {problem}");
        }
        failed.push(msg);
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    println!(
        "alerts: {} alerts in {} files, {} test files: ok",
        names.len(),
        rule_files.len(),
        test_files.len()
    );
    Ok(())
}

/// True for `FraiseqlEdge` followed by a CamelCase word: ASCII letters and
/// digits, starting with a capital letter.
fn is_alert_name(name: &str) -> bool {
    name.strip_prefix(ALERT_PREFIX).is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_uppercase())
            && rest.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// The conventions every alert follows; one message per breach.
fn lint_rules(files: &[(String, RuleFile)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, file) in files {
        for group in &file.groups {
            for rule in &group.rules {
                let Some(name) = &rule.alert else { continue };
                let at = format!("{path}: group {}: alert {name}", group.name);
                if !is_alert_name(name) {
                    problems.push(format!(
                        "{at}: the name is not {ALERT_PREFIX} followed by a CamelCase word"
                    ));
                }
                if !seen.insert(name.as_str()) {
                    problems.push(format!("{at}: the name is used by another alert"));
                }
                match rule.labels.get("severity") {
                    None => problems.push(format!("{at}: no severity label")),
                    Some(severity) if !SEVERITIES.contains(&severity.as_str()) => {
                        problems.push(format!(
                            "{at}: severity {severity:?} is not one of {}",
                            SEVERITIES.join(", ")
                        ));
                    }
                    Some(_) => {}
                }
                for annotation in ANNOTATIONS {
                    let present = rule
                        .annotations
                        .get(annotation)
                        .is_some_and(|text| !text.trim().is_empty());
                    if !present {
                        problems.push(format!("{at}: no {annotation} annotation"));
                    }
                }
                if let Some(summary) = rule.annotations.get("summary")
                    && summary.trim().contains('\n')
                {
                    problems.push(format!("{at}: the summary is more than one line"));
                }
                if let Some(url) = rule.annotations.get("runbook_url") {
                    let expected = format!("{RUNBOOK_URL_BASE}{name}.html");
                    if *url != expected {
                        problems.push(format!("{at}: runbook_url is {url}, not {expected}"));
                    }
                }
            }
        }
    }
    problems
}

/// Every alert is tested firing and not firing, and every test names an
/// alert that exists (a misspelt `alertname` would pass as "not firing").
fn lint_tests(names: &[String], files: &[(String, TestFile)]) -> Vec<String> {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut problems = Vec::new();
    let known: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    for (path, file) in files {
        for test in file.tests.iter().flat_map(|group| &group.alert_rule_test) {
            let name = test.alertname.as_str();
            if !known.contains(name) {
                problems.push(format!(
                    "{path}: a test of {name}, which no rule file defines"
                ));
            }
            if test.exp_alerts.is_empty() {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for name in names {
        if !firing.contains(name.as_str()) {
            problems.push(format!("{name}: no test case in which it fires"));
        }
        if !quiet.contains(name.as_str()) {
            problems.push(format!("{name}: no test case in which it does not fire"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<(String, RuleFile)> {
        vec![("test.yaml".into(), serde_yaml_ng::from_str(yaml).unwrap())]
    }

    fn lint(yaml: &str) -> Vec<String> {
        lint_rules(&rules(yaml))
    }

    /// A rule file with one alert: `severity`, then the annotations' lines.
    fn alert(name: &str, severity: &str, annotations: &str) -> String {
        format!(
            "groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: {name}
        expr: up == 0
        for: 5m
        labels:
          severity: {severity}
        annotations:
{annotations}"
        )
    }

    fn good_annotations(name: &str) -> String {
        format!(
            "          summary: The target is down.
          description: '{{{{ $labels.instance }}}} is down.'
          runbook_url: {RUNBOOK_URL_BASE}{name}.html
"
        )
    }

    #[test]
    fn a_good_alert_passes() {
        let name = "FraiseqlEdgeDown";
        let problems = lint(&alert(name, "critical", &good_annotations(name)));
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn recording_rules_are_not_alerts() {
        let name = "FraiseqlEdgeDown";
        let names = names(&rules(&alert(name, "warning", &good_annotations(name))));
        assert_eq!(names, ["FraiseqlEdgeDown"]);
    }

    #[test]
    fn a_missing_runbook_url_is_reported() {
        let name = "FraiseqlEdgeDown";
        let annotations = good_annotations(name)
            .lines()
            .filter(|line| !line.contains("runbook_url"))
            .collect::<Vec<_>>()
            .join("\n");
        let problems = lint(&alert(name, "critical", &annotations));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("no runbook_url annotation"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_runbook_url_of_another_alert_is_reported() {
        let problems = lint(&alert(
            "FraiseqlEdgeDown",
            "critical",
            &good_annotations("FraiseqlEdgeAbsent"),
        ));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("FraiseqlEdgeAbsent.html, not"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_names_are_reported() {
        for name in [
            "EdgeDown",
            "FraiseqlEdgedown",
            "FraiseqlEdge",
            "FraiseqlEdge_Down",
        ] {
            let problems = lint(&alert(name, "critical", &good_annotations(name)));
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert!(problems[0].contains("CamelCase"), "{name}: {problems:?}");
        }
    }

    #[test]
    fn a_duplicate_name_is_reported() {
        let name = "FraiseqlEdgeDown";
        let one = alert(name, "critical", &good_annotations(name));
        let mut files = rules(&one);
        files.extend(rules(&one));
        let problems = lint_rules(&files);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("used by another alert"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_bad_or_missing_severity_is_reported() {
        let name = "FraiseqlEdgeDown";
        let problems = lint(&alert(name, "page", &good_annotations(name)));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(r#"severity "page" is not one of"#),
            "{problems:?}"
        );

        let yaml = alert(name, "critical", &good_annotations(name))
            .replace("        labels:\n          severity: critical\n", "");
        let problems = lint(&yaml);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no severity label"), "{problems:?}");
    }

    #[test]
    fn an_empty_summary_is_reported() {
        let name = "FraiseqlEdgeDown";
        let annotations = good_annotations(name).replace("The target is down.", "''");
        let problems = lint(&alert(name, "warning", &annotations));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("no summary annotation"),
            "{problems:?}"
        );
    }

    fn tests(yaml: &str) -> Vec<(String, TestFile)> {
        vec![("t.yaml".into(), serde_yaml_ng::from_str(yaml).unwrap())]
    }

    const TESTS: &str = "
rule_files: [../rules.yaml]
tests:
  - interval: 1m
    input_series:
      - series: up{job=\"fraiseql-edge\"}
        values: 1 0x10
    alert_rule_test:
      - eval_time: 1m
        alertname: FraiseqlEdgeDown
        exp_alerts: []
      - eval_time: 10m
        alertname: FraiseqlEdgeDown
        exp_alerts:
          - exp_labels:
              severity: critical
";

    #[test]
    fn an_alert_tested_both_ways_passes() {
        let problems = lint_tests(&["FraiseqlEdgeDown".into()], &tests(TESTS));
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn untested_alerts_and_unknown_test_names_are_reported() {
        let only_quiet = TESTS.replace(
            "FraiseqlEdgeDown\n        exp_alerts:\n",
            "X\n        exp_alerts:\n",
        );
        let problems = lint_tests(
            &["FraiseqlEdgeDown".into(), "FraiseqlEdgeAbsent".into()],
            &tests(&only_quiet),
        );
        assert_eq!(
            problems,
            [
                "t.yaml: a test of X, which no rule file defines",
                "FraiseqlEdgeDown: no test case in which it fires",
                "FraiseqlEdgeAbsent: no test case in which it fires",
                "FraiseqlEdgeAbsent: no test case in which it does not fire",
            ]
        );
    }

    #[test]
    fn the_repository_rules_pass_the_lint() {
        let rules = load_rules().unwrap();
        assert_eq!(lint_rules(&rules), Vec::<String>::new());
        let names = names(&rules);
        assert!(names.len() >= MIN_ALERTS, "{names:?}");
        assert_eq!(
            lint_tests(&names, &load_tests().unwrap()),
            Vec::<String>::new()
        );
    }
}
