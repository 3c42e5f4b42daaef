//! `GET /api/workers`: the connected workers with their records.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ErrorBody;
use crate::db;
use crate::error::Result;
use crate::state::AppState;

/// A connected worker, as `GET /api/workers` shows it.
#[derive(Serialize, ToSchema)]
pub struct WorkerView {
    worker_id: String,
    name: String,
    threads: u32,
    user_agent: String,
    connected_at: String,
    tasks_done: i64,
    tasks_failed: i64,
    tasks_leased: usize,
    /// Recent speed from reported compute times.
    gflops: f64,
    visible: bool,
    on_battery: bool,
    reputation: Reputation,
}

/// A worker's record, kept across reconnects of the same browser.
#[derive(Serialize, ToSchema)]
pub struct Reputation {
    verified: i64,
    refused: i64,
    timed_out: i64,
    disconnected_mid_task: i64,
    consecutive_verified: i64,
    quarantined: bool,
    quarantine_reason: Option<String>,
}

/// Connected workers with their counts, speed and reputation.
#[utoipa::path(get, path = "/api/workers", tag = "grid",
    responses((status = 200, body = Vec<WorkerView>), (status = 500, body = ErrorBody)))]
pub(super) async fn workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerView>>> {
    let mut out = Vec::new();
    for w in state.grid.workers.snapshot() {
        let Some(record) = db::worker(&state.db, &w.worker_id).await? else {
            continue;
        };
        let tasks_leased = w.leases();
        out.push(WorkerView {
            worker_id: w.worker_id,
            name: w.name,
            threads: w.threads,
            user_agent: w.user_agent,
            connected_at: w.connected_at,
            tasks_done: record.tasks_done,
            tasks_failed: record.tasks_failed,
            tasks_leased,
            gflops: w.gflops,
            visible: w.visible,
            on_battery: w.on_battery,
            reputation: Reputation {
                verified: record.tasks_done,
                refused: record.refused,
                timed_out: record.timed_out,
                disconnected_mid_task: record.disconnected,
                consecutive_verified: record.consecutive_verified,
                quarantined: record.quarantine_reason.is_some(),
                quarantine_reason: record.quarantine_reason,
            },
        });
    }
    Ok(Json(out))
}
