//! The saga coordinator: drives sagas from the durable log to their end,
//! through the data path, and picks up what a crash left behind.
//!
//! One task drives one saga at a time (a saga is never driven twice at
//! once in a process: `running`). Each turn of [`Coordinator::drive`] reads
//! the saga back from the log and takes the one next move its state calls
//! for, so a saga resumed after a crash and one that never stopped follow
//! the same code:
//!
//! * `Pending` → `Executing`.
//! * `Executing`: the first step not `Completed` is sent (again, with the
//!   same key, if it was in doubt); the answer decides: done (next step),
//!   refused (the step fails), no answer (retried with backoff, then the
//!   step fails). A failed step turns the saga `Compensating`; every step
//!   completed turns it `Completed`.
//! * `Compensating`: the last step still `Completed` has its compensation
//!   sent; a failure is retried with backoff up to
//!   `sagas.compensation_retries` times, then the saga is parked `Failed`
//!   (partially compensated) for an operator. None left: `Compensated`.
//!
//! Recovery runs at start and every `sagas.recovery_interval_secs`: every
//! saga neither finished nor parked that no task drives is driven on.
//!
//! With a log several nodes share (PostgreSQL), a node drives only the
//! sagas it leased (see [`store`](super::store)): those it created, and
//! those recovery leased because their lease was free or expired (their
//! node died or lost touch). While a saga is driven, a heartbeat extends
//! its lease every third of the lease's time to live; a node that lost a
//! lease anyway has its next write refused and that drive stops quietly,
//! leaving the saga to the node that took it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::{RwLock, watch};

use super::{
    answer::{Answer, classify},
    config::SagasConfig,
    metrics::SagaMetrics,
    model::{NewSaga, Saga, SagaId, SagaRecord, SagaState, StepRecord, StepState, now_ms},
    store::{CompensationOutcome, Created, SagaStore, StepOutcome, StoreError},
};
use crate::proxy::Proxy;

/// How often the gauges are refreshed from the log.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Why an operator's action or a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The log refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many sagas in flight on this node.
    #[error("{0} sagas are in flight on this node, the most `sagas.max_in_flight` allows")]
    Busy(usize),
    /// The action does not fit the saga's state.
    #[error("{0}")]
    Refused(String),
}

/// Who asked for a saga to be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Submitted, or retried by an operator.
    Submitted,
    /// Found by recovery.
    Recovery,
}

/// Drives sagas through the data path.
pub struct Coordinator {
    store: Arc<dyn SagaStore>,
    proxy: Weak<Proxy>,
    cfg: SagasConfig,
    metrics: SagaMetrics,
    /// Sagas a task of this process drives now.
    running: Mutex<HashSet<SagaId>>,
    /// Held shared from a saga's creation to its task's start, and
    /// exclusively by recovery while it looks: recovery never takes a
    /// saga just submitted for one it found.
    submitting: RwLock<()>,
}

/// Removes a saga from `running` when its task ends, however it ends.
struct Driving {
    coordinator: Arc<Coordinator>,
    id: SagaId,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.coordinator.running().remove(&self.id);
    }
}

impl Coordinator {
    /// A coordinator over `store`, sending through `proxy`.
    pub fn new(
        store: Arc<dyn SagaStore>,
        proxy: &Arc<Proxy>,
        cfg: SagasConfig,
        metrics: SagaMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            proxy: Arc::downgrade(proxy),
            cfg,
            metrics,
            running: Mutex::new(HashSet::new()),
            submitting: RwLock::new(()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &SagasConfig {
        &self.cfg
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<SagaId>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a submitted saga and starts driving it. The same client key
    /// with the same body gives the saga written then (not started again).
    pub async fn submit(
        self: &Arc<Self>,
        saga: NewSaga,
    ) -> Result<(Created, Saga), CoordinatorError> {
        let in_flight = self.running().len();
        if in_flight >= self.cfg.max_in_flight {
            return Err(CoordinatorError::Busy(in_flight));
        }
        let _gate = self.submitting.read().await;
        let created = self.store.create(saga).await?;
        if let Created::New(id) = created {
            self.metrics.started.inc();
            self.spawn(id, Origin::Submitted);
        }
        let saga = self.store.get(created.id()).await?;
        Ok((created, saga))
    }

    /// The saga and its steps.
    pub async fn get(&self, id: SagaId) -> Result<Saga, StoreError> {
        self.store.get(id).await
    }

    /// Sagas in `state` (all if `None`), newest first, at most `limit`.
    pub async fn list(
        &self,
        state: Option<SagaState>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.store.list(state, limit).await
    }

    /// Whether a task of this process drives the saga now.
    pub fn is_running(&self, id: SagaId) -> bool {
        self.running().contains(&id)
    }

    /// An operator closes a parked saga (accepting what it did and undid),
    /// or withdraws one not started. Returns the state it was in.
    pub async fn cancel(&self, id: SagaId) -> Result<SagaState, CoordinatorError> {
        let saga = self.store.get(id).await?;
        let r = &saga.record;
        let movable = r.parked || (r.state == SagaState::Pending && !self.is_running(id));
        if !movable {
            return Err(CoordinatorError::Refused(format!(
                "saga {id} is {}{}: only a parked saga, or one not started, can be cancelled",
                r.state,
                if r.parked { " (parked)" } else { "" }
            )));
        }
        self.store
            .set_state(id, r.state, SagaState::Cancelled)
            .await?;
        // A saga parked `Failed` was counted as finished when it was parked.
        if r.state != SagaState::Failed {
            self.metrics
                .finish(SagaState::Cancelled, elapsed_secs(r.created_ms));
        }
        tracing::warn!(saga = %id, from = %r.state, "saga cancelled by an operator");
        Ok(r.state)
    }

    /// An operator retries a parked saga: a `Failed` one's rollback starts
    /// again (with a fresh retry budget), any other goes on where it
    /// stopped. Returns the state it goes on from.
    pub async fn retry(self: &Arc<Self>, id: SagaId) -> Result<SagaState, CoordinatorError> {
        let state = self.store.unpark(id).await?;
        tracing::warn!(saga = %id, state = %state, "parked saga retried by an operator");
        self.spawn(id, Origin::Submitted);
        Ok(state)
    }

    /// Starts a task driving `id` unless one already does; whether it did.
    fn spawn(self: &Arc<Self>, id: SagaId, origin: Origin) -> bool {
        if !self.running().insert(id) {
            return false;
        }
        let guard = Driving {
            coordinator: Arc::clone(self),
            id,
        };
        tokio::spawn(async move {
            let me = Arc::clone(&guard.coordinator);
            let result = me.drive(id).await;
            drop(guard);
            let recovered = |result: &str| {
                if origin == Origin::Recovery {
                    me.metrics.recovery.with_label_values(&[result]).inc();
                }
            };
            match result {
                Ok(state) => {
                    recovered("success");
                    tracing::debug!(saga = %id, state = %state, "saga driven to a stop");
                }
                // Someone else (an operator) moved it meanwhile.
                Err(
                    e @ (StoreError::StateChanged { .. } | StoreError::IllegalTransition { .. }),
                ) => {
                    recovered("success");
                    tracing::info!(saga = %id, error = %e, "saga moved by someone else; left as it is");
                }
                // Another node leased it (ours had expired): it drives it now.
                Err(e @ StoreError::LeaseLost { .. }) => {
                    recovered("success");
                    tracing::warn!(saga = %id, error = %e, "saga lease lost; another node drives it on");
                }
                Err(e) => {
                    recovered("failure");
                    tracing::error!(saga = %id, error = %e, "driving the saga failed; recovery will try again");
                }
            }
        });
        true
    }

    /// Runs recovery at start and then periodically, and keeps the gauges
    /// up to date, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut recovery =
            tokio::time::interval(Duration::from_secs(self.cfg.recovery_interval_secs));
        recovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A store that does not lease needs no heartbeat: its timer never
        // fires.
        let ttl = self.store.lease_ttl();
        let mut heartbeat =
            tokio::time::interval(ttl.map_or(Duration::from_secs(3600), |ttl| ttl / 3));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = recovery.tick() => { self.recover().await; }
                _ = gauges.tick() => self.refresh_gauges().await,
                _ = heartbeat.tick(), if ttl.is_some() => self.heartbeat().await,
                () = stopped(&mut stop) => break,
            }
        }
    }

    /// Extends the leases of the sagas this node drives.
    pub async fn heartbeat(&self) {
        let ids: Vec<SagaId> = self.running().iter().copied().collect();
        if ids.is_empty() {
            return;
        }
        match self.store.heartbeat(&ids).await {
            Ok(lost) => {
                for id in lost {
                    // Its drive stops at its next write (refused).
                    tracing::warn!(saga = %id, "saga lease lost before the heartbeat; another node may drive it");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "saga lease heartbeat failed; leases expire unless the next one succeeds");
            }
        }
    }

    /// Drives on every saga in flight that no task drives; returns how many
    /// it started.
    pub async fn recover(self: &Arc<Self>) -> usize {
        let _gate = self.submitting.write().await;
        let driven: Vec<SagaId> = self.running().iter().copied().collect();
        let room = self.cfg.max_in_flight.saturating_sub(driven.len());
        if room == 0 {
            tracing::warn!(
                max_in_flight = self.cfg.max_in_flight,
                "saga recovery: the node is at sagas.max_in_flight; the rest waits for the next round"
            );
            return 0;
        }
        let ids = match self.store.lease(room, &driven).await {
            Ok(ids) => ids,
            Err(e) => {
                self.metrics.recovery.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, "saga recovery could not read the log");
                return 0;
            }
        };
        let mut started = 0;
        for id in ids {
            if self.spawn(id, Origin::Recovery) {
                started += 1;
            }
        }
        if started > 0 {
            tracing::info!(sagas = started, "saga recovery: driving on sagas in flight");
        }
        started
    }

    async fn refresh_gauges(&self) {
        match self.store.summary().await {
            Ok(summary) => self.metrics.show(&summary, now_ms()),
            Err(e) => tracing::warn!(error = %e, "reading the saga log's summary"),
        }
    }

    /// Takes saga `id` from wherever it is to an end or to a park; returns
    /// the state it stopped in.
    async fn drive(&self, id: SagaId) -> Result<SagaState, StoreError> {
        loop {
            let saga = self.store.get(id).await?;
            let r = &saga.record;
            if r.parked || r.state.is_terminal() {
                return Ok(r.state);
            }
            match r.state {
                SagaState::Pending => {
                    self.store
                        .set_state(id, SagaState::Pending, SagaState::Executing)
                        .await?;
                }
                SagaState::Executing => {
                    match saga.steps.iter().find(|s| s.state != StepState::Completed) {
                        None => {
                            return self
                                .end(r, SagaState::Executing, SagaState::Completed)
                                .await;
                        }
                        Some(step) if step.state == StepState::Failed => {
                            tracing::info!(saga = %id, step = step.index, error = step.last_error.as_deref().unwrap_or(""), "saga step failed: compensating");
                            self.store
                                .set_state(id, SagaState::Executing, SagaState::Compensating)
                                .await?;
                        }
                        Some(step) => self.run_step(r, step).await?,
                    }
                }
                SagaState::Compensating => {
                    let last_completed = saga
                        .steps
                        .iter()
                        .rev()
                        .find(|s| s.state == StepState::Completed);
                    match last_completed {
                        None => {
                            return self
                                .end(r, SagaState::Compensating, SagaState::Compensated)
                                .await;
                        }
                        Some(step) => {
                            if !self.compensate(r, step).await? {
                                return Ok(SagaState::Failed);
                            }
                        }
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Moves the saga to its end and counts it.
    async fn end(
        &self,
        r: &SagaRecord,
        from: SagaState,
        to: SagaState,
    ) -> Result<SagaState, StoreError> {
        self.store.set_state(r.id, from, to).await?;
        self.metrics.finish(to, elapsed_secs(r.created_ms));
        tracing::info!(saga = %r.id, state = %to, "saga finished");
        Ok(to)
    }

    /// Sends step `step` until it is done, refused, or out of tries.
    async fn run_step(&self, r: &SagaRecord, step: &StepRecord) -> Result<(), StoreError> {
        let backoff = self.cfg.backoff();
        let mut attempt = step.attempt;
        let mut retry = 0u32;
        let key = step.idempotency_key();
        loop {
            attempt += 1;
            self.store.step_executing(r.id, step.index, attempt).await?;
            let answer = self
                .send(r, &step.subgraph, &step.mutation, &step.variables, &key)
                .await;
            let count = |status: &str| {
                self.metrics
                    .steps
                    .with_label_values(&[step.subgraph.as_str(), status])
                    .inc();
            };
            let outcome = match answer {
                Answer::Done(result) => {
                    count("completed");
                    StepOutcome::Completed { result }
                }
                Answer::Refused(error) => {
                    count("failed");
                    StepOutcome::Failed { error }
                }
                Answer::Retry(error) if retry < self.cfg.step_retries => {
                    count("retried");
                    let gap = backoff.random_gap(retry);
                    tracing::warn!(saga = %r.id, step = step.index, subgraph = step.subgraph, attempt, retry_in_ms = gap.as_millis() as u64, error, "saga step got no answer; sending it again with the same key");
                    tokio::time::sleep(gap).await;
                    retry += 1;
                    continue;
                }
                Answer::Retry(error) => {
                    count("failed");
                    StepOutcome::Failed {
                        error: format!("no answer after {attempt} tries: {error}"),
                    }
                }
            };
            return self.store.step_finished(r.id, step.index, outcome).await;
        }
    }

    /// Sends step `step`'s compensation until it succeeds or the tries run
    /// out; `false` if the saga was parked.
    async fn compensate(&self, r: &SagaRecord, step: &StepRecord) -> Result<bool, StoreError> {
        let backoff = self.cfg.backoff();
        let mut attempt = step.compensation_attempt;
        let mut failures = 0u32;
        let key = step.compensation_key();
        loop {
            attempt += 1;
            self.store
                .compensation_started(r.id, step.index, attempt)
                .await?;
            let answer = self
                .send(
                    r,
                    &step.subgraph,
                    &step.compensation,
                    &step.compensation_variables,
                    &key,
                )
                .await;
            let error = match answer {
                Answer::Done(_) => {
                    self.store
                        .compensation_finished(r.id, step.index, CompensationOutcome::Compensated)
                        .await?;
                    self.metrics
                        .compensations
                        .with_label_values(&[step.subgraph.as_str(), "success"])
                        .inc();
                    return Ok(true);
                }
                Answer::Refused(e) | Answer::Retry(e) => e,
            };
            self.store
                .compensation_finished(
                    r.id,
                    step.index,
                    CompensationOutcome::Failed {
                        error: error.clone(),
                    },
                )
                .await?;
            self.metrics
                .compensations
                .with_label_values(&[step.subgraph.as_str(), "failure"])
                .inc();
            if failures >= self.cfg.compensation_retries {
                let reason = format!(
                    "step {} ({}): compensation failed {} times; last: {error}",
                    step.index,
                    step.subgraph,
                    failures + 1
                );
                self.store.park(r.id, reason.clone(), true).await?;
                self.metrics
                    .finish(SagaState::Failed, elapsed_secs(r.created_ms));
                tracing::error!(saga = %r.id, step = step.index, subgraph = step.subgraph, reason, "saga parked partially compensated: an operator must act");
                return Ok(false);
            }
            let gap = backoff.random_gap(failures);
            tracing::warn!(saga = %r.id, step = step.index, subgraph = step.subgraph, attempt, retry_in_ms = gap.as_millis() as u64, error, "saga compensation failed; retrying");
            tokio::time::sleep(gap).await;
            failures += 1;
        }
    }

    /// Sends one mutation of saga `r` to `subgraph` with `key`, and says
    /// what the answer means.
    async fn send(
        &self,
        r: &SagaRecord,
        subgraph: &str,
        query: &str,
        variables: &Value,
        key: &str,
    ) -> Answer {
        let Some(proxy) = self.proxy.upgrade() else {
            return Answer::Retry("the daemon is stopping".into());
        };
        let body = json!({ "query": query, "variables": variables });
        let body = Bytes::from(body.to_string());
        let mut headers = HeaderMap::new();
        for (name, value) in &r.identity_headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        match HeaderValue::from_str(key) {
            Ok(v) => {
                headers.insert("idempotency-key", v);
            }
            Err(_) => {
                return Answer::Refused(format!("idempotency key {key:?} is not a header value"));
            }
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.cfg.step_timeout_ms);
        let sent = proxy.send(subgraph, body, headers, deadline).await;
        self.metrics
            .step_duration
            .with_label_values(&[subgraph])
            .observe(started.elapsed().as_secs_f64());
        classify(sent)
    }
}

/// Resolves when `stop` is (or becomes) true, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Seconds since `created_ms`.
fn elapsed_secs(created_ms: u64) -> f64 {
    now_ms().saturating_sub(created_ms) as f64 / 1000.0
}
