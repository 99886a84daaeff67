//! Sagas on PostgreSQL end to end: two real daemons (`node-a`, `node-b`)
//! sharing one database on a real PostgreSQL server, two real demo
//! subgraphs that count every idempotency key, and SIGKILL of the node that
//! drives a saga.

use std::time::Duration;

use fraiseql_edge_tests::{
    graphql::Client,
    postgres::Postgres,
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
};
use serde_json::json;

use crate::sagas_e2e::{show, step, step_two_resent_and_applied_once, submit, wait_for};

/// Short, so the test waits little for a dead node's lease to run out.
const LEASE_TTL_SECS: u64 = 2;

fn setup(a: &DemoSubgraph, b: &DemoSubgraph, url: &str, node: &str) -> ProxySetup {
    let mut setup = ProxySetup::one(SubgraphSpec::new("inventory", [a]));
    // Step 2 hangs longer than the lease's time to live while node A is
    // alive: one try may wait that long.
    setup
        .subgraphs
        .push(SubgraphSpec::new("payments", [b]).table("timeouts", "per_try_ms = 20000"));
    setup.section(&format!(
        "[sagas]\nstore = \"postgres\"\npostgres_url = \"{url}\"\nnode = \"{node}\"\n\
         lease_ttl_secs = {LEASE_TTL_SECS}\nrecovery_interval_secs = 1\n\
         backoff_base_ms = 20\nbackoff_max_ms = 200\nstep_retries = 2\n\
         compensation_retries = 5\nstep_timeout_ms = 20000\n"
    ))
}

fn lease_owner(pg: &Postgres, id: &str) -> String {
    pg.psql(
        "sagas",
        &format!("SELECT lease_owner FROM sagas WHERE id = '{id}'"),
    )
    .unwrap()
    .trim()
    .to_string()
}

#[test]
fn two_daemons_on_postgres_the_survivor_leases_and_finishes_the_dead_ones_saga() {
    let _serial = crate::proxy_e2e::serial();
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("sagas");
    let (a, b) = (DemoSubgraph::start("inv"), DemoSubgraph::start("pay"));
    let mut node_a = Edge::start(&setup(&a, &b, &url, "node-a"));
    let node_b = Edge::start(&setup(&a, &b, &url, "node-b"));

    b.faults(&json!({"hang": true}));
    let saga = json!({"steps": [step("inventory", "upc-5", 4), step("payments", "upc-6", 7)]});
    let r = submit(&node_a, "order-pg", &saga);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The log is shared: node B reads the saga node A wrote.
    assert_eq!(show(&node_b, &id)["id"], id.as_str());
    wait_for(&node_a, &id, |s| s["steps"][1]["state"] == "Executing");
    // Step 2 hangs at the subgraph; A's heartbeats keep the saga A's well
    // past the lease's time to live, and B's recovery (every second) leaves
    // it alone.
    std::thread::sleep(Duration::from_secs(2 * LEASE_TTL_SECS));
    assert_eq!(
        lease_owner(&pg, &id),
        "node-a",
        "{:?}\n{}",
        pg.psql("sagas", "SELECT * FROM sagas"),
        node_a.daemon.log()
    );
    assert_eq!(show(&node_b, &id)["steps"][1]["attempts"], 1);

    // A dies with step 2 in flight.
    node_a.daemon.kill();
    b.faults(&json!({"hang": false}));

    // B leases it once A's lease ran out, re-sends step 2 with its key and
    // finishes the saga.
    let end = wait_for(&node_b, &id, |s| s["state"] == "Completed");
    step_two_resent_and_applied_once(&end, &a, &b, &id);
    // A finished saga needs no node.
    assert_eq!(lease_owner(&pg, &id), "");
    let m = Client::default().metrics(&format!("http://{}/metrics", node_b.admin));
    assert_eq!(
        m.sum(
            "fraiseql_edge_saga_recovery_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert!(
        node_b.daemon.log().contains("node-b"),
        "B's log names its node:\n{}",
        node_b.daemon.log()
    );
}

#[test]
fn an_unreachable_database_stops_the_daemon_at_start_naming_it_without_the_password() {
    let sg = DemoSubgraph::start("inv");
    // Nothing listens on port 1.
    let setup = ProxySetup::one(SubgraphSpec::new("inventory", [&sg])).section(
        "[sagas]\nstore = \"postgres\"\n\
         postgres_url = \"postgres://edge:s3cret@127.0.0.1:1/sagas\"\nnode = \"node-a\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, setup.to_toml()).unwrap();
    let out = fraiseql_edge_tests::daemon::run_cli(&["run", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon started: {stderr}");
    assert!(
        stderr.contains("opening the saga log")
            && stderr.contains("postgres://edge:***@127.0.0.1:1/sagas"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
