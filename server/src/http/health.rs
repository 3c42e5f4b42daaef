//! `GET /health` and `GET /api/status`: whether the server can serve, and what the grid is
//! doing.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::ErrorBody;
use crate::db;
use crate::error::Result;
use crate::state::AppState;
use crate::status::{JobStatus, TaskState};

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Health check: 200 when the database answers, 503 when it does not.
#[utoipa::path(get, path = "/health", tag = "grid",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    match db::ping(&state.db).await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "database does not answer" })),
            )
                .into_response()
        }
    }
}

/// `GET /api/status`.
#[derive(Serialize, ToSchema)]
pub struct Status {
    name: &'static str,
    version: &'static str,
    uptime_s: f64,
    /// Registered workers on every instance sharing the database (the others' as they last
    /// said, at most a second or two ago); the figures below without this note are this
    /// instance's own.
    workers_online: usize,
    /// `request_task`s waiting for a task.
    requests_waiting: usize,
    /// Verified completions per second over the last ten seconds, on every instance.
    tasks_per_sec: f64,
    gflops: f64,
    results_refused: i64,
    re_leases: i64,
    duplicates: u64,
    results_checked: u64,
    verification_ms_total: f64,
    /// Jobs by status.
    jobs: BTreeMap<String, i64>,
    /// Tasks by state.
    tasks: BTreeMap<String, i64>,
}

/// Server version, uptime, workers online, jobs and tasks by state.
#[utoipa::path(get, path = "/api/status", tag = "grid",
    responses((status = 200, body = Status), (status = 500, body = ErrorBody)))]
pub(super) async fn status(State(state): State<AppState>) -> Result<Json<Status>> {
    let (jobs, tasks) = db::counts(&state.db).await?;
    fn by_state<S: std::fmt::Display>(all: &[S], pairs: Vec<(S, i64)>) -> BTreeMap<String, i64> {
        let mut map: BTreeMap<String, i64> = all.iter().map(|s| (s.to_string(), 0)).collect();
        map.extend(pairs.into_iter().map(|(s, n)| (s.to_string(), n)));
        map
    }
    let load = state.grid.load();
    let (refused, re_leases) = db::totals(&state.db).await?;
    let (checked, verify_time) = state.grid.metrics.verifications();
    Ok(Json(Status {
        name: "distributed-brain",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs_f64(),
        workers_online: load.workers as usize,
        requests_waiting: state.grid.waiting(),
        tasks_per_sec: load.tasks_per_sec,
        gflops: load.gflops,
        results_refused: refused,
        re_leases,
        duplicates: state.grid.metrics.duplicates(),
        results_checked: checked,
        verification_ms_total: verify_time.as_secs_f64() * 1000.0,
        jobs: by_state(&JobStatus::ALL, jobs),
        tasks: by_state(&TaskState::ALL, tasks),
    }))
}
