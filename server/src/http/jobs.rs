//! The jobs API: submission (JSON or two `.npy` files), listing, one job, cancelling, and each
//! tile's state.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use super::{authorize, find_job, ErrorBody};
use crate::db;
use crate::error::{Error, Result};
use crate::jobs::{self, Dtype, JsonJob, Matrix, Plan, PlanLimits};
use crate::npy;
use crate::state::AppState;
use crate::status::JobStatus;
use crate::store::Part;

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
pub(super) async fn submit_job(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response> {
    let form = match admit(&state, request.headers()) {
        Ok(form) => form,
        Err(refusal) => {
            if let Some(bound) = drain_allowance(request.headers(), REFUSED_BODY_DRAIN_BYTES) {
                drain(request.into_body(), bound, REFUSED_BODY_DRAIN_TIME).await;
            }
            return Err(refusal);
        }
    };
    let limits = &state.config.limits;
    let submission = match form {
        Form::Multipart => {
            let multipart = Multipart::from_request(request, &state)
                .await
                .map_err(|e| Error::BadRequest(e.body_text()))?;
            read_multipart(multipart, limits.max_job_elements).await?
        }
        Form::Json => {
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
        }
    };
    let Submission { name, a, b, tile } = submission;
    let plan = Plan::new(&a, &b, tile, &PlanLimits::from(limits))?;
    let id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("job", job_id = %id);
    let store = state.grid.inputs.store().clone();
    let job_id = id.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let upload = store.begin(&job_id)?;
        for (matrix, m) in [(Part::A, &a), (Part::B, &b)] {
            let mut w = upload.matrix(matrix, m.dtype, m.rows, m.cols, false)?;
            w.write(&m.data).map_err(std::io::Error::other)?;
            w.finish().map_err(std::io::Error::other)?;
        }
        upload.finish(&plan)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("storing the inputs: {e}")))?;
    // Known before the job is stored: once its tasks are in the database a dispatch round may
    // claim one at any moment.
    state.grid.inputs.insert_plan(&id, plan);
    if let Err(e) = db::insert_job(&state.db, &id, &name, &plan)
        .instrument(span.clone())
        .await
    {
        state.grid.inputs.remove(&id);
        let _ = state.grid.inputs.store().remove(&id);
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

/// The two forms a submission may take, told apart by its `Content-Type`.
enum Form {
    Multipart,
    Json,
}

/// Every refusal that the request's head alone decides, taken before a byte of its body is
/// read: a client without the token, or one that announces more than `MAX_BODY_BYTES`, never
/// gets the server to read its upload. (A JSON body's own, smaller limit is left to
/// [`read_json_body`], whose answer points to `.npy` and needs the body read to arrive.)
fn admit(state: &AppState, headers: &HeaderMap) -> Result<Form> {
    authorize(state, headers)?;
    if state.grid.is_shutting_down() {
        return Err(Error::Unavailable(
            "the server is shutting down; submit again shortly".into(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("multipart/form-data") {
        if content_length(headers).is_some_and(|n| n > state.config.max_body_bytes as u64) {
            return Err(too_large());
        }
        Ok(Form::Multipart)
    } else if content_type.starts_with("application/json") {
        Ok(Form::Json)
    } else {
        Err(Error::BadRequest(
            "send application/json or multipart/form-data with .npy files a and b".into(),
        ))
    }
}

/// How much of a refused upload is read and thrown away before the refusal is sent.
///
/// HTTP/1.1 gives a server that answers before reading the body no good way to be heard: it
/// closes the connection under a client that is still sending, and clients such as reqwest
/// and Node's `http` then report a broken pipe or a reset instead of the answer (the tests
/// show both), so a researcher with a mistyped token learnt nothing. Reading the rest of a
/// small body lets its sender finish and read the answer. The bound is small because the
/// sender may be anyone: a refused client can make the server read at most this much per
/// request, never buffer it, and a larger upload is cut as before (the CLI asks
/// `GET /api/auth` before uploading, so its large uploads are not refused for the token).
const REFUSED_BODY_DRAIN_BYTES: u64 = 1 << 20;

/// How long a refused upload may take to arrive, so a slow or stalled sender cannot hold
/// the answer (and its handler) for longer than this. 1 MiB takes about a second at 10 Mbit/s.
const REFUSED_BODY_DRAIN_TIME: Duration = Duration::from_secs(5);

/// How much of a refused request's body to read: `None` when reading any of it buys nothing.
/// A client that announced more than `bound` is cut off anyway, so none is read; one that
/// sent `Expect: 100-continue` is waiting for our word before it sends, and reading would
/// make hyper invite the body we are about to refuse.
fn drain_allowance(headers: &HeaderMap, bound: u64) -> Option<u64> {
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    match content_length(headers) {
        _ if expects_continue => None,
        Some(0) => None,
        Some(n) if n > bound => None,
        _ => Some(bound),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads and drops `body` until it ends, more than `bound` bytes have come, or `time` has
/// passed, whichever is first; returns the bytes read. Only the body's end lets the
/// connection be reused; otherwise hyper closes it once the answer is sent.
async fn drain(mut body: Body, bound: u64, time: Duration) -> u64 {
    let mut total = 0u64;
    let read = async {
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.into_data() {
                total = total.saturating_add(data.len() as u64);
                if total > bound {
                    break;
                }
            }
        }
    };
    // Running out of time is an answer too: the refusal is sent either way.
    let _ = tokio::time::timeout(time, read).await;
    total
}

fn too_large() -> Error {
    Error::PayloadTooLarge("request body is larger than the configured limit".into())
}

fn body_error(status: StatusCode, text: String) -> Error {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
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
pub(super) async fn list_jobs(State(state): State<AppState>) -> Result<Json<Vec<db::JobRow>>> {
    Ok(Json(db::list_jobs(&state.db).await?))
}

/// One job.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = db::JobRow), (status = 404, body = ErrorBody)))]
pub(super) async fn get_job(
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
pub(super) async fn cancel_job(
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
pub(super) async fn job_tiles(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Tiles>> {
    let job = find_job(&state, &id).await?;
    let tiles = db::job_tiles(&state.db, &id).await?;
    Ok(Json(Tiles {
        tile_rows: (job.m as usize).div_ceil(job.tile as usize),
        tile_cols: (job.n as usize).div_ceil(job.tile as usize),
        tiles,
    }))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use axum::http::HeaderValue;
    use futures_util::stream::{self, StreamExt};

    use super::*;

    const CHUNK: usize = 64 * 1024;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    /// A body that never ends, counting the bytes pulled from it.
    fn endless(pulled: Arc<AtomicU64>) -> Body {
        Body::from_stream(stream::repeat_with(move || {
            pulled.fetch_add(CHUNK as u64, Ordering::Relaxed);
            Ok::<_, Infallible>(Bytes::from(vec![0u8; CHUNK]))
        }))
    }

    #[test]
    fn a_refused_body_is_read_only_when_it_may_fit_the_bound() {
        let bound = 1 << 20;
        let allowance =
            |pairs: &[(header::HeaderName, &'static str)]| drain_allowance(&headers(pairs), bound);
        assert_eq!(allowance(&[(header::CONTENT_LENGTH, "1000")]), Some(bound));
        assert_eq!(
            allowance(&[(header::CONTENT_LENGTH, "1048576")]),
            Some(bound)
        );
        // Chunked: its size shows only as it is read.
        assert_eq!(
            allowance(&[(header::TRANSFER_ENCODING, "chunked")]),
            Some(bound)
        );
        // Announced past the bound: the client will be cut off whatever is read.
        assert_eq!(allowance(&[(header::CONTENT_LENGTH, "1048577")]), None);
        assert_eq!(allowance(&[(header::CONTENT_LENGTH, "0")]), None);
        // Reading would send `100 Continue`, inviting the body being refused.
        let waiting = [
            (header::CONTENT_LENGTH, "1000"),
            (header::EXPECT, "100-Continue"),
        ];
        assert_eq!(allowance(&waiting), None);
    }

    #[tokio::test]
    async fn a_small_refused_body_is_read_to_its_end() {
        let body = Body::from_stream(stream::iter(
            (0..4).map(|_| Ok::<_, Infallible>(Bytes::from(vec![1u8; 1000]))),
        ));
        assert_eq!(drain(body, 1 << 20, Duration::from_secs(60)).await, 4000);
    }

    #[tokio::test]
    async fn an_endless_refused_body_is_read_no_further_than_the_bound() {
        let pulled = Arc::new(AtomicU64::new(0));
        let read = drain(endless(pulled.clone()), 1 << 20, Duration::from_secs(60)).await;
        assert!(read > 1 << 20, "read {read}");
        assert!(
            pulled.load(Ordering::Relaxed) <= (1 << 20) + CHUNK as u64,
            "pulled {} bytes",
            pulled.load(Ordering::Relaxed)
        );
    }

    #[tokio::test]
    async fn a_stalled_refused_body_is_given_up_on_after_the_time_allowed() {
        let stalled = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"abc"))])
            .chain(stream::pending());
        let read = drain(
            Body::from_stream(stalled),
            1 << 20,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(read, 3);
    }
}
