//! Sagas end to end: the real daemon with `[sagas]`, two real demo
//! subgraphs that deduplicate on `Idempotency-Key` and count every key,
//! and SIGKILL where a crash would hurt.

use std::time::{Duration, Instant};

use fraiseql_edge_tests::{
    graphql::{Client, Reply},
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
};
use serde_json::{Value, json};

fn setup(a: &DemoSubgraph, b: &DemoSubgraph, log: &std::path::Path) -> ProxySetup {
    let mut setup = ProxySetup::one(SubgraphSpec::new("inventory", [a]));
    setup.subgraphs.push(SubgraphSpec::new("payments", [b]));
    setup.section(&format!(
        "[sagas]\npath = \"{}\"\nbackoff_base_ms = 20\nbackoff_max_ms = 200\n\
         step_retries = 2\ncompensation_retries = 5\nstep_timeout_ms = 2000\n",
        log.display()
    ))
}

pub(crate) fn step(subgraph: &str, item: &str, quantity: u32) -> Value {
    json!({
        "subgraph": subgraph,
        "mutation": "mutation($i: String!, $q: Int!) { reserve(item: $i, quantity: $q) { item remaining } }",
        "variables": {"i": item, "q": quantity},
        "compensation": "mutation($i: String!, $q: Int!) { release(item: $i, quantity: $q) }",
        "compensationVariables": {"i": item, "q": quantity},
    })
}

pub(crate) fn submit(edge: &Edge, key: &str, saga: &Value) -> Reply {
    Client::default().post_json_with(
        &format!("http://{}/sagas", edge.graphql),
        saga,
        &[("idempotency-key", key)],
    )
}

pub(crate) fn show(edge: &Edge, id: &str) -> Value {
    let r = Client::default().get(&format!("http://{}/sagas/{id}", edge.graphql), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Polls the saga on `edge` until `done` says so (30 s at most).
pub(crate) fn wait_for(edge: &Edge, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saga = show(edge, id);
        if done(&saga) {
            return saga;
        }
        assert!(
            Instant::now() < deadline,
            "saga never got there: {saga:#}\n{}",
            edge.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn stock(sg: &DemoSubgraph, item: &str) -> i64 {
    let r = Client::default().query(&sg.url(), &format!("{{ stock(item: \"{item}\") }}"));
    r.json()["data"]["stock"].as_i64().expect("stock")
}

/// The subgraph's counters for `key`: (executions, replays).
pub(crate) fn key_counts(sg: &DemoSubgraph, key: &str) -> (u64, u64) {
    let r = Client::default().get(&format!("http://{}/idempotency", sg.admin), &[]);
    let c = &r.json()["keys"][key];
    (
        c["executions"].as_u64().unwrap_or(0),
        c["replays"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_failed_step_compensates_the_completed_ones_and_a_replayed_post_is_one_saga() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let edge = Edge::start(&setup(&a, &b, &dir.path().join("sagas.db")));

    // Step 2 asks for more than is in stock: HTTP 200 with GraphQL errors.
    let saga = json!({"steps": [step("inventory", "upc-1", 3), step("payments", "upc-2", 500)]});
    let first = submit(&edge, "order-1", &saga);
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_string();
    let again = submit(&edge, "order-1", &saga);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        again.json()["id"],
        first.json()["id"],
        "the same POST is one saga"
    );

    let end = wait_for(&edge, &id, |s| s["state"] == "Compensated");
    assert_eq!(end["steps"][0]["state"], "Compensated");
    assert_eq!(end["steps"][1]["state"], "Failed");
    let error = end["steps"][1]["error"].as_str().unwrap();
    assert!(error.starts_with("INSUFFICIENT_STOCK"), "{error}");
    assert_eq!(stock(&a, "upc-1"), 100, "the reservation was released");
    assert_eq!(stock(&b, "upc-2"), 100);
    assert_eq!(key_counts(&a, &format!("{id}:0")), (1, 0));
    assert_eq!(key_counts(&a, &format!("{id}:0:compensate")), (1, 0));

    // The same key with another body is a conflict; nothing is written.
    let other = json!({"steps": [step("inventory", "upc-1", 1)]});
    let conflict = submit(&edge, "order-1", &other);
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert_eq!(conflict.code().as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));

    // A saga that completes.
    let ok = submit(
        &edge,
        "order-2",
        &json!({"steps": [step("inventory", "upc-3", 2), step("payments", "upc-4", 5)]}),
    );
    assert_eq!(ok.status, 202, "{}", ok.text());
    let id2 = ok.json()["id"].as_str().unwrap().to_string();
    let done = wait_for(&edge, &id2, |s| s["state"] == "Completed");
    assert_eq!(done["steps"][1]["result"]["reserve"]["remaining"], 95);
    assert_eq!((stock(&a, "upc-3"), stock(&b, "upc-4")), (98, 95));

    let m = Client::default().metrics(&format!("http://{}/metrics", edge.admin));
    assert_eq!(m.sum("fraiseql_edge_saga_started_total", &[]), 2.0);
    assert_eq!(
        m.sum(
            "fraiseql_edge_saga_finished_total",
            &[("outcome", "compensated")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "fraiseql_edge_saga_finished_total",
            &[("outcome", "completed")]
        ),
        1.0
    );
}

/// What a bad submission is, its body and key, and the status and code
/// it must get.
type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);

#[test]
fn bad_sagas_get_400_with_a_code_and_nothing_is_written() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let edge = Edge::start(&setup(&a, &b, &dir.path().join("sagas.db")));
    let url = format!("http://{}/sagas", edge.graphql);
    let c = Client::default();
    let query_step = json!({"subgraph": "inventory", "mutation": "{ stock(item: \"upc-1\") }",
        "compensation": "mutation { release(item: \"upc-1\", quantity: 1) }"});
    let cases: Vec<Case<'_>> = vec![
        (
            "not JSON",
            b"{steps".to_vec(),
            Some("k1"),
            400,
            "SAGA_INVALID",
        ),
        (
            "unknown key",
            br#"{"steps":[],"extra":1}"#.to_vec(),
            Some("k2"),
            400,
            "SAGA_INVALID",
        ),
        (
            "no steps",
            br#"{"steps":[]}"#.to_vec(),
            Some("k3"),
            400,
            "SAGA_INVALID",
        ),
        (
            "unknown subgraph",
            json!({"steps": [step("nowhere", "upc-1", 1)]})
                .to_string()
                .into_bytes(),
            Some("k4"),
            400,
            "SAGA_UNKNOWN_SUBGRAPH",
        ),
        (
            "a query as a step",
            json!({"steps": [query_step]}).to_string().into_bytes(),
            Some("k5"),
            400,
            "SAGA_STEP_NOT_MUTATION",
        ),
        (
            "a mutation that does not parse",
            json!({"steps": [{"subgraph": "inventory", "mutation": "mutation {",
                "compensation": "mutation { release(item: \"x\", quantity: 1) }"}]})
            .to_string()
            .into_bytes(),
            Some("k6"),
            400,
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            "no idempotency key",
            json!({"steps": [step("inventory", "upc-1", 1)]})
                .to_string()
                .into_bytes(),
            None,
            400,
            "IDEMPOTENCY_KEY_REQUIRED",
        ),
        (
            "a key with a space",
            json!({"steps": [step("inventory", "upc-1", 1)]})
                .to_string()
                .into_bytes(),
            Some("a key"),
            400,
            "INVALID_IDEMPOTENCY_KEY",
        ),
    ];
    for (what, body, key, status, code) in cases {
        let mut req = fraiseql_edge_tests::graphql::agent(Duration::from_secs(10))
            .post(&url)
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let mut resp = req.send(&body[..]).expect(what);
        let got = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(got, status, "{what}: {text}");
        let v: Value = serde_json::from_str(&text).expect(what);
        assert_eq!(v["errors"][0]["extensions"]["code"], code, "{what}: {text}");
    }
    let get = c.get(&format!("{url}/0123456789abcdef0123456789abcdef"), &[]);
    assert_eq!(
        (get.status, get.code().as_deref()),
        (404, Some("SAGA_NOT_FOUND"))
    );
    let get = c.get(&format!("{url}/not-an-id"), &[]);
    assert_eq!(get.status, 404);
    let m = c.metrics(&format!("http://{}/metrics", edge.admin));
    assert_eq!(
        m.sum("fraiseql_edge_saga_started_total", &[]),
        0.0,
        "nothing written"
    );
    assert_eq!(a.stats().mutations + b.stats().mutations, 0, "nothing sent");
}

/// After a crash with step 2 (`upc-6` × 7 on `b`, after `upc-5` × 4 on
/// `a`) in flight, `end` shows step 2 sent again, and the subgraphs show
/// step 1 never re-sent and step 2 applied once for its key.
pub(crate) fn step_two_resent_and_applied_once(
    end: &Value,
    a: &DemoSubgraph,
    b: &DemoSubgraph,
    id: &str,
) {
    assert!(
        end["steps"][1]["attempts"].as_u64().unwrap() >= 2,
        "{end:#}"
    );
    assert_eq!(key_counts(a, &format!("{id}:0")), (1, 0));
    let (executions, _) = key_counts(b, &format!("{id}:1"));
    assert_eq!(executions, 1);
    assert_eq!((stock(a, "upc-5"), stock(b, "upc-6")), (96, 93));
}

#[test]
fn a_daemon_killed_while_step_two_is_in_flight_finishes_the_saga_after_restart() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sagas.db");
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let setup = setup(&a, &b, &log);
    let mut edge = Edge::start(&setup);
    b.faults(&json!({"hang": true}));
    let saga = json!({"steps": [step("inventory", "upc-5", 4), step("payments", "upc-6", 7)]});
    let r = submit(&edge, "order-crash", &saga);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_for(&edge, &id, |s| s["steps"][1]["state"] == "Executing");
    // Step 2 is at the subgraph, unanswered: the daemon dies.
    edge.daemon.kill();
    b.faults(&json!({"hang": false}));

    let edge = Edge::start(&setup);
    let end = wait_for(&edge, &id, |s| s["state"] == "Completed");
    step_two_resent_and_applied_once(&end, &a, &b, &id);
    let m = Client::default().metrics(&format!("http://{}/metrics", edge.admin));
    assert_eq!(
        m.sum(
            "fraiseql_edge_saga_recovery_total",
            &[("result", "success")]
        ),
        1.0
    );
}

#[test]
fn a_compensation_that_fails_is_retried_with_growing_gaps_then_parked_when_it_never_succeeds() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let mut edge = Edge::start(&setup(&a, &b, &dir.path().join("sagas.db")));
    // Three failures, then the release goes through.
    a.faults(&json!({"fail_field": "release", "fail_times": 3, "fail_status": 500}));
    let saga = json!({"steps": [step("inventory", "upc-7", 1), step("payments", "upc-8", 500)]});
    let id = submit(&edge, "order-flaky", &saga).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let end = wait_for(&edge, &id, |s| s["state"] == "Compensated");
    assert_eq!(end["steps"][0]["compensationAttempts"], 4);
    assert_eq!(stock(&a, "upc-7"), 100);
    let m = Client::default().metrics(&format!("http://{}/metrics", edge.admin));
    assert_eq!(
        m.sum(
            "fraiseql_edge_saga_compensations_total",
            &[("subgraph", "inventory"), ("result", "failure")]
        ),
        3.0
    );
    let gaps: Vec<u64> = edge
        .daemon
        .log()
        .lines()
        .filter(|l| l.contains("saga compensation failed; retrying"))
        .filter_map(|l| {
            let v = l.split("retry_in_ms").nth(1)?;
            let digits: String = v
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect();
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "gaps grow: {gaps:?}");

    // A compensation that always fails: parked, partially compensated.
    a.faults(&json!({"fail_field": "release", "fail_times": 1000, "fail_status": 500}));
    let id = submit(&edge, "order-stuck", &saga).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let parked = wait_for(&edge, &id, |s| s["parked"] == true);
    assert_eq!(parked["state"], "Failed");
    assert_eq!(parked["partiallyCompensated"], true);
    assert_eq!(
        parked["steps"][0]["state"], "Completed",
        "never reported compensated"
    );
    assert!(
        edge.daemon
            .wait_for_log("saga parked partially compensated", Duration::from_secs(5))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = Client::default().metrics(&format!("http://{}/metrics", edge.admin));
        if m.sum("fraiseql_edge_saga_parked", &[]) == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the parked gauge never showed it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_daemon_killed_during_compensation_ends_the_saga_compensated_after_restart() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let setup = setup(&a, &b, &dir.path().join("sagas.db"));
    let mut edge = Edge::start(&setup);
    // Step 2 takes a while to be refused: time to hang the compensation.
    b.faults(&json!({"latency_ms": 1000}));
    let saga = json!({"steps": [step("inventory", "upc-9", 6), step("payments", "upc-10", 500)]});
    let id = submit(&edge, "order-rollback", &saga).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&edge, &id, |s| s["steps"][1]["state"] == "Executing");
    a.faults(&json!({"hang": true}));
    wait_for(&edge, &id, |s| {
        s["state"] == "Compensating" && s["steps"][0]["compensationAttempts"] == 1
    });
    // The release is at the subgraph, unanswered: the daemon dies.
    edge.daemon.kill();
    a.faults(&json!({"hang": false}));

    let edge = Edge::start(&setup);
    let end = wait_for(&edge, &id, |s| s["state"] == "Compensated");
    assert_eq!(end["steps"][0]["state"], "Compensated");
    let (executions, _) = key_counts(&a, &format!("{id}:0:compensate"));
    assert_eq!(executions, 1, "the release took effect once");
    assert_eq!(stock(&a, "upc-9"), 100);
}

/// How far along a state is (3: finished): a saga never moves to a lower
/// rank.
fn rank(state: &str) -> u8 {
    match state {
        "Pending" => 0,
        "Executing" => 1,
        "Compensating" => 2,
        "Completed" | "Compensated" | "Failed" | "Cancelled" => 3,
        other => panic!("unknown state {other}"),
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_every_saga_ends() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    // Slow answers widen the windows a kill can land in.
    a.faults(&json!({"latency_ms": 30}));
    b.faults(&json!({"latency_ms": 30}));
    let setup = setup(&a, &b, &dir.path().join("sagas.db"));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut random = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    // id → (item on inventory, completes?)
    let mut sagas: Vec<(String, String, bool)> = Vec::new();
    let mut seen: std::collections::HashMap<String, u8> = Default::default();
    let mut recoveries = 0;
    for round in 0..8 {
        let mut edge = Edge::start(&setup);
        // What the log says now, after the last kill: never behind what
        // was seen before it.
        for (id, _, _) in &sagas {
            let state = show(&edge, id)["state"].as_str().unwrap().to_string();
            let before = seen.insert(id.clone(), rank(&state)).unwrap_or(0);
            assert!(rank(&state) >= before, "saga {id} went back to {state}");
        }
        for n in 0..4 {
            let i = round * 4 + n;
            let item = format!("upc-{}", i % 10 + 1);
            let completes = i % 3 != 0;
            let quantity = if completes { 1 } else { 500 };
            let saga = json!({"steps": [step("inventory", &item, 1),
                step("payments", &format!("upc-{}", i % 10 + 1), quantity)]});
            let r = submit(&edge, &format!("crash-{i}"), &saga);
            assert!(r.status == 202, "{}", r.text());
            sagas.push((
                r.json()["id"].as_str().unwrap().to_string(),
                item,
                completes,
            ));
        }
        std::thread::sleep(Duration::from_millis(random(60)));
        edge.daemon.kill();
        recoveries += edge
            .daemon
            .log()
            .matches("saga recovery: driving on")
            .count();
    }
    let edge = Edge::start(&setup);
    let mut inventory_taken: std::collections::HashMap<String, i64> = Default::default();
    let mut payments_taken: std::collections::HashMap<String, i64> = Default::default();
    for (id, item, completes) in &sagas {
        let end = wait_for(&edge, id, |s| rank(s["state"].as_str().unwrap()) == 3);
        let want = if *completes {
            "Completed"
        } else {
            "Compensated"
        };
        // A saga whose step 2 is refused compensates; one whose steps all
        // succeed completes: a kill changes neither.
        assert_eq!(end["state"], want, "{end:#}");
        assert!(rank(want) >= seen.get(id).copied().unwrap_or(0));
        if *completes {
            *inventory_taken.entry(item.clone()).or_default() += 1;
            *payments_taken.entry(item.clone()).or_default() += 1;
        }
    }
    recoveries += edge
        .daemon
        .log()
        .matches("saga recovery: driving on")
        .count();
    assert!(recoveries > 0, "no kill landed while a saga was in flight");
    // Exactly once per key: the stock shows each completed step once and
    // each compensated one not at all.
    for n in 1..=10 {
        let item = format!("upc-{n}");
        let a_want = 100 - inventory_taken.get(&item).copied().unwrap_or(0);
        let b_want = 100 - payments_taken.get(&item).copied().unwrap_or(0);
        assert_eq!(stock(&a, &item), a_want, "inventory {item}");
        assert_eq!(stock(&b, &item), b_want, "payments {item}");
    }
}

#[test]
fn operators_list_show_retry_and_cancel_parked_sagas_with_edgectl() {
    use fraiseql_edge_tests::edgectl::{ControlFiles, Edgectl};
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let files = ControlFiles::new();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let edge = Edge::start(&setup(&a, &b, &dir.path().join("sagas.db")).control(&files.section()));
    assert!(
        fraiseql_edge_tests::wait::eventually(Duration::from_secs(10), || files.socket().exists()),
        "no control socket"
    );
    let admin = Edgectl::socket(&files.socket(), &files.admin_token());
    let reader = Edgectl::socket(&files.socket(), &files.read_token());

    // A rollback that cannot finish: parked.
    a.faults(&json!({"fail_field": "release", "fail_times": 1000, "fail_status": 500}));
    let saga = json!({"steps": [step("inventory", "upc-1", 2), step("payments", "upc-2", 500)]});
    let id = submit(&edge, "order-parked", &saga).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&edge, &id, |s| s["parked"] == true);
    let done = submit(
        &edge,
        "order-ok",
        &json!({"steps": [step("inventory", "upc-3", 1)]}),
    );
    let done_id = done.json()["id"].as_str().unwrap().to_string();
    wait_for(&edge, &done_id, |s| s["state"] == "Completed");

    let listed = reader.json(&["sagas", "list", "--state", "Failed"]);
    let ids: Vec<&str> = listed["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(listed["sagas"][0]["partially_compensated"], true);
    let text = reader.ok(&["sagas", "show", &id]);
    assert!(text.contains("parked, partially compensated"), "{text}");
    assert!(text.contains(&format!("{id}:0")), "{text}");

    // The reader may look but not act.
    let denied = reader.run(&["sagas", "retry", &id]);
    assert_eq!(denied.code, 4, "PERMISSION_DENIED: {}", denied.stderr);
    // A finished saga cannot be cancelled; a malformed id never leaves edgectl.
    let refused = admin.run(&["sagas", "cancel", &done_id]);
    assert_eq!(refused.code, 7, "FAILED_PRECONDITION");
    assert!(
        refused.stderr.contains("only a parked saga"),
        "{}",
        refused.stderr
    );
    let bad = admin.run(&["sagas", "show", "nope"]);
    assert_eq!(bad.code, 5, "invalid argument");
    assert!(bad.stderr.contains("not a saga id"), "{}", bad.stderr);
    let missing = admin.run(&["sagas", "show", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(missing.code, 6, "NOT_FOUND");
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    // The subgraph is fixed: the operator retries and the rollback finishes.
    a.faults(&json!({"fail_times": 0}));
    admin.ok(&["sagas", "retry", &id]);
    let end = wait_for(&edge, &id, |s| s["state"] == "Compensated");
    assert_eq!(end["parked"], false);
    assert_eq!(stock(&a, "upc-1"), 100);

    // A parked saga an operator gives up on is closed as Cancelled.
    a.faults(&json!({"fail_field": "release", "fail_times": 1000, "fail_status": 500}));
    let id = submit(&edge, "order-given-up", &saga).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&edge, &id, |s| s["parked"] == true);
    let cancelled = admin.json(&["sagas", "cancel", &id]);
    assert_eq!(cancelled["state"], "Cancelled");
    assert_eq!(cancelled["parked"], false);
}

#[test]
fn without_a_sagas_section_the_control_api_says_so() {
    use fraiseql_edge_tests::edgectl::{ControlFiles, Edgectl};
    let _serial = crate::proxy_e2e::serial();
    let files = ControlFiles::new();
    let a = DemoSubgraph::start("inv");
    let _edge = Edge::start(
        &ProxySetup::one(SubgraphSpec::new("inventory", [&a])).control(&files.section()),
    );
    assert!(fraiseql_edge_tests::wait::eventually(
        Duration::from_secs(10),
        || files.socket().exists()
    ));
    let run = Edgectl::socket(&files.socket(), &files.read_token()).run(&["sagas", "list"]);
    assert_eq!(run.code, 7, "FAILED_PRECONDITION");
    assert!(run.stderr.contains("no [sagas] section"), "{}", run.stderr);
}

#[test]
fn reading_a_saga_counts_against_the_per_identity_limit() {
    let _serial = crate::proxy_e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    // A burst of 4, then one request a minute: no refill during the test.
    let setup = setup(&a, &b, &dir.path().join("sagas.db"))
        .rate_limit("requests_per_minute = 1\nburst = 4\nescalation = { threshold = 0 }");
    let edge = Edge::start(&setup);
    let r = submit(
        &edge,
        "order-read",
        &json!({"steps": [step("inventory", "upc-1", 1)]}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The submission took one token (one step): three reads remain.
    let url = format!("http://{}/sagas/{id}", edge.graphql);
    for n in 1..=3 {
        let r = Client::default().get(&url, &[]);
        assert_eq!(r.status, 200, "read {n}: {}", r.text());
    }
    let refused = Client::default().get(&url, &[]);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.code().as_deref(), Some("RATE_LIMITED"));
}
