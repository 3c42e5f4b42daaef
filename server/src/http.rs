//! HTTP routes: health, status, the jobs API and the web page.

use std::collections::BTreeMap;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::services::{ServeDir, ServeFile};

use crate::db;
use crate::error::{Error, Result};
use crate::jobs::{self, Dtype, Matrix, Plan};
use crate::npy;
use crate::scheduler;
use crate::state::AppState;

/// The HTTP side of the app; the Socket.io layer and CORS are added in [`crate::app`].
pub fn router(state: AppState) -> Router {
    let web = &state.config.web_dir;
    let static_files = ServeDir::new(web).append_index_html_on_directories(true);
    Router::new()
        .route("/health", get(health))
        .route("/api/status", get(status))
        .route("/api/jobs", get(list_jobs).post(submit_job))
        .route("/api/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/jobs/{id}/result", get(job_result))
        .route("/api/jobs/{id}/tiles", get(job_tiles))
        .route("/api/workers", get(workers))
        .route("/metrics", get(crate::metrics::render))
        .route_service("/dashboard", ServeFile::new(web.join("dashboard.html")))
        .fallback_service(static_files)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_http,
        ))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
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

async fn status(State(state): State<AppState>) -> Result<Json<Value>> {
    let (jobs, tasks) = db::counts(&state.db).await?;
    let by_state = |pairs: Vec<(String, i64)>, states: &[&str]| {
        let mut map: BTreeMap<String, i64> = states.iter().map(|s| ((*s).to_owned(), 0)).collect();
        map.extend(pairs);
        map
    };
    let (tasks_per_sec, gflops) = state.stats.throughput();
    let (refused, re_leases) = db::totals(&state.db).await?;
    let (verified, verify_time) = state.stats.verification();
    Ok(Json(json!({
        "results_refused": refused,
        "re_leases": re_leases,
        "duplicates": state.stats.duplicates(),
        "results_checked": verified,
        "verification_ms_total": verify_time.as_secs_f64() * 1000.0,
        "name": "distributed-brain",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "workers_online": state.workers.len(),
        "requests_waiting": state.scheduler.waiting(),
        "tasks_per_sec": tasks_per_sec,
        "gflops": gflops,
        "jobs": by_state(jobs, &["queued", "running", "done", "failed", "cancelled"]),
        "tasks": by_state(tasks, &["queued", "leased", "done", "failed", "cancelled"]),
    })))
}

/// Checks `Authorization: Bearer <token>` when an API token is configured. The comparison
/// takes the same time wherever the first difference is, so the token cannot be guessed
/// byte by byte from response times.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<()> {
    let Some(expected) = &state.config.api_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

/// The JSON form of a submission.
#[derive(Deserialize)]
struct JobJson {
    a: Value,
    b: Value,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    tile: Option<usize>,
    #[serde(default)]
    name: Option<String>,
}

/// A submission, parsed and checked, before anything is stored.
struct Submission {
    name: String,
    a: Matrix,
    b: Matrix,
    tile: Option<usize>,
}

async fn submit_job(State(state): State<AppState>, request: Request) -> Result<Response> {
    authorize(&state, request.headers())?;
    if state.is_shutting_down() {
        return Err(Error::Unavailable(
            "the server is shutting down; submit again shortly".into(),
        ));
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let submission = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        read_multipart(multipart).await?
    } else if content_type.starts_with("application/json") {
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        // Parsing large JSON matrices is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || read_json(&body))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    } else {
        return Err(Error::BadRequest(
            "send application/json or multipart/form-data with .npy files a and b".into(),
        ));
    };
    let Submission { name, a, b, tile } = submission;
    let plan = Plan::new(&a, &b, tile).map_err(Error::BadRequest)?;
    let elements = plan.m * plan.k + plan.k * plan.n + plan.m * plan.n;
    let max = state.config.limits.max_job_elements;
    if elements > max {
        return Err(Error::PayloadTooLarge(format!(
            "job too large: A, B and C hold {elements} elements, the limit is {max}"
        )));
    }
    let b_panels = tokio::task::spawn_blocking(move || plan.panelize_b(&b.data))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    db::insert_job(&state.db, &id, &name, &plan, &a.data, &b_panels).await?;
    tracing::info!(job_id = %id, m = plan.m, k = plan.k, n = plan.n, tile = plan.tile,
        tasks = plan.tasks_total(), "job submitted");
    state.stats.mark_dirty(&id);
    state.scheduler.wake();
    let body = json!({
        "id": id,
        "status": "queued",
        "m": plan.m,
        "k": plan.k,
        "n": plan.n,
        "dtype": plan.dtype,
        "tile": plan.tile,
        "tasks_total": plan.tasks_total(),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn body_error(status: StatusCode, text: String) -> Error {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge("request body is larger than the configured limit".into())
    } else {
        Error::BadRequest(text)
    }
}

fn read_json(body: &[u8]) -> Result<Submission> {
    let job: JobJson = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
    let dtype = match job.dtype.as_deref() {
        None => Dtype::F32,
        Some(d) => Dtype::parse(d).map_err(Error::BadRequest)?,
    };
    Ok(Submission {
        name: job.name.unwrap_or_default(),
        a: Matrix::from_json("a", &job.a, dtype).map_err(Error::BadRequest)?,
        b: Matrix::from_json("b", &job.b, dtype).map_err(Error::BadRequest)?,
        tile: job.tile,
    })
}

async fn read_multipart(mut multipart: Multipart) -> Result<Submission> {
    // Read the whole body before judging any part of it: answering early and closing the
    // connection mid-upload makes clients see a broken pipe instead of our message.
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_owned();
        fields.push((name, field.bytes().await.map_err(multipart_error)?));
    }
    let (mut a, mut b, mut tile, mut name) = (None, None, None, String::new());
    for (field_name, data) in fields {
        match field_name.as_str() {
            "a" | "b" => {
                let label = field_name.clone();
                let matrix = tokio::task::spawn_blocking(move || npy::parse(&label, &data))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(Error::BadRequest)?;
                if field_name == "a" {
                    a = Some(matrix);
                } else {
                    b = Some(matrix);
                }
            }
            "tile" => {
                let text = String::from_utf8_lossy(&data);
                tile = Some(text.trim().parse::<usize>().map_err(|_| {
                    Error::BadRequest(format!("tile must be a positive integer, not {text:?}"))
                })?);
            }
            "name" => name = String::from_utf8_lossy(&data).chars().take(200).collect(),
            "dtype" => {} // Given by the .npy files themselves.
            other => {
                return Err(Error::BadRequest(format!(
                    "unexpected field {other:?}; expected files a and b and optional tile, name"
                )))
            }
        }
    }
    let missing = |f: &str| Error::BadRequest(format!("missing file {f} (a .npy file)"));
    Ok(Submission {
        a: a.ok_or_else(|| missing("a"))?,
        b: b.ok_or_else(|| missing("b"))?,
        tile,
        name,
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> Error {
    body_error(
        e.status(),
        format!("malformed multipart body: {}", e.body_text()),
    )
}

async fn list_jobs(State(state): State<AppState>) -> Result<Json<Vec<db::JobRow>>> {
    Ok(Json(db::list_jobs(&state.db).await?))
}

async fn find_job(state: &AppState, id: &str) -> Result<db::JobRow> {
    db::get_job(&state.db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no job with id {id}")))
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<db::JobRow>> {
    Ok(Json(find_job(&state, &id).await?))
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<db::JobRow>> {
    authorize(&state, &headers)?;
    let job = find_job(&state, &id).await?;
    if !matches!(job.status.as_str(), "queued" | "running") {
        return Err(Error::Conflict(format!(
            "job {id} is already {}",
            job.status
        )));
    }
    scheduler::end_job(&state, &id, None).await?;
    tracing::info!(job_id = %id, "job cancelled");
    Ok(Json(find_job(&state, &id).await?))
}

#[derive(Deserialize)]
struct ResultQuery {
    format: Option<String>,
}

async fn job_result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ResultQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&state, &headers)?;
    let job = find_job(&state, &id).await?;
    if job.status != "done" {
        return Err(Error::Conflict(format!(
            "job {id} is {} ({} of {} tiles done); the result is ready when it is done",
            job.status, job.tasks_done, job.tasks_total
        )));
    }
    let json = match query.format.as_deref() {
        None | Some("npy") => false,
        Some("json") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "format must be npy or json, not {other:?}"
            )))
        }
    };
    let dtype = Dtype::parse(&job.dtype).map_err(Error::Internal)?;
    let plan = Plan {
        dtype,
        m: job.m as usize,
        k: job.k as usize,
        n: job.n as usize,
        tile: job.tile as usize,
    };
    if db::purged_at(&state.db, &id).await?.is_some() {
        return Err(Error::Gone(format!(
            "the result of job {id} was removed by the retention policy (RETENTION_HOURS)"
        )));
    }
    let tiles = db::job_results(&state.db, &id).await?;
    db::mark_downloaded(&state.db, &id).await?;
    // Assembling and encoding a large product is CPU work: off the async workers.
    let body = tokio::task::spawn_blocking(move || -> Result<Response> {
        let mut c = vec![0u8; plan.m * plan.n * dtype.size()];
        for (row, col, bytes) in &tiles {
            let tile = plan.tile(*row as usize, *col as usize);
            if bytes.len() != plan.result_len(&tile) {
                return Err(Error::Internal(format!(
                    "tile {row},{col} has a wrong size"
                )));
            }
            plan.place(&mut c, &tile, bytes);
        }
        if json {
            let values = jobs::to_f64(dtype, &c);
            let rows: Vec<&[f64]> = values.chunks(plan.n).collect();
            Ok(Json(json!({ "c": rows })).into_response())
        } else {
            let file = npy::encode(dtype, plan.m, plan.n, &c);
            let disposition = format!("attachment; filename=\"{id}.npy\"");
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                file,
            )
                .into_response())
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(body)
}

async fn job_tiles(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let job = find_job(&state, &id).await?;
    let tiles = db::job_tiles(&state.db, &id).await?;
    Ok(Json(json!({
        "tile_rows": (job.m as usize).div_ceil(job.tile as usize),
        "tile_cols": (job.n as usize).div_ceil(job.tile as usize),
        "tiles": tiles,
    })))
}

async fn workers(State(state): State<AppState>) -> Result<Json<Vec<Value>>> {
    let mut out = Vec::new();
    for w in state.workers.snapshot() {
        let Some(record) = db::worker(&state.db, &w.worker_id).await? else {
            continue;
        };
        out.push(json!({
            "worker_id": w.worker_id,
            "name": w.name,
            "threads": w.threads,
            "user_agent": w.user_agent,
            "connected_at": w.connected_at,
            "tasks_done": record.tasks_done,
            "tasks_failed": record.tasks_failed,
            "reputation": {
                "verified": record.tasks_done,
                "refused": record.refused,
                "timed_out": record.timed_out,
                "disconnected_mid_task": record.disconnected,
                "consecutive_verified": record.consecutive_verified,
                "quarantined": record.quarantine_reason.is_some(),
                "quarantine_reason": record.quarantine_reason,
            },
            "tasks_leased": w.leases.len(),
            "gflops": w.gflops,
            "visible": w.visible,
            "on_battery": w.on_battery,
        }));
    }
    Ok(Json(out))
}
