//! HTTP routes: health, status, the jobs API and the web page.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};
use tracing::Instrument;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::db;
use crate::error::{Error, Result};
use crate::grid::inputs::JobInputs;
use crate::jobs::{self, Dtype, JsonJob, Matrix, Plan, PlanLimits};
use crate::npy;
use crate::state::AppState;
use crate::status::{JobStatus, TaskState};

/// The HTTP side of the app; the Socket.io layer and CORS are added in [`crate::build`].
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
        .route("/api/openapi.json", get(openapi_json))
        .route_service("/dashboard", ServeFile::new(web.join("dashboard.html")))
        .fallback_service(static_files)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        // A layer, not a route layer: requests no route matches are counted too (under one
        // label, see `metrics::track_http`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_http,
        ))
        .with_state(state)
}

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

/// `GET /api/status`.
#[derive(Serialize, ToSchema)]
pub struct Status {
    name: &'static str,
    version: &'static str,
    uptime_s: f64,
    workers_online: usize,
    /// `request_task`s waiting for a task.
    requests_waiting: usize,
    /// Verified completions per second over the last ten seconds.
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
async fn status(State(state): State<AppState>) -> Result<Json<Status>> {
    let (jobs, tasks) = db::counts(&state.db).await?;
    fn by_state<S: std::fmt::Display>(all: &[S], pairs: Vec<(S, i64)>) -> BTreeMap<String, i64> {
        let mut map: BTreeMap<String, i64> = all.iter().map(|s| (s.to_string(), 0)).collect();
        map.extend(pairs.into_iter().map(|(s, n)| (s.to_string(), n)));
        map
    }
    let (tasks_per_sec, gflops) = state.grid.metrics.throughput();
    let (refused, re_leases) = db::totals(&state.db).await?;
    let (checked, verify_time) = state.grid.metrics.verifications();
    Ok(Json(Status {
        name: "distributed-brain",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs_f64(),
        workers_online: state.grid.workers.len(),
        requests_waiting: state.grid.waiting(),
        tasks_per_sec,
        gflops,
        results_refused: refused,
        re_leases,
        duplicates: state.grid.metrics.duplicates(),
        results_checked: checked,
        verification_ms_total: verify_time.as_secs_f64() * 1000.0,
        jobs: by_state(&JobStatus::ALL, jobs),
        tasks: by_state(&TaskState::ALL, tasks),
    }))
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

/// The JSON form of a submission, for small matrices: its body may be at most
/// `MAX_JSON_BODY_BYTES` (4 MiB by default). Larger matrices go as `.npy` files.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the JSON body, which jobs::JsonJob parses without this struct"
)]
pub struct JobJson {
    /// A (m×k) as an array of rows.
    a: Vec<Vec<f64>>,
    /// B (k×n) as an array of rows.
    b: Vec<Vec<f64>>,
    /// `f32` (default) or `f64`.
    #[schema(value_type = Option<Dtype>)]
    dtype: Option<String>,
    /// Tile edge; chosen from the shape when absent. A tile that would cut the job into more
    /// than `MAX_TASKS_PER_JOB` tasks, or make a panel or result larger than one Socket.io
    /// message, is refused with 400 and the range of tiles the job accepts.
    #[schema(minimum = 1, maximum = 4096)]
    tile: Option<usize>,
    name: Option<String>,
}

/// The multipart form of a submission.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the multipart body; parsed field by field"
)]
pub struct JobForm {
    /// A as a `.npy` file (float32 or float64, 2-D, C order).
    #[schema(value_type = String, format = Binary)]
    a: Vec<u8>,
    /// B as a `.npy` file.
    #[schema(value_type = String, format = Binary)]
    b: Vec<u8>,
    tile: Option<u32>,
    name: Option<String>,
}

/// `POST /api/jobs` answer.
#[derive(Serialize, ToSchema)]
pub struct Created {
    id: String,
    status: JobStatus,
    m: usize,
    k: usize,
    n: usize,
    dtype: Dtype,
    tile: usize,
    tasks_total: usize,
}

/// A submission, parsed and checked, before anything is stored.
struct Submission {
    name: String,
    a: Matrix,
    b: Matrix,
    tile: Option<usize>,
}

/// Submits C = A·B, as JSON or as two `.npy` files. Nothing is stored when the input is bad.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    request_body(content(
        (JobJson = "application/json"),
        (JobForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, body = Created),
        (status = 400, body = ErrorBody, description = "malformed or inconsistent matrices, or a tile outside the range this job accepts (named in the message)"),
        (status = 401, body = ErrorBody, description = "API_TOKEN set and not given"),
        (status = 413, body = ErrorBody, description = "body (JSON: MAX_JSON_BODY_BYTES, multipart: MAX_BODY_BYTES) or job over the configured limits"),
        (status = 503, body = ErrorBody, description = "shutting down"),
    ),
    security((), ("bearer" = [])))]
async fn submit_job(State(state): State<AppState>, request: Request) -> Result<Response> {
    authorize(&state, request.headers())?;
    if state.grid.is_shutting_down() {
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
    let limits = &state.config.limits;
    let submission = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        read_multipart(multipart, limits.max_job_elements).await?
    } else if content_type.starts_with("application/json") {
        let body = read_json_body(
            request.into_body(),
            limits.max_json_body_bytes.min(state.config.max_body_bytes),
            state.config.max_body_bytes,
        )
        .await?;
        let max_elements = limits.max_job_elements;
        // Parsing large JSON matrices is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || read_json(&body, max_elements))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    } else {
        return Err(Error::BadRequest(
            "send application/json or multipart/form-data with .npy files a and b".into(),
        ));
    };
    let Submission { name, a, b, tile } = submission;
    let plan = Plan::new(&a, &b, tile, &PlanLimits::from(limits))?;
    let b_panels = tokio::task::spawn_blocking(move || plan.panelize_b(&b.data))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("job", job_id = %id);
    // Cached before the job is stored: once its tasks are in the database a dispatch round may
    // claim one at any moment, and must find the operands here rather than read them back.
    let inputs = Arc::new(JobInputs {
        plan,
        a: a.data,
        b_panels: Bytes::from(b_panels),
    });
    state.grid.inputs.insert(&id, inputs.clone());
    if let Err(e) = db::insert_job(&state.db, &id, &name, &plan, &inputs.a, &inputs.b_panels)
        .instrument(span.clone())
        .await
    {
        state.grid.inputs.remove(&id);
        return Err(e.into());
    }
    if let Err(e) = db::checkpoint(&state.db).await {
        // Only a matter of speed: SQLite checkpoints by itself later.
        tracing::warn!(error = %e, "checkpoint after a submission failed");
    }
    span.in_scope(|| {
        tracing::info!(
            m = plan.m,
            k = plan.k,
            n = plan.n,
            tile = plan.tile,
            tasks = plan.tasks_total(),
            "job submitted"
        );
    });
    state.grid.progress.job(&id);
    state.grid.wake();
    let body = Created {
        id,
        status: JobStatus::Queued,
        m: plan.m,
        k: plan.k,
        n: plan.n,
        dtype: plan.dtype,
        tile: plan.tile,
        tasks_total: plan.tasks_total(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn body_error(status: StatusCode, text: String) -> Error {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge("request body is larger than the configured limit".into())
    } else {
        Error::BadRequest(text)
    }
}

/// Reads a JSON body of at most `limit` bytes. A longer one is answered 413 with a pointer to
/// `.npy`; its rest is read and dropped (up to `drain` bytes, the general body limit) so that
/// a client still sending sees that answer rather than a broken pipe. Only `limit` bytes are
/// ever kept.
async fn read_json_body(mut body: Body, limit: usize, drain: usize) -> Result<Bytes> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| Error::BadRequest(format!("could not read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= limit {
            kept.extend_from_slice(&data);
        } else if total > drain {
            break;
        }
    }
    if total > limit {
        return Err(Error::PayloadTooLarge(format!(
            "JSON body larger than its limit of {limit} bytes (MAX_JSON_BODY_BYTES): JSON is for \
             small matrices; send large ones as .npy files in a multipart/form-data body with \
             files a and b (see the README)"
        )));
    }
    Ok(Bytes::from(kept))
}

fn read_json(body: &[u8], max_elements: usize) -> Result<Submission> {
    let job = JsonJob::parse(body, max_elements)?;
    Ok(Submission {
        name: job.name,
        a: job.a,
        b: job.b,
        tile: job.tile,
    })
}

async fn read_multipart(mut multipart: Multipart, max_elements: usize) -> Result<Submission> {
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
                let matrix =
                    tokio::task::spawn_blocking(move || npy::parse(&label, &data, max_elements))
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??;
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
            "name" => {
                name = String::from_utf8_lossy(&data)
                    .chars()
                    .take(jobs::MAX_NAME_CHARS)
                    .collect()
            }
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

/// Jobs, newest first.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs",
    responses((status = 200, body = Vec<db::JobRow>), (status = 500, body = ErrorBody)))]
async fn list_jobs(State(state): State<AppState>) -> Result<Json<Vec<db::JobRow>>> {
    Ok(Json(db::list_jobs(&state.db).await?))
}

async fn find_job(state: &AppState, id: &str) -> Result<db::JobRow> {
    db::get_job(&state.db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no job with id {id}")))
}

/// One job.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = db::JobRow), (status = 404, body = ErrorBody)))]
async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<db::JobRow>> {
    Ok(Json(find_job(&state, &id).await?))
}

/// Cancels a job; its queued and leased tasks are withdrawn.
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, body = db::JobRow),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the job already ended"),
    ),
    security((), ("bearer" = [])))]
async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<db::JobRow>> {
    authorize(&state, &headers)?;
    let job = find_job(&state, &id).await?;
    if !job.status.is_open() {
        return Err(Error::Conflict(format!(
            "job {id} is already {}",
            job.status
        )));
    }
    state.grid.end_job(&id, None).await?;
    tracing::info!(job_id = %id, "job cancelled");
    Ok(Json(find_job(&state, &id).await?))
}

#[derive(Deserialize, IntoParams)]
struct ResultQuery {
    /// `npy` (default) or `json`.
    format: Option<String>,
}

/// `GET /api/jobs/{id}/result?format=json`.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the JSON result, which is built directly"
)]
pub struct JsonResult {
    c: Vec<Vec<f64>>,
}

/// The product, as `.npy` (same dtype as the job) or JSON; 409 until the job is done.
#[utoipa::path(get, path = "/api/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path), ResultQuery),
    responses(
        (status = 200, content(
            (Vec<u8> = "application/octet-stream"),
            (JsonResult = "application/json"),
        )),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not done yet"),
        (status = 410, body = ErrorBody, description = "removed by the retention policy"),
    ),
    security((), ("bearer" = [])))]
async fn job_result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ResultQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&state, &headers)?;
    let job = find_job(&state, &id).await?;
    if job.status != JobStatus::Done {
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

/// `GET /api/jobs/{id}/tiles`.
#[derive(Serialize, ToSchema)]
pub struct Tiles {
    tile_rows: usize,
    tile_cols: usize,
    tiles: Vec<db::TileState>,
}

/// Each tile's state, for the dashboard's picture of a job.
#[utoipa::path(get, path = "/api/jobs/{id}/tiles", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Tiles), (status = 404, body = ErrorBody)))]
async fn job_tiles(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Tiles>> {
    let job = find_job(&state, &id).await?;
    let tiles = db::job_tiles(&state.db, &id).await?;
    Ok(Json(Tiles {
        tile_rows: (job.m as usize).div_ceil(job.tile as usize),
        tile_cols: (job.n as usize).div_ceil(job.tile as usize),
        tiles,
    }))
}

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
async fn workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerView>>> {
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

/// The error body of every 4xx and 5xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: String,
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Distributed Brain orchestrator", description = "Submit matrix products, watch them computed by volunteers' browsers, download the result."),
    paths(health, status, submit_job, list_jobs, get_job, cancel_job, job_result, job_tiles, workers, crate::metrics::render, openapi_json),
    components(schemas(Dtype)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "grid",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
