//! The graphql-http server audit (GraphQL-over-HTTP conformance) run by
//! node: `tests/audit/audit.mjs URL` prints one JSON report, parsed here into
//! [`AuditResult`]s.
//!
//! The npm packages are pinned by `tests/audit/package-lock.json` and
//! installed by `npm ci` into `tests/audit/node_modules` on first use; a stamp
//! file holding the lock file it was installed from skips the install while
//! the lock file is unchanged. Without node or npm: a failure under `CI=true`
//! (`cargo xtask setup` installs them), a printed skip elsewhere.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::Value;

/// Written into `node_modules` after a successful `npm ci`: the lock file
/// it installed.
const STAMP: &str = ".fraiseql-edge-installed-lock.json";

/// A graphql-http audit verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Conformant.
    Ok,
    /// A MAY not taken.
    Notice,
    /// A SHOULD not met.
    Warn,
    /// A MUST not met.
    Error,
}

impl Status {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "notice" => Self::Notice,
            "warn" => Self::Warn,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Notice => "notice",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// One audit's result.
#[derive(Clone, Debug)]
pub struct AuditResult {
    /// graphql-http's stable id (`"22EB"`).
    pub id: String,
    /// The requirement, starting with MUST, SHOULD or MAY.
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// Why it is not `ok`.
    pub reason: Option<String>,
    /// The judged response (status, content type, start of the body) when
    /// not `ok`.
    pub response: Option<Value>,
}

impl fmt::Display for AuditResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<6} {} {}", self.status, self.id, self.name)?;
        if let Some(reason) = &self.reason {
            write!(f, "\n         reason: {reason}")?;
        }
        if let Some(response) = &self.response {
            write!(f, "\n         response: {response}")?;
        }
        Ok(())
    }
}

/// The installed audit script, ready to run.
pub struct Auditor {
    dir: PathBuf,
}

impl Auditor {
    /// Installs the npm packages once per process (when the stamp does not
    /// match the lock file). `None`: node or npm missing outside CI (the
    /// skip is printed for `test`).
    pub fn get(test: &str) -> Option<&'static Auditor> {
        static AUDITOR: OnceLock<Option<Auditor>> = OnceLock::new();
        let auditor = AUDITOR.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("audit");
            for tool in ["node", "npm"] {
                if let Err(e) = Command::new(tool).arg("--version").output() {
                    return missing_tool(tool, &e);
                }
            }
            install(&dir);
            Some(Auditor { dir })
        });
        if auditor.is_none() {
            eprintln!("SKIP {test}: node or npm not found; run `cargo xtask setup`");
        }
        auditor.as_ref()
    }

    /// Runs every server audit against `url`, in graphql-http's order.
    pub fn run(&self, url: &str) -> Vec<AuditResult> {
        let out = Command::new("node")
            .arg(self.dir.join("audit.mjs"))
            .arg(url)
            .current_dir(&self.dir)
            .output()
            .expect("running node audit.mjs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "audit of {url} failed ({}):\n{stderr}",
            out.status
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "audit of {url}: no JSON report ({e}):\n{}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        parse_report(&report)
    }
}

/// Panics under `CI=true`; `None` elsewhere.
fn missing_tool(tool: &str, e: &std::io::Error) -> Option<Auditor> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is needed for the graphql-http audit (cargo xtask setup installs it): {e}");
    }
    eprintln!("{tool} not found: {e}");
    None
}

/// `npm ci` in `dir` unless its stamp says this lock file is installed.
fn install(dir: &Path) {
    let lock = std::fs::read(dir.join("package-lock.json")).expect("reading package-lock.json");
    let stamp = dir.join("node_modules").join(STAMP);
    if std::fs::read(&stamp).is_ok_and(|s| s == lock) {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .expect("running npm ci");
    assert!(
        out.status.success(),
        "npm ci in {} failed ({}):\n{}{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stamp, &lock).expect("writing the install stamp");
}

/// The `results` of an `audit.mjs` report.
fn parse_report(report: &Value) -> Vec<AuditResult> {
    let results = report["results"]
        .as_array()
        .unwrap_or_else(|| panic!("report without results: {report}"));
    results
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().map(str::to_string);
            AuditResult {
                id: text("id").unwrap_or_else(|| panic!("result without id: {r}")),
                name: text("name").unwrap_or_default(),
                status: r["status"]
                    .as_str()
                    .and_then(Status::parse)
                    .unwrap_or_else(|| panic!("result with an unknown status: {r}")),
                reason: text("reason"),
                response: r.get("response").filter(|v| !v.is_null()).cloned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parses() {
        let report = serde_json::json!({ "url": "u", "results": [
            { "id": "A", "name": "MUST a", "status": "ok" },
            { "id": "B", "name": "SHOULD b", "status": "warn", "reason": "r",
              "response": { "status": 400 } },
        ]});
        let results = parse_report(&report);
        assert_eq!(results.len(), 2);
        assert_eq!(
            (results[0].status, results[0].reason.as_deref()),
            (Status::Ok, None)
        );
        assert_eq!(
            (results[1].status, results[1].reason.as_deref()),
            (Status::Warn, Some("r"))
        );
        assert_eq!(results[1].response.as_ref().unwrap()["status"], 400);
        assert!(Status::Error > Status::Warn && Status::Warn > Status::Notice);
    }
}
