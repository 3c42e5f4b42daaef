//! What servers before the store (issue #16) kept in the database: inputs as blobs in
//! `job_inputs` (B cut into column panels) and results in `tasks.result`. Read once at
//! start-up by `upgrade`, which moves them to the store, then cleared here.

// The parent holds the imports every table group shares.
use super::*;

/// Jobs that still have blobs in the database: inputs, or results not yet purged.
pub async fn jobs_with_blobs(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    if engine() == Engine::Postgres {
        return Ok(Vec::new()); // its schema never had them
    }
    let rows: Vec<(String,)> = sqlx::query_as(sql("SELECT job_id FROM job_inputs \
         UNION SELECT DISTINCT job_id FROM tasks WHERE result IS NOT NULL"))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A job's inputs as blobs: A row-major and B as column panels.
pub async fn inputs(pool: &Pool, job_id: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(sql("SELECT a, b_panels FROM job_inputs WHERE job_id = ?"))
        .bind(job_id)
        .fetch_optional(pool)
        .await
}

/// A job's done tiles with their result blobs.
pub async fn results(pool: &Pool, job_id: &str) -> Result<Vec<(i64, i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(sql("SELECT tile_row, tile_col, result FROM tasks \
         WHERE job_id = ? AND state = 'done' AND result IS NOT NULL"))
    .bind(job_id)
    .fetch_all(pool)
    .await
}

/// Drops a job's blobs once the store holds them.
pub async fn clear(pool: &Pool, job_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    sqlx::query(sql("DELETE FROM job_inputs WHERE job_id = ?"))
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql(
        "UPDATE tasks SET result = NULL WHERE job_id = ? AND result IS NOT NULL",
    ))
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Writes blobs as the servers before the store did, for the upgrade's tests.
#[cfg(test)]
pub async fn store_as_before(
    pool: &Pool,
    job_id: &str,
    a: &[u8],
    b_panels: &[u8],
    results: &[(i64, i64, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "INSERT INTO job_inputs (job_id, a, b_panels) VALUES (?, ?, ?)",
    ))
    .bind(job_id)
    .bind(a)
    .bind(b_panels)
    .execute(pool)
    .await?;
    for (row, col, bytes) in results {
        sqlx::query(sql(
            "UPDATE tasks SET state = 'done', result = ? WHERE job_id = ? AND tile_row = ? \
             AND tile_col = ?",
        ))
        .bind(bytes)
        .bind(job_id)
        .bind(row)
        .bind(col)
        .execute(pool)
        .await?;
    }
    Ok(())
}
