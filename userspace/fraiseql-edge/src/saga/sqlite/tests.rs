use super::*;
pub(super) use crate::saga::conformance::new_saga;
use crate::saga::conformance::{self, complete, create};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("saga.db")).expect("open")
}

/// One test per scenario of the store conformance suite, each on a new log
/// in a temporary directory.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            let dir = tempfile::tempdir().unwrap();
            conformance::$scenario(&open(&dir)).await;
        }
    )*};
}

conformance!(
    a_saga_round_trips,
    the_same_key_and_body_is_the_same_saga_and_another_body_conflicts,
    illegal_moves_are_refused_and_change_nothing,
    a_failed_step_is_compensated_in_reverse_order,
    a_rollback_that_cannot_finish_is_parked_failed_then_retried_or_cancelled,
    list_is_newest_first_and_non_terminal_skips_finished_and_parked,
    a_parked_rollback_keeps_its_errors_and_a_retry_compensates_it,
);

#[tokio::test]
async fn the_suite_runs_every_scenario_on_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    conformance::all(|name| {
        let store = SqliteStore::open(dir.path().join(format!("{name}.db"))).expect("open");
        async move { store }
    })
    .await;
}

#[tokio::test]
async fn an_executing_step_is_on_disk_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = create(&store, "k", 2).await;
    store
        .set_state(id, SagaState::Pending, SagaState::Executing)
        .await
        .unwrap();
    store.step_executing(id, 0, 1).await.unwrap();
    store.step_executing(id, 0, 2).await.unwrap();
    drop(store);

    let store = open(&dir);
    let saga = store.get(id).await.unwrap();
    assert_eq!(saga.record.state, SagaState::Executing);
    assert_eq!(
        (saga.steps[0].state, saga.steps[0].attempt),
        (StepState::Executing, 2)
    );
    assert_eq!(saga.steps[1].state, StepState::Pending);
    assert_eq!(store.non_terminal().await.unwrap(), [id]);
    // Recovery re-sends it as the next attempt.
    store.step_executing(id, 0, 3).await.unwrap();
}

#[tokio::test]
async fn a_second_open_is_locked_out_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let err = SqliteStore::open(dir.path().join("saga.db")).unwrap_err();
    let lock = dir.path().join("saga.db.lock");
    assert_eq!(err, StoreError::Locked { path: lock.clone() });
    assert!(
        err.to_string().contains(&lock.display().to_string()),
        "{err}"
    );
    let pid = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
    // A clone shares the lock; the lock goes with the last one.
    let clone = first.clone();
    drop(first);
    assert!(matches!(
        SqliteStore::open(dir.path().join("saga.db")),
        Err(StoreError::Locked { .. })
    ));
    drop(clone);
    let second = open(&dir);
    assert_eq!(second.path(), dir.path().join("saga.db"));
}

#[tokio::test]
async fn the_pragmas_are_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.pragma("journal_mode"), "wal");
    assert_eq!(store.pragma("synchronous"), "2"); // FULL
    assert_eq!(store.pragma("foreign_keys"), "1");
    assert_eq!(store.pragma("busy_timeout"), "5000");
    assert_eq!(store.pragma("user_version"), MIGRATIONS.len().to_string());
    drop(store);
    // Reopening migrates nothing and keeps the data.
    let store = open(&dir);
    assert_eq!(store.pragma("user_version"), MIGRATIONS.len().to_string());
}

#[tokio::test]
async fn a_log_from_a_newer_daemon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saga.db");
    drop(open(&dir));
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[tokio::test]
async fn one_node_leases_every_saga_in_flight_it_does_not_drive_already() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = create(&store, "a", 1).await;
    let b = create(&store, "b", 1).await;
    let c = create(&store, "c", 1).await;
    complete(&store, b).await;
    // The lock file keeps other daemons out: leases are always granted,
    // never expire and are never lost.
    assert_eq!(store.lease_ttl(), None);
    assert_eq!(store.lease(10, &[]).await.unwrap(), [a, c]);
    assert_eq!(store.lease(1, &[]).await.unwrap(), [a]);
    assert_eq!(store.lease(10, &[a]).await.unwrap(), [c]);
    assert!(store.lease(0, &[]).await.unwrap().is_empty());
    assert!(store.heartbeat(&[a, c]).await.unwrap().is_empty());
    store.release(a).await.unwrap();
    assert_eq!(store.lease(10, &[]).await.unwrap(), [a, c]);
}
