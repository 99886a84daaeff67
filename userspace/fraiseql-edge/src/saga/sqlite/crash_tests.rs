//! The crash test: a writer process (this test binary, started again with
//! [`WRITER_ENV`] set) creates sagas and moves them forward as fast as it
//! can; it is killed with SIGKILL at a random moment, several times. After
//! each kill the log must reopen intact, hold every saga whole, in states
//! the model allows, none of them behind what the previous round saw.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use super::{tests::new_saga, *};

/// Set (to the log's path) when this binary runs as the writer.
const WRITER_ENV: &str = "FRAISEQL_EDGE_SAGA_CRASH_WRITER";
/// What the writer prints once its log is open.
const READY: &str = "saga-writer: ready";
const ROUNDS: usize = 5;

fn random_u64() -> u64 {
    let mut b = [0; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}

/// The writer's test name, as libtest knows it (without the crate).
fn writer_test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::crash_writer")
}

/// How the writer runs a saga, derived from its id so that a restarted
/// writer carries it on the same way.
struct Plan {
    /// The step that fails (after its attempts), if any.
    fail_at: Option<u32>,
    /// Attempts at each step.
    attempts: u32,
    /// Attempts at each compensation (all but the last fail).
    compensation_attempts: u32,
}

fn plan(saga: &Saga) -> Plan {
    let b = saga.record.id.as_bytes();
    Plan {
        fail_at: b[0]
            .is_multiple_of(3)
            .then(|| u32::from(b[1]) % saga.record.step_count),
        attempts: 1 + u32::from(b[2] % 2),
        compensation_attempts: 1 + u32::from(b[3] % 2),
    }
}

/// Makes the saga's next move, as an executor would.
async fn advance(store: &SqliteStore, s: &Saga) -> Result<(), StoreError> {
    use SagaState as S;
    use StepState as T;
    let (id, p) = (s.record.id, plan(s));
    match s.record.state {
        S::Pending => store.set_state(id, S::Pending, S::Executing).await,
        S::Executing => match s.steps.iter().find(|st| st.state != T::Completed) {
            None => store.set_state(id, S::Executing, S::Completed).await,
            Some(st) => match st.state {
                T::Pending => store.step_executing(id, st.index, 1).await,
                T::Executing if st.attempt < p.attempts => {
                    store.step_executing(id, st.index, st.attempt + 1).await
                }
                T::Executing if p.fail_at == Some(st.index) => {
                    let error = "planned failure".to_string();
                    let outcome = StepOutcome::Failed { error };
                    store.step_finished(id, st.index, outcome).await
                }
                T::Executing => {
                    let result = serde_json::json!({ "step": st.index });
                    let outcome = StepOutcome::Completed { result };
                    store.step_finished(id, st.index, outcome).await
                }
                T::Failed => store.set_state(id, S::Executing, S::Compensating).await,
                other => panic!("saga {id} executing with step {} {other}", st.index),
            },
        },
        S::Compensating => {
            let last = s.steps.iter().rev().find(|st| st.state == T::Completed);
            match last {
                None => store.set_state(id, S::Compensating, S::Compensated).await,
                Some(st) if st.compensation_attempt == 0 => {
                    store.compensation_started(id, st.index, 1).await
                }
                Some(st) if st.compensation_attempt == p.compensation_attempts => {
                    let outcome = CompensationOutcome::Compensated;
                    store.compensation_finished(id, st.index, outcome).await
                }
                Some(st) if st.last_error.is_none() => {
                    let error = "planned compensation failure".to_string();
                    let outcome = CompensationOutcome::Failed { error };
                    store.compensation_finished(id, st.index, outcome).await
                }
                Some(st) => {
                    let next = st.compensation_attempt + 1;
                    store.compensation_started(id, st.index, next).await
                }
            }
        }
        terminal => panic!("saga {id} is {terminal}: nothing to do"),
    }
}

/// Moves the saga until it is terminal.
async fn drive(store: &SqliteStore, id: SagaId) {
    loop {
        let saga = store.get(id).await.expect("get");
        if saga.record.state.is_terminal() {
            return;
        }
        advance(store, &saga).await.expect("advance");
    }
}

/// Not a test by itself: the writer, when the crash test starts this binary
/// with [`WRITER_ENV`] set; otherwise it returns at once.
#[test]
fn crash_writer() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        // Straight to the pipe: libtest may capture `println!`.
        let mut out = std::io::stdout();
        writeln!(out, "{READY}")
            .and_then(|()| out.flush())
            .expect("stdout");
        // Recovery first: what the killed writer left.
        for id in store.non_terminal().await.expect("non_terminal") {
            drive(&store, id).await;
        }
        for n in 0u64.. {
            let key = format!("{}-{n}", std::process::id());
            let steps = 1 + (random_u64() % 4) as u32;
            let created = store.create(new_saga(&key, &key, steps)).await;
            drive(&store, created.expect("create").id()).await;
        }
    });
}

/// What a round saw of one saga.
#[derive(Clone, Debug)]
struct Seen {
    state: SagaState,
    steps: Vec<(StepState, u32, u32)>,
}

/// Whether `to` can be reached from `from` in the transition table `edge`.
fn reachable<T: Copy + PartialEq>(all: &[T], edge: fn(T, T) -> bool, from: T, to: T) -> bool {
    let mut todo = VecDeque::from([from]);
    let mut done = vec![];
    while let Some(s) = todo.pop_front() {
        if s == to {
            return true;
        }
        done.push(s);
        let next = all
            .iter()
            .copied()
            .filter(|n| edge(s, *n) && !done.contains(n));
        todo.extend(next);
    }
    false
}

/// The saga is whole and its states agree with each other as the model
/// says they must.
fn check_consistent(saga: &Saga) {
    use StepState as T;
    let r = &saga.record;
    let id = r.id;
    assert!((1..=4).contains(&r.step_count), "saga {id}: {r:?}");
    assert_eq!(saga.steps.len() as u32, r.step_count, "saga {id}");
    assert!(!r.parked && !r.partially_compensated, "saga {id}: {r:?}");
    for (i, st) in saga.steps.iter().enumerate() {
        assert_eq!(st.index as usize, i);
        let started = st.state != T::Pending;
        assert_eq!(started, st.attempt > 0, "saga {id} step {i}: {st:?}");
        if st.compensation_attempt > 0 {
            assert!(matches!(st.state, T::Completed | T::Compensated), "{st:?}");
        }
        if started {
            let earlier = &saga.steps[..i];
            assert!(
                earlier
                    .iter()
                    .all(|e| matches!(e.state, T::Completed | T::Compensated)),
                "saga {id}: step {i} ran before its predecessors: {:?}",
                saga.steps
            );
        }
    }
    let all = |f: fn(T) -> bool| saga.steps.iter().all(|s| f(s.state));
    match r.state {
        SagaState::Pending => assert!(all(|s| s == T::Pending), "{saga:?}"),
        SagaState::Completed => assert!(all(|s| s == T::Completed), "{saga:?}"),
        SagaState::Compensating => assert!(all(|s| s != T::Executing), "{saga:?}"),
        SagaState::Compensated => assert!(
            all(|s| !matches!(s, T::Completed | T::Executing))
                && saga.steps.iter().any(|s| s.state == T::Failed),
            "{saga:?}"
        ),
        SagaState::Executing => {}
        other => panic!("saga {id}: the writer never moves a saga to {other}"),
    }
}

/// Reopens the log after a kill and checks it against what was seen
/// before; returns how many sagas were in flight.
async fn check_after_kill(path: &std::path::Path, seen: &mut HashMap<SagaId, Seen>) -> usize {
    let store = SqliteStore::open(path).expect("the log reopens after SIGKILL");
    assert_eq!(store.pragma("integrity_check"), "ok");
    let records = store.list(None, usize::MAX).await.expect("list");
    assert!(records.len() >= seen.len(), "sagas were lost");
    for r in &records {
        let saga = store.get(r.id).await.expect("every saga is whole");
        check_consistent(&saga);
        let now = Seen {
            state: saga.record.state,
            steps: saga
                .steps
                .iter()
                .map(|s| (s.state, s.attempt, s.compensation_attempt))
                .collect(),
        };
        if let Some(before) = seen.get(&r.id) {
            assert!(
                reachable(
                    &SagaState::ALL,
                    SagaState::can_move_to,
                    before.state,
                    now.state
                ),
                "saga {}: {} went back to {}",
                r.id,
                before.state,
                now.state
            );
            for (b, n) in before.steps.iter().zip(&now.steps) {
                let forward = reachable(&StepState::ALL, StepState::can_move_to, b.0, n.0);
                assert!(forward, "saga {}: {b:?} → {n:?}", r.id);
                assert!(n.1 >= b.1 && n.2 >= b.2, "saga {}: {b:?} → {n:?}", r.id);
            }
        }
        seen.insert(r.id, now);
    }
    let in_flight = store.non_terminal().await.expect("non_terminal").len();
    assert!(in_flight <= 1, "one writer has at most one saga in flight");
    in_flight
}

#[tokio::test]
async fn the_log_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saga.db");
    let exe = std::env::current_exe().unwrap();
    let mut seen = HashMap::new();
    let mut killed_in_flight = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", &writer_test_name(), "--nocapture"])
            .args(["--test-threads", "1"])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.ends_with(READY) => break,
                Some(Ok(_)) => {}
                _ => panic!("the writer stopped: {:?}", child.wait()),
            }
        }
        std::thread::sleep(Duration::from_millis(30 + random_u64() % 250));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer died on its own: {:?}",
            child.wait()
        );
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        drop(lines);

        let in_flight = check_after_kill(&path, &mut seen).await;
        killed_in_flight += in_flight;
        eprintln!(
            "round {round}: {} sagas, {in_flight} in flight at the kill",
            seen.len()
        );
    }
    assert!(seen.len() > ROUNDS, "the writer hardly wrote");
    assert!(killed_in_flight > 0, "no kill landed inside a saga");

    // Recovery drives every saga to a terminal state.
    let store = SqliteStore::open(&path).unwrap();
    for id in store.non_terminal().await.unwrap() {
        drive(&store, id).await;
    }
    assert!(store.non_terminal().await.unwrap().is_empty());
    for r in store.list(None, usize::MAX).await.unwrap() {
        assert!(r.state.is_terminal(), "{r:?}");
        check_consistent(&store.get(r.id).await.unwrap());
    }
}
