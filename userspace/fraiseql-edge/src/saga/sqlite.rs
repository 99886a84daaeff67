//! The one-node saga log: a SQLite file.
//!
//! * **Durability.** WAL journal with `synchronous=FULL`: a commit returns
//!   after the WAL is fsynced, so a write that returned `Ok` survives a
//!   crash of the process or of the machine. (`NORMAL` would only survive
//!   the process.) The journal mode is checked after it is set: a file
//!   system where WAL cannot work fails the open instead of running with
//!   another journal.
//! * **One writer.** An exclusive `flock` on `<path>.lock`, taken before the
//!   database is opened and held as long as the store lives, so two daemons
//!   never share a log; the second open fails with
//!   [`StoreError::Locked`]. The kernel drops the lock when the process
//!   dies, however it dies. The lock file holds the owner's pid, for
//!   operators.
//! * **Schema.** Created and migrated in one transaction, its version in
//!   `PRAGMA user_version`; a log written by a newer daemon is refused.
//!   Ids and hashes are stored as hex text and JSON as text, so the file can
//!   be read with the `sqlite3` shell.
//! * **Threads.** One connection behind a mutex; each call runs on Tokio's
//!   blocking pool. Writes are `BEGIN IMMEDIATE` transactions. The busy
//!   timeout only matters when someone reads the file from outside (the
//!   `sqlite3` shell) while a checkpoint runs.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::{
    model::{NewSaga, Saga, SagaId, SagaRecord, SagaState, StepRecord, StepState, now_ms},
    moves,
    store::{CompensationOutcome, Created, SagaStore, StepOutcome, StoreError, Summary},
};
use async_trait::async_trait;
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use rusqlite::{
    Connection, OptionalExtension as _, Row, Transaction, TransactionBehavior, params,
    types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef},
};

/// How long a statement waits for a lock someone outside holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version (`user_version` = how many ran).
/// A released migration is never edited: a change is a new one.
const MIGRATIONS: &[&str] = &[
    // 1: sagas and their steps.
    "CREATE TABLE sagas (
        id TEXT PRIMARY KEY NOT NULL,
        client_key TEXT NOT NULL,
        body_sha256 TEXT NOT NULL,
        identity_headers TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('Pending', 'Executing', 'Completed',
            'Failed', 'Compensating', 'Compensated', 'Cancelled')),
        parked INTEGER NOT NULL DEFAULT 0 CHECK (parked IN (0, 1)),
        partially_compensated INTEGER NOT NULL DEFAULT 0
            CHECK (partially_compensated IN (0, 1)),
        last_error TEXT,
        step_count INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX sagas_by_client_key ON sagas (client_key);
    CREATE INDEX sagas_by_state ON sagas (state, created_ms);
    CREATE TABLE steps (
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
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (saga_id, idx)
    ) WITHOUT ROWID;",
];

const SAGA_COLUMNS: &str = "id, client_key, body_sha256, identity_headers, state, parked, \
     partially_compensated, last_error, step_count, created_ms, updated_ms";

const STEP_COLUMNS: &str = "saga_id, idx, subgraph, mutation, variables, compensation, \
     compensation_variables, state, attempt, compensation_attempt, last_error, result, updated_ms";

/// The SQLite saga log. Cloning shares the same connection and lock.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Dropped in this order: the database is closed before the lock goes.
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: Flock<File>,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(format!("sqlite: {e}"))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the log at `path`, locking `<path>.lock`.
    /// Blocking: the daemon calls it at start-up.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = lock(&path)?;
        let mut conn = Connection::open(&path)
            .map_err(|e| storage(format!("opening {}: {e}", path.display())))?;
        configure(&conn)?;
        migrate(&mut conn, &path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path,
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| storage(format!("saga log task failed: {e}")))?
    }

    /// Reads the saga, runs `write` on it in one immediate transaction, and
    /// commits (or, if `write` refuses, rolls back: nothing is written).
    async fn write<T, F>(&self, id: SagaId, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &Saga) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let saga = load(&tx, id)?;
            let out = write(&tx, &saga)?;
            touch(&tx, id)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// The value of `PRAGMA name` on the store's connection.
    #[cfg(test)]
    pub(crate) fn pragma(&self, name: &str) -> String {
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        conn.pragma_query_value(None, name, |row| {
            Ok(match row.get_ref(0)? {
                ValueRef::Integer(i) => i.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
        })
        .expect("pragma")
    }
}

/// Takes the exclusive lock on `<path>.lock` and writes our pid in it.
fn lock(path: &Path) -> Result<Flock<File>, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| storage(format!("opening {}: {e}", lock_path.display())))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => return Err(StoreError::Locked { path: lock_path }),
        Err((_, e)) => return Err(storage(format!("locking {}: {e}", lock_path.display()))),
    };
    lock.set_len(0)
        .and_then(|()| writeln!(lock, "{}", std::process::id()))
        .map_err(|e| storage(format!("writing {}: {e}", lock_path.display())))?;
    Ok(lock)
}

/// The connection's pragmas, checked where SQLite could silently ignore
/// them.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(storage(format!(
            "the journal mode stayed {mode:?}: WAL is not supported here"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    let foreign_keys: i64 = conn.pragma_query_value(None, "foreign_keys", |row| row.get(0))?;
    if synchronous != 2 || foreign_keys != 1 {
        return Err(storage(format!(
            "pragmas not in force: synchronous={synchronous}, foreign_keys={foreign_keys}"
        )));
    }
    Ok(())
}

/// Brings the schema to the latest version, in one transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len();
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > known {
        return Err(storage(format!(
            "{} has schema version {version}; this daemon knows up to {}",
            path.display(),
            known
        )));
    }
    for migration in &MIGRATIONS[version..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", i64::try_from(known).map_err(storage)?)?;
    tx.commit()?;
    Ok(())
}

impl ToSql for SagaId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.to_string().into())
    }
}

impl FromSql for SagaId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

impl ToSql for SagaState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for SagaState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        SagaState::parse(name).ok_or_else(|| bad_value(format!("unknown saga state {name:?}")))
    }
}

impl ToSql for StepState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for StepState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        StepState::parse(name).ok_or_else(|| bad_value(format!("unknown step state {name:?}")))
    }
}

fn bad_value(msg: String) -> FromSqlError {
    FromSqlError::Other(msg.into())
}

/// A JSON text column.
fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(storage)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    let text: String = row.get(idx)?;
    let parse = || {
        let mut out = [0u8; 32];
        if text.len() != 64 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(out)
    };
    parse().ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("not a SHA-256: {text:?}").into(),
        )
    })
}

/// Now, as SQLite stores it (Unix milliseconds).
fn now() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

/// A Unix-milliseconds column.
fn ms(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(idx)?).unwrap_or(0))
}

fn saga_row(row: &Row<'_>) -> rusqlite::Result<SagaRecord> {
    Ok(SagaRecord {
        id: row.get(0)?,
        client_key: row.get(1)?,
        body_sha256: sha256_column(row, 2)?,
        identity_headers: json(row, 3)?,
        state: row.get(4)?,
        parked: row.get(5)?,
        partially_compensated: row.get(6)?,
        last_error: row.get(7)?,
        step_count: row.get(8)?,
        created_ms: ms(row, 9)?,
        updated_ms: ms(row, 10)?,
    })
}

fn step_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
    let result: Option<String> = row.get(11)?;
    let result = match result {
        None => None,
        Some(_) => Some(json(row, 11)?),
    };
    Ok(StepRecord {
        saga_id: row.get(0)?,
        index: row.get(1)?,
        subgraph: row.get(2)?,
        mutation: row.get(3)?,
        variables: json(row, 4)?,
        compensation: row.get(5)?,
        compensation_variables: json(row, 6)?,
        state: row.get(7)?,
        attempt: row.get(8)?,
        compensation_attempt: row.get(9)?,
        last_error: row.get(10)?,
        result,
        updated_ms: ms(row, 12)?,
    })
}

/// The saga and its steps; a saga whose steps are not all there is
/// reported as damage, never returned short.
fn load(conn: &Connection, id: SagaId) -> Result<Saga, StoreError> {
    let record = conn
        .query_row(
            &format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?1"),
            [id],
            saga_row,
        )
        .optional()?
        .ok_or(StoreError::NotFound {
            saga: id,
            step: None,
        })?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE saga_id = ?1 ORDER BY idx"
    ))?;
    let steps = stmt
        .query_map([id], step_row)?
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

/// Marks the saga as changed now.
fn touch(tx: &Transaction<'_>, id: SagaId) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sagas SET updated_ms = ?1 WHERE id = ?2",
        params![now(), id],
    )?;
    Ok(())
}

fn create(conn: &mut Connection, new: &NewSaga) -> Result<Created, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let body_sha256 = hex(&new.body_sha256);
    let existing: Option<(SagaId, String)> = tx
        .query_row(
            "SELECT id, body_sha256 FROM sagas WHERE client_key = ?1",
            [&new.client_key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((id, hash)) = existing {
        return if hash == body_sha256 {
            Ok(Created::Existing(id))
        } else {
            Err(StoreError::Conflict {
                key: new.client_key.clone(),
            })
        };
    }
    let id = SagaId::random().map_err(|e| storage(format!("no random id: {e}")))?;
    let step_count = u32::try_from(new.steps.len()).map_err(|_| storage("too many steps"))?;
    let now = now();
    tx.execute(
        &format!(
            "INSERT INTO sagas ({SAGA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, NULL, ?6, ?7, ?7)"
        ),
        params![
            id,
            new.client_key,
            body_sha256,
            to_json(&new.identity_headers)?,
            SagaState::Pending,
            step_count,
            now,
        ],
    )?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO steps ({STEP_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, NULL, NULL, ?9)"
        ))?;
        for (index, step) in (0u32..).zip(&new.steps) {
            insert.execute(params![
                id,
                index,
                step.subgraph,
                step.mutation,
                to_json(&step.variables)?,
                step.compensation,
                to_json(&step.compensation_variables)?,
                StepState::Pending,
                now,
            ])?;
        }
    }
    tx.commit()?;
    Ok(Created::New(id))
}

fn list(
    conn: &Connection,
    state: Option<SagaState>,
    limit: usize,
) -> Result<Vec<SagaRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match state {
        Some(state) => conn
            .prepare_cached(&format!(
                "SELECT {SAGA_COLUMNS} FROM sagas WHERE state = ?1 \
                 ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
            ))?
            .query_map(params![state, limit], saga_row)?
            .collect::<Result<Vec<_>, _>>()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {SAGA_COLUMNS} FROM sagas ORDER BY created_ms DESC, rowid DESC LIMIT ?1"
            ))?
            .query_map([limit], saga_row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows)
}

fn non_terminal(conn: &Connection) -> Result<Vec<SagaId>, StoreError> {
    let states: Vec<String> = SagaState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .map(|s| format!("'{s}'"))
        .collect();
    let sql = format!(
        "SELECT id FROM sagas WHERE state IN ({}) AND parked = 0 ORDER BY created_ms, rowid",
        states.join(", ")
    );
    let ids = conn
        .prepare_cached(&sql)?
        .query_map([], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

fn summary(conn: &Connection) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let mut by_state = conn.prepare_cached(
        "SELECT state, COUNT(*), MIN(created_ms) FROM sagas \
         WHERE parked = 0 AND state IN ('Pending', 'Executing', 'Compensating') GROUP BY state",
    )?;
    let rows = by_state.query_map([], |row| {
        Ok((
            row.get::<_, SagaState>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (state, count, oldest) = row?;
        let oldest = u64::try_from(oldest).unwrap_or(0);
        summary
            .in_flight
            .push((state, u64::try_from(count).unwrap_or(0)));
        summary.oldest_in_flight_ms = Some(
            summary
                .oldest_in_flight_ms
                .map_or(oldest, |o| o.min(oldest)),
        );
    }
    let parked: i64 = conn.query_row("SELECT COUNT(*) FROM sagas WHERE parked = 1", [], |row| {
        row.get(0)
    })?;
    summary.parked = u64::try_from(parked).unwrap_or(0);
    Ok(summary)
}

fn update_step(
    tx: &Transaction<'_>,
    id: SagaId,
    index: u32,
    set: &str,
    values: &[&dyn ToSql],
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE steps SET {set}, updated_ms = ?{} WHERE saga_id = ?{} AND idx = ?{}",
        values.len() + 1,
        values.len() + 2,
        values.len() + 3
    );
    let now = now();
    let mut all: Vec<&dyn ToSql> = values.to_vec();
    all.extend([&now as &dyn ToSql, &id, &index]);
    tx.execute(&sql, all.as_slice())?;
    Ok(())
}

#[async_trait]
impl SagaStore for SqliteStore {
    async fn create(&self, saga: NewSaga) -> Result<Created, StoreError> {
        self.run(move |conn| create(conn, &saga)).await
    }

    async fn get(&self, id: SagaId) -> Result<Saga, StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            load(&tx, id)
        })
        .await
    }

    async fn list(
        &self,
        state: Option<SagaState>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.run(move |conn| list(conn, state, limit)).await
    }

    async fn non_terminal(&self) -> Result<Vec<SagaId>, StoreError> {
        self.run(|conn| non_terminal(conn)).await
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
        self.run(|conn| summary(conn)).await
    }

    async fn step_executing(
        &self,
        saga: SagaId,
        index: u32,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.write(saga, move |tx, s| {
            moves::step_executing(s, index, attempt)?;
            update_step(
                tx,
                saga,
                index,
                "state = ?1, attempt = ?2",
                &[&StepState::Executing, &attempt],
            )
        })
        .await
    }

    async fn step_finished(
        &self,
        saga: SagaId,
        index: u32,
        outcome: StepOutcome,
    ) -> Result<(), StoreError> {
        self.write(saga, move |tx, s| match outcome {
            StepOutcome::Completed { result } => {
                moves::step_finished(s, index, StepState::Completed)?;
                update_step(
                    tx,
                    saga,
                    index,
                    "state = ?1, result = ?2",
                    &[&StepState::Completed, &to_json(&result)?],
                )
            }
            StepOutcome::Failed { error } => {
                moves::step_finished(s, index, StepState::Failed)?;
                update_step(
                    tx,
                    saga,
                    index,
                    "state = ?1, last_error = ?2",
                    &[&StepState::Failed, &error],
                )
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
        self.write(saga, move |tx, s| {
            moves::compensation_started(s, index, attempt)?;
            update_step(tx, saga, index, "compensation_attempt = ?1", &[&attempt])
        })
        .await
    }

    async fn compensation_finished(
        &self,
        saga: SagaId,
        index: u32,
        outcome: CompensationOutcome,
    ) -> Result<(), StoreError> {
        self.write(saga, move |tx, s| {
            moves::compensation_finished(s, index)?;
            match outcome {
                CompensationOutcome::Compensated => {
                    update_step(tx, saga, index, "state = ?1", &[&StepState::Compensated])
                }
                CompensationOutcome::Failed { error } => {
                    update_step(tx, saga, index, "last_error = ?1", &[&error])
                }
            }
        })
        .await
    }

    async fn set_state(
        &self,
        saga: SagaId,
        from: SagaState,
        to: SagaState,
    ) -> Result<(), StoreError> {
        self.write(saga, move |tx, s| {
            moves::set_state(s, from, to)?;
            // A cancelled saga is closed: no longer waiting for an operator.
            tx.execute(
                "UPDATE sagas SET state = ?1, parked = parked AND ?2 WHERE id = ?3",
                params![to, to != SagaState::Cancelled, saga],
            )?;
            Ok(())
        })
        .await
    }

    async fn park(
        &self,
        saga: SagaId,
        reason: String,
        partially_compensated: bool,
    ) -> Result<SagaState, StoreError> {
        self.write(saga, move |tx, s| {
            let state = moves::park(s, partially_compensated)?;
            tx.execute(
                "UPDATE sagas SET state = ?1, parked = 1, partially_compensated = ?2, \
                 last_error = ?3 WHERE id = ?4",
                params![state, partially_compensated, reason, saga],
            )?;
            Ok(state)
        })
        .await
    }

    async fn unpark(&self, saga: SagaId) -> Result<SagaState, StoreError> {
        self.write(saga, move |tx, s| {
            let state = moves::unpark(s)?;
            tx.execute(
                "UPDATE sagas SET state = ?1, parked = 0, partially_compensated = 0 \
                 WHERE id = ?2",
                params![state, saga],
            )?;
            Ok(state)
        })
        .await
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod crash_tests;
