//! A real Prometheus server (Debian's `prometheus`, installed by
//! `cargo xtask setup`) scraping targets every second and evaluating rule
//! files, queried over its HTTP API.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{free_port, wait::eventually, which};

/// One sample of an instant query: its labels and its value.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (as job `job`) every second,
    /// evaluating `rule_files` every second. Returns `None` (after printing
    /// why) when no `prometheus` binary exists outside CI; under `CI=true`
    /// that is a failure, since setup installs it.
    pub fn start(job: &str, targets: &[SocketAddr], rule_files: &[PathBuf]) -> Option<Self> {
        if which("prometheus").is_none() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("prometheus is needed (cargo xtask setup installs Debian's package)");
            }
            eprintln!("SKIP: no prometheus binary; run `cargo xtask setup`");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        let rules: Vec<String> = rule_files.iter().map(|r| format!("{r:?}")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: {job:?}\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", "),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let addr = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting prometheus");
        let prom = Prometheus {
            child,
            addr,
            _dir: dir,
            log,
        };
        let ready = eventually(Duration::from_secs(30), || {
            prom.get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
        });
        assert!(ready, "prometheus never got ready:\n{}", prom.log());
        Some(prom)
    }

    /// Prometheus's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path_and_query: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent = crate::graphql::agent(Duration::from_secs(30));
        let mut resp = agent
            .get(&format!("http://{}{path_and_query}", self.addr))
            .call()
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().unwrap_or_default()))
    }

    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let agent: ureq::Agent = crate::graphql::agent(Duration::from_secs(30));
        let mut req = agent.get(&format!("http://{}{path}", self.addr));
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body: Value = serde_json::from_reader(resp.body_mut().as_reader())
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"));
        assert_eq!(body["status"], "success", "GET {path} {params:?}: {body}");
        body["data"].clone()
    }

    /// An instant query's samples; panics on a query Prometheus refuses.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let data = self.api("/api/v1/query", &[("query", expr)]);
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .expect("result array")
                .iter()
                .map(|s| Sample {
                    labels: s["metric"].as_object().cloned().unwrap_or_default(),
                    value: parse_value(&s["value"][1]),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: Default::default(),
                value: parse_value(&data["result"][1]),
            }],
            other => panic!("{expr}: result type {other:?}"),
        }
    }

    /// The alerting rules Prometheus loaded: name → expression.
    pub fn alert_rules(&self) -> Vec<(String, String)> {
        let data = self.api("/api/v1/rules", &[("type", "alert")]);
        let mut out = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                out.push((
                    rule["name"].as_str().unwrap_or_default().to_string(),
                    rule["query"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        out
    }

    /// The health of every scrape target (`up`, `down`, `unknown`).
    pub fn target_health(&self) -> Vec<String> {
        let data = self.api("/api/v1/targets", &[]);
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["health"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_value(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}
