//! The saga log several nodes share: a PostgreSQL database.
//!
//! * **Durability.** A write returns `Ok` once its transaction committed
//!   (with the server's `synchronous_commit`, on by default: the WAL is
//!   flushed).
//! * **One writer per saga.** Each write locks the saga's row (`SELECT …
//!   FOR UPDATE`) before it reads the steps and checks the move
//!   (`saga::moves`), so two nodes writing one saga are serialized and the
//!   second one checks against what the first wrote. The same transaction
//!   checks the lease (see [`store`](super::store)): a saga leased to another
//!   node whose lease has not expired is refused with
//!   [`StoreError::LeaseLost`].
//! * **Leases.** `lease_owner` (a node's name) and `lease_expires_at` (the
//!   *server's* clock: nodes' clocks never need to agree) on each saga.
//!   Recovery takes free or expired leases with `FOR UPDATE SKIP LOCKED`;
//!   the coordinator extends its own with heartbeats.
//! * **Schema.** Created and migrated in one transaction under an advisory
//!   lock (nodes starting together migrate once), its version in
//!   `saga_schema`; a database written by a newer daemon is refused. Ids and
//!   hashes are hex text and JSON is text, as in the SQLite log.
//! * **Connections.** A small pool; every call takes one connection for
//!   its transaction.

use std::{str::FromStr as _, sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{IsolationLevel, NoTls, Row, types::ToSql};

use super::{
    model::{NewSaga, Saga, SagaId, SagaRecord, SagaState, StepRecord, StepState, now_ms},
    moves,
    store::{CompensationOutcome, Created, SagaStore, StepOutcome, StoreError, Summary},
};

/// Connections per node: writes are short transactions, one per step.
const POOL_SIZE: usize = 8;

/// How long opening a connection (or waiting for a free one) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serializes migrations across nodes (`pg_advisory_xact_lock`): "fqesaga".
const MIGRATION_LOCK: i64 = 0x0066_7165_7361_6761;

/// The schema, one migration per version. A released migration is never
/// edited: a change is a new one.
const MIGRATIONS: &[&str] = &[
    // 1: sagas (with their lease) and their steps.
    "CREATE TABLE sagas (
        id TEXT PRIMARY KEY,
        client_key TEXT NOT NULL UNIQUE,
        body_sha256 TEXT NOT NULL,
        identity_headers TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('Pending', 'Executing', 'Completed',
            'Failed', 'Compensating', 'Compensated', 'Cancelled')),
        parked BOOLEAN NOT NULL DEFAULT FALSE,
        partially_compensated BOOLEAN NOT NULL DEFAULT FALSE,
        last_error TEXT,
        step_count INTEGER NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        seq BIGSERIAL NOT NULL,
        lease_owner TEXT,
        lease_expires_at TIMESTAMPTZ
    );
    CREATE INDEX sagas_by_state ON sagas (state, created_ms, seq);
    CREATE TABLE saga_steps (
        saga_id TEXT NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        subgraph TEXT NOT NULL,
        mutation TEXT NOT NULL,
        variables TEXT NOT NULL,
        compensation TEXT NOT NULL,
        compensation_variables TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('Pending', 'Executing', 'Completed',
            'Failed', 'Compensated')),
        attempt INTEGER NOT NULL DEFAULT 0,
        compensation_attempt INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        result TEXT,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (saga_id, idx)
    );",
];

const SAGA_COLUMNS: &str = "id, client_key, body_sha256, identity_headers, state, parked, \
     partially_compensated, last_error, step_count, created_ms, updated_ms";

const STEP_COLUMNS: &str = "saga_id, idx, subgraph, mutation, variables, compensation, \
     compensation_variables, state, attempt, compensation_attempt, last_error, result, updated_ms";

/// The states a saga is in flight in (neither terminal nor `Failed`), as
/// an SQL list.
fn in_flight_states() -> String {
    SagaState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The PostgreSQL saga log, opened for one node. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    node: String,
    ttl: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("node", &self.inner.node)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// A driver error with the server's message when there is one (the
/// driver's own `Display` says only "db error").
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => storage(format!("postgres: {}: {}", db.code().code(), db.message())),
        None => {
            let mut text = format!("postgres: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            storage(text)
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        e => storage(format!("postgres pool: {e}")),
    }
}

/// `url` with its password (if any) replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        return url.to_string();
    }
    // The key=value form.
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl PostgresStore {
    /// Connects to `url` as node `node`, whose leases last `ttl` without a
    /// heartbeat, and brings the schema up to date. Fails (naming the URL
    /// without its password) when the server cannot be reached.
    pub async fn open(url: &str, node: &str, ttl: Duration) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| storage(format!("{shown}: not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("fraiseql-edge {node}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| storage(format!("{shown}: {e}")))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                node: node.to_string(),
                ttl,
            }),
        };
        store
            .migrate()
            .await
            .map_err(|e| storage(format!("{shown}: {e}")))?;
        Ok(store)
    }

    /// The node this store writes as.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    /// The lease time to live in seconds, as the server's `make_interval`
    /// takes it.
    fn ttl_secs(&self) -> f64 {
        self.inner.ttl.as_secs_f64()
    }

    /// Brings the schema to the latest version, in one transaction.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS saga_schema (version INTEGER NOT NULL)")
            .await
            .map_err(pg)?;
        let version: Option<i32> = tx
            .query_opt("SELECT version FROM saga_schema", &[])
            .await
            .map_err(pg)?
            .map(|row| row.get(0));
        let known = MIGRATIONS.len();
        let from = usize::try_from(version.unwrap_or(0)).unwrap_or(usize::MAX);
        if from > known {
            return Err(storage(format!(
                "the saga log has schema version {from}; this daemon knows up to {known}"
            )));
        }
        for migration in &MIGRATIONS[from..] {
            tx.batch_execute(migration).await.map_err(pg)?;
        }
        let known = i32::try_from(known).map_err(storage)?;
        if version.is_none() {
            tx.execute("INSERT INTO saga_schema (version) VALUES ($1)", &[&known])
                .await
                .map_err(pg)?;
        } else {
            tx.execute("UPDATE saga_schema SET version = $1", &[&known])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    /// Locks the saga's row, checks the lease, reads the saga, runs `write`
    /// on it and carries out the updates it returns, in one transaction (if
    /// `write` refuses, nothing is written).
    async fn write<T, F>(&self, id: SagaId, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Saga) -> Result<(T, Vec<Update>), StoreError> + Send,
        T: Send,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let result = async {
            let lease = tx
                .query_opt(
                    "SELECT lease_owner, lease_expires_at < now() FROM sagas WHERE id = $1 FOR UPDATE",
                    &[&id.to_string()],
                )
                .await
                .map_err(pg)?
                .ok_or(StoreError::NotFound {
                    saga: id,
                    step: None,
                })?;
            let owner: Option<String> = lease.try_get(0).map_err(pg)?;
            let expired: Option<bool> = lease.try_get(1).map_err(pg)?;
            if let Some(owner) = owner
                && owner != self.inner.node
                && expired == Some(false)
            {
                return Err(StoreError::LeaseLost { saga: id, owner });
            }
            let saga = load(&tx, id).await?;
            let (out, updates) = write(&saga)?;
            for update in updates {
                let params: Vec<&(dyn ToSql + Sync)> = update
                    .params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                tx.execute(update.sql.as_str(), &params).await.map_err(pg)?;
            }
            tx.execute(
                "UPDATE sagas SET updated_ms = $1 WHERE id = $2",
                &[&now(), &id.to_string()],
            )
            .await
            .map_err(pg)?;
            Ok(out)
        }
        .await;
        finish(tx, result).await
    }

    /// [`write`](Self::write) of one step: `check` refuses the move or
    /// says what to set on step `index` (`set` with `$1…$n` for the values).
    async fn write_step<F>(&self, saga: SagaId, index: u32, check: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Saga) -> Result<(&'static str, Vec<Param>), StoreError> + Send,
    {
        self.write(saga, move |s| {
            let (set, values) = check(s)?;
            Ok(((), vec![Self::update_step(saga, index, set, values)]))
        })
        .await
    }

    /// An update of step `index` of saga `id`: `set` uses `$1…$n` for
    /// `values`.
    fn update_step(id: SagaId, index: u32, set: &str, values: Vec<Param>) -> Update {
        let n = values.len();
        let mut params = values;
        params.push(Box::new(now()));
        params.push(Box::new(id.to_string()));
        params.push(Box::new(int(index)));
        Update {
            sql: format!(
                "UPDATE saga_steps SET {set}, updated_ms = ${} WHERE saga_id = ${} AND idx = ${}",
                n + 1,
                n + 2,
                n + 3
            ),
            params,
        }
    }
}

/// A statement parameter.
type Param = Box<dyn ToSql + Sync + Send>;

/// One statement a write carries out after its checks passed.
struct Update {
    sql: String,
    params: Vec<Param>,
}

impl Update {
    fn new(sql: &str, params: Vec<Param>) -> Self {
        Self {
            sql: sql.to_string(),
            params,
        }
    }
}

/// Now, as the log stores it (Unix milliseconds, this node's clock: only
/// leases use the server's).
fn now() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

/// A count or index as PostgreSQL's `INTEGER`.
fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn uint(row: &Row, idx: usize) -> Result<u32, StoreError> {
    let n: i32 = row.try_get(idx).map_err(pg)?;
    u32::try_from(n).map_err(|_| storage(format!("negative count {n} in the saga log")))
}

fn ms(row: &Row, idx: usize) -> Result<u64, StoreError> {
    Ok(u64::try_from(row.try_get::<_, i64>(idx).map_err(pg)?).unwrap_or(0))
}

fn text(row: &Row, idx: usize) -> Result<String, StoreError> {
    row.try_get(idx).map_err(pg)
}

fn json<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> Result<T, StoreError> {
    serde_json::from_str(&text(row, idx)?).map_err(|e| storage(format!("saga log JSON: {e}")))
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(storage)
}

fn saga_id(row: &Row, idx: usize) -> Result<SagaId, StoreError> {
    text(row, idx)?.parse().map_err(storage)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(text: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    let ok = text.len() == 64
        && text.is_ascii()
        && out.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        });
    if ok {
        Ok(out)
    } else {
        Err(storage(format!("not a SHA-256: {text:?}")))
    }
}

fn saga_state(name: &str) -> Result<SagaState, StoreError> {
    SagaState::parse(name).ok_or_else(|| storage(format!("unknown saga state {name:?}")))
}

fn saga_row(row: &Row) -> Result<SagaRecord, StoreError> {
    Ok(SagaRecord {
        id: saga_id(row, 0)?,
        client_key: text(row, 1)?,
        body_sha256: sha256(&text(row, 2)?)?,
        identity_headers: json(row, 3)?,
        state: saga_state(&text(row, 4)?)?,
        parked: row.try_get(5).map_err(pg)?,
        partially_compensated: row.try_get(6).map_err(pg)?,
        last_error: row.try_get(7).map_err(pg)?,
        step_count: uint(row, 8)?,
        created_ms: ms(row, 9)?,
        updated_ms: ms(row, 10)?,
    })
}

fn step_row(row: &Row) -> Result<StepRecord, StoreError> {
    let state = text(row, 7)?;
    let result: Option<String> = row.try_get(11).map_err(pg)?;
    Ok(StepRecord {
        saga_id: saga_id(row, 0)?,
        index: uint(row, 1)?,
        subgraph: text(row, 2)?,
        mutation: text(row, 3)?,
        variables: json(row, 4)?,
        compensation: text(row, 5)?,
        compensation_variables: json(row, 6)?,
        state: StepState::parse(&state)
            .ok_or_else(|| storage(format!("unknown step state {state:?}")))?,
        attempt: uint(row, 8)?,
        compensation_attempt: uint(row, 9)?,
        last_error: row.try_get(10).map_err(pg)?,
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| storage(format!("saga log JSON: {e}")))?,
        updated_ms: ms(row, 12)?,
    })
}

/// Commits `tx` when `result` is `Ok`; otherwise rolls it back before
/// returning the error, so its row locks end now: a transaction merely
/// dropped is rolled back only when the pool hands its connection out
/// again, and meanwhile a lease would skip the still-locked saga.
async fn finish<T>(
    tx: deadpool_postgres::Transaction<'_>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(out) => {
            tx.commit().await.map_err(pg)?;
            Ok(out)
        }
        Err(e) => {
            // The error to report is `e`; a failed rollback ends with the
            // connection anyway.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The saga and its steps; a saga whose steps are not all there is
/// reported as damage, never returned short.
async fn load(
    client: &impl deadpool_postgres::GenericClient,
    id: SagaId,
) -> Result<Saga, StoreError> {
    let key = id.to_string();
    let record = client
        .query_opt(
            &format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1"),
            &[&key],
        )
        .await
        .map_err(pg)?
        .ok_or(StoreError::NotFound {
            saga: id,
            step: None,
        })?;
    let record = saga_row(&record)?;
    let steps = client
        .query(
            &format!("SELECT {STEP_COLUMNS} FROM saga_steps WHERE saga_id = $1 ORDER BY idx"),
            &[&key],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(step_row)
        .collect::<Result<Vec<_>, _>>()?;
    let complete = steps.len() == record.step_count as usize
        && steps.iter().zip(0..).all(|(s, i)| s.index == i);
    if !complete {
        return Err(storage(format!(
            "saga {id}: the log holds {} of its {} steps",
            steps.len(),
            record.step_count
        )));
    }
    Ok(Saga { record, steps })
}

#[async_trait]
impl SagaStore for PostgresStore {
    async fn create(&self, new: NewSaga) -> Result<Created, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let id = SagaId::random().map_err(|e| storage(format!("no random id: {e}")))?;
        let step_count = u32::try_from(new.steps.len()).map_err(|_| storage("too many steps"))?;
        let body_sha256 = hex(&new.body_sha256);
        let now = now();
        // A key taken meanwhile by another node's commit makes this insert
        // do nothing (it waits for that commit), and the select below sees
        // that saga.
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO sagas ({SAGA_COLUMNS}, lease_owner, lease_expires_at) \
                     VALUES ($1, $2, $3, $4, $5, FALSE, FALSE, NULL, $6, $7, $7, $8, \
                             now() + make_interval(secs => $9)) \
                     ON CONFLICT (client_key) DO NOTHING RETURNING id"
                ),
                &[
                    &id.to_string(),
                    &new.client_key,
                    &body_sha256,
                    &to_json(&new.identity_headers)?,
                    &SagaState::Pending.as_str(),
                    &int(step_count),
                    &now,
                    &self.inner.node,
                    &self.ttl_secs(),
                ],
            )
            .await
            .map_err(pg)?;
        if inserted.is_none() {
            let row = tx
                .query_one(
                    "SELECT id, body_sha256 FROM sagas WHERE client_key = $1",
                    &[&new.client_key],
                )
                .await
                .map_err(pg)?;
            let existing = saga_id(&row, 0)?;
            return if text(&row, 1)? == body_sha256 {
                Ok(Created::Existing(existing))
            } else {
                Err(StoreError::Conflict {
                    key: new.client_key.clone(),
                })
            };
        }
        let insert = tx
            .prepare(&format!(
                "INSERT INTO saga_steps ({STEP_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, NULL, NULL, $9)"
            ))
            .await
            .map_err(pg)?;
        for (index, step) in (0u32..).zip(&new.steps) {
            tx.execute(
                &insert,
                &[
                    &id.to_string(),
                    &int(index),
                    &step.subgraph,
                    &step.mutation,
                    &to_json(&step.variables)?,
                    &step.compensation,
                    &to_json(&step.compensation_variables)?,
                    &StepState::Pending.as_str(),
                    &now,
                ],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(Created::New(id))
    }

    async fn get(&self, id: SagaId) -> Result<Saga, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the saga and its steps.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let saga = load(&tx, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(saga)
    }

    async fn list(
        &self,
        state: Option<SagaState>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match state {
            Some(state) => client
                .query(
                    &format!(
                        "SELECT {SAGA_COLUMNS} FROM sagas WHERE state = $1 \
                         ORDER BY created_ms DESC, seq DESC LIMIT $2"
                    ),
                    &[&state.as_str(), &limit],
                )
                .await
                .map_err(pg)?,
            None => client
                .query(
                    &format!(
                        "SELECT {SAGA_COLUMNS} FROM sagas \
                         ORDER BY created_ms DESC, seq DESC LIMIT $1"
                    ),
                    &[&limit],
                )
                .await
                .map_err(pg)?,
        };
        rows.iter().map(saga_row).collect()
    }

    async fn non_terminal(&self) -> Result<Vec<SagaId>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT id FROM sagas WHERE state IN ({}) AND NOT parked \
                     ORDER BY created_ms, seq",
                    in_flight_states()
                ),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(|r| saga_id(r, 0)).collect()
    }

    async fn lease(&self, limit: usize, except: &[SagaId]) -> Result<Vec<SagaId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let except: Vec<String> = except.iter().map(SagaId::to_string).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement is one transaction: the rows are picked and locked
        // (skipping those another node holds locked) and leased together.
        let rows = client
            .query(
                &format!(
                    "WITH picked AS (
                        SELECT id FROM sagas
                        WHERE state IN ({}) AND NOT parked AND NOT (id = ANY($3))
                          AND (lease_owner IS NULL OR lease_owner = $1
                               OR lease_expires_at < now())
                        ORDER BY created_ms, seq
                        LIMIT $4
                        FOR UPDATE SKIP LOCKED
                    )
                    UPDATE sagas s
                    SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2)
                    FROM picked WHERE s.id = picked.id
                    RETURNING s.id, s.created_ms, s.seq",
                    in_flight_states()
                ),
                &[&self.inner.node, &self.ttl_secs(), &except, &limit],
            )
            .await
            .map_err(pg)?;
        let mut leased = rows
            .iter()
            .map(|r| {
                let order: (i64, i64) = (r.try_get(1).map_err(pg)?, r.try_get(2).map_err(pg)?);
                Ok((order, saga_id(r, 0)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        leased.sort();
        Ok(leased.into_iter().map(|(_, id)| id).collect())
    }

    async fn heartbeat(&self, ids: &[SagaId]) -> Result<Vec<SagaId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let keys: Vec<String> = ids.iter().map(SagaId::to_string).collect();
        let rows = client
            .query(
                "UPDATE sagas SET lease_expires_at = now() + make_interval(secs => $2) \
                 WHERE id = ANY($3) AND lease_owner = $1 RETURNING id",
                &[&self.inner.node, &self.ttl_secs(), &keys],
            )
            .await
            .map_err(pg)?;
        let kept = rows
            .iter()
            .map(|r| saga_id(r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids
            .iter()
            .filter(|id| !kept.contains(id))
            .copied()
            .collect())
    }

    async fn release(&self, saga: SagaId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sagas SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2",
                &[&saga.to_string(), &self.inner.node],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(self.inner.ttl)
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
        let client = self.client().await?;
        let mut summary = Summary::default();
        let rows = client
            .query(
                &format!(
                    "SELECT state, COUNT(*), MIN(created_ms) FROM sagas \
                     WHERE NOT parked AND state IN ({}) GROUP BY state ORDER BY state",
                    in_flight_states()
                ),
                &[],
            )
            .await
            .map_err(pg)?;
        for row in &rows {
            let state = saga_state(&text(row, 0)?)?;
            let count: i64 = row.try_get(1).map_err(pg)?;
            let oldest = u64::try_from(row.try_get::<_, i64>(2).map_err(pg)?).unwrap_or(0);
            summary
                .in_flight
                .push((state, u64::try_from(count).unwrap_or(0)));
            summary.oldest_in_flight_ms = Some(
                summary
                    .oldest_in_flight_ms
                    .map_or(oldest, |o| o.min(oldest)),
            );
        }
        let parked: i64 = client
            .query_one("SELECT COUNT(*) FROM sagas WHERE parked", &[])
            .await
            .map_err(pg)?
            .get(0);
        summary.parked = u64::try_from(parked).unwrap_or(0);
        Ok(summary)
    }

    async fn step_executing(
        &self,
        saga: SagaId,
        index: u32,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.write_step(saga, index, move |s| {
            moves::step_executing(s, index, attempt)?;
            Ok((
                "state = $1, attempt = $2",
                vec![
                    Box::new(StepState::Executing.as_str()),
                    Box::new(int(attempt)),
                ],
            ))
        })
        .await
    }

    async fn step_finished(
        &self,
        saga: SagaId,
        index: u32,
        outcome: StepOutcome,
    ) -> Result<(), StoreError> {
        self.write_step(saga, index, move |s| match outcome {
            StepOutcome::Completed { result } => {
                moves::step_finished(s, index, StepState::Completed)?;
                Ok((
                    "state = $1, result = $2",
                    vec![
                        Box::new(StepState::Completed.as_str()),
                        Box::new(to_json(&result)?),
                    ],
                ))
            }
            StepOutcome::Failed { error } => {
                moves::step_finished(s, index, StepState::Failed)?;
                Ok((
                    "state = $1, last_error = $2",
                    vec![Box::new(StepState::Failed.as_str()), Box::new(error)],
                ))
            }
        })
        .await
    }

    async fn compensation_started(
        &self,
        saga: SagaId,
        index: u32,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.write_step(saga, index, move |s| {
            moves::compensation_started(s, index, attempt)?;
            Ok(("compensation_attempt = $1", vec![Box::new(int(attempt))]))
        })
        .await
    }

    async fn compensation_finished(
        &self,
        saga: SagaId,
        index: u32,
        outcome: CompensationOutcome,
    ) -> Result<(), StoreError> {
        self.write_step(saga, index, move |s| {
            moves::compensation_finished(s, index)?;
            Ok(match outcome {
                CompensationOutcome::Compensated => (
                    "state = $1",
                    vec![Box::new(StepState::Compensated.as_str()) as Param],
                ),
                CompensationOutcome::Failed { error } => {
                    ("last_error = $1", vec![Box::new(error) as Param])
                }
            })
        })
        .await
    }

    async fn set_state(
        &self,
        saga: SagaId,
        from: SagaState,
        to: SagaState,
    ) -> Result<(), StoreError> {
        self.write(saga, move |s| {
            moves::set_state(s, from, to)?;
            // A cancelled saga is closed: no longer waiting for an operator.
            // A saga that ended needs no node any more.
            let update = Update::new(
                "UPDATE sagas SET state = $1, parked = parked AND $2, \
                 lease_owner = CASE WHEN $3 THEN NULL ELSE lease_owner END, \
                 lease_expires_at = CASE WHEN $3 THEN NULL ELSE lease_expires_at END \
                 WHERE id = $4",
                vec![
                    Box::new(to.as_str()),
                    Box::new(to != SagaState::Cancelled),
                    Box::new(to.is_terminal()),
                    Box::new(saga.to_string()),
                ],
            );
            Ok(((), vec![update]))
        })
        .await
    }

    async fn park(
        &self,
        saga: SagaId,
        reason: String,
        partially_compensated: bool,
    ) -> Result<SagaState, StoreError> {
        self.write(saga, move |s| {
            let state = moves::park(s, partially_compensated)?;
            // A parked saga waits for an operator, not for a node.
            let update = Update::new(
                "UPDATE sagas SET state = $1, parked = TRUE, partially_compensated = $2, \
                 last_error = $3, lease_owner = NULL, lease_expires_at = NULL WHERE id = $4",
                vec![
                    Box::new(state.as_str()),
                    Box::new(partially_compensated),
                    Box::new(reason),
                    Box::new(saga.to_string()),
                ],
            );
            Ok((state, vec![update]))
        })
        .await
    }

    async fn unpark(&self, saga: SagaId) -> Result<SagaState, StoreError> {
        let node = self.inner.node.clone();
        let ttl = self.ttl_secs();
        self.write(saga, move |s| {
            let state = moves::unpark(s)?;
            // The operator's node drives the retried saga.
            let update = Update::new(
                "UPDATE sagas SET state = $1, parked = FALSE, partially_compensated = FALSE, \
                 lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3) \
                 WHERE id = $4",
                vec![
                    Box::new(state.as_str()),
                    Box::new(node),
                    Box::new(ttl),
                    Box::new(saga.to_string()),
                ],
            );
            Ok((state, vec![update]))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
