//! Jobs: their rows, inputs, results, endings and retention.

// The parent holds the imports every table group shares.
use super::*;

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub status: JobStatus,
    pub m: i64,
    pub k: i64,
    pub n: i64,
    pub dtype: String,
    pub tile: i64,
    /// Slices of k: each tile's product is the sum of this many partial products.
    pub k_split: i64,
    pub tasks_total: i64,
    pub tasks_done: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Millis>,
    pub error: Option<String>,
}

/// A time stored as milliseconds since the epoch and shown as RFC 3339 with milliseconds
/// ("2026-12-02T05:21:52.042Z"), formatted here rather than in SQL, which each database
/// engine spells its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct Millis(pub i64);

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0.max(0) as u64);
        s.collect_str(&humantime::format_rfc3339_millis(at))
    }
}

impl JobRow {
    /// How the job is cut into tiles, as it was planned at submission.
    pub fn plan(&self) -> Result<Plan, String> {
        Ok(Plan {
            dtype: crate::jobs::Dtype::parse(&self.dtype)?,
            m: self.m as usize,
            k: self.k as usize,
            n: self.n as usize,
            tile: self.tile as usize,
            split: self.k_split as usize,
        })
    }
}

/// A job's columns as the API shows them. On PostgreSQL its count is the job's own (refusals
/// and audits take results off it) plus what each instance counted (`job_progress`).
fn job_columns() -> &'static str {
    match engine() {
        Engine::Sqlite => {
            "id, name, status, m, k, n, dtype, tile, k_split, tasks_total, tasks_done, created_at, \
             finished_at, error"
        }
        Engine::Postgres => {
            "id, name, status, m, k, n, dtype, tile, k_split, tasks_total, \
             CAST(tasks_done + COALESCE((SELECT SUM(p.done) FROM job_progress p \
                 WHERE p.job_id = jobs.id), 0) AS BIGINT) AS tasks_done, \
             created_at, finished_at, error"
        }
    }
}

/// Task rows per INSERT statement in [`insert_job`]: 802 bound parameters, far below
/// SQLite's limit of 32,766.
const TASK_BATCH: usize = 400;

/// Stores a job and all its tasks in one transaction: a job is either fully there or not at
/// all. Its matrices are in the store already.
pub async fn insert_job(pool: &Pool, id: &str, name: &str, plan: &Plan) -> Result<(), sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    insert_job_rows(&mut tx, id, name, plan).await?;
    tx.commit().await
}

/// The job's row and its tasks' rows, in the caller's transaction (see [`insert_job`]; on
/// PostgreSQL the job's inputs go in the same transaction, `chunks`).
pub(super) async fn insert_job_rows(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    name: &str,
    plan: &Plan,
) -> Result<(), sqlx::Error> {
    use std::fmt::Write as _;
    let now = now_ms();
    sqlx::query(sql(
        "INSERT INTO jobs (id, name, status, m, k, n, dtype, tile, k_split, tasks_total, \
             created_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
    ))
    .bind(id)
    .bind(name)
    .bind(plan.m as i64)
    .bind(plan.k as i64)
    .bind(plan.n as i64)
    .bind(plan.dtype.name())
    .bind(plan.tile as i64)
    .bind(plan.split as i64)
    .bind(plan.tasks_total() as i64)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // Tiles are generated as they are inserted, one multi-row INSERT per batch: memory stays
    // at one batch whatever the job, and a job at MAX_TASKS_PER_JOB (100,000) takes 250
    // statements. They share the job's transaction so that a job is never seen, claimed or
    // recovered with only part of its tasks; the plan's task cap bounds how long it holds
    // the write lock.
    let mut tiles = plan.tiles().peekable();
    let mut batch = Vec::with_capacity(TASK_BATCH);
    while tiles.peek().is_some() {
        batch.clear();
        batch.extend(tiles.by_ref().take(TASK_BATCH));
        let mut sql = String::from(
            "INSERT INTO tasks (job_id, tile_row, tile_col, state, updated_at) VALUES ",
        );
        for i in 0..batch.len() {
            let sep = if i == 0 { "" } else { ", " };
            // ?1 is the job id and ?2 the time, bound once for the whole batch.
            let _ = write!(
                sql,
                "{sep}(?1, ?{}, ?{}, 'queued', ?2)",
                3 + 2 * i,
                4 + 2 * i
            );
        }
        let sql = dialect(sql);
        let mut query = sqlx::query(&sql).bind(id).bind(now);
        for t in &batch {
            query = query.bind(t.tile_row as i64).bind(t.tile_col as i64);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

pub async fn list_jobs(pool: &Pool) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(&dialect(format!(
        "SELECT {} FROM jobs ORDER BY created_at DESC, rowid DESC",
        job_columns()
    )))
    .fetch_all(pool)
    .await
}

pub async fn get_job(pool: &Pool, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&dialect(format!(
        "SELECT {} FROM jobs WHERE id = ?",
        job_columns()
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Marks a job running once its first task is leased.
pub async fn mark_running(pool: &Pool, job_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "UPDATE jobs SET status = 'running' WHERE id = ? AND status = 'queued'",
    ))
    .bind(job_id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Fails a job for a reason and withdraws its open tasks; returns the workers that held
/// leases on them (to be told) with the task ids.
pub async fn fail_job(
    pool: &Pool,
    job_id: &str,
    reason: &str,
) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    end_job(pool, job_id, JobStatus::Failed, Some(reason)).await
}

/// Cancels a job if it is still open; returns the withdrawn leases `(task id, worker)`.
pub async fn cancel_job(
    pool: &Pool,
    job_id: &str,
) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    end_job(pool, job_id, JobStatus::Cancelled, None).await
}

async fn end_job(
    pool: &Pool,
    job_id: &str,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    let ended = sqlx::query(sql(
        "UPDATE jobs SET status = ?1, error = ?2, finished_at = ?3 \
         WHERE id = ?4 AND status IN ('queued', 'running')",
    ))
    .bind(status)
    .bind(reason)
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let mut withdrawn = Vec::new();
    if ended > 0 {
        let task_state = if status == JobStatus::Failed {
            TaskState::Failed
        } else {
            TaskState::Cancelled
        };
        // Read the lease owners first: RETURNING would show the row after the update.
        withdrawn = sqlx::query_as(sql(
            "SELECT id, lease_owner FROM tasks WHERE job_id = ? AND state = 'leased'",
        ))
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(sql(
            "UPDATE tasks SET state = ?1, lease_owner = NULL, lease_deadline = NULL, \
                 updated_at = ?2 \
             WHERE job_id = ?3 AND state IN ('queued', 'leased')",
        ))
        .bind(task_state)
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if engine() == Engine::Postgres {
            // Nothing of a job without a result stays: its inputs and the tiles it had.
            super::chunks::drop_bytes(&mut tx, job_id, true).await?;
        }
    }
    tx.commit().await?;
    Ok(withdrawn)
}

/// A tile's state for the dashboard's picture of a job.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct TileState {
    pub task_id: i64,
    pub row: i64,
    pub col: i64,
    pub state: String,
}

pub async fn job_tiles(pool: &Pool, job_id: &str) -> Result<Vec<TileState>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT id AS task_id, tile_row AS row, tile_col AS col, state FROM tasks \
         WHERE job_id = ? ORDER BY tile_row, tile_col",
    ))
    .bind(job_id)
    .fetch_all(pool)
    .await
}

/// `(state, count)` pairs for jobs and for tasks.
/// Jobs by status and tasks by state.
pub type Counts = (Vec<(JobStatus, i64)>, Vec<(TaskState, i64)>);

pub async fn counts(pool: &Pool) -> Result<Counts, sqlx::Error> {
    let jobs = sqlx::query_as(sql("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        .fetch_all(pool)
        .await?;
    let tasks = sqlx::query_as(sql("SELECT state, COUNT(*) FROM tasks GROUP BY state"))
        .fetch_all(pool)
        .await?;
    Ok((jobs, tasks))
}

/// The statement that moves a job's `read_until` to a time (unless it is already later) and
/// notes its first download, where `$condition` holds.
macro_rules! hold_statement {
    ($condition:literal) => {
        sql(concat!(
            "UPDATE jobs SET downloaded_at = COALESCE(downloaded_at, ?), read_until = CASE ",
            "WHEN read_until IS NULL OR read_until < ? THEN ? ELSE read_until END ",
            "WHERE id = ? AND (",
            $condition,
            ")"
        ))
    };
}

/// Starts a download of a job's result: holds its bytes until `until` (ms) and notes the
/// first download. False when retention has purged the job (nothing to download). One
/// statement, so a purge either sees the lease or comes before it.
pub async fn begin_read(pool: &Pool, job_id: &str, until: i64) -> Result<bool, sqlx::Error> {
    let statement = hold_statement!("purged_at IS NULL");
    hold_result(pool, job_id, until, statement).await
}

/// Holds a job's result a while longer for a download in progress. False when its bytes are
/// gone: retention purged the job and the download's lease had lapsed.
pub async fn renew_read(pool: &Pool, job_id: &str, until: i64) -> Result<bool, sqlx::Error> {
    let statement = hold_statement!("purged_at IS NULL OR read_until IS NOT NULL");
    hold_result(pool, job_id, until, statement).await
}

async fn hold_result(
    pool: &Pool,
    job_id: &str,
    until: i64,
    statement: &'static str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(statement)
        .bind(now_ms())
        .bind(until)
        .bind(until)
        .bind(job_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected() == 1)
}

/// Marks the jobs that ended more than `retention_ms` ago purged (their files are the
/// caller's to remove: a download in progress holds its open file); the jobs themselves stay
/// listed. Returns the jobs purged now.
///
/// Bytes in the database go when no download holds them: a job purged while its result is
/// being read keeps its tiles until the reader's lease lapses, and a later sweep deletes them.
pub async fn purge_finished(pool: &Pool, retention_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    // On PostgreSQL every instance sweeps: the jobs one is purging are locked, and the others
    // pass them by rather than wait to purge them again.
    macro_rules! purgeable {
        ($lock:literal) => {
            concat!(
                "SELECT id, purged_at, read_until FROM jobs \
                 WHERE status IN ('done', 'failed', 'cancelled') \
                 AND ((purged_at IS NULL AND finished_at < ?) \
                      OR (purged_at IS NOT NULL AND read_until < ?))",
                $lock
            )
        };
    }
    let statement = match engine() {
        Engine::Sqlite => sql(purgeable!("")),
        Engine::Postgres => sql(purgeable!(" FOR UPDATE SKIP LOCKED")),
    };
    let rows: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(statement)
        .bind(now - retention_ms)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    let mut purged = Vec::new();
    for (id, purged_at, read_until) in rows {
        if read_until.is_none_or(|until| until < now) {
            sqlx::query(sql("DELETE FROM job_inputs WHERE job_id = ?"))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sql(
                "UPDATE tasks SET result = NULL WHERE job_id = ? AND result IS NOT NULL",
            ))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            if engine() == Engine::Postgres {
                super::chunks::drop_bytes(&mut tx, &id, false).await?;
            }
            sqlx::query(sql("UPDATE jobs SET read_until = NULL WHERE id = ?"))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        if purged_at.is_none() {
            sqlx::query(sql("UPDATE jobs SET purged_at = ? WHERE id = ?"))
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            purged.push(id);
        }
    }
    tx.commit().await?;
    Ok(purged)
}

#[cfg(test)]
mod millis_tests {
    use super::Millis;

    #[test]
    fn times_are_shown_as_rfc_3339_with_milliseconds_in_utc() {
        let shown = serde_json::to_string(&Millis(1_796_189_516_541)).expect("serialised");
        assert_eq!(shown, "\"2026-12-02T05:31:56.541Z\"");
        let epoch = serde_json::to_string(&Millis(0)).expect("serialised");
        assert_eq!(epoch, "\"1970-01-01T00:00:00.000Z\"");
    }
}

/// A database of its own and small plans, for the tests below.
#[cfg(test)]
mod scratch {
    use super::*;
    use crate::jobs::Dtype;

    /// A fresh SQLite database in a folder of its own (the caller removes the folder).
    pub async fn pool() -> (std::path::PathBuf, Pool) {
        let dir = std::env::temp_dir().join(format!("brain-db-{}", uuid::Uuid::new_v4()));
        let pool = connect(&dir.join("brain.db")).await.expect("database");
        (dir, pool)
    }

    /// An `n` × 1 · 1 × `n` f32 product in tiles of one element: n² tasks.
    pub fn tiles_of_one(n: usize) -> Plan {
        Plan {
            dtype: Dtype::F32,
            m: n,
            k: 1,
            n,
            tile: 1,
            split: 1,
        }
    }
}

#[cfg(test)]
mod insert_job_tests {
    use super::*;

    /// A job at the default `MAX_TASKS_PER_JOB` goes in whole, tile for tile, in batches.
    #[tokio::test]
    async fn a_job_at_the_task_cap_is_stored_whole() {
        let (dir, pool) = scratch::pool().await;
        // 316 × 316 tiles of 1 = 99,856 tasks, just under 100,000; 316 % 400 ≠ 0 leaves a
        // partial last batch.
        let plan = scratch::tiles_of_one(316);
        let started = std::time::Instant::now();
        insert_job(&pool, "j", "cap", &plan).await.expect("stored");
        let took = started.elapsed();
        let (count, distinct, max_row, max_col): (i64, i64, i64, i64) = sqlx::query_as(sql(
            "SELECT COUNT(*), COUNT(DISTINCT tile_row * 1000 + tile_col), MAX(tile_row), \
             MAX(tile_col) FROM tasks WHERE job_id = 'j' AND state = 'queued'",
        ))
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!((count, distinct), (99_856, 99_856));
        assert_eq!((max_row, max_col), (315, 315));
        let job = get_job(&pool, "j").await.expect("read").expect("job");
        assert_eq!(job.tasks_total, 99_856);
        println!("99,856 task rows inserted in {took:?}");
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    async fn results_left(pool: &Pool, job: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql(
            "SELECT COUNT(*) FROM tasks WHERE job_id = ? AND result IS NOT NULL",
        ))
        .bind(job)
        .fetch_one(pool)
        .await
        .expect("count");
        n
    }

    /// A download in progress keeps a purged job's bytes until its lease lapses; no download
    /// starts once the job is purged.
    #[tokio::test]
    async fn a_read_lease_holds_a_purged_jobs_bytes_until_it_lapses() {
        let (dir, pool) = scratch::pool().await;
        let plan = scratch::tiles_of_one(2);
        for job in ["read", "idle"] {
            insert_job(&pool, job, job, &plan).await.expect("stored");
            sqlx::query(sql("UPDATE tasks SET result = ? WHERE job_id = ?"))
                .bind(vec![0u8; 4])
                .bind(job)
                .execute(&pool)
                .await
                .expect("results");
            sqlx::query(sql(
                "UPDATE jobs SET status = 'done', finished_at = 1 WHERE id = ?",
            ))
            .bind(job)
            .execute(&pool)
            .await
            .expect("done");
        }
        let later = now_ms() + 60_000;
        assert!(begin_read(&pool, "read", later).await.expect("begin"));

        let mut purged = purge_finished(&pool, 0).await.expect("purge");
        purged.sort();
        assert_eq!(purged, ["idle", "read"]);
        assert_eq!(results_left(&pool, "idle").await, 0, "nobody reads it");
        assert_eq!(
            results_left(&pool, "read").await,
            4,
            "its reader still holds it"
        );
        assert!(!begin_read(&pool, "read", later).await.expect("begin"));
        assert!(renew_read(&pool, "read", later).await.expect("renew"));
        assert!(purge_finished(&pool, 0).await.expect("purge").is_empty());
        assert_eq!(results_left(&pool, "read").await, 4);

        // The reader stopped: its lease lapses, the next sweep deletes the bytes, and a late
        // renewal finds them gone.
        sqlx::query(sql("UPDATE jobs SET read_until = 1 WHERE id = 'read'"))
            .execute(&pool)
            .await
            .expect("lapse");
        assert!(
            purge_finished(&pool, 0).await.expect("purge").is_empty(),
            "purged once"
        );
        assert_eq!(results_left(&pool, "read").await, 0);
        assert!(!renew_read(&pool, "read", later).await.expect("renew"));
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
