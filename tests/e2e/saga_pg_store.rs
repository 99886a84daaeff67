//! The PostgreSQL saga store against a real PostgreSQL (the fixture starts a
//! private cluster per test): the log's semantics, by the store conformance
//! suite the SQLite store passes too (`saga::conformance`), and the leases
//! that let several nodes share it.
//!
//! These live in the tests crate because it owns the server fixture (the
//! daemon crate cannot depend on it); they use the daemon's public API.

use std::time::Duration;

use fraiseql_edge::saga::{
    Created, PostgresStore, SagaId, SagaState, SagaStore, StepOutcome, StepState, StoreError,
    conformance::{self, compensate, complete, create, illegal, new_saga, rolling_back},
};
use fraiseql_edge_tests::postgres::Postgres;
use serde_json::json;

const TTL: Duration = Duration::from_secs(2);

async fn open(url: &str, node: &str) -> PostgresStore {
    PostgresStore::open(url, node, TTL).await.expect("open")
}

fn lease_of(pg: &Postgres, db: &str, id: SagaId) -> String {
    pg.psql(
        db,
        &format!("SELECT lease_owner FROM sagas WHERE id = '{id}'"),
    )
    .unwrap()
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_store_conformance_suite() {
    let Some(pg) = Postgres::start() else { return };
    conformance::all(|name| {
        let url = pg.create_database(name);
        async move { open(&url, "node-a").await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_handle_finds_the_schema_and_the_sagas_in_place() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("reopen");
    let store = open(&url, "node-a").await;
    // Opening again (another node, or a restart) finds the schema in place.
    let again = open(&url, "node-a").await;
    assert_eq!(
        pg.psql("reopen", "SELECT version FROM saga_schema")
            .unwrap()
            .trim(),
        "1"
    );
    let Created::New(id) = store.create(new_saga("k1", "body", 3)).await.unwrap() else {
        panic!("not new")
    };
    assert_eq!(again.get(id).await.unwrap(), store.get(id).await.unwrap());
    assert_eq!(
        again.create(new_saga("k1", "other", 5)).await.unwrap_err(),
        StoreError::Conflict { key: "k1".into() }
    );
    assert_eq!(
        again.create(new_saga("k1", "body", 3)).await.unwrap(),
        Created::Existing(id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_goes_with_create_end_park_and_an_operators_retry() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("lease_moves");
    let store = open(&url, "node-a").await;
    // The creator holds the saga's lease; an ended saga needs no node.
    let id = create(&store, "k1", 1).await;
    assert_eq!(lease_of(&pg, "lease_moves", id), "node-a");
    complete(&store, id).await;
    assert_eq!(lease_of(&pg, "lease_moves", id), "");

    // A parked saga gives its lease up.
    let id = rolling_back(&store, "k2", 2).await;
    store.compensation_started(id, 0, 1).await.unwrap();
    assert_eq!(
        store.park(id, "gave up".into(), true).await.unwrap(),
        SagaState::Failed
    );
    assert_eq!(lease_of(&pg, "lease_moves", id), "");
    // An operator on another node retries it: that node drives it.
    let b = open(&url, "node-b").await;
    assert_eq!(b.unpark(id).await.unwrap(), SagaState::Compensating);
    assert_eq!(lease_of(&pg, "lease_moves", id), "node-b");
    compensate(&b, id, 0, 2).await;
    b.set_state(id, SagaState::Compensating, SagaState::Compensated)
        .await
        .unwrap();
    assert_eq!(
        store.get(id).await.unwrap().record.state,
        SagaState::Compensated
    );
    assert_eq!(lease_of(&pg, "lease_moves", id), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_keeps_other_nodes_out_until_it_expires_and_then_the_old_owner_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("leases");
    let a = open(&url, "node-a").await;
    let b = open(&url, "node-b").await;
    assert_eq!(a.lease_ttl(), Some(TTL));

    let id = create(&a, "k", 2).await;
    // A holds it: B gets nothing and may not write it.
    assert!(b.lease(10, &[]).await.unwrap().is_empty());
    assert_eq!(
        b.set_state(id, SagaState::Pending, SagaState::Executing)
            .await
            .unwrap_err(),
        StoreError::LeaseLost {
            saga: id,
            owner: "node-a".into()
        }
    );
    // A's own recovery finds it unless A says it drives it already.
    assert_eq!(a.lease(10, &[]).await.unwrap(), [id]);
    assert!(a.lease(10, &[id]).await.unwrap().is_empty());
    a.set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    a.step_executing(id, 0, 1).await.unwrap();

    // Heartbeats keep it A's past the time to live.
    for _ in 0..3 {
        tokio::time::sleep(TTL / 2).await;
        assert!(a.heartbeat(&[id]).await.unwrap().is_empty());
        assert!(b.lease(10, &[]).await.unwrap().is_empty());
    }

    // A stops (dies): once the lease expired, B takes it.
    tokio::time::sleep(TTL + Duration::from_millis(300)).await;
    assert_eq!(b.lease(10, &[]).await.unwrap(), [id]);
    assert_eq!(lease_of(&pg, "leases", id), "node-b");
    // A, back, is refused at its next write and learns it lost the lease.
    assert_eq!(
        a.step_finished(id, 0, StepOutcome::Completed { result: json!(0) })
            .await
            .unwrap_err(),
        StoreError::LeaseLost {
            saga: id,
            owner: "node-b".into()
        }
    );
    assert_eq!(a.heartbeat(&[id]).await.unwrap(), [id]);
    assert!(a.lease(10, &[]).await.unwrap().is_empty());
    // B re-sends the step in doubt and finishes the saga.
    let step = &b.get(id).await.unwrap().steps[0];
    assert_eq!((step.state, step.attempt), (StepState::Executing, 1));
    b.step_executing(id, 0, 2).await.unwrap();
    b.step_finished(id, 0, StepOutcome::Completed { result: json!(0) })
        .await
        .unwrap();
    b.step_executing(id, 1, 1).await.unwrap();
    b.step_finished(id, 1, StepOutcome::Completed { result: json!(1) })
        .await
        .unwrap();
    b.set_state(id, SagaState::Executing, SagaState::Completed)
        .await
        .unwrap();
    assert!(a.lease(10, &[]).await.unwrap().is_empty());
    assert!(b.lease(10, &[]).await.unwrap().is_empty());

    // A released lease is free at once.
    let id = create(&a, "released", 1).await;
    assert!(b.lease(10, &[]).await.unwrap().is_empty());
    a.release(id).await.unwrap();
    assert_eq!(b.lease(10, &[]).await.unwrap(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_leasing_at_once_split_the_sagas_and_racing_writes_pass_one_check() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("races");
    let dead = open(&url, "node-dead").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(create(&dead, &format!("k{i}"), 1).await);
    }
    tokio::time::sleep(TTL + Duration::from_millis(300)).await;
    let a = open(&url, "node-a").await;
    let b = open(&url, "node-b").await;
    let (got_a, got_b) = tokio::join!(a.lease(15, &[]), b.lease(15, &[]));
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(
        got_a.iter().all(|id| !got_b.contains(id)),
        "{got_a:?} {got_b:?}"
    );
    let mut all: Vec<SagaId> = got_a.iter().chain(&got_b).copied().collect();
    all.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(all, want);
    // Oldest first.
    let first = if got_a.len() == 15 { &got_a } else { &got_b };
    assert!(first.windows(2).all(|w| {
        let pos = |id: &SagaId| ids.iter().position(|x| x == id);
        pos(&w[0]) < pos(&w[1])
    }));

    // Two writers of one node (two connections) race the same move: the row
    // lock serializes them and the second one checks what the first wrote.
    let id = got_a[0];
    let a2 = open(&url, "node-a").await;
    a.set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    let (x, y) = tokio::join!(a.step_executing(id, 0, 1), a2.step_executing(id, 0, 1));
    let refused = match (x, y) {
        (Ok(()), Err(e)) | (Err(e), Ok(())) => e,
        other => panic!("exactly one must pass: {other:?}"),
    };
    assert_eq!(illegal(refused), "the next attempt is 2");
    assert_eq!(a.get(id).await.unwrap().steps[0].attempt, 1);
}
