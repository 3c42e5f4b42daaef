//! All SQL the server runs. Queries are runtime-checked `query`/`query_as` with `FromRow`, so
//! building needs no database; the schema lives in `migrations/`.
//!
//! Every state change of a task is one statement or one `BEGIN IMMEDIATE` transaction: SQLite
//! serialises writers, and a deferred transaction that reads before it writes would fail with
//! SQLITE_BUSY under concurrency whatever the timeout. Callers see functions named for what
//! they do, never a transaction: this is the seam a second storage engine plugs into.
//!
//! The pool is sqlx's `Any` driver (today always opening SQLite) so that PostgreSQL (#18)
//! arrives behind these same functions, with the SQL both engines speak written once and the
//! few statements where they differ (claims, the start of a writing transaction, backups)
//! chosen by engine here.
//!
//! By table group: `jobs` (jobs, their inputs and results), `leases` (tasks: claims, leases,
//! results, failures) and `workers` (identities and records); the pool, backups and totals
//! here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, FromRow, Row};

use crate::jobs::Plan;
use crate::status::{JobStatus, TaskState};
use crate::sync::LockExt;
use crate::trust::{self, FailureKind};

pub mod chunks;
pub mod credit;
mod instances;
mod jobs;
mod leases;
pub mod legacy;
mod workers;

pub use instances::*;
pub use jobs::*;
pub use leases::*;
pub use workers::*;

pub type Pool = AnyPool;

/// The database engine this process talks to: one per process, set by the first connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default, a file at `DATABASE_PATH`.
    Sqlite,
    /// A server at `DATABASE_URL`, which several instances can share (#18).
    Postgres,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

fn set_engine(engine: Engine) -> Result<(), sqlx::Error> {
    let set = *ENGINE.get_or_init(|| engine);
    if set == engine {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("this process already uses {set:?}; it cannot also open {engine:?}").into(),
        ))
    }
}

static INSTANCE: OnceLock<String> = OnceLock::new();

/// This process's name among the instances sharing a database, recorded with each lease it
/// hands out: `INSTANCE_ID`, or a new random one.
pub fn instance() -> &'static str {
    INSTANCE.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// Names this process (`INSTANCE_ID`), before it hands out any lease: a restart under the
/// same name takes back the leases the last run left.
pub fn set_instance(id: &str) -> Result<(), sqlx::Error> {
    let set = INSTANCE.get_or_init(|| id.to_owned());
    if set == id {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("this process is already instance {set}").into(),
        ))
    }
}

/// The engine of this process's database (SQLite until one is opened).
pub fn engine() -> Engine {
    ENGINE.get().copied().unwrap_or(Engine::Sqlite)
}

/// A statement in this process's engine's placeholders. Statements are written once, with
/// SQLite's `?` and `?N`; PostgreSQL takes `$N`. Each distinct statement is translated once
/// and kept (there are a few dozen, all literals of this module).
fn sql(text: &'static str) -> &'static str {
    if engine() == Engine::Sqlite {
        return text;
    }
    static TRANSLATED: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut translated = TRANSLATED.get_or_init(Default::default).lock_or_recover();
    translated
        .entry(text)
        .or_insert_with(|| Box::leak(to_postgres(text).into_boxed_str()))
}

/// [`sql`] for a statement built at run time.
fn dialect(text: String) -> String {
    match engine() {
        Engine::Sqlite => text,
        Engine::Postgres => to_postgres(&text),
    }
}

/// `?N` becomes `$N`, and a bare `?` the next number after the largest so far, as SQLite
/// numbers it. Quoted text is left alone.
fn to_postgres(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let (mut largest, mut quoted) = (0usize, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        let index = digits.parse().unwrap_or(largest + 1);
        largest = largest.max(index);
        out.push('$');
        out.push_str(&index.to_string());
    }
    out
}

/// Opens (creating when missing) the database file in WAL mode and applies migrations.
pub async fn connect(path: &Path) -> Result<Pool, sqlx::Error> {
    set_engine(Engine::Sqlite)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // In WAL mode NORMAL loses nothing when the process dies (kill -9 included);
                // only a power cut can roll back the last commits.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .await
                .map(|_| ())
            })
        })
        .connect(&url)
        .await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

/// Connects to PostgreSQL at `url` (`DATABASE_URL`) and applies its migrations
/// (`migrations/postgres`).
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Pool, sqlx::Error> {
    set_engine(Engine::Postgres)?;
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// A transaction that writes; on SQLite it holds this process's turn to write until it is
/// committed or dropped. Derefs to the connection, as a `Transaction` does.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// This process's writers to SQLite, one at a time, in the order they asked. SQLite admits
/// one writer and makes the others wait in its busy handler, which sleeps 1, 2, 5, 10, 15 ms…
/// between tries: a dispatch round that found a batch of results being stored waited 3–20 ms
/// for a lock freed well before (a quarter of `BEGIN IMMEDIATE`s took over 2.5 ms on the
/// page's benchmark, the slowest 21 ms; docs/benchmarks.md). Queued here, the next writer
/// starts the moment the last one ends.
static SQLITE_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a transaction that will write. On SQLite it takes the write lock at once, so that
/// it cannot fail with SQLITE_BUSY after reading, after its turn among this process's
/// writers ([`SQLITE_WRITER`]); PostgreSQL locks the rows each statement touches.
async fn begin_write(pool: &Pool) -> Result<WriteTx, sqlx::Error> {
    match engine() {
        Engine::Sqlite => {
            let turn = SQLITE_WRITER.lock().await;
            let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            Ok(WriteTx {
                tx,
                _turn: Some(turn),
            })
        }
        Engine::Postgres => Ok(WriteTx {
            tx: pool.begin().await?,
            _turn: None,
        }),
    }
}

/// Starts a transaction that only reads, and sees one snapshot throughout: a page and its
/// count agree. SQLite's deferred transaction keeps the snapshot of its first read;
/// PostgreSQL's default (read committed) takes one per statement, so it asks for repeatable
/// read.
async fn begin_snapshot(pool: &Pool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match engine() {
        Engine::Sqlite => pool.begin().await,
        Engine::Postgres => {
            pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
        }
    }
}

pub async fn ping(pool: &Pool) -> Result<(), sqlx::Error> {
    sqlx::query(sql("SELECT 1")).execute(pool).await.map(|_| ())
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Moves what the write-ahead log holds into the database file now (`PASSIVE`: it waits for
/// no reader or writer). Called after a job's operands are written, so that the megabytes they
/// add to the log are copied while the submitter waits for its answer, rather than by the
/// first result commit that crosses SQLite's auto-checkpoint threshold, which would hold up
/// the grid's first acknowledgements and task claims.
pub async fn checkpoint(pool: &Pool) -> Result<(), sqlx::Error> {
    if engine() == Engine::Postgres {
        return Ok(()); // its own checkpointer runs in the background
    }
    sqlx::query(sql("PRAGMA wal_checkpoint(PASSIVE)"))
        .execute(pool)
        .await
        .map(|_| ())
}

/// An online backup: a consistent copy of the database, taken while the server runs (WAL
/// readers see one snapshot), written to `dest`, which must not exist.
pub async fn backup(pool: &Pool, dest: &Path) -> Result<(), sqlx::Error> {
    if engine() == Engine::Postgres {
        return Err(sqlx::Error::Configuration(
            "backups of PostgreSQL are pg_dump's (docs/deploy.md)".into(),
        ));
    }
    sqlx::query(sql("VACUUM INTO ?"))
        .bind(dest.to_string_lossy().as_ref())
        .execute(pool)
        .await
        .map(|_| ())
}

/// Grid-wide totals: `(results refused, re-leases)`. A re-lease is a lease handed out for a
/// tile beyond its first.
pub async fn totals(pool: &Pool) -> Result<(i64, i64), sqlx::Error> {
    let refused: (i64,) = sqlx::query_as(sql(
        "SELECT CAST(COALESCE(SUM(refused), 0) AS BIGINT) FROM workers",
    ))
    .fetch_one(pool)
    .await?;
    let releases: (i64,) = sqlx::query_as(sql(
        "SELECT CAST(COALESCE(SUM(attempts - 1), 0) AS BIGINT) FROM tasks WHERE attempts > 1",
    ))
    .fetch_one(pool)
    .await?;
    Ok((refused.0, releases.0))
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn placeholders_are_numbered_as_sqlite_numbers_them_and_quoted_text_is_kept() {
        assert_eq!(
            to_postgres("UPDATE t SET a = ?1, b = ?7 WHERE c = ?3 AND d = ?1"),
            "UPDATE t SET a = $1, b = $7 WHERE c = $3 AND d = $1"
        );
        assert_eq!(
            to_postgres("INSERT INTO t VALUES (?, ?, 'what?', ?)"),
            "INSERT INTO t VALUES ($1, $2, 'what?', $3)"
        );
        // A bare `?` takes the number after the largest so far.
        assert_eq!(to_postgres("?2 ? ?1 ?"), "$2 $3 $1 $4");
    }
}
