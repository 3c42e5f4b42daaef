//! The group committer: verified results are stored by one task, many per transaction.
//!
//! A result handler hands its verified result here and waits for the outcome; the committer
//! takes whatever has queued up (at least one, at most [`MAX_BATCH`]) and stores it: the
//! tasks are marked done in one transaction, the accepted tiles are written to their jobs'
//! results, and only then is the transaction committed. Under load one commit serves many
//! results; alone, a result waits for no one. Every `result_ack` is still sent only after its
//! result is committed.
//!
//! The tiles are written, not synced, before the commit: a commit in WAL mode with
//! `synchronous = NORMAL` does not wait for the disk either, and a sync in every batch cost
//! the grid a fifth of its efficiency (docs/benchmarks.md). A tile lost with the page cache
//! (a crash of the machine, not of the process) is found by its checksum at the next start
//! and computed again (`recovery`). A job's result is synced before the commit that marks the
//! job done, since its inputs go then.
//!
//! On PostgreSQL the tiles go into the database instead, in the statements that mark their
//! tasks done ([`store_batch_in_database`]).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::db::{self, Completion, Engine, Pool, ToComplete};
use crate::jobs::{Plan, Tile};
use crate::store::Store;

/// A verified result: what the database records, and the tile's bytes and place.
pub struct Verified {
    pub task: ToComplete,
    pub job_id: String,
    pub plan: Plan,
    pub tile: Tile,
    pub bytes: Bytes,
}

/// Most results stored by one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Completion, String>>;

/// The handle result handlers use.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<(Verified, Reply)>,
}

impl Committer {
    /// Starts the committer on the current runtime.
    pub fn start(pool: Pool, store: Arc<Store>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, store, rx));
        Committer { queue }
    }

    /// Stores one verified result; resolves once it is committed (or refused).
    pub async fn complete(&self, item: Verified) -> Result<Completion, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .map_err(|_| "the committer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the committer has stopped".to_owned())?
    }
}

async fn run(pool: Pool, store: Arc<Store>, mut rx: mpsc::UnboundedReceiver<(Verified, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match store_batch(&pool, &store, items).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, results = replies.len(), "storing results failed");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Marks a batch done, writes the accepted tiles (syncing the results of jobs this batch
/// finishes), then commits; nothing is committed if the tiles could not be written.
async fn store_batch(
    pool: &Pool,
    store: &Arc<Store>,
    items: Vec<Verified>,
) -> Result<Vec<Completion>, String> {
    if db::engine() == Engine::Postgres {
        return store_batch_in_database(pool, items).await;
    }
    let tasks: Vec<ToComplete> = items.iter().map(|v| v.task.clone()).collect();
    let completing = db::complete_tasks(pool, &tasks)
        .await
        .map_err(|e| e.to_string())?;
    let mut finished = Vec::new();
    let mut accepted = Vec::new();
    // Each job's tiles this batch stored, and its count after them.
    let mut stored: Vec<(String, i64, i64, i64)> = Vec::new();
    for (v, c) in items.into_iter().zip(completing.completions()) {
        if let Completion::Accepted {
            job_finished,
            tasks_done,
            tasks_total,
            ..
        } = c
        {
            if *job_finished {
                finished.push(v.job_id.clone());
            }
            match stored.iter_mut().find(|(job, ..)| *job == v.job_id) {
                Some((_, tiles, _, _)) => *tiles += 1,
                None => stored.push((v.job_id.clone(), 1, *tasks_done, *tasks_total)),
            }
            accepted.push(v);
        }
    }
    let written_back: Vec<String> = stored
        .into_iter()
        .filter(|(_, tiles, done, total)| writeback_due(done - tiles, *done, *total))
        .map(|(job, ..)| job)
        .collect();
    if !accepted.is_empty() {
        let store = store.clone();
        let finished = finished.clone();
        tokio::task::spawn_blocking(move || {
            let tiles = accepted
                .iter()
                .map(|v| (v.job_id.as_str(), &v.plan, &v.tile, &v.bytes[..]));
            store.write_tiles(tiles)?;
            finished.iter().try_for_each(|job| {
                let plan = accepted.iter().find(|v| v.job_id == *job).map(|v| v.plan);
                plan.map_or(Ok(()), |plan| store.finish_result(job, &plan))
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing results: {e}"))?;
    }
    let outcomes = completing.commit(pool).await.map_err(|e| e.to_string())?;
    // After the commit, and not waited for: starting the writeback of a job's result can
    // block for as long as the kernel takes to queue it (50–80 ms for the 64 MiB of a
    // 4096×4096 result), and inside the commit it held the database's writer, so that no
    // task could be claimed meanwhile: the page's threads waited for work at each of these
    // points (docs/benchmarks.md, #17). Durability does not depend on it (the job's last
    // commit syncs its result).
    let due: Vec<String> = written_back
        .into_iter()
        .filter(|job| !finished.contains(job))
        .collect();
    if !due.is_empty() {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            for job in &due {
                if let Err(e) = store.start_result_writeback(job) {
                    tracing::warn!(job_id = %job, error = %e, "starting a result's writeback failed");
                }
            }
        });
    }
    Ok(outcomes)
}

/// Whether the result of a job of `total` tiles should start on its way to the disk after a
/// commit: as its tiles pass 1/2, 3/4, 7/8 and 15/16 of the job. The job's last commit
/// syncs its result before the job is done, and that sync wrote the whole result at once,
/// most of the time after a small job's last tile (14–19 ms of a 2048² job's 0.8 s,
/// docs/benchmarks.md, #17); from the last of these points it has a sixteenth left, and the
/// pages tiles dirtied again. A tile's rows share pages with their neighbours' (a 256-wide
/// f32 tile row is a quarter of a page), so writing back at every commit would write each
/// page up to four times; at these points a page is written at most five times, most once.
/// `before` and `after` are the job's tiles done before and after a commit.
fn writeback_due(before: i64, after: i64, total: i64) -> bool {
    (1..=4).any(|j| {
        let part = 1i64 << j;
        // The first count at or past (part − 1) / part of the job.
        let at = (total * (part - 1) + part - 1) / part;
        before < at && at <= after && at < total
    })
}

/// On PostgreSQL: each accepted tile's bytes go into its task's row in the statement that
/// marks it done, so a commit is durable, and seen by every instance, tiles and all: no file
/// is written, nothing is synced, and no crash can lose a tile (there is no recovery pass).
/// The inputs of the jobs the batch finishes are deleted after the commit, off the
/// committer's path (a large job's take a while; the sweep finds any left by a crash).
async fn store_batch_in_database(
    pool: &Pool,
    items: Vec<Verified>,
) -> Result<Vec<Completion>, String> {
    let tasks: Vec<ToComplete> = items.iter().map(|v| v.task.clone()).collect();
    let results: Vec<&[u8]> = items.iter().map(|v| &v.bytes[..]).collect();
    let completions = db::complete_tasks_with_results(pool, &tasks, &results)
        .await
        .map_err(|e| e.to_string())?
        .commit(pool)
        .await
        .map_err(|e| e.to_string())?;
    for c in &completions {
        if let Completion::Accepted {
            job_id,
            job_finished: true,
            ..
        } = c
        {
            let (pool, job_id) = (pool.clone(), job_id.clone());
            tokio::spawn(async move {
                if let Err(e) = db::chunks::drop_inputs(&pool, &job_id).await {
                    tracing::error!(%job_id, error = %e, "deleting a done job's inputs failed");
                }
            });
        }
    }
    Ok(completions)
}

#[cfg(test)]
mod tests {
    use super::writeback_due;

    /// The commits after which a job of `total` tiles, committed `step` tiles at a time, has
    /// its result written back early.
    fn due_at(total: i64, step: i64) -> Vec<i64> {
        let mut due = Vec::new();
        let mut done = 0;
        while done < total {
            let after = (done + step).min(total);
            if writeback_due(done, after, total) {
                due.push(after);
            }
            done = after;
        }
        due
    }

    #[test]
    fn a_result_is_written_back_at_a_half_three_quarters_seven_and_fifteen_sixteenths() {
        assert_eq!(due_at(64, 1), vec![32, 48, 56, 60]);
        // Batches that jump past a point still start it, once.
        assert_eq!(due_at(64, 5), vec![35, 50, 60]);
        // Never at the last tile: the job's end syncs the result anyway.
        assert_eq!(due_at(2, 1), vec![1]);
        assert_eq!(due_at(1, 1), Vec::<i64>::new());
        assert_eq!(due_at(3, 1), vec![2]);
        assert_eq!(due_at(1_000_000, 1000).len(), 4);
    }
}
