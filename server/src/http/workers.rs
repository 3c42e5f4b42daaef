//! `GET /api/workers`: the connected workers with their records, on every instance.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
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
    /// The browser's user agent: for operators only (the API token presented to a server that
    /// has one), never public (#15: no address or user agent is shown publicly).
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
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

/// Connected workers with their counts, speed and reputation, on every instance sharing the
/// database (the others' as they last published them, at most a second or two ago). User
/// agents only to an operator: a server with an API token, asked with it.
#[utoipa::path(get, path = "/api/workers", tag = "grid",
    responses((status = 200, body = Vec<WorkerView>), (status = 500, body = ErrorBody)))]
pub(super) async fn workers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<WorkerView>>> {
    let operator = state.config.api_token.is_some() && super::authorize(&state, &headers).is_ok();
    let agent = |ua: String| operator.then_some(ua);
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
            user_agent: agent(w.user_agent),
            connected_at: w.connected_at,
            tasks_leased,
            gflops: w.gflops,
            visible: w.visible,
            on_battery: w.on_battery,
            ..WorkerView::of(record)
        });
    }
    // The other instances' connections, as they last published them (see `grid::roster`).
    let timeout = state.config.instance_timeout.as_millis() as i64;
    let (remote, records) = db::others_connections(&state.db, timeout).await?;
    let records: HashMap<String, db::WorkerRecord> =
        records.into_iter().map(|r| (r.id.clone(), r)).collect();
    for db::Remote {
        listed: c,
        tasks_leased,
    } in remote
    {
        let Some(record) = records.get(&c.worker_id) else {
            continue;
        };
        out.push(WorkerView {
            worker_id: c.worker_id,
            name: c.name,
            threads: u32::try_from(c.threads).unwrap_or(u32::MAX),
            user_agent: agent(c.user_agent),
            connected_at: c.connected_at,
            tasks_leased: usize::try_from(tasks_leased).unwrap_or(0),
            gflops: c.gflops,
            visible: c.visible != 0,
            on_battery: c.on_battery != 0,
            ..WorkerView::of(record.clone())
        });
    }
    Ok(Json(out))
}

impl WorkerView {
    /// A view of a worker's record; the connection's own fields left empty.
    fn of(record: db::WorkerRecord) -> Self {
        WorkerView {
            worker_id: String::new(),
            name: String::new(),
            threads: 0,
            user_agent: None,
            connected_at: String::new(),
            tasks_done: record.tasks_done,
            tasks_failed: record.tasks_failed,
            tasks_leased: 0,
            gflops: 0.0,
            visible: false,
            on_battery: false,
            reputation: Reputation {
                verified: record.tasks_done,
                refused: record.refused,
                timed_out: record.timed_out,
                disconnected_mid_task: record.disconnected,
                consecutive_verified: record.consecutive_verified,
                quarantined: record.quarantine_reason.is_some(),
                quarantine_reason: record.quarantine_reason,
            },
        }
    }
}
