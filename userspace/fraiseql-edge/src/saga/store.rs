//! The durable log's interface: [`SagaStore`], what its writes mean, and its
//! errors.
//!
//! # Async, through `async_trait`
//!
//! The trait is async (boxed futures from `async_trait`, which the
//! workspace already builds for tonic) rather than a set of blocking
//! methods, because its two stores block in different ways: SQLite is a
//! blocking library, so [`SqliteStore`](super::SqliteStore) moves each call
//! onto Tokio's blocking pool itself; the PostgreSQL store speaks to the
//! server asynchronously (leases, heartbeats) and would only waste a
//! blocking thread per call behind a sync trait. The executor awaits either
//! the same way and holds an `Arc<dyn SagaStore>`; the cost, one allocation
//! per call, is nothing next to an fsync.
//!
//! Every method needs a Tokio runtime. A call whose future is dropped may
//! still be carried out (the write runs to its end on the blocking pool):
//! the caller must act on a write only after it returned `Ok`.
//!
//! # One transaction per write
//!
//! Each write reads the saga and its steps, checks the move against the
//! model (`saga::moves`), and writes, in one transaction: a refused write
//! leaves the log exactly as it was. When a write returns `Ok` it is on
//! disk (SQLite: WAL with `synchronous=FULL`; PostgreSQL: a committed
//! transaction).
//!
//! # Leases: which node drives a saga
//!
//! Several daemons may share one log (PostgreSQL). A saga is driven by the
//! node holding its *lease*: an owner (the node's name) and an expiry
//! (the database server's clock). A store is opened for one node and one
//! lease time to live, so the node is not a parameter of every write:
//!
//! * [`create`](SagaStore::create) leases the new saga to the node that
//!   wrote it, and [`unpark`](SagaStore::unpark) to the node of the
//!   operator who retried it;
//! * [`lease`](SagaStore::lease) is recovery's way in: it takes the sagas
//!   in flight whose lease is free, expired or already ours (`FOR UPDATE
//!   SKIP LOCKED`: two nodes never take the same one);
//! * [`heartbeat`](SagaStore::heartbeat) extends the leases of the sagas
//!   the node drives, every third of the time to live, and names those it
//!   lost;
//! * every write checks the lease in its transaction, with the saga's row
//!   locked: a saga leased to another node whose lease has not expired is
//!   refused with [`StoreError::LeaseLost`], so a node that lost a saga
//!   stops at its next write and two nodes never move one saga at once.
//!   (A request the old owner had already sent may be sent again by the new
//!   owner: with the same idempotency key, which the subgraph deduplicates.)
//! * a saga that ends or is parked gives its lease up in the same write.
//!
//! A one-node store (SQLite: its lock file already keeps every other daemon
//! out) grants every lease: the defaults below.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::model::{NewSaga, Saga, SagaId, SagaRecord, SagaState};

/// What [`SagaStore::create`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new saga was written.
    New(SagaId),
    /// The same client key came with the same body: the saga written then.
    Existing(SagaId),
}

impl Created {
    /// The saga's id, new or not.
    pub fn id(self) -> SagaId {
        match self {
            Created::New(id) | Created::Existing(id) => id,
        }
    }
}

/// The log at a glance (see [`SagaStore::summary`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sagas neither terminal nor parked, by state (states with none are
    /// absent).
    pub in_flight: Vec<(SagaState, u64)>,
    /// Sagas parked for an operator (whatever their state).
    pub parked: u64,
    /// When the oldest saga in flight was written (Unix milliseconds).
    pub oldest_in_flight_ms: Option<u64>,
}

/// How a step's mutation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    /// The subgraph answered with usable data (kept as the step's result).
    Completed {
        /// The response's `data`.
        result: Value,
    },
    /// The step failed for good.
    Failed {
        /// Why.
        error: String,
    },
}

/// How one attempt at a step's compensation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CompensationOutcome {
    /// It succeeded: the step is `Compensated`.
    Compensated,
    /// This attempt failed; the step stays `Completed` (its effect stands)
    /// and the error is kept. Another attempt may follow, or `park`.
    Failed {
        /// Why.
        error: String,
    },
}

/// Why a store refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such saga, or no such step in it.
    #[error("{}", not_found(saga, *step))]
    NotFound {
        /// The saga asked for.
        saga: SagaId,
        /// The step asked for, if the saga exists but the step does not.
        step: Option<u32>,
    },
    /// The client key was already used with a different body; nothing was
    /// written.
    #[error("idempotency key {key:?} was already used with a different body")]
    Conflict {
        /// The client key.
        key: String,
    },
    /// A compare-and-set found the saga in another state than expected
    /// (someone else moved it); nothing was written.
    #[error("saga {saga} is {actual}, not {expected}")]
    StateChanged {
        /// The saga.
        saga: SagaId,
        /// The state the caller expected.
        expected: SagaState,
        /// The state it is in.
        actual: SagaState,
    },
    /// The model does not allow the move; nothing was written.
    #[error("{subject}: {from} → {to} is not allowed: {why}")]
    IllegalTransition {
        /// What would have moved (`saga <id>` or `saga <id> step <n>`).
        subject: String,
        /// Where it is (a state, with the attempt for an attempt).
        from: String,
        /// Where the write would have taken it.
        to: String,
        /// Which rule refuses it.
        why: String,
    },
    /// Another process holds the log's lock file (another daemon uses the
    /// log).
    #[error("the saga log is in use by another process: {} is locked", path.display())]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// The saga is leased to another node (its lease has not expired):
    /// that node drives it; nothing was written.
    #[error("saga {saga} is leased to node {owner:?}")]
    LeaseLost {
        /// The saga.
        saga: SagaId,
        /// The node that holds its lease.
        owner: String,
    },
    /// The storage failed (I/O, corruption, a schema from a newer version).
    #[error("saga log: {0}")]
    Storage(String),
}

fn not_found(saga: &SagaId, step: Option<u32>) -> String {
    match step {
        None => format!("saga {saga} not found"),
        Some(step) => format!("saga {saga} has no step {step}"),
    }
}

/// The durable saga log. Every write is one transaction and is on disk when
/// it returns `Ok`; a refused write changes nothing.
///
/// The executor's contract with it: write [`step_executing`] (and
/// [`compensation_started`]) and wait for `Ok` *before* sending the
/// request; write the outcome after. Recovery may then assume that
/// a step `Pending` was never sent; a step `Executing(n)` may have been sent
/// up to `n` times, all with its idempotency key, and its outcome is
/// unknown; a step `Completed` took effect exactly once per key and must
/// not be sent again; likewise for compensations with
/// `compensation_attempt`.
///
/// [`step_executing`]: SagaStore::step_executing
/// [`compensation_started`]: SagaStore::compensation_started
#[async_trait]
pub trait SagaStore: Send + Sync {
    /// Writes a new saga with its steps, all `Pending`, at once. The same
    /// client key with the same body hash returns the saga written then;
    /// with another hash, [`StoreError::Conflict`] and nothing is written.
    async fn create(&self, saga: NewSaga) -> Result<Created, StoreError>;

    /// The saga and its steps.
    async fn get(&self, id: SagaId) -> Result<Saga, StoreError>;

    /// Sagas (without their steps), in `state` if given, newest first, at
    /// most `limit`.
    async fn list(
        &self,
        state: Option<SagaState>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError>;

    /// The sagas recovery must drive on: not terminal and not parked,
    /// oldest first.
    async fn non_terminal(&self) -> Result<Vec<SagaId>, StoreError>;

    /// Recovery's claim: in one transaction, takes up to `limit` sagas in
    /// flight (not terminal, not parked, not in `except`: those this node
    /// drives already) whose lease is free, expired or this node's, skipping
    /// rows another node has locked, and leases them to this node for one
    /// time to live. Oldest first. The default (one node) is
    /// [`non_terminal`](SagaStore::non_terminal) less `except`.
    async fn lease(&self, limit: usize, except: &[SagaId]) -> Result<Vec<SagaId>, StoreError> {
        let mut ids = self.non_terminal().await?;
        ids.retain(|id| !except.contains(id));
        ids.truncate(limit);
        Ok(ids)
    }

    /// Extends, for one time to live from now, the leases this node holds on
    /// `ids`; returns those of `ids` it no longer holds (another node took
    /// them after they expired, or they ended). The default (one node)
    /// loses none.
    async fn heartbeat(&self, ids: &[SagaId]) -> Result<Vec<SagaId>, StoreError> {
        let _ = ids;
        Ok(Vec::new())
    }

    /// Gives up this node's lease on `saga` (if it holds it), so that any
    /// node's recovery may take it at once. The default does nothing.
    async fn release(&self, saga: SagaId) -> Result<(), StoreError> {
        let _ = saga;
        Ok(())
    }

    /// How long a lease lasts without a heartbeat; `None` for a store that
    /// does not lease (one node).
    fn lease_ttl(&self) -> Option<Duration> {
        None
    }

    /// What the gauges show: sagas in flight by state, parked sagas, and
    /// when the oldest saga in flight was written.
    async fn summary(&self) -> Result<Summary, StoreError>;

    /// Step `index` is about to be sent for the `attempt`-th time (1, 2, …:
    /// one more than written). The saga must be `Executing` and not parked,
    /// and every earlier step `Completed`.
    async fn step_executing(
        &self,
        saga: SagaId,
        index: u32,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// The outcome of the step's mutation; the step must be `Executing`.
    /// Accepted whatever the saga's state: an answer that arrived is a fact.
    async fn step_finished(
        &self,
        saga: SagaId,
        index: u32,
        outcome: StepOutcome,
    ) -> Result<(), StoreError>;

    /// Step `index`'s compensation is about to be sent for the
    /// `attempt`-th time. The saga must be `Compensating` and not parked,
    /// the step `Completed`, and no later step `Completed` or `Executing`
    /// (compensations run in reverse order).
    async fn compensation_started(
        &self,
        saga: SagaId,
        index: u32,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// The outcome of the last compensation attempt; the step must be
    /// `Completed` with a compensation started.
    async fn compensation_finished(
        &self,
        saga: SagaId,
        index: u32,
        outcome: CompensationOutcome,
    ) -> Result<(), StoreError>;

    /// Moves the saga from `from` to `to` if it is in `from`
    /// ([`StoreError::StateChanged`] if not) and the model allows it
    /// ([`StoreError::IllegalTransition`] if not). Beyond the table:
    /// `Completed` needs every step completed; `Compensating` needs no step
    /// in doubt; `Compensated` needs no step left completed; `Failed` is
    /// written only by [`park`](SagaStore::park); a parked saga only moves
    /// to `Cancelled`, and only a parked or pending one may.
    async fn set_state(
        &self,
        saga: SagaId,
        from: SagaState,
        to: SagaState,
    ) -> Result<(), StoreError>;

    /// Leaves a non-terminal saga for an operator, with `reason`. With
    /// `partially_compensated` (the saga must be `Compensating`: a
    /// compensation was given up) it also becomes `Failed`. Returns the
    /// saga's state.
    async fn park(
        &self,
        saga: SagaId,
        reason: String,
        partially_compensated: bool,
    ) -> Result<SagaState, StoreError>;

    /// An operator's retry of a parked saga: it is no longer parked, and a
    /// `Failed` one goes back to `Compensating` (its rollback is retried).
    /// Returns the saga's state.
    async fn unpark(&self, saga: SagaId) -> Result<SagaState, StoreError>;
}
