//! The grid: every decision about workers, leases and results, with no knowledge of sockets
//! or HTTP.
//!
//! Transports (`socket`, `http`) decode what arrives, call the grid's methods and send back
//! what they return; what the grid starts on its own (a task, a cancellation, a quarantine)
//! goes out through its [`Outbox`]. The parts:
//!
//! - [`registry`]: connections, their leases, and the records of the workers behind them;
//! - [`workers`]: a connection's life: registration, heartbeats, requests, departure;
//! - [`dispatch`]: the queue of requests, claims, deliveries and copies of slow leases;
//! - [`results`]: a result's verification, commit and acknowledgement, refusals and audits;
//! - [`failures`]: failed and expired tasks, quarantine, and the sweeper;
//! - [`inputs`]: the operands of running jobs, cached;
//! - [`progress`]: changes waiting to be shown to dashboards;
//! - [`roster`]: this instance's connections, as the others sharing PostgreSQL list them.
//!
//! The policies they apply are pure functions elsewhere: `trust` (reputation, quarantine,
//! audits), `verify` (the check), `panels` (cache models), `jobs` (tiling).

pub mod dispatch;
pub mod failures;
pub mod inputs;
pub mod outbox;
pub mod progress;
pub mod registry;
pub mod results;
pub mod roster;
pub mod workers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::blocks::JobBlocks;
use crate::commit::Committer;
use crate::config::Config;
use crate::db::{self, Pool, Requeued};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::protocol::TaskCancelled;
use crate::status::TaskState;
use crate::store::Store;
use crate::sync::LockExt;

pub use outbox::{Message, Outbox, Undelivered};
pub use registry::{ConnectionId, Workers};

/// What of an ended job's files goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    Everything,
    Inputs,
}

/// The grid's state. One per process, shared as `Arc<Grid>`.
pub struct Grid {
    pub config: Arc<Config>,
    pub db: Pool,
    pub workers: Workers,
    pub inputs: inputs::Inputs,
    pub progress: progress::Progress,
    pub metrics: Arc<Metrics>,
    queue: dispatch::Queue,
    /// Stores verified results, many per transaction.
    committer: Committer,
    /// Jobs known to be running, so a claim marks its job running only once.
    running_jobs: Mutex<HashSet<String>>,
    /// Running jobs' blocks and who works each (see [`crate::blocks`]).
    blocks: Mutex<HashMap<String, JobBlocks<ConnectionId>>>,
    /// When each caught worker's accepted results were last checked again (ms since the
    /// epoch): a later refusal re-checks only what was accepted since (see
    /// `results::audit`).
    audited: Mutex<HashMap<String, i64>>,
    /// What the other instances sharing the database carried when last heard from (see
    /// [`Grid::load`]).
    others: Mutex<db::Load>,
    /// What this instance last published of its connections (see [`roster`]).
    roster: Mutex<roster::Published>,
    /// The time of the latest quarantine seen (see `Grid::follow_quarantines`).
    quarantines_seen: Mutex<i64>,
    /// Set on SIGTERM/SIGINT: no new work is handed out or accepted.
    shutting_down: AtomicBool,
    outbox: Box<dyn Outbox>,
}

impl Grid {
    /// A grid over an open database and store, sending through `outbox`. Starts the group
    /// committer on the current runtime; the background loops are [`Grid::spawn_loops`].
    pub fn new(
        config: Arc<Config>,
        db: Pool,
        store: Arc<Store>,
        outbox: Box<dyn Outbox>,
    ) -> Arc<Self> {
        Arc::new(Grid {
            committer: Committer::start(db.clone(), store.clone()),
            inputs: inputs::Inputs::new(store, config.panel_cache_bytes),
            config,
            db,
            workers: Workers::default(),
            progress: Default::default(),
            metrics: Default::default(),
            queue: Default::default(),
            running_jobs: Default::default(),
            blocks: Default::default(),
            audited: Default::default(),
            others: Default::default(),
            roster: Default::default(),
            quarantines_seen: Mutex::new(db::now_ms()),
            shutting_down: Default::default(),
            outbox,
        })
    }

    /// The dispatcher and the sweeper, until aborted.
    pub fn spawn_loops(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut loops = vec![
            tokio::spawn(dispatch::run(self.clone())),
            tokio::spawn(failures::sweep(self.clone())),
        ];
        if let Some(url) = self.config.database_url.clone() {
            let grid = self.clone();
            loops.push(tokio::spawn(db::listen_for_work(url, move || grid.wake())));
        }
        loops
    }

    /// A job was added: waiting requests here are served now, and on the other instances
    /// sharing PostgreSQL as soon as they hear of it.
    pub async fn work_added(&self) {
        self.wake();
        if let Err(e) = db::announce_work(&self.db).await {
            // They find it at their next sweep, within a second.
            tracing::warn!(error = %e, "telling the other instances of new work failed");
        }
    }

    /// Stops handing out work (the process is shutting down); results still arriving for
    /// tasks already out are taken until the sockets close.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The jobs' files, for the clean stop's last sync.
    pub fn store(&self) -> &Arc<Store> {
        self.inputs.store()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Something may be claimable now (a new job, a task back in the queue).
    pub fn wake(&self) {
        self.queue.wake();
    }

    /// What this instance carries now.
    pub fn own_load(&self) -> db::Load {
        let (tasks_per_sec, gflops) = self.metrics.throughput();
        db::Load {
            workers: self.workers.len() as i64,
            dashboards: self.outbox.watchers() as i64,
            tasks_per_sec,
            gflops,
        }
    }

    /// The whole grid's figures: this instance's now, and the others' as they last said (at
    /// most a second or two old). With SQLite, this instance's alone.
    pub fn load(&self) -> db::Load {
        self.own_load() + *self.others.lock_or_recover()
    }

    /// Requests waiting for a task.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Ends a job: failed with `reason`, or cancelled when there is none. Connections
    /// computing its tasks are told to stop.
    #[tracing::instrument(name = "job", skip(self, reason))]
    pub async fn end_job(&self, job_id: &str, reason: Option<&str>) -> Result<()> {
        let withdrawn = match reason {
            Some(reason) => {
                tracing::warn!(job_id, reason, "job failed");
                db::fail_job(&self.db, job_id, reason).await?
            }
            None => db::cancel_job(&self.db, job_id).await?,
        };
        for (task_id, _) in withdrawn {
            // A connection may already be gone; its result would be refused anyway.
            self.cancel(task_id, None);
        }
        self.forget_job(job_id, Leaving::Everything).await;
        self.progress.job(job_id);
        Ok(())
    }

    /// Takes back the leases of jobs another instance ended (cancelled, failed, or finished
    /// while a copy of a slow task was out here): the instance that ended a job tells only
    /// its own connections, and every instance checks its leases' jobs each second.
    pub async fn withdraw_ended(&self) -> std::result::Result<(), sqlx::Error> {
        if db::engine() == db::Engine::Sqlite {
            return Ok(());
        }
        let jobs = self.workers.leased_jobs();
        if jobs.is_empty() {
            return Ok(());
        }
        for job_id in db::ended_jobs(&self.db, &jobs).await? {
            let withdrawn = self.workers.withdraw_job(&job_id);
            tracing::info!(
                job_id,
                leases = withdrawn.len(),
                "job ended elsewhere: leases withdrawn"
            );
            for (to, task_id) in withdrawn {
                let _ = self
                    .outbox
                    .send(to, Message::Cancelled(TaskCancelled { task_id }));
            }
            self.inputs.remove(&job_id);
            self.forget_running(&job_id);
            self.forget_blocks(&job_id);
        }
        Ok(())
    }

    /// Lets go of a job that ended: its plan and panels, its files on disk (`Everything`
    /// for a job that failed or was cancelled: it has no result to download; only its inputs
    /// for a job that is done), and its place among the running jobs.
    async fn forget_job(&self, job_id: &str, leaving: Leaving) {
        // On PostgreSQL, a copy of its inputs being made here is waited for (#18).
        let _copy = self.inputs.hold(job_id).await;
        self.inputs.remove(job_id);
        self.forget_running(job_id);
        self.forget_blocks(job_id);
        let (store, job) = (self.inputs.store().clone(), job_id.to_owned());
        let removed = tokio::task::spawn_blocking(move || match leaving {
            Leaving::Everything => store.remove(&job),
            Leaving::Inputs => store.remove_inputs(&job),
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::error!(job_id, error = %e, "removing a job's files failed");
        }
    }

    /// Takes a task back from the connections holding it (all but `except`) and tells them
    /// to stop computing it.
    fn cancel(&self, task_id: i64, except: Option<ConnectionId>) {
        for to in self.workers.withdraw(task_id, except) {
            let _ = self
                .outbox
                .send(to, Message::Cancelled(TaskCancelled { task_id }));
        }
    }

    /// Offers tasks that went back to the queue to waiting workers again. Whether a task
    /// fails its job is decided where its failure is recorded (see
    /// [`failures`]), never from a count here.
    pub fn offer_again(&self, tasks: &[Requeued]) {
        for task in tasks {
            self.progress.tile(
                &task.job_id,
                task.id,
                task.tile_row,
                task.tile_col,
                TaskState::Queued,
            );
        }
        self.wake();
    }

    /// A job that ended leaves the set of running jobs, which would otherwise only grow.
    fn forget_running(&self, job_id: &str) {
        self.running_jobs.lock_or_recover().remove(job_id);
    }

    /// An ended job's blocks go with it.
    fn forget_blocks(&self, job_id: &str) {
        self.blocks.lock_or_recover().remove(job_id);
    }
}

#[cfg(test)]
mod tests;
