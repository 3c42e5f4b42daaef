//! A worker connection's life in the grid: registration, heartbeats, what the page says of
//! itself, requests for work, and departure.

use std::net::IpAddr;

use crate::db;
use crate::panels::{self, CacheModel, Operand};
use crate::protocol::{RegisterWorker, RegistrationAck};
use crate::status::JobStatus;

use super::dispatch::{self, Waiter};
use super::registry::{Connection, Standing};
use super::{ConnectionId, Grid};

/// Longest name or user agent kept for a worker.
const MAX_LABEL: usize = 200;

/// Why the grid did not do what a connection asked. Each has a code the page can act on
/// (`protocol_error`'s `code`), and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("send register_worker first")]
    NotRegistered,
    #[error("this connection is registered")]
    AlreadyRegistered,
    #[error("the server cannot register workers right now")]
    Unavailable,
    #[error("{0}")]
    Quarantined(String),
    #[error("this connection already holds or awaits {held} tasks (limit {max})")]
    TooManyTasks { held: usize, max: usize },
    #[error("task {0} is not leased to this worker")]
    UnknownTask(i64),
    #[error("task {task_id} was sent again {times} times already; it goes to another worker")]
    RedeliveryLimit { task_id: i64, times: u8 },
    #[error("more than {0} bytes per second sent to this connection; ask again later")]
    SendBudget(u64),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotRegistered => "not_registered",
            Refusal::AlreadyRegistered => "already_registered",
            Refusal::Unavailable => "unavailable",
            Refusal::Quarantined(_) => "quarantined",
            Refusal::TooManyTasks { .. } => "too_many_tasks",
            Refusal::UnknownTask(_) => "unknown_task",
            Refusal::RedeliveryLimit { .. } => "redelivery_limit",
            Refusal::SendBudget(_) => "send_budget",
        }
    }
}

fn label(value: Option<String>) -> String {
    value.unwrap_or_default().chars().take(MAX_LABEL).collect()
}

/// How a worker token is kept: only its hash is stored, and a token is looked up by it (the
/// registration here, and the `/api/me` routes).
pub(crate) fn hash_token(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Grid {
    /// The registered worker behind a connection.
    pub fn standing(&self, connection: ConnectionId) -> Result<Standing, Refusal> {
        self.workers
            .standing(connection)
            .ok_or(Refusal::NotRegistered)
    }

    /// Registers a connection's worker. A token the page kept from an earlier visit brings
    /// back the worker and its record; anything else (none, or one never issued) starts a new
    /// worker with a new token.
    pub async fn register(
        &self,
        connection: ConnectionId,
        address: IpAddr,
        info: RegisterWorker,
    ) -> Result<RegistrationAck, Refusal> {
        if self.workers.contains(connection) {
            return Err(Refusal::AlreadyRegistered);
        }
        let token = info
            .token
            .filter(|t| (32..=128).contains(&t.len()))
            .unwrap_or_else(new_token);
        let threads = info.threads.unwrap_or(1).clamp(1, 1024);
        let (name, user_agent) = (label(info.name), label(info.user_agent));
        let stored = db::register_worker(
            &self.db,
            &hash_token(&token),
            &name,
            threads.into(),
            &user_agent,
        )
        .await;
        let record = stored.map_err(|e| {
            tracing::error!(error = %e, "storing a worker failed");
            Refusal::Unavailable
        })?;
        let worker_id = record.id.clone();
        let cache = match info.panel_cache.filter(|c| c.budget_bytes > 0) {
            Some(offer) => Some(self.resumed_cache(offer.budget_bytes, &offer.holds).await),
            None => None,
        };
        let panels_kept = cache.as_ref().map(CacheModel::keys);
        self.workers.insert(
            Connection::new(
                connection,
                worker_id.clone(),
                address,
                name,
                threads,
                user_agent,
                cache,
                self.config.limits.max_send_bytes_per_sec,
            ),
            record.trust(),
        );
        tracing::info!(%worker_id, threads, "worker registered");
        Ok(RegistrationAck {
            worker_id,
            token,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            lease_ms: self.config.lease.as_millis() as u64,
            quarantined: record.quarantine_reason,
            panels_kept,
        })
    }

    /// The cache model of a worker that says which panels it still holds (a page whose
    /// connection was lost keeps its panels): those of running jobs, inside their plans,
    /// within the budget (`panels::resume`). So a reset on a slow link costs the reconnection,
    /// not the download of every panel again. A job that cannot be read counts as gone.
    async fn resumed_cache(&self, budget: u64, holds: &[String]) -> CacheModel {
        let mut plans = Vec::new();
        for job in panels::held_jobs(holds) {
            if let Ok(Some(row)) = db::get_job(&self.db, job).await {
                if matches!(row.status, JobStatus::Running | JobStatus::Queued) {
                    if let Ok(plan) = self.inputs.plan(&self.db, job).await {
                        plans.push((job.to_owned(), plan));
                    }
                }
            }
        }
        panels::resume(budget, holds, |job, operand, index| {
            let (_, plan) = plans.iter().find(|(j, _)| j == job)?;
            let elements = match operand {
                Operand::A if index < plan.tile_rows() * plan.split => {
                    let (row, slice) = plan.a_panel_of(index);
                    let t = plan.tile(row, slice * plan.tile_cols());
                    t.rows * t.kn
                }
                Operand::B if index < plan.task_cols() => {
                    let t = plan.tile(0, index);
                    t.kn * t.cols
                }
                _ => return None,
            };
            Some((elements * plan.dtype.size()) as u64)
        })
    }

    /// A heartbeat extends the connection's leases, by as much as its speed and visibility
    /// call for (see [`dispatch::lease_ms`]), never past [`dispatch::MAX_LEASE_FACTOR`]
    /// leases in all.
    pub async fn heartbeat(&self, from: &Standing) {
        // Most heartbeats come from workers between tasks: nothing to extend, and no
        // statement for the database (thousands of connections beat every few seconds).
        if self.workers.held(from.connection) == 0 {
            return;
        }
        let lease = self.config.lease;
        let max_total_ms = lease.as_millis() as i64 * dispatch::MAX_LEASE_FACTOR;
        let lease_ms = dispatch::lease_ms(lease, from.gflops, from.visible);
        let owner = from.connection.as_str();
        let extended = db::extend_leases(&self.db, owner, lease_ms, max_total_ms);
        if let Err(e) = extended.await {
            tracing::error!(error = %e, "extending leases failed");
        }
    }

    /// Queues a request for one task, unless the worker is quarantined or the connection
    /// already holds or awaits as many as `MAX_TASKS_PER_WORKER`.
    pub fn request_task(&self, from: Standing) -> Result<(), Refusal> {
        if let Some(reason) = &from.record.quarantined {
            return Err(Refusal::Quarantined(reason.clone()));
        }
        let max = self.config.limits.max_tasks_per_worker;
        if let Err(held) = self.workers.request(from.connection, max) {
            return Err(Refusal::TooManyTasks { held, max });
        }
        self.queue.push(Waiter::from(from));
        Ok(())
    }

    /// Drops the requests a connection still has waiting (it has left, or is leaving).
    pub fn forget_requests(&self, connection: ConnectionId) {
        self.queue.forget(connection);
    }

    /// A connection left: its requests are dropped and its leases go back to the queue, not
    /// counted against their tasks.
    pub async fn disconnect(&self, connection: ConnectionId, reason: &str) {
        self.queue.forget(connection);
        let Some(conn) = self.workers.remove(connection) else {
            return;
        };
        tracing::info!(worker_id = %conn.worker_id, reason, "worker disconnected");
        let holder = db::Holder {
            connection: connection.as_str(),
            worker_id: &conn.worker_id,
            address: conn.address,
        };
        match db::release_connection(&self.db, holder).await {
            Ok(released) => self.offer_again(&released),
            Err(e) => tracing::error!(error = %e, "releasing a departed worker's leases failed"),
        }
    }
}
