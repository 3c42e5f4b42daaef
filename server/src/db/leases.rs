//! Tasks: claims and leases, results stored or refused, failures, and what expires.

// The parent holds the imports every table group shares.
use super::*;
use crate::blocks::{Block, Side};

/// A task handed to a worker.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: i64,
    pub job_id: String,
    pub tile_row: i64,
    pub tile_col: i64,
}

/// Who holds a lease: the connection (its id, stored as `lease_owner`) and the worker behind
/// it (one per browser, across reconnects). Leases belong to connections so that one tab closing
/// does not take back another tab's tasks; reputation belongs to the worker.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub connection: &'a str,
    pub worker_id: &'a str,
    /// The connection's address group, kept with the lease so that an expiry is reported
    /// under it (see `trust::task_fault`).
    pub address: std::net::IpAddr,
}

/// A time that may be unknown, bound as NaN for unknown and stored as NULL (`NULLIF(?,
/// 'NaN')`; SQLite stores NaN as NULL by itself). A NULL bound through sqlx's `Any` driver is
/// typed `real` on PostgreSQL where a `double precision` was meant (sqlx 0.8.6 swaps the two
/// for nulls), and the statement prepared from it then refuses every later 8-byte value
/// ("incorrect binary data format"): one result without a time broke its connection's
/// result statement for good.
fn unknown_as_nan(ms: Option<f64>) -> f64 {
    ms.unwrap_or(f64::NAN)
}

/// One dispatch round's claims, in one `BEGIN IMMEDIATE` transaction: one commit for the
/// round rather than one per task. Nothing is leased unless [`ClaimRound::commit`] succeeds.
pub struct ClaimRound(super::WriteTx);

impl ClaimRound {
    pub async fn begin(pool: &Pool) -> Result<Self, sqlx::Error> {
        begin_write(pool).await.map(ClaimRound)
    }

    /// Leases the oldest queued task this worker was not refused on, in one statement (no
    /// read-then-write race). On PostgreSQL, where instances claim side by side, the task is
    /// locked as it is chosen and tasks another claim has locked are passed over (`SKIP
    /// LOCKED`): two instances never lease the same task, nor wait for each other.
    pub async fn claim(
        &mut self,
        holder: Holder<'_>,
        lease_ms: i64,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let conn = &mut *self.0;
        let now = now_ms();
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE tasks SET state = 'leased', lease_owner = ?1, lease_worker = ?2, \
                         lease_deadline = ?3, attempts = attempts + 1, updated_at = ?4, \
                         lease_address = ?5, lease_instance = ?6 \
                     WHERE id = (SELECT t.id FROM tasks t WHERE t.state = 'queued' \
                         AND NOT EXISTS (SELECT 1 FROM task_exclusions e \
                             WHERE e.task_id = t.id AND e.worker_id = ?2) \
                         ORDER BY t.id LIMIT 1",
                    $lock,
                    ") AND state = 'queued' RETURNING id, job_id, tile_row, tile_col"
                )
            };
        }
        let statement = match engine() {
            Engine::Sqlite => sql(claim!("")),
            Engine::Postgres => sql(claim!(" FOR UPDATE SKIP LOCKED")),
        };
        sqlx::query_as(statement)
            .bind(holder.connection)
            .bind(holder.worker_id)
            .bind(now + lease_ms)
            .bind(now)
            .bind(holder.address.to_string())
            .bind(instance())
            .fetch_optional(conn)
            .await
    }

    /// Leases, among the oldest queued tasks of `job_id` in tile rows `rows` or columns `cols`
    /// (or, given a `block`, among its tasks, the oldest or the newest first as `Side` says),
    /// the one sharing the most panels with them (both, then one, then none). `None` when no
    /// queued task of the job touches them or lies in the block (or the worker was refused on
    /// all that do).
    pub async fn claim_preferred(
        &mut self,
        holder: Holder<'_>,
        lease_ms: i64,
        job_id: &str,
        (rows, cols): (&[i64], &[i64]),
        block: Option<(Block, Side)>,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let conn = &mut *self.0;
        if rows.is_empty() && cols.is_empty() && block.is_none() {
            return Ok(None);
        }
        // The lists are small (a cache holds tens of panels) and made of integers we produced.
        // An empty one matches nothing (no tile index is negative), so its count stays 0 and
        // not NULL, which would make every task's sum NULL and the order meaningless.
        let list = |v: &[i64]| {
            if v.is_empty() {
                "-1".to_owned()
            } else {
                v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            }
        };
        // Among tasks sharing one panel, the one that brings the scarcer kind of panel: a new row
        // when the worker holds fewer rows than columns, else a new column. The held panels then
        // grow as a square block of tiles (2·s panels for s² tasks) rather than a strip (s + 1
        // panels for s tasks).
        let grow = if rows.len() < cols.len() {
            "t.tile_col"
        } else {
            "t.tile_row"
        };
        let held = if rows.len() < cols.len() {
            &cols
        } else {
            &rows
        };
        let held = list(held);
        let (rows, cols) = (list(rows), list(cols));
        let within = match block {
            Some((b, _)) => format!(
                "t.tile_row >= {} AND t.tile_row < {} AND t.tile_col >= {} AND t.tile_col < {}",
                b.row0, b.row1, b.col0, b.col1
            ),
            None => format!("(t.tile_row IN ({rows}) OR t.tile_col IN ({cols}))"),
        };
        let text = format!(
            "SELECT t.id FROM tasks t WHERE t.job_id = ?1 AND t.state = 'queued' \
                 AND {within} AND NOT EXISTS \
                 (SELECT 1 FROM task_exclusions e WHERE e.task_id = t.id AND e.worker_id = ?2) \
             ORDER BY CAST(t.tile_row IN ({rows}) AS INTEGER) \
                 + CAST(t.tile_col IN ({cols}) AS INTEGER) DESC, \
                 ({grow} IN ({held})) DESC, t.id{order} LIMIT 1{lock}",
            order = match block {
                Some((_, Side::Back)) => " DESC",
                _ => "",
            },
            lock = match engine() {
                Engine::Sqlite => "",
                Engine::Postgres => " FOR UPDATE OF t SKIP LOCKED",
            }
        );
        let best: Option<(i64,)> = sqlx::query_as(&dialect(text))
            .bind(job_id)
            .bind(holder.worker_id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some((id,)) = best else {
            return Ok(None);
        };
        let now = now_ms();
        sqlx::query_as(sql(
            "UPDATE tasks SET state = 'leased', lease_owner = ?1, lease_worker = ?2, \
                 lease_deadline = ?3, attempts = attempts + 1, updated_at = ?4, lease_address = ?6, \
                 lease_instance = ?7 \
             WHERE id = ?5 AND state = 'queued' RETURNING id, job_id, tile_row, tile_col",
        ))
        .bind(holder.connection)
        .bind(holder.worker_id)
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .bind(holder.address.to_string())
        .bind(instance())
        .fetch_optional(conn)
        .await
    }

    /// PostgreSQL: leases the oldest queued tasks to `holders` (each with its lease length), in
    /// order, the first task to the first holder: one statement for all of them, where
    /// [`ClaimRound::claim`] is a round trip each. Holders refused on some task claim one by
    /// one, as they must pass over the tasks they may not take. `None` for a holder left
    /// without a task (the queue ran dry, or the task paired with it is one it was refused on
    /// since it was asked: the statement checks again, and the task stays queued). Rows other
    /// claims hold are passed over (`SKIP LOCKED`), as in `claim`.
    pub async fn claim_together(
        &mut self,
        holders: &[(Holder<'_>, i64)],
    ) -> Result<Vec<Option<Claimed>>, sqlx::Error> {
        let mut out: Vec<Option<Claimed>> = vec![None; holders.len()];
        if holders.is_empty() {
            return Ok(out);
        }
        let refused = self.refused_somewhere(holders).await?;
        let (alone, together): (Vec<usize>, Vec<usize>) =
            (0..holders.len()).partition(|&i| refused.contains(holders[i].0.worker_id));
        if !together.is_empty() {
            // The queued tasks are locked and listed in id order, and each takes its holder
            // from the arrays at its place in that list: one index probe per task. (Pairing
            // them by joining a list of holders made PostgreSQL read the whole table.)
            let now = now_ms();
            let marks = vec!["?"; together.len()].join(", ");
            let text = format!(
                "WITH p AS (SELECT ARRAY(SELECT id FROM tasks WHERE state = 'queued' \
                     ORDER BY id LIMIT {} FOR UPDATE SKIP LOCKED) AS ids, \
                     ARRAY[{marks}] AS owners, ARRAY[{marks}] AS workers, \
                     ARRAY[{marks}] AS deadlines, ARRAY[{marks}] AS addresses) \
                 UPDATE tasks t SET state = 'leased', \
                     lease_owner = p.owners[array_position(p.ids, t.id)], \
                     lease_worker = p.workers[array_position(p.ids, t.id)], \
                     lease_deadline = p.deadlines[array_position(p.ids, t.id)], \
                     lease_address = p.addresses[array_position(p.ids, t.id)], \
                     attempts = t.attempts + 1, updated_at = ?, lease_instance = ? \
                 FROM p WHERE t.id = ANY(p.ids) AND t.state = 'queued' \
                     AND NOT EXISTS (SELECT 1 FROM task_exclusions e WHERE e.task_id = t.id \
                         AND e.worker_id = p.workers[array_position(p.ids, t.id)]) \
                 RETURNING CAST(array_position(p.ids, t.id) AS BIGINT), t.id, t.job_id, \
                     t.tile_row, t.tile_col",
                together.len()
            );
            let statement = dialect(text);
            let mut query = sqlx::query_as::<_, (i64, i64, String, i64, i64)>(&statement);
            let of = |i: &usize| &holders[*i];
            for (holder, _) in together.iter().map(of) {
                query = query.bind(holder.connection);
            }
            for (holder, _) in together.iter().map(of) {
                query = query.bind(holder.worker_id);
            }
            for (_, lease_ms) in together.iter().map(of) {
                query = query.bind(now + lease_ms);
            }
            for (holder, _) in together.iter().map(of) {
                query = query.bind(holder.address.to_string());
            }
            let leased = query
                .bind(now)
                .bind(instance())
                .fetch_all(&mut *self.0)
                .await?;
            for (n, id, job_id, tile_row, tile_col) in leased {
                let Some(&i) = usize::try_from(n - 1).ok().and_then(|k| together.get(k)) else {
                    continue;
                };
                out[i] = Some(Claimed {
                    id,
                    job_id,
                    tile_row,
                    tile_col,
                });
            }
        }
        for i in alone {
            let (holder, lease_ms) = holders[i];
            out[i] = self.claim(holder, lease_ms).await?;
        }
        Ok(out)
    }

    /// The job of the oldest queued task this worker was not refused on, other than `but`:
    /// the one a worker without panels of any job starts on, or turns to when its job has
    /// nothing left for it.
    pub async fn next_job(
        &mut self,
        holder: Holder<'_>,
        but: Option<&str>,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(sql(
            "SELECT t.job_id FROM tasks t WHERE t.state = 'queued' AND t.job_id <> ?1 \
                 AND NOT EXISTS (SELECT 1 FROM task_exclusions e \
                     WHERE e.task_id = t.id AND e.worker_id = ?2) \
             ORDER BY t.id LIMIT 1",
        ))
        .bind(but.unwrap_or(""))
        .bind(holder.worker_id)
        .fetch_optional(&mut *self.0)
        .await
    }

    /// Queued tasks of `job_id` per block of `rows` × `cols` tiles, keyed (block row, block
    /// column); blocks with none are absent.
    pub async fn queued_by_block(
        &mut self,
        job_id: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<((i64, i64), i64)>, sqlx::Error> {
        let counts: Vec<(i64, i64, i64)> = sqlx::query_as(sql(
            "SELECT tile_row / ?2, tile_col / ?3, COUNT(*) FROM tasks \
             WHERE job_id = ?1 AND state = 'queued' GROUP BY 1, 2",
        ))
        .bind(job_id)
        .bind(rows.max(1) as i64)
        .bind(cols.max(1) as i64)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(counts.into_iter().map(|(r, c, n)| ((r, c), n)).collect())
    }

    /// Puts back a task claimed in this round, as if it had not been.
    pub async fn give_back(&mut self, task_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(sql(
            "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_worker = NULL, \
                 lease_deadline = NULL, lease_address = NULL, lease_instance = NULL, \
                 attempts = attempts - 1 \
             WHERE id = ? AND state = 'leased'",
        ))
        .bind(task_id)
        .execute(&mut *self.0)
        .await
        .map(|_| ())
    }

    /// Which of the holders' workers were refused on some task.
    async fn refused_somewhere(
        &mut self,
        holders: &[(Holder<'_>, i64)],
    ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        let mut workers: Vec<&str> = holders.iter().map(|(h, _)| h.worker_id).collect();
        workers.sort_unstable();
        workers.dedup();
        let mut refused = std::collections::HashSet::new();
        for chunk in workers.chunks(100) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let statement = dialect(format!(
                "SELECT DISTINCT worker_id FROM task_exclusions WHERE worker_id IN ({marks})"
            ));
            let mut query = sqlx::query_as::<_, (String,)>(&statement);
            for w in chunk {
                query = query.bind(*w);
            }
            refused.extend(
                query
                    .fetch_all(&mut *self.0)
                    .await?
                    .into_iter()
                    .map(|(w,)| w),
            );
        }
        Ok(refused)
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

/// A lease another connection holds, old enough to be worth duplicating.
#[derive(Debug, Clone, FromRow)]
pub struct SlowLease {
    pub id: i64,
    pub job_id: String,
    pub tile_row: i64,
    pub tile_col: i64,
    /// The connection holding it.
    pub connection: String,
    /// When the lease was handed out (ms since the epoch).
    pub updated_at: i64,
}

/// One page of the leases held by other workers that this worker may be given a duplicate
/// of (never a task it was refused on), oldest first, after `after` (`(updated_at, id)` of
/// the last lease of the previous page). Paged so that every lease is looked at: a fixed
/// window of the oldest let a hoarder's first leases hide all the others. Only this
/// instance's leases: it alone knows their holders' speed, and instances sharing PostgreSQL
/// never copy the same lease twice.
pub async fn slow_leases(
    pool: &Pool,
    holder: Holder<'_>,
    older_than_ms: i64,
    after: (i64, i64),
    page: i64,
) -> Result<Vec<SlowLease>, sqlx::Error> {
    sqlx::query_as(
        sql("SELECT id, job_id, tile_row, tile_col, lease_owner AS connection, updated_at FROM tasks t \
         WHERE state = 'leased' AND lease_worker != ?1 AND updated_at < ?2 \
             AND lease_instance = ?6 AND (updated_at, id) > (?3, ?4) AND NOT EXISTS \
             (SELECT 1 FROM task_exclusions e WHERE e.task_id = t.id AND e.worker_id = ?1) \
         ORDER BY updated_at, id LIMIT ?5"),
    )
    .bind(holder.worker_id)
    .bind(now_ms() - older_than_ms)
    .bind(after.0)
    .bind(after.1)
    .bind(page)
    .bind(instance())
    .fetch_all(pool)
    .await
}

/// Puts a task back in the queue (e.g. it could not be delivered).
pub async fn unclaim_task(pool: &Pool, task_id: i64, connection: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_worker = NULL, \
             lease_deadline = NULL, attempts = attempts - 1, updated_at = ? \
         WHERE id = ? AND state = 'leased' AND lease_owner = ?",
    ))
    .bind(now_ms())
    .bind(task_id)
    .bind(connection)
    .execute(pool)
    .await
    .map(|_| ())
}

/// A heartbeat: every lease the connection holds runs `lease_ms` from now, but no lease runs
/// past `max_total_ms` from when it was handed out. A page whose compute has hung can keep
/// heartbeating for ever; without the cap its task would never come back to the queue while
/// no other worker is measured fast enough to be given a copy.
pub async fn extend_leases(
    pool: &Pool,
    connection: &str,
    lease_ms: i64,
    max_total_ms: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        sql("UPDATE tasks SET lease_deadline = CASE WHEN ?1 < updated_at + ?2 THEN ?1 ELSE updated_at + ?2 END \
         WHERE lease_owner = ?3 AND state = 'leased'"),
    )
    .bind(now_ms() + lease_ms)
    .bind(max_total_ms)
    .bind(connection)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// What became of a submitted result.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Stored; the job now has `tasks_done` of `tasks_total` and this status.
    Accepted {
        job_id: String,
        tile_row: i64,
        tile_col: i64,
        tasks_done: i64,
        tasks_total: i64,
        job_status: JobStatus,
        /// Seconds from submission to now (meaningful when the job is now done).
        job_age_s: f64,
        /// This result completed the job (reported once per job).
        job_finished: bool,
    },
    /// Not stored, with the reason told to the worker.
    Refused(String),
}

/// A verified result waiting to be stored (its bytes go to the store, not here).
#[derive(Debug, Clone)]
pub struct ToComplete {
    pub task_id: i64,
    pub connection: String,
    pub worker_id: String,
    pub compute_ms: Option<f64>,
    /// CRC-32 of the tile's bytes, kept to find a tile that did not reach the disk (see
    /// `recovery`).
    pub result_crc: u32,
    /// A copy of a slow worker's task handed to a faster one near the end of a job: it
    /// completes the task whoever holds the lease now.
    pub duplicate: bool,
    /// The tile's flops (`credit::tile_flops`): the credit its result earns once committed.
    pub flops: i64,
}

/// A result the commit's transaction stored: its place, and the credit granted with it.
struct Stored {
    job_id: String,
    tile_row: i64,
    tile_col: i64,
    /// `None`: nothing granted (the worker was quarantined).
    credit_flops: Option<i64>,
    credit_team: Option<String>,
}

/// Results marked done in a transaction not yet committed: the caller stores the accepted
/// ones' bytes, then commits (or drops this, which rolls everything back).
pub struct Completing {
    tx: super::WriteTx,
    completions: Vec<Completion>,
    /// PostgreSQL: jobs still open after this batch, with the place of the batch's last
    /// result of each: another instance's batch committed at the same time may have counted
    /// the rest, unseen by this transaction.
    unsettled: Vec<(String, usize)>,
}

impl Completing {
    /// What became of each result, in order; `Accepted` ones are done once committed.
    pub fn completions(&self) -> &[Completion] {
        &self.completions
    }

    /// Commits, then settles the jobs the batch left open: of two batches that finish a job
    /// together, each blind to the other, the later to commit sees both once committed, and
    /// marks the job done. A settling lost to a crash is done by the sweep
    /// ([`finish_counted_jobs`]).
    pub async fn commit(self, pool: &Pool) -> Result<Vec<Completion>, sqlx::Error> {
        let Completing {
            tx,
            mut completions,
            unsettled,
        } = self;
        tx.commit().await?;
        for (job, last) in unsettled {
            if finish_job(pool, &job, now_ms()).await? {
                if let Completion::Accepted {
                    tasks_done,
                    tasks_total,
                    job_status,
                    job_finished,
                    ..
                } = &mut completions[last]
                {
                    *tasks_done = *tasks_total;
                    *job_status = JobStatus::Done;
                    *job_finished = true;
                }
            }
        }
        Ok(completions)
    }
}

/// Marks verified results done in one transaction (a group commit: under load, one commit
/// serves many results). Each is accepted if, and only if, its task is still leased to that
/// connection and the lease has not run out; the first accepted result for a task wins.
/// Jobs' and workers' counts grow in the same transaction, once per job and per worker. The
/// transaction holds the write lock until [`Completing::commit`], so nothing changes the tasks
/// while the caller stores their bytes.
pub async fn complete_tasks(pool: &Pool, items: &[ToComplete]) -> Result<Completing, sqlx::Error> {
    complete(pool, items, None).await
}

/// [`complete_tasks`] storing each accepted result's bytes (`results`, in the order of
/// `items`) in its task's row, in the same statement: on PostgreSQL, where the database holds
/// the results (see `chunks`).
pub async fn complete_tasks_with_results(
    pool: &Pool,
    items: &[ToComplete],
    results: &[&[u8]],
) -> Result<Completing, sqlx::Error> {
    complete(pool, items, Some(results)).await
}

async fn complete(
    pool: &Pool,
    items: &[ToComplete],
    results: Option<&[&[u8]]>,
) -> Result<Completing, sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    // (job id, tile row, tile col) of each stored result, or the refusal reason.
    let mut ids: Vec<i64> = items.iter().map(|i| i.task_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let together = engine() == Engine::Postgres && ids.len() == items.len() && items.len() > 1;
    let (day, hour) = (crate::credit::day_of(now), crate::credit::hour_of(now));
    let mut stored: Vec<Result<Stored, String>> = Vec::with_capacity(items.len());
    if together {
        let mut done = complete_together(&mut tx, items, results, now, day).await?;
        for item in items {
            stored.push(match done.remove(&item.task_id) {
                Some(place) => Ok(place),
                None => Err(refusal_reason(&mut tx, item.task_id, &item.connection, now).await?),
            });
        }
    }
    for (i, item) in items.iter().enumerate().filter(|_| !together) {
        let query = match results {
            None => sqlx::query(
            sql("UPDATE tasks SET state = 'done', compute_ms = NULLIF(?1, 'NaN'), completed_by = ?2, result_crc = ?7, \
                 lease_owner = NULL, lease_worker = NULL, lease_deadline = NULL, updated_at = ?3, \
                 credit_ms = ?8, credit_day = ?10, credit_hour = ?11, \
                 credit_flops = (SELECT CAST(?9 AS BIGINT) FROM workers WHERE id = ?2 AND quarantine_reason IS NULL), \
                 credit_team = (SELECT team_id FROM workers WHERE id = ?2) \
             WHERE id = ?4 AND ((state = 'leased' AND lease_owner = ?5 AND lease_deadline >= ?3) \
                 OR (?6 AND state IN ('leased', 'queued'))) \
             RETURNING job_id, tile_row, tile_col, credit_flops, credit_team"),
            ),
            Some(_) => sqlx::query(
            sql("UPDATE tasks SET state = 'done', compute_ms = NULLIF(?1, 'NaN'), completed_by = ?2, result_crc = ?7, \
                 result = ?12, \
                 lease_owner = NULL, lease_worker = NULL, lease_deadline = NULL, updated_at = ?3, \
                 credit_ms = ?8, credit_day = ?10, credit_hour = ?11, \
                 credit_flops = (SELECT CAST(?9 AS BIGINT) FROM workers WHERE id = ?2 AND quarantine_reason IS NULL), \
                 credit_team = (SELECT team_id FROM workers WHERE id = ?2) \
             WHERE id = ?4 AND ((state = 'leased' AND lease_owner = ?5 AND lease_deadline >= ?3) \
                 OR (?6 AND state IN ('leased', 'queued'))) \
             RETURNING job_id, tile_row, tile_col, credit_flops, credit_team"),
            ),
        };
        let query = query
            .bind(unknown_as_nan(item.compute_ms))
            .bind(&item.worker_id)
            .bind(now)
            .bind(item.task_id)
            .bind(&item.connection)
            .bind(item.duplicate)
            .bind(i64::from(item.result_crc))
            .bind(crate::credit::credited_ms(item.compute_ms))
            .bind(item.flops)
            .bind(day)
            .bind(hour);
        let query = match results {
            Some(results) => query.bind(results[i]),
            None => query,
        };
        let done = query.fetch_optional(&mut *tx).await?;
        stored.push(match done {
            Some(row) => Ok(Stored {
                job_id: row.get("job_id"),
                tile_row: row.get("tile_row"),
                tile_col: row.get("tile_col"),
                credit_flops: row.get("credit_flops"),
                credit_team: row.get("credit_team"),
            }),
            None => Err(refusal_reason(&mut tx, item.task_id, &item.connection, now).await?),
        });
    }
    // Credit, in this transaction: what the results just stored earned, to their volunteers,
    // teams and day (see `credit`).
    let earned: Vec<crate::credit::ResultCredit> = items
        .iter()
        .zip(&stored)
        .filter_map(|(item, outcome)| {
            let stored = outcome.as_ref().ok()?;
            Some(crate::credit::ResultCredit {
                holder: crate::credit::Holder {
                    worker_id: item.worker_id.clone(),
                    team_id: stored.credit_team.clone(),
                    day,
                    hour,
                },
                flops: stored.credit_flops,
                compute_ms: crate::credit::credited_ms(item.compute_ms),
            })
        })
        .collect();
    let earned = crate::credit::tally(&earned);
    if !earned.is_empty() {
        let swept_through = super::credit::window(&mut tx).await?;
        for (holder, amount) in earned {
            super::credit::grant(&mut tx, &holder, amount, swept_through).await?;
        }
    }
    // Count per job and per worker; the last stored result of a job in this batch is the one
    // that reports the job finishing.
    let mut per_job: Vec<(String, i64, usize)> = Vec::new();
    let mut per_worker: Vec<(String, i64)> = Vec::new();
    for (i, (item, outcome)) in items.iter().zip(&stored).enumerate() {
        let Ok(Stored { job_id, .. }) = outcome else {
            continue;
        };
        match per_job.iter_mut().find(|(j, _, _)| j == job_id) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 = i;
            }
            None => per_job.push((job_id.clone(), 1, i)),
        }
        match per_worker.iter_mut().find(|(w, _)| *w == item.worker_id) {
            Some(entry) => entry.1 += 1,
            None => per_worker.push((item.worker_id.clone(), 1)),
        }
    }
    let mut jobs = Vec::with_capacity(per_job.len());
    let mut unsettled = Vec::new();
    for (job_id, count, last) in &per_job {
        let counted = match engine() {
            Engine::Sqlite => count_on_job(&mut tx, job_id, *count, now).await?,
            Engine::Postgres => {
                let counted = count_by_instance(&mut tx, job_id, *count, now).await?;
                if counted.status.is_open() {
                    unsettled.push((job_id.clone(), *last));
                }
                counted
            }
        };
        jobs.push((job_id.clone(), *last, counted));
    }
    for (worker_id, count) in &per_worker {
        sqlx::query(sql(
            "UPDATE workers SET tasks_done = tasks_done + ?1, \
                 consecutive_verified = consecutive_verified + ?1, last_seen = ?2 WHERE id = ?3",
        ))
        .bind(count)
        .bind(now)
        .bind(worker_id)
        .execute(&mut *tx)
        .await?;
    }
    let completions = stored
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| match outcome {
            Err(reason) => Completion::Refused(reason),
            Ok(Stored {
                job_id,
                tile_row,
                tile_col,
                ..
            }) => {
                let (_, last, counted) = jobs
                    .iter()
                    .find(|(j, _, _)| *j == job_id)
                    .expect("every stored result's job was counted");
                Completion::Accepted {
                    tile_row,
                    tile_col,
                    tasks_done: counted.tasks_done,
                    tasks_total: counted.tasks_total,
                    job_finished: i == *last && counted.finished,
                    job_status: counted.status,
                    job_age_s: (now - counted.created_at) as f64 / 1000.0,
                    job_id,
                }
            }
        })
        .collect();
    Ok(Completing {
        tx,
        completions,
        unsettled,
    })
}

/// A job's count after a batch of its results, as the batch's transaction sees it.
#[derive(Debug, FromRow)]
struct Counted {
    tasks_done: i64,
    tasks_total: i64,
    status: JobStatus,
    created_at: i64,
    /// This batch moved the job to done.
    #[sqlx(default)]
    finished: bool,
}

/// SQLite (one instance, one writer): the count lives on the job's row, and the batch that
/// reaches the total marks the job done.
async fn count_on_job(
    tx: &mut super::WriteTx,
    job_id: &str,
    count: i64,
    now: i64,
) -> Result<Counted, sqlx::Error> {
    let mut counted: Counted =
        sqlx::query_as(sql("UPDATE jobs SET tasks_done = tasks_done + ?1, \
             status = CASE WHEN tasks_done + ?1 >= tasks_total THEN 'done' ELSE status END, \
             finished_at = CASE WHEN tasks_done + ?1 >= tasks_total THEN ?2 ELSE finished_at END \
         WHERE id = ?3 RETURNING tasks_done, tasks_total, status, created_at"))
        .bind(count)
        .bind(now)
        .bind(job_id)
        .fetch_one(&mut **tx)
        .await?;
    counted.finished = counted.status == JobStatus::Done;
    Ok(counted)
}

/// PostgreSQL: this instance's own counter for the job grows (`job_progress`), and the job's
/// row is only locked by the batch that finishes it, so the instances' batches do not wait for
/// one another's commit. The count read here misses the batches other instances have not
/// committed yet; a job two concurrent batches finish together is settled after the commit
/// ([`Completing::commit`]).
async fn count_by_instance(
    tx: &mut super::WriteTx,
    job_id: &str,
    count: i64,
    now: i64,
) -> Result<Counted, sqlx::Error> {
    // The outer query sees the snapshot from before the insert: this instance's new count
    // comes from the insert's RETURNING, the others' from the table.
    let mut counted: Counted = sqlx::query_as(sql(
        "WITH mine AS (INSERT INTO job_progress (job_id, instance, done) VALUES (?1, ?2, ?3) \
             ON CONFLICT (job_id, instance) DO UPDATE SET done = job_progress.done + EXCLUDED.done \
             RETURNING done) \
         SELECT CAST(j.tasks_done + (SELECT done FROM mine) + COALESCE((SELECT SUM(p.done) \
                 FROM job_progress p WHERE p.job_id = j.id AND p.instance <> ?2), 0) \
                 AS BIGINT) AS tasks_done, \
             j.tasks_total, j.status, j.created_at \
         FROM jobs j WHERE j.id = ?1",
    ))
    .bind(job_id)
    .bind(instance())
    .bind(count)
    .fetch_one(&mut **tx)
    .await?;
    if counted.status.is_open() && counted.tasks_done >= counted.tasks_total {
        counted.finished = finish_job(&mut **tx, job_id, now).await?;
        if counted.finished {
            counted.status = JobStatus::Done;
        }
    }
    Ok(counted)
}

/// Marks a job done if every task is counted (PostgreSQL); true if this call did.
async fn finish_job<'e, E>(executor: E, job_id: &str, now: i64) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = sqlx::query(sql("UPDATE jobs SET status = 'done', finished_at = ?1 \
         WHERE id = ?2 AND status IN ('queued', 'running') \
             AND tasks_done + COALESCE((SELECT SUM(p.done) FROM job_progress p \
                 WHERE p.job_id = ?2), 0) >= tasks_total"))
    .bind(now)
    .bind(job_id)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// PostgreSQL: marks done every open job whose tasks are all counted, should an instance have
/// died between committing a job's last results and settling it (see [`Completing::commit`]).
/// Returns the jobs it finished.
pub async fn finish_counted_jobs(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok(Vec::new());
    }
    let rows: Vec<(String,)> =
        sqlx::query_as(sql("UPDATE jobs j SET status = 'done', finished_at = ?1 \
         WHERE j.status IN ('queued', 'running') \
             AND j.tasks_done + COALESCE((SELECT SUM(p.done) FROM job_progress p \
                 WHERE p.job_id = j.id), 0) >= j.tasks_total \
         RETURNING j.id"))
        .bind(now_ms())
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// PostgreSQL: [`complete`]'s statements for a batch of distinct tasks in one, where they were
/// a round trip each: each task takes its values from arrays at its id's place. The tasks
/// stored, by id, with their place in the job.
async fn complete_together(
    tx: &mut super::WriteTx,
    items: &[ToComplete],
    results: Option<&[&[u8]]>,
    now: i64,
    day: i64,
) -> Result<std::collections::HashMap<i64, Stored>, sqlx::Error> {
    let marks = |cast: &str| vec![format!("CAST(? AS {cast})"); items.len()].join(", ");
    let (results_array, result_column) = match results {
        Some(_) => (
            format!(", ARRAY[{}] AS results", marks("BYTEA")),
            ", result = p.results[array_position(p.ids, t.id)]",
        ),
        None => (String::new(), ""),
    };
    let text = format!(
        "WITH p AS (SELECT ARRAY[{ids}] AS ids, ARRAY[{owners}] AS owners, \
             ARRAY[{copies}] AS copies, ARRAY[{workers}] AS workers, ARRAY[{times}] AS times, \
             ARRAY[{crcs}] AS crcs, ARRAY[{flops}] AS flops, ARRAY[{ms}] AS ms{results_array}) \
         UPDATE tasks t SET state = 'done', \
             compute_ms = NULLIF(p.times[array_position(p.ids, t.id)], 'NaN'), \
             completed_by = p.workers[array_position(p.ids, t.id)], \
             result_crc = p.crcs[array_position(p.ids, t.id)]{result_column}, \
             lease_owner = NULL, lease_worker = NULL, lease_deadline = NULL, updated_at = ?, \
             credit_ms = p.ms[array_position(p.ids, t.id)], credit_day = ?, credit_hour = ?, \
             credit_flops = (SELECT p.flops[array_position(p.ids, t.id)] FROM workers w \
                 WHERE w.id = p.workers[array_position(p.ids, t.id)] AND w.quarantine_reason IS NULL), \
             credit_team = (SELECT w.team_id FROM workers w \
                 WHERE w.id = p.workers[array_position(p.ids, t.id)]) \
         FROM p WHERE t.id = ANY(p.ids) AND ((t.state = 'leased' \
                 AND t.lease_owner = p.owners[array_position(p.ids, t.id)] \
                 AND t.lease_deadline >= ?) \
             OR (p.copies[array_position(p.ids, t.id)] AND t.state IN ('leased', 'queued'))) \
         RETURNING t.id, t.job_id, t.tile_row, t.tile_col, t.credit_flops, t.credit_team",
        ids = marks("BIGINT"),
        owners = marks("TEXT"),
        copies = marks("BOOLEAN"),
        workers = marks("TEXT"),
        times = marks("DOUBLE PRECISION"),
        crcs = marks("BIGINT"),
        flops = marks("BIGINT"),
        ms = marks("BIGINT"),
    );
    let statement = dialect(text);
    let mut query = sqlx::query(&statement);
    for item in items {
        query = query.bind(item.task_id);
    }
    for item in items {
        query = query.bind(&item.connection);
    }
    for item in items {
        query = query.bind(item.duplicate);
    }
    for item in items {
        query = query.bind(&item.worker_id);
    }
    for item in items {
        query = query.bind(unknown_as_nan(item.compute_ms));
    }
    for item in items {
        query = query.bind(i64::from(item.result_crc));
    }
    for item in items {
        query = query.bind(item.flops);
    }
    for item in items {
        query = query.bind(crate::credit::credited_ms(item.compute_ms));
    }
    if let Some(results) = results {
        for result in results {
            query = query.bind(*result);
        }
    }
    let rows = query
        .bind(now)
        .bind(day)
        .bind(crate::credit::hour_of(now))
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let stored = Stored {
                job_id: row.get("job_id"),
                tile_row: row.get("tile_row"),
                tile_col: row.get("tile_col"),
                credit_flops: row.get("credit_flops"),
                credit_team: row.get("credit_team"),
            };
            (row.get("id"), stored)
        })
        .collect())
}

/// Why a result for `task_id` from this connection cannot be accepted (read only).
pub async fn why_refused(
    pool: &Pool,
    task_id: i64,
    connection: &str,
) -> Result<String, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    refusal_reason(&mut conn, task_id, connection, now_ms()).await
}

async fn refusal_reason(
    tx: &mut sqlx::AnyConnection,
    task_id: i64,
    connection: &str,
    now: i64,
) -> Result<String, sqlx::Error> {
    let row = sqlx::query(sql(
        "SELECT t.state, t.lease_owner, t.lease_deadline, j.status AS job_status \
         FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?",
    ))
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(format!("unknown task {task_id}"));
    };
    let state: TaskState = row.get("state");
    let owner: Option<String> = row.get("lease_owner");
    let deadline: Option<i64> = row.get("lease_deadline");
    let job_status: JobStatus = row.get("job_status");
    Ok(match state {
        TaskState::Done => "task already completed".into(),
        TaskState::Cancelled | TaskState::Failed => format!("job is {job_status}"),
        TaskState::Leased
            if owner.as_deref() == Some(connection) && deadline.is_some_and(|d| d < now) =>
        {
            "lease expired".into()
        }
        _ => "task is not leased to this worker".into(),
    })
}

/// A task that went back to the queue, or failed its job.
#[derive(Debug, Clone, FromRow)]
pub struct Requeued {
    pub id: i64,
    pub job_id: String,
    pub tile_row: i64,
    pub tile_col: i64,
    pub failures: i64,
}

/// The result of a refused check: the task goes back to the queue, never to this worker
/// again, and the worker's reputation drops; returns the re-queued task and, when this
/// refusal was one too many, the reason the worker is now quarantined.
pub async fn refuse_result(
    pool: &Pool,
    task_id: i64,
    holder: Holder<'_>,
    reason: &str,
) -> Result<(Option<Requeued>, Option<String>), sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    // A refused result is the worker's fault, not the task's: it does not count toward the
    // failures that would fail the job (a few liars must not sink an honest job).
    let requeued = give_back(&mut tx, task_id, holder.connection, reason, now).await?;
    exclude(&mut tx, task_id, holder.worker_id).await?;
    let worker: Option<WorkerRecord> = sqlx::query_as(&dialect(format!(
        "UPDATE workers SET refused = refused + 1, consecutive_verified = 0, last_seen = ?1 \
         WHERE id = ?2 RETURNING {WORKER_COLUMNS}"
    )))
    .bind(now)
    .bind(holder.worker_id)
    .fetch_optional(&mut *tx)
    .await?;
    let quarantined = match worker.and_then(|w| w.trust().quarantine_reason(reason)) {
        Some(why) => {
            quarantine_worker(&mut tx, holder.worker_id, &why).await?;
            Some(why)
        }
        None => None,
    };
    tx.commit().await?;
    Ok((requeued, quarantined))
}

/// A result taken back, with the credit it was granted.
#[derive(FromRow)]
struct Reopened {
    #[sqlx(flatten)]
    task: Requeued,
    credit_flops: Option<i64>,
    credit_ms: Option<i64>,
    credit_day: Option<i64>,
    credit_hour: Option<i64>,
    credit_team: Option<String>,
}

/// A result a worker got accepted, read back to be checked again (see `grid::results`).
#[derive(Debug, FromRow)]
pub struct AcceptedTile {
    pub id: i64,
    pub job_id: String,
    pub tile_row: i64,
    pub tile_col: i64,
}

/// The results `worker_id` got accepted since `since_ms` in jobs that are still running.
pub async fn accepted_in_running_jobs(
    pool: &Pool,
    worker_id: &str,
    since_ms: i64,
) -> Result<Vec<AcceptedTile>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT t.id, t.job_id, t.tile_row, t.tile_col FROM tasks t \
         JOIN jobs j ON j.id = t.job_id \
         WHERE t.state = 'done' AND t.completed_by = ? AND t.updated_at >= ? \
             AND j.status = 'running'",
    ))
    .bind(worker_id)
    .bind(since_ms)
    .fetch_all(pool)
    .await
}

/// Takes back results of `worker_id` that failed a second check: each task goes back to the
/// queue (never to this worker again), its job's count drops, and each counts as a refusal.
/// Only while its job runs: a finished job's product may already have been downloaded.
pub async fn reopen(
    pool: &Pool,
    worker_id: &str,
    task_ids: &[i64],
    reason: &str,
) -> Result<Vec<Requeued>, sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    let mut reopened = Vec::new();
    let mut withdrawn = Vec::new();
    for &id in task_ids {
        // The credit columns are left as they are, so RETURNING reads what was granted.
        let task: Option<Reopened> = sqlx::query_as(sql(
            "UPDATE tasks SET state = 'queued', result = NULL, compute_ms = NULL, \
                 completed_by = NULL, last_error = ?1, updated_at = ?2 \
             WHERE id = ?3 AND state = 'done' AND completed_by = ?4 \
                 AND job_id IN (SELECT id FROM jobs WHERE status = 'running') \
             RETURNING id, job_id, tile_row, tile_col, failures, \
                 credit_flops, credit_ms, credit_day, credit_hour, credit_team",
        ))
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(worker_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(Reopened {
            task,
            credit_flops,
            credit_ms,
            credit_day,
            credit_hour,
            credit_team,
        }) = task
        else {
            continue;
        };
        withdrawn.push(crate::credit::ResultCredit {
            holder: crate::credit::Holder {
                worker_id: worker_id.to_owned(),
                team_id: credit_team,
                day: credit_day.unwrap_or(0),
                hour: credit_hour.unwrap_or(0),
            },
            flops: credit_flops,
            compute_ms: credit_ms.unwrap_or(0),
        });
        exclude(&mut tx, id, worker_id).await?;
        sqlx::query(sql(
            "UPDATE jobs SET tasks_done = tasks_done - 1 WHERE id = ?",
        ))
        .bind(&task.job_id)
        .execute(&mut *tx)
        .await?;
        reopened.push(task);
    }
    sqlx::query(
        sql("UPDATE workers SET refused = refused + ?1, tasks_done = CASE WHEN tasks_done > ?1 THEN tasks_done - ?1 ELSE 0 END, \
             consecutive_verified = 0 WHERE id = ?2"),
    )
    .bind(reopened.len() as i64)
    .bind(worker_id)
    .execute(&mut *tx)
    .await?;
    // What those results were granted is withdrawn in the same transaction.
    let withdrawn = crate::credit::tally(&withdrawn);
    if !withdrawn.is_empty() {
        let swept_through = super::credit::window(&mut tx).await?;
        for (holder, amount) in withdrawn {
            super::credit::withdraw(&mut tx, &holder, amount, swept_through).await?;
        }
    }
    tx.commit().await?;
    Ok(reopened)
}

/// Re-queues every task leased to a connection that closed. Leaving is normal churn for
/// volunteers, so it does not count as a failure of the task; it is noted on the worker.
pub async fn release_connection(
    pool: &Pool,
    holder: Holder<'_>,
) -> Result<Vec<Requeued>, sqlx::Error> {
    let released: Vec<Requeued> = sqlx::query_as(sql(
        "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_worker = NULL, \
             lease_deadline = NULL, updated_at = ? \
         WHERE lease_owner = ? AND state = 'leased' \
         RETURNING id, job_id, tile_row, tile_col, failures",
    ))
    .bind(now_ms())
    .bind(holder.connection)
    .fetch_all(pool)
    .await?;
    if !released.is_empty() {
        sqlx::query(sql(
            "UPDATE workers SET disconnected = disconnected + 1 WHERE id = ?",
        ))
        .bind(holder.worker_id)
        .execute(pool)
        .await?;
    }
    Ok(released)
}

/// What became of a task a worker failed: reported it failed, or let its lease expire.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The task, back in the queue unless `fault` is set.
    pub task: Requeued,
    /// Set when the task itself is at fault (see `trust::task_fault`): it is marked failed
    /// and its job must fail with this reason.
    pub fault: Option<String>,
    /// The worker that failed it (none for a lease from before the failure reports).
    pub worker_id: Option<String>,
    /// Set when this failure got the worker quarantined.
    pub quarantined: Option<String>,
}

/// Re-queues leases whose deadline has passed. Each counts as a failure of its task by the
/// worker that held it (see [`record_failure`]): once per worker and task, and against the
/// job only when trusted workers at `needed` addresses have failed the same task. A task at
/// fault is marked failed in the same transaction, so no one can fail it once more meanwhile.
///
/// The transaction is left open: the caller drops the expired leases from the connections that
/// held them, then commits. Until then no dispatch round can claim the tasks again (the
/// transaction holds the write lock), so a new lease on one of them, perhaps to the same
/// connection, is never taken for the expired one and dropped with it.
pub async fn expire_leases(pool: &Pool, needed: usize) -> Result<Expiring, sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    // Read before writing is safe here: on SQLite BEGIN IMMEDIATE holds the write lock; on
    // PostgreSQL, where every instance sweeps, the rows read are locked, and rows another
    // instance's sweep holds are left to it, so that no expiry is counted twice.
    macro_rules! expired {
        ($lock:literal) => {
            concat!(
                "SELECT id, job_id, tile_row, tile_col, failures, lease_worker, lease_address \
                     FROM tasks WHERE state = 'leased' AND lease_deadline < ?",
                $lock
            )
        };
    }
    let expired: Vec<ExpiredLease> = sqlx::query_as(match engine() {
        Engine::Sqlite => sql(expired!("")),
        Engine::Postgres => sql(expired!(" FOR UPDATE SKIP LOCKED")),
    })
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    if expired.is_empty() {
        return Ok(Expiring {
            tx,
            failures: Vec::new(),
        });
    }
    sqlx::query(sql(
        "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_worker = NULL, \
             lease_address = NULL, lease_deadline = NULL, last_error = 'lease expired', \
             updated_at = ?1 \
         WHERE state = 'leased' AND lease_deadline < ?1",
    ))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let mut failures = Vec::with_capacity(expired.len());
    for ExpiredLease {
        task,
        lease_worker,
        lease_address,
    } in expired
    {
        let mut failure = Failure {
            task,
            fault: None,
            worker_id: lease_worker.clone(),
            quarantined: None,
        };
        if let Some(worker_id) = lease_worker {
            let address = lease_address.unwrap_or_else(|| "unknown".into());
            let reporter = Reporter {
                worker_id: &worker_id,
                address: &address,
            };
            record_failure(
                &mut tx,
                &mut failure,
                reporter,
                FailureKind::Expired,
                "lease expired",
                needed,
                now,
            )
            .await?;
        }
        failures.push(failure);
    }
    Ok(Expiring { tx, failures })
}

/// Expired leases re-queued in a transaction not yet committed (see [`expire_leases`]).
pub struct Expiring {
    tx: super::WriteTx,
    failures: Vec<Failure>,
}

impl Expiring {
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    pub async fn commit(self) -> Result<Vec<Failure>, sqlx::Error> {
        self.tx.commit().await?;
        Ok(self.failures)
    }
}

/// A lease found expired, with who held it.
#[derive(FromRow)]
struct ExpiredLease {
    #[sqlx(flatten)]
    task: Requeued,
    lease_worker: Option<String>,
    /// None for leases from before the column existed.
    lease_address: Option<String>,
}

/// A worker reported that it could not compute a task it holds: the task goes to someone
/// else (never back to this worker), and the report counts as in [`record_failure`].
/// `None` when the task is not leased to this connection.
pub async fn report_failure(
    pool: &Pool,
    task_id: i64,
    holder: Holder<'_>,
    reason: &str,
    needed: usize,
) -> Result<Option<Failure>, sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    let Some(task) = give_back(&mut tx, task_id, holder.connection, reason, now).await? else {
        // A report that comes after the worker's lease on the task ran out still means the
        // worker cannot compute it: it is not offered the task again. Nothing else changes
        // (the expiry was counted already).
        let expired: Option<(i64,)> = sqlx::query_as(sql(
            "SELECT task_id FROM task_failures WHERE task_id = ? AND worker_id = ? AND kind = ?",
        ))
        .bind(task_id)
        .bind(holder.worker_id)
        .bind(FailureKind::Expired.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if expired.is_some() {
            exclude(&mut tx, task_id, holder.worker_id).await?;
            tx.commit().await?;
        }
        return Ok(None);
    };
    let mut failure = Failure {
        task,
        fault: None,
        worker_id: Some(holder.worker_id.to_owned()),
        quarantined: None,
    };
    let address = holder.address.to_string();
    let reporter = Reporter {
        worker_id: holder.worker_id,
        address: &address,
    };
    record_failure(
        &mut tx,
        &mut failure,
        reporter,
        FailureKind::Reported,
        reason,
        needed,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(failure))
}

/// Who failed a task.
#[derive(Clone, Copy)]
struct Reporter<'a> {
    worker_id: &'a str,
    address: &'a str,
}

/// Reports read back per task when deciding whether it is at fault: trusted reporters first,
/// so that a crowd of fresh identities cannot push them out of the window.
const MAX_REPORTS_READ: i64 = 256;

/// Notes one worker's failure of a task (once per worker and task), charges the worker's
/// record (and quarantines it when that was one failure too many), then decides from every
/// report on the task whether the task itself is at fault, marking it failed if so.
async fn record_failure(
    tx: &mut sqlx::AnyConnection,
    failure: &mut Failure,
    reporter: Reporter<'_>,
    kind: FailureKind,
    reason: &str,
    needed: usize,
    now: i64,
) -> Result<(), sqlx::Error> {
    let task_id = failure.task.id;
    let first = sqlx::query(sql(
        "INSERT INTO task_failures (task_id, worker_id, address, kind, reason, at) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    ))
    .bind(task_id)
    .bind(reporter.worker_id)
    .bind(reporter.address)
    .bind(kind.as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if kind == FailureKind::Reported {
        // A task its worker says it cannot compute goes to someone else.
        exclude(&mut *tx, task_id, reporter.worker_id).await?;
    }
    let column = match kind {
        FailureKind::Reported => "tasks_failed",
        FailureKind::Expired => "timed_out",
    };
    let worker: Option<WorkerRecord> = sqlx::query_as(&dialect(format!(
        "UPDATE workers SET {column} = {column} + 1, consecutive_verified = 0, last_seen = ?1 \
         WHERE id = ?2 RETURNING {WORKER_COLUMNS}"
    )))
    .bind(now)
    .bind(reporter.worker_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(why) = worker.and_then(|w| w.trust().quarantine_reason(reason)) {
        quarantine_worker(&mut *tx, reporter.worker_id, &why).await?;
        failure.quarantined = Some(why);
    }
    if !first {
        return Ok(()); // the same reporter again: nothing new to count against the task
    }
    let rows: Vec<FailureRow> = sqlx::query_as(&dialect(format!(
        "SELECT f.worker_id, f.address, f.reason, {WORKER_COLUMNS_OF_W} \
         FROM task_failures f JOIN workers w ON w.id = f.worker_id WHERE f.task_id = ? \
         ORDER BY w.tasks_done DESC LIMIT {MAX_REPORTS_READ}"
    )))
    .bind(task_id)
    .fetch_all(&mut *tx)
    .await?;
    let reports: Vec<trust::FailureReport> = rows
        .into_iter()
        .map(|r| trust::FailureReport {
            trusted: r.record.trust().is_trusted(),
            worker_id: r.worker_id,
            address: r.address,
            reason: r.reason,
        })
        .collect();
    let counted = trust::counted_failures(&reports) as i64;
    let fault = trust::task_fault(&reports, needed).map(|why| {
        format!(
            "task {task_id} (tile {},{}) {why}",
            failure.task.tile_row, failure.task.tile_col
        )
    });
    sqlx::query(sql("UPDATE tasks SET failures = ?1, \
             state = CASE WHEN ?2 AND state = 'queued' THEN 'failed' ELSE state END \
         WHERE id = ?3"))
    .bind(counted)
    .bind(fault.is_some())
    .bind(task_id)
    .execute(&mut *tx)
    .await?;
    failure.task.failures = counted;
    failure.fault = fault;
    Ok(())
}

#[derive(FromRow)]
struct FailureRow {
    worker_id: String,
    address: String,
    reason: String,
    #[sqlx(flatten)]
    record: WorkerRecord,
}

/// Puts this instance's leases back in the queue: at a clean stop, its connections are
/// closing. On SQLite, the only instance, at start-up too: every lease then belongs to a
/// connection that no longer exists. On PostgreSQL other instances' leases are theirs: an
/// instance starting or stopping must not take their workers' tasks.
pub async fn requeue_own_leases(pool: &Pool) -> Result<u64, sqlx::Error> {
    let done = match engine() {
        Engine::Sqlite => {
            sqlx::query(sql(
                "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_deadline = NULL \
                 WHERE state = 'leased'",
            ))
            .execute(pool)
            .await?
        }
        Engine::Postgres => {
            sqlx::query(sql(
                "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_deadline = NULL \
                 WHERE state = 'leased' AND lease_instance = ?",
            ))
            .bind(instance())
            .execute(pool)
            .await?
        }
    };
    Ok(done.rows_affected())
}

/// A done tile of an unfinished job, with the checksum it was written with.
#[derive(Debug, sqlx::FromRow)]
pub struct WrittenTile {
    pub task_id: i64,
    pub job_id: String,
    pub tile_row: i64,
    pub tile_col: i64,
    pub result_crc: i64,
}

/// The done tiles of jobs still running, in job order: the ones a crash of the machine may
/// have lost (a finished job's result was synced before it was marked done).
pub async fn written_tiles(pool: &Pool) -> Result<Vec<WrittenTile>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT t.id AS task_id, t.job_id, t.tile_row, t.tile_col, t.result_crc \
         FROM tasks t JOIN jobs j ON j.id = t.job_id \
         WHERE t.state = 'done' AND t.result_crc IS NOT NULL AND j.status IN ('queued', 'running') \
         ORDER BY t.job_id, t.id",
    ))
    .fetch_all(pool)
    .await
}

/// Puts done tiles whose bytes were lost back in the queue, and takes them off their jobs'
/// counts, in one transaction.
pub async fn requeue_lost(pool: &Pool, tiles: &[&WrittenTile]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    for tile in tiles {
        let done = sqlx::query(sql(
            "UPDATE tasks SET state = 'queued', result_crc = NULL, completed_by = NULL, \
                 compute_ms = NULL, last_error = 'its result was lost in a crash', updated_at = ?1 \
             WHERE id = ?2 AND state = 'done'",
        ))
        .bind(now)
        .bind(tile.task_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(sql(
            "UPDATE jobs SET tasks_done = tasks_done - ?1 WHERE id = ?2",
        ))
        .bind(done.rows_affected() as i64)
        .bind(&tile.job_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Puts a task leased to connection `connection` back in the queue with `reason` as its last
/// error; `None` when it is not leased to that connection (any more).
async fn give_back(
    conn: &mut sqlx::AnyConnection,
    task_id: i64,
    connection: &str,
    reason: &str,
    now: i64,
) -> Result<Option<Requeued>, sqlx::Error> {
    sqlx::query_as(sql(
        "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_worker = NULL, \
             lease_address = NULL, lease_deadline = NULL, last_error = ?1, updated_at = ?2 \
         WHERE id = ?3 AND state = 'leased' AND lease_owner = ?4 \
         RETURNING id, job_id, tile_row, tile_col, failures",
    ))
    .bind(reason)
    .bind(now)
    .bind(task_id)
    .bind(connection)
    .fetch_optional(conn)
    .await
}

/// The worker is never given this task again.
async fn exclude(
    conn: &mut sqlx::AnyConnection,
    task_id: i64,
    worker_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "INSERT INTO task_exclusions (task_id, worker_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
    ))
    .bind(task_id)
    .bind(worker_id)
    .execute(conn)
    .await
    .map(|_| ())
}
