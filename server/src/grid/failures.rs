//! Tasks that workers fail, by saying so or by going quiet until their lease runs out; the
//! quarantine of workers who fail too often; and the sweeper that notices expired leases and
//! applies the retention policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db;
use crate::error::Result;
use crate::protocol::{Quarantined, TaskFailed};
use crate::sync::LockExt;
use crate::trust;

use super::registry::Standing;
use super::workers::Refusal;
use super::{Grid, Message};

/// How far back each look for quarantines decided elsewhere reaches before the latest seen.
const QUARANTINE_LAG_MS: i64 = 5_000;

/// Longest reason kept from a worker's failure report.
const MAX_REASON: usize = 500;

impl Grid {
    /// A worker says it could not compute a task: the task goes back to the queue (never to
    /// this worker), and the failure counts against the worker and, from trusted workers
    /// only, against the task (see `trust::task_fault`).
    pub async fn report_failure(&self, from: &Standing, failed: TaskFailed) -> Result<(), Refusal> {
        let task_id = failed.task_id;
        self.workers.drop_lease(from.connection, task_id);
        let error: String = failed.error.chars().take(MAX_REASON).collect();
        let needed = self.config.max_task_failures as usize;
        match db::report_failure(&self.db, task_id, from.holder(), &error, needed).await {
            Ok(Some(failure)) => {
                tracing::info!(task_id, worker_id = %from.worker_id, error, "worker reported a failed task");
                if let Err(e) = self.handle_failures(&[failure]).await {
                    tracing::error!(error = %e, "following up a failed task failed");
                }
                Ok(())
            }
            Ok(None) => Err(Refusal::UnknownTask(task_id)),
            Err(e) => {
                tracing::error!(error = %e, "recording a failed task failed");
                Ok(())
            }
        }
    }

    /// Follows up tasks that workers failed (reported, or let expire): their workers' records
    /// drop (and may be quarantined), a task at fault fails its job, the others are offered
    /// to waiting workers again.
    async fn handle_failures(&self, failures: &[db::Failure]) -> crate::error::Result<()> {
        for failure in failures {
            if let Some(worker_id) = &failure.worker_id {
                self.workers
                    .with_record(worker_id, trust::Record::count_failed);
                if let Some(why) = &failure.quarantined {
                    self.quarantine(worker_id, why).await;
                }
            }
            match &failure.fault {
                Some(reason) => self.end_job(&failure.task.job_id, Some(reason)).await?,
                None => self.offer_again(std::slice::from_ref(&failure.task)),
            }
        }
        Ok(())
    }

    /// Stops giving work to a quarantined worker, on every connection it has here: its leases
    /// go back to the queue (not counted against their tasks) and each connection is told why.
    /// Quarantines decided on another instance sharing PostgreSQL, applied to this one's
    /// connections of the same workers (a volunteer's second tab may be on another instance).
    /// Asks for those of the last few seconds each time, as commits and clocks lag a little.
    pub async fn follow_quarantines(&self) -> std::result::Result<(), sqlx::Error> {
        if db::engine() == db::Engine::Sqlite {
            return Ok(());
        }
        let since = *self.quarantines_seen.lock_or_recover() - QUARANTINE_LAG_MS;
        for (worker_id, reason, at) in db::quarantined_since(&self.db, since).await? {
            {
                let mut seen = self.quarantines_seen.lock_or_recover();
                *seen = (*seen).max(at);
            }
            let here = self
                .workers
                .with_record(&worker_id, |r| r.quarantined.is_none());
            if here == Some(true) {
                self.quarantine(&worker_id, &reason).await;
            }
        }
        Ok(())
    }

    pub async fn quarantine(&self, worker_id: &str, reason: &str) {
        tracing::warn!(%worker_id, reason, "worker quarantined");
        self.workers
            .with_record(worker_id, |r| r.quarantined = Some(reason.to_owned()));
        for id in self.workers.connections_of(worker_id) {
            self.queue.forget(id);
            if let Some(conn) = self
                .workers
                .standing(id)
                .filter(|_| self.workers.drop_all(id))
            {
                match db::release_connection(&self.db, conn.holder()).await {
                    Ok(released) => self.offer_again(&released),
                    Err(e) => {
                        tracing::error!(error = %e, "releasing a quarantined worker's leases failed")
                    }
                }
            }
            let told = Quarantined {
                reason: reason.to_owned(),
            };
            let _ = self.outbox.send(id, Message::Quarantined(told));
        }
    }
}

/// Takes back the leases that passed their deadline: from the connections that held them
/// before the database lets anyone claim their tasks again (see `db::expire_leases`).
pub(super) async fn expire(grid: &Grid) -> crate::error::Result<()> {
    let expiring = db::expire_leases(&grid.db, grid.config.max_task_failures as usize).await?;
    if expiring.failures().is_empty() {
        return Ok(());
    }
    for failure in expiring.failures() {
        grid.workers.withdraw(failure.task.id, None);
    }
    let expired = expiring.commit().await?;
    tracing::info!(count = expired.len(), "leases expired; tasks re-queued");
    grid.handle_failures(&expired).await
}

/// Takes back leases that passed their deadline, every quarter lease (at most every second),
/// and applies the retention policy.
pub async fn sweep(grid: Arc<Grid>) {
    let period = (grid.config.lease / 4).min(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = Instant::now();
    loop {
        ticker.tick().await;
        if let Some(retention) = grid.config.retention {
            // Purging is cheap when there is nothing to purge, but needs no second precision.
            if last_purge.elapsed()
                >= (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
            {
                last_purge = Instant::now();
                match db::purge_finished(&grid.db, retention.as_millis() as i64).await {
                    Ok(purged) if purged.is_empty() => {}
                    Ok(purged) => {
                        for job_id in &purged {
                            grid.forget_job(job_id, super::Leaving::Everything).await;
                        }
                        tracing::info!(
                            jobs = purged.len(),
                            "retention: removed inputs and results"
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "retention sweep failed"),
                }
            }
        }
        // Starved requests are retried as leases age: a slow lease may now be worth a copy.
        if grid.waiting() > 0 {
            grid.wake();
        }
        if let Err(e) = expire(&grid).await {
            tracing::error!(error = %e, "sweeping leases failed");
        }
        if let Err(e) = instances(&grid).await {
            tracing::error!(error = %e, "sweeping instances failed");
        }
        // On PostgreSQL: copies of inputs of jobs that ended elsewhere (rate-limited inside).
        grid.inputs.sweep_copies(&grid.db).await;
    }
}

/// Says this instance is alive and what it carries, hears what the others carry, and takes
/// back the leases of instances that no longer say anything.
async fn instances(grid: &Arc<Grid>) -> Result<(), sqlx::Error> {
    db::instance_alive(&grid.db, grid.own_load()).await?;
    let timeout = grid.config.instance_timeout.as_millis() as i64;
    *grid.others.lock_or_recover() = db::others_load(&grid.db, timeout).await?;
    let finished = db::finish_counted_jobs(&grid.db).await?;
    if !finished.is_empty() {
        tracing::warn!(jobs = ?finished, "done jobs left open by a crash were settled");
    }
    grid.withdraw_ended().await?;
    grid.follow_quarantines().await?;
    grid.publish_roster().await?;
    let requeued = db::requeue_silent_instances(&grid.db, timeout).await?;
    if requeued > 0 {
        tracing::warn!(
            requeued,
            "leases of a silent instance went back to the queue"
        );
        grid.wake();
    }
    Ok(())
}
