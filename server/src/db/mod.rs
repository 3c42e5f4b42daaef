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

use std::path::Path;

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, FromRow, Row};

use crate::jobs::Plan;
use crate::status::{JobStatus, TaskState};
use crate::trust::{self, FailureKind};

mod jobs;
mod leases;
pub mod legacy;
mod workers;

pub use jobs::*;
pub use leases::*;
pub use workers::*;

pub type Pool = AnyPool;

/// Opens (creating when missing) the database file in WAL mode and applies migrations.
pub async fn connect(path: &Path) -> Result<Pool, sqlx::Error> {
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

/// Starts a transaction that will write: it takes SQLite's write lock at once, so that it
/// cannot fail with SQLITE_BUSY after reading. Every writing transaction starts here, the one
/// place another engine's beginning goes.
async fn begin_write(pool: &Pool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

pub async fn ping(pool: &Pool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
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
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(pool)
        .await
        .map(|_| ())
}

/// An online backup: a consistent copy of the database, taken while the server runs (WAL
/// readers see one snapshot), written to `dest`, which must not exist.
pub async fn backup(pool: &Pool, dest: &Path) -> Result<(), sqlx::Error> {
    sqlx::query("VACUUM INTO ?")
        .bind(dest.to_string_lossy().as_ref())
        .execute(pool)
        .await
        .map(|_| ())
}

/// Grid-wide totals: `(results refused, re-leases)`. A re-lease is a lease handed out for a
/// tile beyond its first.
pub async fn totals(pool: &Pool) -> Result<(i64, i64), sqlx::Error> {
    let refused: (i64,) = sqlx::query_as("SELECT COALESCE(SUM(refused), 0) FROM workers")
        .fetch_one(pool)
        .await?;
    let releases: (i64,) =
        sqlx::query_as("SELECT COALESCE(SUM(attempts - 1), 0) FROM tasks WHERE attempts > 1")
            .fetch_one(pool)
            .await?;
    Ok((refused.0, releases.0))
}
