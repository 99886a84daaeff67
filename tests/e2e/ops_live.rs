//! The operations package against the real thing (`cargo xtask ops-check`
//! runs this test; so does the test command). A real daemon with XDP on a
//! veth pair, `[auth]` with a JWKS URL and three demo subgraphs (a healthy
//! one, one that fails on demand, one slow behind a pool of two) is scraped
//! every second by a real Prometheus loaded with alerts/.
//!
//! The daemon runs the saga coordinator too, with a fourth subgraph,
//! `ledger`, whose compensations always fail.
//!
//! Steady traffic first (good queries, entity fetches that resolve and
//! fail, a refused document, sagas that complete): the expressions of the
//! circuit-breaker, error-rate, auth-failure, kernel drop-surge,
//! pool-exhaustion and saga compensation alerts must all be false. Then
//! the faults, all at once: the failing subgraph answers 503 until its
//! breaker opens, bad tokens, a UDP flood over the kernel's rate, more
//! concurrent slow requests than the slow subgraph's pool holds, sagas
//! whose second step is refused (compensated), and sagas whose rollback on
//! `ledger` never succeeds (parked, partially compensated). Each of those
//! expressions must turn true. Then every query of every panel of
//! dashboards/*.json, with its template variables substituted, must return
//! data.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use fraiseql_edge_tests::{
    clients::Flood,
    kernel_tests_enabled,
    prometheus::Prometheus,
    redis::Redis,
    subgraphs::{DemoSubgraph, SubgraphSpec},
    wait::eventually,
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::{
    jwt_e2e::keys::{claims, sign_with},
    proxy_e2e::serial,
    testbed::{QUIET_HEALTH, RATE, Testbed},
};

const JOB: &str = "fraiseql-edge";
const QUERY: &str = "{ users(first: 2) { id name } }";
const ENTITIES: &str = "query($representations: [_Any!]!) { _entities(representations: $representations) { ... on User { id name } } }";
const UDP_PORT: u16 = 18661;
/// The alerts whose expressions must be false before the faults and true
/// during them.
const FAULT_ALERTS: [&str; 8] = [
    "FraiseqlEdgeCircuitBreakerOpen",
    "FraiseqlEdgeHighErrorRate",
    "FraiseqlEdgeAuthFailureSurge",
    "FraiseqlEdgeKernelDropSurge",
    "FraiseqlEdgeUpstreamPoolExhausted",
    "FraiseqlEdgeSagaCompensationFailing",
    "FraiseqlEdgeSagaCompensationRateHigh",
    "FraiseqlEdgeClusterBlockSyncDown",
];
/// Short retry gaps and few compensation retries: a rollback that cannot
/// succeed is parked within a second.
const SAGAS: &str = "backoff_base_ms = 20\nbackoff_max_ms = 100\nstep_retries = 1\n\
                     compensation_retries = 2\nstep_timeout_ms = 2000\nrecovery_interval_secs = 2";

fn agent() -> ureq::Agent {
    fraiseql_edge_tests::graphql::agent(Duration::from_secs(30))
}

/// POSTs `body` with an optional bearer token; the status (0 when the
/// request did not complete).
fn post(agent: &ureq::Agent, url: &str, body: &Value, token: Option<&str>) -> u16 {
    let mut req = agent.post(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    match req.send(body.to_string()) {
        Ok(mut resp) => {
            let _ = resp.body_mut().read_to_string();
            resp.status().as_u16()
        }
        Err(_) => 0,
    }
}

/// One saga step: `mutation` (`reserve` or `release`) of `quantity` of
/// `item` on `subgraph`, undone by the other one.
fn saga_step(subgraph: &str, mutation: &str, item: &str, quantity: u32) -> Value {
    let undo = if mutation == "reserve" {
        "release"
    } else {
        "reserve"
    };
    let selection = |m: &str| {
        if m == "reserve" {
            " { item remaining }"
        } else {
            ""
        }
    };
    json!({
        "subgraph": subgraph,
        "mutation": format!("mutation($i: String!, $q: Int!) {{ {mutation}(item: $i, quantity: $q){} }}", selection(mutation)),
        "variables": {"i": item, "q": quantity},
        "compensation": format!("mutation($i: String!, $q: Int!) {{ {undo}(item: $i, quantity: $q){} }}", selection(undo)),
        "compensationVariables": {"i": item, "q": quantity},
    })
}

/// Submits a saga with a fresh `Idempotency-Key`; the status (0 when the
/// request did not complete).
fn submit_saga(url: &str, steps: &[Value], token: &str, keys: &AtomicU64) -> u16 {
    let key = format!("ops-live-{}", keys.fetch_add(1, Ordering::Relaxed));
    let req = agent()
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", &key)
        .header("authorization", &format!("Bearer {token}"));
    match req.send(json!({ "steps": steps }).to_string()) {
        Ok(mut resp) => {
            let _ = resp.body_mut().read_to_string();
            resp.status().as_u16()
        }
        Err(_) => 0,
    }
}

/// Threads sending requests in a loop until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn new() -> Self {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// `n` threads, each calling `step` then sleeping `pause`, until stopped.
    fn spawn(&mut self, n: usize, pause: Duration, step: impl Fn() + Send + Sync + 'static) {
        let step = Arc::new(step);
        for _ in 0..n {
            let stop = self.stop.clone();
            let step = step.clone();
            self.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    step();
                    std::thread::sleep(pause);
                }
            }));
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A dashboard query with its template variables as the live check sets
/// them: this job, every instance and subgraph, a one-minute rate window.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", JOB)
        .replace("$instance", ".*")
        .replace("$subgraph", ".*")
}

/// Every panel query of dashboards/*.json: (dashboard, panel, expr).
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "{} dashboards in {}",
        files.len(),
        dir.display()
    );
    for file in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = d["title"].as_str().unwrap_or_default().to_string();
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    name.clone(),
                    p["title"].as_str().unwrap_or_default().to_string(),
                    t["expr"].as_str().expect("expr").to_string(),
                ));
            }
        }
    }
    out
}

/// Every rule file of alerts/.
fn rule_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("alerts/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in {}", dir.display());
    files
        .into_iter()
        .map(|p| p.canonicalize().expect("rule file path"))
        .collect()
}

#[test]
fn ops_live_dashboards_return_data_and_alerts_fire_on_faults() {
    if !kernel_tests_enabled("ops_live_dashboards_return_data_and_alerts_fire_on_faults") {
        return;
    }
    let _serial = serial();
    let slow = DemoSubgraph::start("slow");
    slow.faults(&json!({ "latency_ms": 1500 }));
    let ledger = DemoSubgraph::start("ledger");
    ledger.faults(&json!({ "fail_field": "release", "fail_times": 1_000_000, "fail_status": 500 }));
    // Cluster mode: the node shares its blocks through a Redis that the
    // faults kill.
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let cluster = format!(
        "[cluster]\nredis_url = {:?}\ntimeout_ms = 2000\nbreaker_open_ms = 300",
        redis.url()
    );
    let saga_dir = tempfile::tempdir().expect("temp dir");
    let sagas = format!(
        "[sagas]\npath = {:?}\n{SAGAS}",
        saga_dir.path().join("sagas.db")
    );
    let bed = Testbed::start(
        "opslive",
        66,
        UDP_PORT,
        vec![
            SubgraphSpec::new("slow", [&slow])
                .table("health", QUIET_HEALTH)
                .table("pool", "min_idle = 0, max = 2, acquire_timeout_ms = 1000"),
            SubgraphSpec::new("ledger", [&ledger]).table("health", QUIET_HEALTH),
        ],
        &["[slow_queries]\nthreshold_ms = 200", &sagas, &cluster],
    );
    let (edge, broken, key, ns) = (&bed.edge, &bed.broken, &bed.key, &bed.ns);
    let (flooder, udp_dst) = (bed.flooder, bed.udp_dst);
    let Some(prom) = Prometheus::start(JOB, &[edge.admin], &rule_files()) else {
        return;
    };
    let rules = prom.alert_rules();
    assert!(
        rules.len() >= 20,
        "Prometheus loaded {} alerts",
        rules.len()
    );
    let expr_of = |name: &str| {
        rules
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, q)| q.clone())
            .unwrap_or_else(|| panic!("no alert {name} loaded from alerts/"))
    };
    assert!(
        eventually(Duration::from_secs(20), || prom
            .target_health()
            .iter()
            .any(|h| h == "up")),
        "Prometheus never scraped the daemon:\n{}",
        prom.log()
    );

    let token = Arc::new(sign_with(Algorithm::ES256, key, &claims("alice")));
    let users_url = edge.route("users");
    let broken_url = edge.route("broken");
    let slow_url = edge.route("slow");
    let sagas_url = format!("http://{}/sagas", edge.graphql);
    let saga_keys = Arc::new(AtomicU64::new(0));
    // Statuses other than 202 the completing sagas got.
    let saga_refusals = Arc::new(Mutex::new(Vec::new()));

    // Steady traffic, all the way through: good queries, entity fetches
    // (one representation resolves, one does not), a refused document,
    // one slow request at a time.
    let mut steady = Load::new();
    {
        let (url, token) = (users_url.clone(), token.clone());
        steady.spawn(2, Duration::from_millis(50), move || {
            let a = agent();
            post(&a, &url, &json!({ "query": QUERY }), Some(&token));
            let reps = json!([
                { "__typename": "User", "id": "1" },
                { "__typename": "User", "id": "no-such-user" },
            ]);
            post(
                &a,
                &url,
                &json!({ "query": ENTITIES, "variables": { "representations": reps } }),
                Some(&token),
            );
            let deep = format!(
                "{{ users {}id{} }}",
                "{ friends ".repeat(40),
                " }".repeat(40)
            );
            post(&a, &url, &json!({ "query": deep }), Some(&token));
        });
    }
    {
        let (url, token) = (slow_url.clone(), token.clone());
        steady.spawn(1, Duration::from_millis(100), move || {
            post(&agent(), &url, &json!({ "query": QUERY }), Some(&token));
        });
    }
    {
        // Sagas that complete: a reservation, then its release.
        let (url, token, keys) = (sagas_url.clone(), token.clone(), saga_keys.clone());
        let refusals = saga_refusals.clone();
        steady.spawn(1, Duration::from_millis(100), move || {
            let steps = [
                saga_step("users", "reserve", "upc-5", 1),
                saga_step("users", "release", "upc-5", 1),
            ];
            let status = submit_saga(&url, &steps, &token, &keys);
            if status != 202 {
                refusals.lock().unwrap().push(status);
            }
        });
    }
    std::thread::sleep(Duration::from_secs(10));
    for name in FAULT_ALERTS {
        let expr = expr_of(name);
        let found = prom.query(&expr);
        assert!(
            found.is_empty(),
            "{name} is true before any fault: {expr} = {found:?}"
        );
    }

    // The faults.
    let mut faults = Load::new();
    redis.kill();
    broken.faults(&json!({ "error_rate": 1.0, "error_status": 503 }));
    {
        let (url, token) = (broken_url.clone(), token.clone());
        faults.spawn(1, Duration::from_millis(50), move || {
            post(&agent(), &url, &json!({ "query": QUERY }), Some(&token));
        });
    }
    {
        let url = users_url.clone();
        faults.spawn(1, Duration::from_millis(20), move || {
            post(
                &agent(),
                &url,
                &json!({ "query": QUERY }),
                Some("not.a.jwt"),
            );
        });
    }
    {
        let (url, token) = (slow_url.clone(), token.clone());
        faults.spawn(4, Duration::from_millis(10), move || {
            post(&agent(), &url, &json!({ "query": QUERY }), Some(&token));
        });
    }
    // Sagas rolled back (step 2 asks for more than is in stock), and sagas
    // whose rollback on `ledger` never succeeds (parked).
    for (pause, steps) in [
        (
            Duration::from_millis(50),
            [
                saga_step("users", "reserve", "upc-6", 1),
                saga_step("users", "reserve", "upc-7", 500),
            ],
        ),
        (
            Duration::from_secs(2),
            [
                saga_step("ledger", "reserve", "upc-1", 1),
                saga_step("users", "reserve", "upc-8", 500),
            ],
        ),
    ] {
        let (url, token, keys) = (sagas_url.clone(), token.clone(), saga_keys.clone());
        faults.spawn(1, pause, move || {
            submit_saga(&url, &steps, &token, &keys);
        });
    }
    let flood = Flood::start(ns, flooder, udp_dst, 10 * RATE);

    let started = Instant::now();
    let mut pending: Vec<&str> = FAULT_ALERTS.to_vec();
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(90) {
        pending.retain(|name| {
            let fired = !prom.query(&expr_of(name)).is_empty();
            if fired {
                println!("{name}: true after {:?}", started.elapsed());
            }
            !fired
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        pending.is_empty(),
        "alert expressions still false after {:?} of faults: {pending:?}",
        started.elapsed()
    );

    // Every panel, while the traffic and the faults go on.
    let mut empty = Vec::new();
    let queries = dashboard_queries();
    for (dashboard, panel, expr) in &queries {
        let q = substitute(expr);
        let samples = prom.query(&q);
        if !samples.iter().any(|s| s.value.is_finite()) {
            empty.push(format!("{dashboard} / {panel}: {q} -> {samples:?}"));
        }
    }
    let flooded = flood.stop();
    faults.stop();
    steady.stop();
    println!(
        "{} panel queries checked; flood sent {} datagrams",
        queries.len(),
        flooded.sent
    );
    let refusals = saga_refusals.lock().unwrap().clone();
    assert!(
        refusals.is_empty(),
        "sagas that should have been accepted got {refusals:?}"
    );
    assert!(
        empty.is_empty(),
        "panel queries without data ({} of {}):\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
}
