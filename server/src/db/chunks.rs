//! Jobs' matrices in PostgreSQL (#18), so that instances need no shared `DATA_DIR`: each
//! input's `.npy` file cut into chunks of [`CHUNK_BYTES`] (`job_chunks`), and each done
//! tile's bytes in its task's `result`. docs/storage.md gives the design; the arithmetic of
//! chunks and bands is in `store::layout`, with its tests. Never called on SQLite, whose
//! jobs keep their files in `DATA_DIR` alone.

// The parent holds the imports every table group shares.
use super::*;

use bytes::Bytes;

/// Bytes per chunk of an input: large enough that a row's overhead is nothing, small enough
/// that a batch of them is a small statement.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Chunks per `INSERT`: 2 MiB of parameters. Larger statements were no faster (PostgreSQL
/// cuts each value into 2 kB pieces whatever the statement), and memory holds about four.
pub const CHUNKS_PER_INSERT: usize = 2;

/// A job on its way into the database with its inputs: one transaction holds the job's row,
/// its tasks and its chunks, so that no instance sees the job before every chunk is there
/// (it could claim a task and find no inputs), and a server that dies midway leaves nothing
/// (PostgreSQL rolls the transaction back when the connection drops).
pub struct NewJob {
    tx: super::WriteTx,
    id: String,
}

impl NewJob {
    /// Starts the transaction with the job's row and its tasks.
    pub async fn begin(
        pool: &Pool,
        id: &str,
        name: &str,
        plan: &Plan,
    ) -> Result<Self, sqlx::Error> {
        let mut tx = begin_write(pool).await?;
        super::jobs::insert_job_rows(&mut tx, id, name, plan).await?;
        Ok(NewJob {
            tx,
            id: id.to_owned(),
        })
    }

    /// Adds consecutive chunks of input `part` (`"a"` or `"b"`), the first numbered `seq`.
    pub async fn chunks(
        &mut self,
        part: &str,
        seq: i64,
        chunks: &[Bytes],
    ) -> Result<(), sqlx::Error> {
        use std::fmt::Write as _;
        if chunks.is_empty() {
            return Ok(());
        }
        let mut text = String::from("INSERT INTO job_chunks (job_id, part, seq, bytes) VALUES ");
        for i in 0..chunks.len() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(text, "{sep}(?1, ?2, ?{}, ?{})", 3 + 2 * i, 4 + 2 * i);
        }
        let text = dialect(text);
        let mut query = sqlx::query(&text).bind(&self.id).bind(part);
        for (i, chunk) in chunks.iter().enumerate() {
            query = query.bind(seq + i as i64).bind(&chunk[..]);
        }
        query.execute(&mut *self.tx).await.map(drop)
    }

    /// Makes the job visible to every instance, inputs and all.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// Chunks `seq..seq+count` of a job's input `part`, in order, as `(seq, bytes)`; fewer when
/// the job's inputs are gone (it ended).
pub async fn read_chunks(
    pool: &Pool,
    job_id: &str,
    part: &str,
    seq: i64,
    count: i64,
) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT seq, bytes FROM job_chunks WHERE job_id = ?1 AND part = ?2 \
         AND seq >= ?3 AND seq < ?4 ORDER BY seq",
    ))
    .bind(job_id)
    .bind(part)
    .bind(seq)
    .bind(seq + count)
    .fetch_all(pool)
    .await
}

/// Deletes a job's inputs, and with `results` its tiles' bytes, in the caller's transaction.
pub(super) async fn drop_bytes(
    tx: &mut sqlx::AnyConnection,
    job_id: &str,
    results: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql("DELETE FROM job_chunks WHERE job_id = ?"))
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    if results {
        sqlx::query(sql(
            "UPDATE tasks SET result = NULL WHERE job_id = ? AND result IS NOT NULL",
        ))
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Deletes a done job's inputs, which its result no longer needs.
pub async fn drop_inputs(pool: &Pool, job_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql("DELETE FROM job_chunks WHERE job_id = ?"))
        .bind(job_id)
        .execute(pool)
        .await
        .map(drop)
}

/// Deletes the inputs of every job that ended, should an instance have died between a job's
/// end and the deletion of its inputs (done jobs' are deleted just after the commit that
/// finishes them, not in it). Returns the chunks deleted.
pub async fn drop_ended_inputs(pool: &Pool) -> Result<u64, sqlx::Error> {
    sqlx::query(sql(
        "DELETE FROM job_chunks WHERE job_id IN \
         (SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled'))",
    ))
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// The jobs still queued or running.
pub async fn open_jobs(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(sql(
        "SELECT id FROM jobs WHERE status IN ('queued', 'running')",
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One done tile's bytes (for an audit); `None` when it is not done or has no bytes.
pub async fn read_result(
    pool: &Pool,
    job_id: &str,
    tile_row: i64,
    tile_col: i64,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row: Option<(Option<Vec<u8>>,)> = sqlx::query_as(sql(
        "SELECT result FROM tasks WHERE job_id = ? AND tile_row = ? AND tile_col = ? \
         AND state = 'done'",
    ))
    .bind(job_id)
    .bind(tile_row)
    .bind(tile_col)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(bytes,)| bytes))
}

/// Rows `row0..row0+rows` (counted within the band) of every task in tile row `tile_row`, in
/// task column order, as `(tile_col, bytes)`: each task's slice is `rows` of its own rows,
/// read with substring() so that only that slice leaves the table. `tile`, `n` and
/// `tile_cols` (C's, not the tasks') are the plan's, `elem` its element size. A task not done,
/// or without bytes, is missing from the answer.
pub async fn read_band(
    pool: &Pool,
    job_id: &str,
    tile_row: i64,
    (row0, rows): (i64, i64),
    (tile, n, elem, tile_cols): (i64, i64, i64, i64),
) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    // A tile's width is the tile's, but the last column's may be narrower; a split job's
    // task columns repeat C's once per slice of k.
    sqlx::query_as(sql("SELECT tile_col, substring(result \
             FROM CAST(?1 * LEAST(?2, ?3 - (tile_col % ?7) * ?2) + 1 AS INTEGER) \
             FOR CAST(?4 * LEAST(?2, ?3 - (tile_col % ?7) * ?2) AS INTEGER)) \
         FROM tasks WHERE job_id = ?5 AND tile_row = ?6 AND state = 'done' \
             AND result IS NOT NULL \
         ORDER BY tile_col"))
    .bind(row0 * elem)
    .bind(tile)
    .bind(n)
    .bind(rows * elem)
    .bind(job_id)
    .bind(tile_row)
    .bind(tile_cols)
    .fetch_all(pool)
    .await
}
