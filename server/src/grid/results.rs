//! A result's way through the grid: checked against its lease and its inputs, committed,
//! acknowledged; or refused, with what a refusal sets off (the task back in the queue, the
//! worker's record lowered, an audit of what it sent before).

use std::sync::Arc;

use bytes::Bytes;

use crate::commit::Verified;
use crate::credit;
use crate::db;
use crate::metrics::Metrics;
use crate::protocol::{ResultAck, TaskResult};
use crate::status::TaskState;
use crate::sync::LockExt;
use crate::trust;
use crate::verify;

use super::registry::{Lease, Standing};
use super::Grid;

/// What checking a result found.
enum Finding {
    Pass,
    /// The result is wrong: the worker's doing.
    Wrong(String),
    /// The server could not check it (the job's inputs unreadable, the check not run).
    NotChecked(String),
}

impl Grid {
    /// Takes a worker's result for a task, and acknowledges it through `reply` as soon as
    /// its fate is known: whether it was stored, or why not. What follows (copies cancelled,
    /// a refusal's consequences) comes after the acknowledgement, as the worker would see it.
    pub async fn take_result(
        self: &Arc<Self>,
        from: &Standing,
        result: TaskResult,
        reply: impl FnOnce(ResultAck),
    ) {
        let task_id = result.task_id;
        let ack = |accepted: bool, reason: Option<String>| {
            reply(ResultAck {
                task_id,
                accepted,
                reason,
            })
        };
        Metrics::add(&self.metrics.bytes_received, result.c.len() as u64);
        // A result that arrives while the server shuts down is still taken: the work is done,
        // a check and a commit take milliseconds, and the page, told `server_shutdown`, would
        // otherwise show a refusal for a deploy. Only new tasks stop (see `request_task`).
        let Some(lease) = self.workers.answer(from.connection, task_id) else {
            // Not ours: unknown, finished, another worker's, or a lease that ended. Nothing is
            // stored and nobody's reputation changes: late answers are normal churn.
            let owner = from.connection.as_str();
            let reason = db::why_refused(&self.db, task_id, owner)
                .await
                .unwrap_or_else(|_| "task is not leased to this worker".into());
            return ack(false, Some(reason));
        };
        let expected = lease.result_len;
        let checked = if result.c.len() != expected {
            Finding::Wrong(format!(
                "result has {} bytes, the tile needs {expected}",
                result.c.len()
            ))
        } else {
            self.verify(from, &lease, &result.c).await
        };
        match checked {
            Finding::Pass => {}
            Finding::NotChecked(reason) => {
                // The server's failure, not the worker's: no mark on its record, and the task
                // goes back to the queue as if it had never been handed out.
                tracing::error!(task_id, %reason, "a result could not be checked");
                self.workers.drop_lease(from.connection, task_id);
                let owner = from.connection.as_str();
                if let Err(e) = db::unclaim_task(&self.db, task_id, owner).await {
                    tracing::error!(task_id, error = %e, "could not re-queue a task");
                }
                self.wake();
                return ack(false, Some(reason));
            }
            Finding::Wrong(reason) => {
                self.workers.drop_lease(from.connection, task_id);
                self.workers
                    .with_record(&from.worker_id, |r| r.count_refused(1));
                tracing::warn!(task_id, worker_id = %from.worker_id, %reason, "result refused");
                Metrics::add(&self.metrics.results_refused, 1);
                ack(false, Some(reason.clone()));
                return self.handle_refusal(task_id, from, &reason).await;
            }
        }
        let compute_ms = result.compute_ms.filter(|ms| ms.is_finite() && *ms >= 0.0);
        let Ok(plan) = self.inputs.plan(&self.db, &lease.job_id).await else {
            // The job ended while the result was being checked.
            return ack(false, Some("the task's job has ended".into()));
        };
        let tile = plan.tile(lease.tile_row, lease.tile_col);
        let outcome = self
            .committer
            .complete(Verified {
                task: db::ToComplete {
                    task_id,
                    connection: from.connection.to_string(),
                    worker_id: from.worker_id.clone(),
                    compute_ms,
                    duplicate: lease.duplicate,
                    result_crc: crc32fast::hash(&result.c),
                    flops: credit::tile_flops(tile.rows, tile.kn, tile.cols),
                },
                job_id: lease.job_id.clone(),
                tile,
                plan,
                bytes: result.c,
            })
            .await;
        self.workers.drop_answered(from.connection, task_id);
        match outcome {
            Ok(db::Completion::Accepted {
                job_id,
                tile_row,
                tile_col,
                job_finished,
                job_age_s,
                ..
            }) => {
                ack(true, None);
                // The worker's lease allowance grew: a request it made past it may be served.
                self.wake();
                self.cancel(task_id, Some(from.connection));
                let flops = lease.flops;
                self.metrics.completed(flops);
                self.workers
                    .with_record(&from.worker_id, trust::Record::count_verified);
                if let Some(ms) = compute_ms.filter(|ms| *ms > 0.0) {
                    self.workers.record_speed(from.connection, flops / ms / 1e6);
                }
                let done = TaskState::Done;
                self.progress
                    .tile(&job_id, task_id, tile_row, tile_col, done);
                if job_finished {
                    tracing::info!(%job_id, seconds = job_age_s, "job done");
                    self.metrics.job_finished(job_age_s);
                    self.forget_job(&job_id, super::Leaving::Inputs).await;
                }
            }
            Ok(db::Completion::Refused(reason)) => ack(false, Some(reason)),
            Err(e) => {
                tracing::error!(error = %e, task_id, "storing a result failed");
                let reason = "the server could not store the result; it will be re-queued";
                ack(false, Some(reason.into()))
            }
        }
    }

    /// Checks a result against its inputs with Freivalds' algorithm (see `verify`), with as
    /// many random vectors as the worker's record calls for, off the async workers.
    async fn verify(&self, from: &Standing, lease: &Lease, c: &Bytes) -> Finding {
        let panels = self
            .inputs
            .panels(&self.db, &lease.job_id, lease.tile_row, lease.tile_col);
        let Ok((plan, tile, a, b)) = panels.await else {
            return Finding::NotChecked(
                "the job's inputs are unavailable; the task will be re-queued".into(),
            );
        };
        let c = c.clone();
        let vectors = from.record.check_vectors();
        let started = std::time::Instant::now();
        let verdict = tokio::task::spawn_blocking(move || {
            verify::check(
                plan.dtype,
                &a,
                &b,
                &c,
                (tile.rows, tile.kn, tile.cols),
                vectors,
                &mut rand::rng(),
            )
        })
        .await;
        let Ok(verdict) = verdict else {
            return Finding::NotChecked(
                "the server could not run the check; the task will be re-queued".into(),
            );
        };
        self.metrics.verification(started.elapsed());
        match verdict {
            verify::Verdict::Pass => Finding::Pass,
            verify::Verdict::Fail { row, diff, bound } => Finding::Wrong(format!(
                "verification failed: row {row} of the tile is off by {diff:.3e} (bound {bound:.3e})"
            )),
        }
    }

    /// After a refusal: the task goes back to the queue (never to this worker), the worker's
    /// record drops, and a worker refused too often is quarantined and told why.
    async fn handle_refusal(self: &Arc<Self>, task_id: i64, from: &Standing, reason: &str) {
        match db::refuse_result(&self.db, task_id, from.holder(), reason).await {
            Ok((requeued, quarantined)) => {
                tokio::spawn(self.clone().audit(from.worker_id.clone()));
                if let Some(task) = requeued {
                    self.offer_again(&[task]);
                }
                if let Some(why) = quarantined {
                    self.quarantine(&from.worker_id, &why).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "recording a refused result failed"),
        }
    }

    /// After a refusal, checks the worker's accepted results in running jobs again, with
    /// [`trust::AUDIT_VECTORS`] vectors (many more than they passed, as few as two for a
    /// worker with a long record), and takes back those that fail. A worker caught once may
    /// have slipped wrong tiles through before: one vector lets errors that cancel in pairs
    /// within a row through half the time. What an earlier audit of the same worker checked
    /// is not checked again (see [`trust::audit_since`]), so a liar refused again and again
    /// cannot make the server re-read and re-check its whole history each time.
    async fn audit(self: Arc<Self>, worker_id: String) {
        let since = {
            let now = db::now_ms();
            let last = self
                .audited
                .lock_or_recover()
                .insert(worker_id.clone(), now);
            trust::audit_since(last)
        };
        let accepted = match db::accepted_in_running_jobs(&self.db, &worker_id, since).await {
            Ok(accepted) => accepted,
            Err(e) => {
                return tracing::error!(error = %e, %worker_id, "reading results to audit failed")
            }
        };
        let mut wrong = Vec::new();
        for tile in accepted {
            let (row, col) = (tile.tile_row as usize, tile.tile_col as usize);
            let Ok((plan, t, a, b)) = self.inputs.panels(&self.db, &tile.job_id, row, col).await
            else {
                continue; // the job ended meanwhile
            };
            let c = match db::engine() {
                db::Engine::Sqlite => {
                    let (store, job_id) = (self.inputs.store().clone(), tile.job_id.clone());
                    let read =
                        tokio::task::spawn_blocking(move || store.read_tile(&job_id, &plan, &t));
                    match read.await {
                        Ok(Ok(c)) => c,
                        _ => continue, // the job ended meanwhile
                    }
                }
                // Results live in the database there (see `commit`).
                db::Engine::Postgres => {
                    let (job_id, row, col) = (&tile.job_id, tile.tile_row, tile.tile_col);
                    match db::chunks::read_result(&self.db, job_id, row, col).await {
                        Ok(Some(c)) => c,
                        _ => continue, // taken back or ended meanwhile
                    }
                }
            };
            let failed = tokio::task::spawn_blocking(move || {
                let per_check = trust::AUDIT_VECTORS_PER_CHECK;
                (0..trust::AUDIT_VECTORS / per_check).any(|_| {
                    let shape = (t.rows, t.kn, t.cols);
                    let verdict =
                        verify::check(plan.dtype, &a, &b, &c, shape, per_check, &mut rand::rng());
                    verdict != verify::Verdict::Pass
                })
            })
            .await;
            if failed.unwrap_or(false) {
                wrong.push(tile.id);
            }
        }
        if wrong.is_empty() {
            return;
        }
        let reason = "taken back: failed a second check after its worker was caught";
        match db::reopen(&self.db, &worker_id, &wrong, reason).await {
            Ok(reopened) => {
                tracing::warn!(%worker_id, tiles = reopened.len(), "accepted results taken back");
                let count = reopened.len() as i64;
                self.workers
                    .with_record(&worker_id, |r| r.count_refused(count));
                Metrics::add(&self.metrics.results_refused, reopened.len() as u64);
                self.offer_again(&reopened);
            }
            Err(e) => tracing::error!(error = %e, %worker_id, "taking back results failed"),
        }
    }
}
