//! k8s/: the kustomize base and overlays, checked offline and strictly.
//!
//! `check` (part of `cargo xtask ops-check`):
//! 1. the files under `k8s/base/generated/` are what `generate` writes from
//!    alerts/ and dashboards/ ([`generated`]);
//! 2. every overlay renders with `kubectl kustomize`;
//! 3. every built-in object validates against its Kubernetes
//!    [`KUBERNETES_VERSION`] schema with kubernetes-validate `--strict`, a
//!    kind without a schema failing;
//! 4. every custom resource (ServiceMonitor, PrometheusRule) validates
//!    against the schemas vendored in `k8s/schemas/` (from the CRDs),
//!    unknown fields rejected (`validate_crds.py`, python jsonschema);
//! 5. the policies of [`policy`] hold for every overlay.
//!
//! kubernetes-validate and jsonschema live in a virtual environment under
//! `target/toolchain`, installed at pinned versions by `cargo xtask setup`.

mod generated;
mod policy;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize as _;
use serde_yaml_ng::Value;

use crate::setup::Report;
use crate::{cmd, image, paths};

/// The Kubernetes version the objects are validated against.
pub const KUBERNETES_VERSION: &str = "1.32.0";

/// The overlays under `k8s/overlays/`, each rendered and checked.
const OVERLAYS: [&str; 2] = ["dev", "production"];

/// What `ensure_tools` installs into the virtual environment: the validator
/// and everything it pulls in, each at a fixed version.
const PYTHON_PACKAGES: [&str; 10] = [
    "kubernetes-validate==1.37.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "attrs==26.1.0",
    "PyYAML==6.0.4",
    "packaging==26.4",
    "importlib_resources==7.1.0",
    "typing_extensions==4.16.0",
];

/// Validates custom resources against the vendored CRDs.
const VALIDATE_CRDS: &str = include_str!("k8s/validate_crds.py");

/// The `k8s/` directory.
fn k8s_dir() -> PathBuf {
    paths::root().join("k8s")
}

/// The virtual environment holding kubernetes-validate.
fn venv_dir() -> Result<PathBuf> {
    Ok(paths::toolchain_dir()?.join("k8s-venv"))
}

/// Marks a finished install: holds [`PYTHON_PACKAGES`], one a line, and
/// the venv's path.
fn venv_stamp(venv: &Path) -> PathBuf {
    venv.join("fraiseql-edge-packages.txt")
}

/// What the stamp of a finished install in `venv` holds. The venv's
/// scripts name its own path (their `#!` line): a copied or moved one does
/// not run, so the stamp holds the path too.
fn stamp_text(venv: &Path) -> String {
    format!("{}\nvenv: {}", PYTHON_PACKAGES.join("\n"), venv.display())
}

/// Whether `venv` holds the pinned packages, installed where it is.
fn installed(venv: &Path) -> bool {
    fs::read_to_string(venv_stamp(venv)).is_ok_and(|s| s == stamp_text(venv))
}

/// Installs kubernetes-validate and jsonschema at their pinned versions into
/// `target/toolchain/k8s-venv` (a no-op when they are there).
pub fn ensure_tools(report: Report) -> Result<()> {
    let venv = venv_dir()?;
    let wanted = stamp_text(&venv);
    let what = format!("kubernetes-validate in {}", venv.display());
    if installed(&venv) {
        report.ok(&what);
        return Ok(());
    }
    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--clear"]).arg(&venv);
    report.doing(&format!("{what} missing"), &create);
    cmd::run(&mut create)?;
    let mut install = Command::new(venv.join("bin").join("pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES);
    report.doing("installing", &install);
    cmd::run(&mut install)?;
    fs::write(venv_stamp(&venv), wanted).context("writing the virtual environment's stamp")
}

/// `cargo xtask ops-generate`'s part: rewrites `k8s/base/generated/`.
pub fn generate() -> Result<()> {
    let root = paths::root();
    let files = generated::render(&root)?;
    let dir = root.join(generated::DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for stale in generated::stale_files(&dir, &files)? {
        fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
        println!("ops-generate: removed {}", stale.display());
    }
    for (name, text) in &files {
        let path = dir.join(name);
        if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("ops-generate: wrote {}", path.display());
        }
    }
    Ok(())
}

/// The offline k8s checks; every failure is reported before the error.
pub fn check() -> Result<()> {
    let mut failures = Vec::new();
    let root = paths::root();
    if let Err(e) = generated::check(&root) {
        failures.push(format!("{e:#}"));
    }
    let venv = venv_dir()?;
    if !installed(&venv) {
        bail!(
            "kubernetes-validate is not installed in {} (run `cargo xtask setup`)",
            venv.display()
        );
    }
    let out_dir = paths::target_dir().join("k8s-check");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for overlay in OVERLAYS {
        if let Err(e) = check_overlay(overlay, &venv, &out_dir) {
            failures.push(format!("overlay {overlay}: {e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// Renders one overlay and runs the schema validations and the policies.
fn check_overlay(overlay: &str, venv: &Path, out_dir: &Path) -> Result<()> {
    let rendered = kustomize(&k8s_dir().join("overlays").join(overlay))?;
    let docs = parse_documents(&rendered)?;
    println!(
        "ops-check: k8s: {overlay}: kubectl kustomize rendered {} objects",
        docs.len()
    );
    let (custom, builtin): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| is_custom(d));

    let mut failures = Vec::new();
    let builtin_file = out_dir.join(format!("{overlay}-builtin.yaml"));
    write_documents(&builtin_file, &builtin)?;
    if let Err(e) = kubernetes_validate(venv, &builtin_file) {
        failures.push(format!("{e:#}"));
    }
    let custom_file = out_dir.join(format!("{overlay}-custom.yaml"));
    write_documents(&custom_file, &custom)?;
    if let Err(e) = validate_custom(venv, &custom_file) {
        failures.push(format!("{e:#}"));
    }
    let violations = policy::check(&docs, &image::reference());
    if violations.is_empty() {
        println!("ops-check: k8s: {overlay}: policies hold");
    } else {
        failures.push(format!("policy violations:\n  {}", violations.join("\n  ")));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// `kubectl kustomize DIR`.
fn kustomize(dir: &Path) -> Result<String> {
    if which::which("kubectl").is_err() {
        bail!("kubectl is not on PATH (it carries kustomize)");
    }
    cmd::output(Command::new("kubectl").arg("kustomize").arg(dir))
}

/// The non-empty documents of a multi-document YAML stream.
fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).context("parsing the rendered YAML")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Writes documents as one YAML stream.
fn write_documents(path: &Path, docs: &[&Value]) -> Result<()> {
    let mut text = String::new();
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(doc)?);
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Custom resources: the kinds of the prometheus-operator's API group.
fn is_custom(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

/// kubernetes-validate `--strict` against [`KUBERNETES_VERSION`]. It only
/// warns about a kind it has no schema for; here that fails.
fn kubernetes_validate(venv: &Path, file: &Path) -> Result<()> {
    let mut validate = Command::new(venv.join("bin").join("kubernetes-validate"));
    validate
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(file);
    let out = validate
        .output()
        .with_context(|| format!("could not start `{}`", cmd::describe(&validate)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (passed, problems) = validation_report(&stdout);
    if !out.status.success() || !problems.is_empty() {
        bail!(
            "`{}` failed ({}):\n{}\n{}",
            cmd::describe(&validate),
            out.status,
            problems.join("\n"),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    println!(
        "ops-check: k8s: kubernetes-validate --strict ({KUBERNETES_VERSION}): {passed} objects valid"
    );
    Ok(())
}

/// kubernetes-validate's output as (objects that passed, other lines). It
/// prints `INFO … passed` per valid object, `ERROR …` per invalid one and
/// `WARN … Couldn't find schema …` for a kind it has no schema for (with
/// exit status 0): every line but the `INFO` ones is a problem.
fn validation_report(stdout: &str) -> (usize, Vec<&str>) {
    let (passed, problems): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.starts_with("INFO "));
    (passed.len(), problems)
}

/// The custom resources against the vendored CRD schemas.
fn validate_custom(venv: &Path, file: &Path) -> Result<()> {
    let mut validate = Command::new(venv.join("bin").join("python"));
    validate
        .args(["-c", VALIDATE_CRDS])
        .arg(k8s_dir().join("schemas"))
        .arg(file);
    let out = cmd::output(&mut validate)?;
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_and_empty_ones_dropped() {
        let docs = parse_documents("---\na: 1\n---\n---\nkind: X\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["kind"].as_str(), Some("X"));
    }

    #[test]
    fn prometheus_operator_kinds_are_custom() {
        let sm: Value = serde_yaml_ng::from_str("apiVersion: monitoring.coreos.com/v1\n").unwrap();
        let ds: Value = serde_yaml_ng::from_str("apiVersion: apps/v1\n").unwrap();
        assert!(is_custom(&sm));
        assert!(!is_custom(&ds));
    }

    #[test]
    fn a_kind_without_a_schema_is_a_problem() {
        let out = "INFO f passed for resource daemonset/x against version 1.32\n\
                   WARN f Couldn't find schema for kind Foo with api version example.com/v1 for kubernetes version 1.32\n";
        let (passed, problems) = validation_report(out);
        assert_eq!(passed, 1);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("WARN"));
    }

    #[test]
    fn pinned_packages_carry_exact_versions() {
        assert!(PYTHON_PACKAGES.iter().all(|p| p.split_once("==").is_some()));
        assert!(PYTHON_PACKAGES[0].starts_with("kubernetes-validate=="));
    }
}
