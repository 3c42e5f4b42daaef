//! Workers: identities (a token's hash) and the records that trust is decided from.

// The parent holds the imports every table group shares.
use super::*;

pub(super) async fn quarantine_worker(
    conn: &mut sqlx::AnyConnection,
    worker_id: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "UPDATE workers SET quarantine_reason = ?, quarantined_at = ? \
         WHERE id = ? AND quarantine_reason IS NULL",
    ))
    .bind(reason)
    .bind(now_ms())
    .bind(worker_id)
    .execute(&mut *conn)
    .await?;
    // A quarantined volunteer vanishes from the boards in the same transaction.
    super::credit::unlist(conn, worker_id).await
}

/// Workers quarantined at `since` or later (ms since the epoch), with the reason and when: on
/// PostgreSQL, maybe by another instance, while a connection of theirs is on this one.
pub async fn quarantined_since(
    pool: &Pool,
    since: i64,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT id, quarantine_reason, quarantined_at FROM workers \
         WHERE quarantined_at >= ? AND quarantine_reason IS NOT NULL \
         ORDER BY quarantined_at LIMIT 1000",
    ))
    .bind(since)
    .fetch_all(pool)
    .await
}

/// A worker's identity and reputation.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct WorkerRecord {
    pub id: String,
    pub tasks_done: i64,
    pub tasks_failed: i64,
    pub refused: i64,
    pub timed_out: i64,
    pub disconnected: i64,
    pub consecutive_verified: i64,
    pub quarantine_reason: Option<String>,
}

pub(super) const WORKER_COLUMNS: &str =
    "id, tasks_done, tasks_failed, refused, timed_out, disconnected, \
     consecutive_verified, quarantine_reason";

/// [`WORKER_COLUMNS`] of a `workers` table aliased `w`.
pub(super) const WORKER_COLUMNS_OF_W: &str =
    "w.id, w.tasks_done, w.tasks_failed, w.refused, w.timed_out, \
     w.disconnected, w.consecutive_verified, w.quarantine_reason";

impl WorkerRecord {
    /// The record as the trust policy reads it.
    pub fn trust(&self) -> trust::Record {
        trust::Record {
            verified: self.tasks_done,
            consecutive_verified: self.consecutive_verified,
            refused: self.refused,
            failed: self.tasks_failed + self.timed_out,
            quarantined: self.quarantine_reason.clone(),
        }
    }
}

/// Registers a connection: the worker whose token hash matches, or a new worker.
pub async fn register_worker(
    pool: &Pool,
    token_hash: &str,
    name: &str,
    threads: i64,
    user_agent: &str,
) -> Result<WorkerRecord, sqlx::Error> {
    let now = now_ms();
    let found: Option<WorkerRecord> = sqlx::query_as(&dialect(format!(
        "UPDATE workers SET name = ?1, threads = ?2, user_agent = ?3, last_seen = ?4 \
         WHERE token_hash = ?5 RETURNING {WORKER_COLUMNS}"
    )))
    .bind(name)
    .bind(threads)
    .bind(user_agent)
    .bind(now)
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    if let Some(found) = found {
        return Ok(found);
    }
    sqlx::query_as(&dialect(format!(
        "INSERT INTO workers (id, token_hash, name, threads, user_agent, first_seen, last_seen) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING {WORKER_COLUMNS}"
    )))
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(token_hash)
    .bind(name)
    .bind(threads)
    .bind(user_agent)
    .bind(now)
    .fetch_one(pool)
    .await
}

pub async fn worker(pool: &Pool, id: &str) -> Result<Option<WorkerRecord>, sqlx::Error> {
    sqlx::query_as(&dialect(format!(
        "SELECT {WORKER_COLUMNS} FROM workers WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}
