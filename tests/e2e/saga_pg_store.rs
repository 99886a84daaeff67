//! The PostgreSQL saga store against a real PostgreSQL (the fixture starts a
//! private cluster per test): the log's semantics, which must match the
//! SQLite store's, and the leases that let several nodes share it.
//!
//! These live in the tests crate because it owns the server fixture (the
//! daemon crate cannot depend on it); they use the daemon's public API.

use std::time::Duration;

use fraiseql_edge::saga::{
    CompensationOutcome, Created, NewSaga, NewStep, PostgresStore, SagaId, SagaState, SagaStore,
    StepOutcome, StepState, StoreError,
};
use fraiseql_edge_tests::postgres::Postgres;
use serde_json::json;
use sha2::{Digest, Sha256};

const TTL: Duration = Duration::from_secs(2);

fn new_saga(key: &str, body: &str, steps: u32) -> NewSaga {
    NewSaga {
        client_key: key.into(),
        body_sha256: Sha256::digest(body.as_bytes()).into(),
        identity_headers: vec![
            ("authorization".into(), "Bearer t".into()),
            ("x-tenant".into(), "acme".into()),
        ],
        steps: (0..steps)
            .map(|i| NewStep {
                subgraph: format!("sub{i}"),
                mutation: format!("mutation {{ do{i}(id: $id) {{ id }} }}"),
                variables: json!({ "id": i }),
                compensation: format!("mutation {{ undo{i}(id: $id) }}"),
                compensation_variables: json!({ "id": i, "why": "rollback" }),
            })
            .collect(),
    }
}

async fn open(url: &str, node: &str) -> PostgresStore {
    PostgresStore::open(url, node, TTL).await.expect("open")
}

async fn create(store: &PostgresStore, key: &str, steps: u32) -> SagaId {
    match store.create(new_saga(key, key, steps)).await.unwrap() {
        Created::New(id) => id,
        other => panic!("{other:?}"),
    }
}

/// Runs every step of a pending saga to completion.
async fn complete(store: &PostgresStore, id: SagaId) {
    let n = store.get(id).await.unwrap().steps.len() as u32;
    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    for i in 0..n {
        store.step_executing(id, i, 1).await.unwrap();
        let result = json!({ "done": i });
        store
            .step_finished(id, i, StepOutcome::Completed { result })
            .await
            .unwrap();
    }
    store
        .set_state(id, SagaState::Executing, SagaState::Completed)
        .await
        .unwrap();
}

fn illegal(e: StoreError) -> String {
    match e {
        StoreError::IllegalTransition { why, .. } => why,
        other => panic!("not an illegal transition: {other:?}"),
    }
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
async fn postgres_store_writes_checks_and_reads_like_the_sqlite_one() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("semantics");
    let store = open(&url, "node-a").await;
    // Opening again (another node, or a restart) finds the schema in place.
    let again = open(&url, "node-a").await;
    assert_eq!(
        pg.psql("semantics", "SELECT version FROM saga_schema")
            .unwrap()
            .trim(),
        "1"
    );

    // Round trip.
    let new = new_saga("k1", "body", 3);
    let Created::New(id) = store.create(new.clone()).await.unwrap() else {
        panic!("not new")
    };
    let saga = again.get(id).await.unwrap();
    let r = &saga.record;
    assert_eq!((r.id, r.client_key.as_str()), (id, "k1"));
    assert_eq!(r.body_sha256, new.body_sha256);
    assert_eq!(r.identity_headers, new.identity_headers);
    assert_eq!(r.state, SagaState::Pending);
    assert!(!r.parked && !r.partially_compensated);
    assert_eq!((r.step_count, r.last_error.as_deref()), (3, None));
    assert!(r.created_ms > 1_700_000_000_000 && r.updated_ms == r.created_ms);
    for (i, (step, sent)) in saga.steps.iter().zip(&new.steps).enumerate() {
        assert_eq!((step.saga_id, step.index as usize), (id, i));
        assert_eq!(step.subgraph, sent.subgraph);
        assert_eq!(step.mutation, sent.mutation);
        assert_eq!(step.variables, sent.variables);
        assert_eq!(step.compensation, sent.compensation);
        assert_eq!(step.compensation_variables, sent.compensation_variables);
        assert_eq!(step.state, StepState::Pending);
        assert_eq!((step.attempt, step.compensation_attempt), (0, 0));
        assert_eq!(
            (step.result.as_ref(), step.last_error.as_ref()),
            (None, None)
        );
    }
    // The creator holds the saga's lease.
    assert_eq!(lease_of(&pg, "semantics", id), "node-a");
    assert_eq!(
        store.summary().await.unwrap().in_flight,
        vec![(SagaState::Pending, 1)]
    );
    complete(&store, id).await;
    let saga = store.get(id).await.unwrap();
    assert_eq!(saga.record.state, SagaState::Completed);
    assert!(saga.steps.iter().all(|s| s.state == StepState::Completed));
    assert_eq!(saga.steps[2].result, Some(json!({ "done": 2 })));
    // An ended saga needs no node.
    assert_eq!(lease_of(&pg, "semantics", id), "");
    let missing = SagaId::from_bytes([7; 16]);
    assert_eq!(
        store.get(missing).await.unwrap_err(),
        StoreError::NotFound {
            saga: missing,
            step: None
        }
    );
    assert_eq!(
        store.step_executing(id, 3, 1).await.unwrap_err(),
        StoreError::NotFound {
            saga: id,
            step: Some(3)
        }
    );

    // The same key: the same body is the same saga, another conflicts.
    assert_eq!(
        store.create(new_saga("k1", "body", 3)).await.unwrap(),
        Created::Existing(id)
    );
    assert_eq!(
        again.create(new_saga("k1", "other", 5)).await.unwrap_err(),
        StoreError::Conflict { key: "k1".into() }
    );
    assert_eq!(store.list(None, 10).await.unwrap().len(), 1);

    // Illegal moves are refused and change nothing.
    let id = create(&store, "k2", 2).await;
    let before = store.get(id).await.unwrap();
    assert_eq!(
        illegal(
            store
                .set_state(id, SagaState::Pending, SagaState::Completed)
                .await
                .unwrap_err()
        ),
        "not in the saga transition table"
    );
    assert_eq!(
        store
            .set_state(id, SagaState::Executing, SagaState::Completed)
            .await
            .unwrap_err(),
        StoreError::StateChanged {
            saga: id,
            expected: SagaState::Executing,
            actual: SagaState::Pending
        }
    );
    illegal(store.step_executing(id, 0, 1).await.unwrap_err());
    illegal(store.park(id, "x".into(), true).await.unwrap_err());
    assert_eq!(store.get(id).await.unwrap(), before);
    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    assert_eq!(
        illegal(store.step_executing(id, 1, 1).await.unwrap_err()),
        "step 0 is Pending"
    );
    assert_eq!(
        illegal(store.step_executing(id, 0, 2).await.unwrap_err()),
        "the next attempt is 1"
    );

    // A failed step is compensated; a rollback that cannot finish is
    // parked Failed, then retried by an operator.
    store.step_executing(id, 0, 1).await.unwrap();
    store
        .step_finished(id, 0, StepOutcome::Completed { result: json!(0) })
        .await
        .unwrap();
    store.step_executing(id, 1, 1).await.unwrap();
    store
        .step_finished(
            id,
            1,
            StepOutcome::Failed {
                error: "refused".into(),
            },
        )
        .await
        .unwrap();
    store
        .set_state(id, SagaState::Executing, SagaState::Compensating)
        .await
        .unwrap();
    store.compensation_started(id, 0, 1).await.unwrap();
    store
        .compensation_finished(
            id,
            0,
            CompensationOutcome::Failed {
                error: "down".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.park(id, "gave up".into(), true).await.unwrap(),
        SagaState::Failed
    );
    let parked = store.get(id).await.unwrap();
    assert!(parked.record.parked && parked.record.partially_compensated);
    assert_eq!(parked.record.last_error.as_deref(), Some("gave up"));
    assert_eq!(parked.steps[0].last_error.as_deref(), Some("down"));
    assert_eq!(lease_of(&pg, "semantics", id), "");
    let summary = store.summary().await.unwrap();
    assert_eq!((summary.parked, summary.in_flight.len()), (1, 0));
    assert!(store.non_terminal().await.unwrap().is_empty());
    // An operator on another node retries it: that node drives it.
    let b = open(&url, "node-b").await;
    assert_eq!(b.unpark(id).await.unwrap(), SagaState::Compensating);
    assert_eq!(lease_of(&pg, "semantics", id), "node-b");
    b.compensation_started(id, 0, 2).await.unwrap();
    b.compensation_finished(id, 0, CompensationOutcome::Compensated)
        .await
        .unwrap();
    b.set_state(id, SagaState::Compensating, SagaState::Compensated)
        .await
        .unwrap();
    let done = store.get(id).await.unwrap();
    assert_eq!(done.record.state, SagaState::Compensated);
    assert_eq!(done.steps[0].state, StepState::Compensated);

    // Newest first; filtered by state.
    let states: Vec<SagaState> = store
        .list(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, [SagaState::Compensated, SagaState::Completed]);
    assert_eq!(
        store
            .list(Some(SagaState::Completed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
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
