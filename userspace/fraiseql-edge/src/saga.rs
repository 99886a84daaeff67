//! Sagas: mutations across subgraphs that either all take effect or are
//! undone, compatible with FraiseQL's federation sagas.
//!
//! A saga is an ordered list of steps; each step is a mutation on one
//! subgraph with a compensating mutation. Steps run in order; when one
//! fails, the completed ones are compensated in reverse order. This module
//! holds the foundation the executor, the API and recovery build on:
//!
//! * [`model`] — the states (FraiseQL's names), the transition tables, ids,
//!   and the records.
//! * [`store`] — [`SagaStore`], the durable log's interface, and its errors.
//! * [`sqlite`] — [`SqliteStore`], the log of a single node.
//! * [`postgres`] — [`PostgresStore`], the log several nodes share, each
//!   driving the sagas it leased.
//! * `moves` — the checks every store runs before it writes, so that all
//!   stores refuse the same moves.
//!
//! # The durability contract
//!
//! * A saga and all its steps are written once, in one transaction, before
//!   anything is sent; its client key maps to it for good.
//! * Before a step's mutation is sent, the step is written
//!   `Executing(attempt)` and that write has returned (it is on disk);
//!   after the answer, the outcome (`Completed` with the result, or
//!   `Failed`). The same holds for each compensation attempt
//!   (`compensation_attempt`, then `Compensated` or the error).
//! * Every request for a step carries `Idempotency-Key: <saga-id>:<index>`,
//!   every compensation `<saga-id>:<index>:compensate`, on every attempt.
//!
//! So after a crash recovery may assume: a `Pending` step was never sent;
//! an `Executing` step is in doubt and is re-sent with the same key (the
//! subgraph deduplicates); a `Completed` step took effect and is never sent
//! again; a `Completed` step with compensation attempts in a
//! `Compensating` saga has a compensation in doubt, re-sent with its key.
//! States only move forward (the tables in [`model`]); the only way back,
//! retrying a parked `Failed` saga's rollback, is an operator's.

pub mod answer;
pub mod api;
pub mod backoff;
pub mod config;
#[cfg(any(test, feature = "store-conformance"))]
#[doc(hidden)]
pub mod conformance;
pub mod coordinator;
pub mod metrics;
pub mod model;
mod moves;
pub mod postgres;
pub mod sqlite;
pub mod store;

pub use coordinator::Coordinator;
pub use model::{NewSaga, NewStep, Saga, SagaId, SagaRecord, SagaState, StepRecord, StepState};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use store::{CompensationOutcome, Created, SagaStore, StepOutcome, StoreError, Summary};
