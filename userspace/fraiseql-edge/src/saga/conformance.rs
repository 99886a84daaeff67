//! One conformance suite for every [`SagaStore`]: the log's semantics that
//! do not depend on where it is kept (writes, reads, the moves the model
//! accepts and refuses, parking), written once and run against each store.
//!
//! The SQLite store runs it in its unit tests (`sqlite/tests.rs`), the
//! PostgreSQL store in the tests crate against a real server (it owns the
//! server fixture), which turns on the `store-conformance` feature. What
//! only one store does (the lock file, pragmas and crashes; leases between
//! nodes) is tested beside that store.
//!
//! Each scenario takes an empty store and panics, saying what broke, if
//! the store does not behave; [`all`] runs them in turn, each on a fresh
//! store.

use std::future::Future;

use serde_json::json;

use super::{
    CompensationOutcome, Created, NewSaga, NewStep, SagaId, SagaRecord, SagaState, SagaStore,
    StepOutcome, StepState, StoreError,
};

/// The scenarios by name, in the order [`all`] runs them.
pub const SCENARIOS: [&str; 7] = [
    "a_saga_round_trips",
    "the_same_key_and_body_is_the_same_saga_and_another_body_conflicts",
    "illegal_moves_are_refused_and_change_nothing",
    "a_failed_step_is_compensated_in_reverse_order",
    "a_rollback_that_cannot_finish_is_parked_failed_then_retried_or_cancelled",
    "list_is_newest_first_and_non_terminal_skips_finished_and_parked",
    "a_parked_rollback_keeps_its_errors_and_a_retry_compensates_it",
];

/// Runs every scenario, each on the empty store `fresh(name)` opens (`name`
/// is the scenario's, a lowercase identifier).
pub async fn all<S, F, Fut>(mut fresh: F)
where
    S: SagaStore,
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    for name in SCENARIOS {
        let store = fresh(name).await;
        match name {
            "a_saga_round_trips" => a_saga_round_trips(&store).await,
            "the_same_key_and_body_is_the_same_saga_and_another_body_conflicts" => {
                the_same_key_and_body_is_the_same_saga_and_another_body_conflicts(&store).await
            }
            "illegal_moves_are_refused_and_change_nothing" => {
                illegal_moves_are_refused_and_change_nothing(&store).await
            }
            "a_failed_step_is_compensated_in_reverse_order" => {
                a_failed_step_is_compensated_in_reverse_order(&store).await
            }
            "a_rollback_that_cannot_finish_is_parked_failed_then_retried_or_cancelled" => {
                a_rollback_that_cannot_finish_is_parked_failed_then_retried_or_cancelled(&store)
                    .await
            }
            "list_is_newest_first_and_non_terminal_skips_finished_and_parked" => {
                list_is_newest_first_and_non_terminal_skips_finished_and_parked(&store).await
            }
            "a_parked_rollback_keeps_its_errors_and_a_retry_compensates_it" => {
                a_parked_rollback_keeps_its_errors_and_a_retry_compensates_it(&store).await
            }
            other => unreachable!("scenario {other} is not wired in"),
        }
    }
}

/// A saga of `steps` steps under client key `key`, for a request whose
/// body is `body`.
pub fn new_saga(key: &str, body: &str, steps: u32) -> NewSaga {
    NewSaga {
        client_key: key.into(),
        body_sha256: crate::graphql::persisted::sha256(body),
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

/// Creates a new saga of `steps` steps under `key`; its id.
pub async fn create(store: &dyn SagaStore, key: &str, steps: u32) -> SagaId {
    match store.create(new_saga(key, key, steps)).await.unwrap() {
        Created::New(id) => id,
        other => panic!("{other:?}"),
    }
}

/// Runs every step of a pending saga to completion.
pub async fn complete(store: &dyn SagaStore, id: SagaId) {
    let n = store.get(id).await.unwrap().steps.len() as u32;
    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    for i in 0..n {
        let result = json!({ "done": i });
        run_step(store, id, i, StepOutcome::Completed { result }).await;
    }
    store
        .set_state(id, SagaState::Executing, SagaState::Completed)
        .await
        .unwrap();
}

/// Sends step `index` of an executing saga once (attempt 1) and writes
/// `outcome`.
pub async fn run_step(store: &dyn SagaStore, id: SagaId, index: u32, outcome: StepOutcome) {
    store.step_executing(id, index, 1).await.unwrap();
    store.step_finished(id, index, outcome).await.unwrap();
}

/// A new saga of `steps` steps (at least one) under `key`, whose steps
/// all completed but the last, which failed (`refused`): it is
/// `Compensating`, no compensation started.
pub async fn rolling_back(store: &dyn SagaStore, key: &str, steps: u32) -> SagaId {
    let id = create(store, key, steps).await;
    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    for i in 0..steps - 1 {
        run_step(store, id, i, StepOutcome::Completed { result: json!(i) }).await;
    }
    let error = "refused".to_string();
    run_step(store, id, steps - 1, StepOutcome::Failed { error }).await;
    store
        .set_state(id, SagaState::Executing, SagaState::Compensating)
        .await
        .unwrap();
    id
}

/// Compensates step `index` of a compensating saga with attempt `attempt`,
/// which succeeds.
pub async fn compensate(store: &dyn SagaStore, id: SagaId, index: u32, attempt: u32) {
    store
        .compensation_started(id, index, attempt)
        .await
        .unwrap();
    store
        .compensation_finished(id, index, CompensationOutcome::Compensated)
        .await
        .unwrap();
}

/// The rule an illegal transition broke; panics on any other error.
pub fn illegal(e: StoreError) -> String {
    match e {
        StoreError::IllegalTransition { why, .. } => why,
        other => panic!("not an illegal transition: {other:?}"),
    }
}

/// A saga is read back as written, all pending; run to its end it is
/// `Completed` with its results; a missing saga or step is `NotFound`.
pub async fn a_saga_round_trips(store: &dyn SagaStore) {
    let new = new_saga("k1", "body", 3);
    let id = store.create(new.clone()).await.unwrap();
    let Created::New(id) = id else {
        panic!("{id:?}")
    };
    let saga = store.get(id).await.unwrap();
    let r = &saga.record;
    assert_eq!(r.id, id);
    assert_eq!(r.client_key, "k1");
    assert_eq!(r.body_sha256, new.body_sha256);
    assert_eq!(r.identity_headers, new.identity_headers);
    assert_eq!(r.state, SagaState::Pending);
    assert!(!r.parked && !r.partially_compensated);
    assert_eq!((r.step_count, r.last_error.as_deref()), (3, None));
    assert!(r.created_ms > 1_700_000_000_000 && r.updated_ms == r.created_ms);
    assert_eq!(saga.steps.len(), 3);
    for (i, (step, sent)) in saga.steps.iter().zip(&new.steps).enumerate() {
        assert_eq!(step.saga_id, id);
        assert_eq!(step.index as usize, i);
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
        assert_eq!(step.idempotency_key(), format!("{id}:{i}"));
    }
    assert_eq!(
        store.summary().await.unwrap().in_flight,
        vec![(SagaState::Pending, 1)]
    );

    complete(store, id).await;
    let saga = store.get(id).await.unwrap();
    assert_eq!(saga.record.state, SagaState::Completed);
    assert!(saga.steps.iter().all(|s| s.state == StepState::Completed));
    assert_eq!(saga.steps[2].result, Some(json!({ "done": 2 })));

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
}

/// The same client key with the same body is the same saga; with another
/// body it conflicts and nothing is written.
pub async fn the_same_key_and_body_is_the_same_saga_and_another_body_conflicts(
    store: &dyn SagaStore,
) {
    let first = store.create(new_saga("k", "body", 2)).await.unwrap();
    let Created::New(id) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        store.create(new_saga("k", "body", 2)).await.unwrap(),
        Created::Existing(id)
    );
    let err = store
        .create(new_saga("k", "other body", 5))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict { key: "k".into() });
    assert!(err.to_string().contains("different body"), "{err}");
    let all = store.list(None, 10).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(store.get(id).await.unwrap().steps.len(), 2);
    let other = store.create(new_saga("k2", "body", 1)).await.unwrap();
    assert!(matches!(other, Created::New(o) if o != id));
}

/// Moves the model refuses are refused, with the rule they break, and
/// leave the saga as it was.
pub async fn illegal_moves_are_refused_and_change_nothing(store: &dyn SagaStore) {
    let id = create(store, "k", 2).await;
    let before = store.get(id).await.unwrap();

    let why = illegal(
        store
            .set_state(id, SagaState::Pending, SagaState::Completed)
            .await
            .unwrap_err(),
    );
    assert_eq!(why, "not in the saga transition table");
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
    // Steps run only in an executing saga.
    illegal(store.step_executing(id, 0, 1).await.unwrap_err());
    illegal(store.compensation_started(id, 0, 1).await.unwrap_err());
    illegal(store.park(id, "x".into(), true).await.unwrap_err());
    illegal(store.unpark(id).await.unwrap_err());
    assert_eq!(store.get(id).await.unwrap(), before);

    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    let before = store.get(id).await.unwrap();
    // In order, attempts without gaps, nothing finished that never started.
    assert_eq!(
        illegal(store.step_executing(id, 1, 1).await.unwrap_err()),
        "step 0 is Pending"
    );
    assert_eq!(
        illegal(store.step_executing(id, 0, 2).await.unwrap_err()),
        "the next attempt is 1"
    );
    let done = StepOutcome::Completed { result: json!(1) };
    illegal(store.step_finished(id, 0, done.clone()).await.unwrap_err());
    illegal(
        store
            .set_state(id, SagaState::Executing, SagaState::Completed)
            .await
            .unwrap_err(),
    );
    illegal(
        store
            .set_state(id, SagaState::Executing, SagaState::Cancelled)
            .await
            .unwrap_err(),
    );
    illegal(
        store
            .compensation_finished(id, 0, CompensationOutcome::Compensated)
            .await
            .unwrap_err(),
    );
    assert_eq!(store.get(id).await.unwrap(), before);

    store.step_executing(id, 0, 1).await.unwrap();
    let before = store.get(id).await.unwrap();
    assert_eq!(
        illegal(
            store
                .set_state(id, SagaState::Executing, SagaState::Compensating)
                .await
                .unwrap_err()
        ),
        "step 0 is Executing(1)"
    );
    illegal(store.step_executing(id, 0, 1).await.unwrap_err());
    assert_eq!(store.get(id).await.unwrap(), before);

    store.step_finished(id, 0, done.clone()).await.unwrap();
    let err = store.step_finished(id, 0, done).await.unwrap_err();
    assert!(
        err.to_string().contains("step 0: Completed → Completed"),
        "{err}"
    );
    // Failed is only written by park.
    store
        .set_state(id, SagaState::Executing, SagaState::Compensating)
        .await
        .unwrap();
    assert_eq!(
        illegal(
            store
                .set_state(id, SagaState::Compensating, SagaState::Failed)
                .await
                .unwrap_err()
        ),
        "a saga fails only by being parked as partially compensated"
    );
}

/// After a failed step the completed ones are compensated, last first; a
/// failed compensation attempt keeps the step completed, with its error.
pub async fn a_failed_step_is_compensated_in_reverse_order(store: &dyn SagaStore) {
    let id = create(store, "k", 3).await;
    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    for i in 0..2 {
        run_step(store, id, i, StepOutcome::Completed { result: json!(i) }).await;
    }
    store.step_executing(id, 2, 1).await.unwrap();
    store.step_executing(id, 2, 2).await.unwrap();
    let error = "HTTP 200 with errors".to_string();
    store
        .step_finished(id, 2, StepOutcome::Failed { error })
        .await
        .unwrap();
    store
        .set_state(id, SagaState::Executing, SagaState::Compensating)
        .await
        .unwrap();
    // Step 2 failed: it is not compensated; step 1 goes before step 0.
    illegal(store.compensation_started(id, 2, 1).await.unwrap_err());
    let why = illegal(store.compensation_started(id, 0, 1).await.unwrap_err());
    assert_eq!(
        why,
        "step 1 is Completed (compensations run in reverse order)"
    );
    store.compensation_started(id, 1, 1).await.unwrap();
    let error = "timeout".to_string();
    store
        .compensation_finished(id, 1, CompensationOutcome::Failed { error })
        .await
        .unwrap();
    let step = store.get(id).await.unwrap().steps[1].clone();
    assert_eq!(step.state, StepState::Completed);
    assert_eq!(step.compensation_attempt, 1);
    assert_eq!(step.last_error.as_deref(), Some("timeout"));
    assert_eq!(step.compensation_key(), format!("{id}:1:compensate"));
    illegal(
        store
            .set_state(id, SagaState::Compensating, SagaState::Compensated)
            .await
            .unwrap_err(),
    );
    compensate(store, id, 1, 2).await;
    compensate(store, id, 0, 1).await;
    store
        .set_state(id, SagaState::Compensating, SagaState::Compensated)
        .await
        .unwrap();
    let saga = store.get(id).await.unwrap();
    let states: Vec<_> = saga.steps.iter().map(|s| (s.state, s.attempt)).collect();
    assert_eq!(
        states,
        [
            (StepState::Compensated, 1),
            (StepState::Compensated, 1),
            (StepState::Failed, 2)
        ]
    );
    assert_eq!(saga.record.state, SagaState::Compensated);
    assert!(!saga.record.partially_compensated);
}

/// A rollback given up is parked `Failed`; nothing moves it but an
/// operator, who retries it (back to `Compensating`) or cancels it.
pub async fn a_rollback_that_cannot_finish_is_parked_failed_then_retried_or_cancelled(
    store: &dyn SagaStore,
) {
    let id = rolling_back(store, "k", 2).await;
    store.compensation_started(id, 0, 1).await.unwrap();
    let state = store.park(id, "gave up".into(), true).await.unwrap();
    assert_eq!(state, SagaState::Failed);
    let r = store.get(id).await.unwrap().record;
    assert_eq!(r.state, SagaState::Failed);
    assert!(r.parked && r.partially_compensated);
    assert_eq!(r.last_error.as_deref(), Some("gave up"));
    assert!(store.non_terminal().await.unwrap().is_empty());
    // Parked: nothing moves but an operator.
    illegal(store.compensation_started(id, 0, 2).await.unwrap_err());
    illegal(
        store
            .set_state(id, SagaState::Failed, SagaState::Compensating)
            .await
            .unwrap_err(),
    );
    illegal(store.park(id, "again".into(), false).await.unwrap_err());

    assert_eq!(store.unpark(id).await.unwrap(), SagaState::Compensating);
    let r = store.get(id).await.unwrap().record;
    assert!(!r.parked && !r.partially_compensated);
    assert_eq!(store.non_terminal().await.unwrap(), [id]);
    store.compensation_started(id, 0, 2).await.unwrap();
    illegal(
        store
            .set_state(id, SagaState::Compensating, SagaState::Cancelled)
            .await
            .unwrap_err(),
    );
    store.park(id, "operator".into(), false).await.unwrap();
    store
        .set_state(id, SagaState::Compensating, SagaState::Cancelled)
        .await
        .unwrap();
    let r = store.get(id).await.unwrap().record;
    assert_eq!((r.state, r.parked), (SagaState::Cancelled, false));
}

/// `list` is newest first, filtered by state; `non_terminal` and
/// `summary` leave out sagas ended or parked; a pending saga may be
/// cancelled.
pub async fn list_is_newest_first_and_non_terminal_skips_finished_and_parked(
    store: &dyn SagaStore,
) {
    let a = create(store, "a", 1).await;
    let b = create(store, "b", 2).await;
    let c = create(store, "c", 1).await;
    let d = create(store, "d", 1).await;
    complete(store, b).await;
    store
        .set_state(c, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    assert_eq!(
        store.park(c, "subgraph gone".into(), false).await.unwrap(),
        SagaState::Executing
    );

    let ids = |v: Vec<SagaRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(None, 10).await.unwrap()), [d, c, b, a]);
    assert_eq!(ids(store.list(None, 2).await.unwrap()), [d, c]);
    assert_eq!(
        ids(store.list(Some(SagaState::Pending), 10).await.unwrap()),
        [d, a]
    );
    assert_eq!(
        ids(store.list(Some(SagaState::Completed), 10).await.unwrap()),
        [b]
    );
    assert!(
        store
            .list(Some(SagaState::Failed), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.non_terminal().await.unwrap(), [a, d]);
    let summary = store.summary().await.unwrap();
    assert_eq!(summary.in_flight, [(SagaState::Pending, 2)]);
    assert_eq!(summary.parked, 1);
    let created_a = store.get(a).await.unwrap().record.created_ms;
    assert_eq!(summary.oldest_in_flight_ms, Some(created_a));

    let r = store.get(c).await.unwrap().record;
    assert!(r.parked);
    assert_eq!(r.last_error.as_deref(), Some("subgraph gone"));
    assert_eq!(store.unpark(c).await.unwrap(), SagaState::Executing);
    assert_eq!(store.non_terminal().await.unwrap(), [a, c, d]);
    // A pending saga can be cancelled.
    store
        .set_state(a, SagaState::Pending, SagaState::Cancelled)
        .await
        .unwrap();
    assert_eq!(store.non_terminal().await.unwrap(), [c, d]);
    let summary = store.summary().await.unwrap();
    let mut in_flight = summary.in_flight;
    in_flight.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        in_flight,
        [(SagaState::Executing, 1), (SagaState::Pending, 1)]
    );
    assert_eq!(summary.parked, 0);
}

/// A rollback whose compensation failed is parked `Failed` with both
/// errors kept (the saga's and the step's), counted as parked and not in
/// flight; an operator's retry compensates it to the end.
pub async fn a_parked_rollback_keeps_its_errors_and_a_retry_compensates_it(store: &dyn SagaStore) {
    let first = create(store, "k1", 3).await;
    complete(store, first).await;
    let id = rolling_back(store, "k2", 2).await;
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
    let summary = store.summary().await.unwrap();
    assert_eq!((summary.parked, summary.in_flight.len()), (1, 0));
    assert!(store.non_terminal().await.unwrap().is_empty());

    assert_eq!(store.unpark(id).await.unwrap(), SagaState::Compensating);
    compensate(store, id, 0, 2).await;
    store
        .set_state(id, SagaState::Compensating, SagaState::Compensated)
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
