//! The jobs API: submission (JSON or two `.npy` files), listing, one job, cancelling, and each
//! tile's state.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::multipart::{Field, MultipartError};
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
use crate::grid::inputs::Kept;
use crate::jobs::{self, Cut, Dtype, JsonJob, Plan, PlanLimits, Shape};
use crate::npy;
use crate::state::AppState;
use crate::status::JobStatus;
use crate::store::Part;
use crate::upload::{self, Room, Writer};

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
    /// Slices of k: each tile is computed as this many partial products, over k's slices,
    /// summed by the server in slice order. When absent, k is cut into slices of at most
    /// 4096. At most 64, and at most k.
    #[schema(minimum = 1, maximum = 64)]
    k_split: Option<usize>,
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
    k_split: Option<u32>,
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
    k_split: usize,
    tasks_total: usize,
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
        (status = 408, body = ErrorBody, description = "the body sent nothing for UPLOAD_IDLE_SECS; nothing of it was kept"),
        (status = 413, body = ErrorBody, description = "JSON body over MAX_JSON_BODY_BYTES, or job over MAX_JOB_BYTES, MAX_JOB_ELEMENTS or the other configured limits (named in the message)"),
        (status = 503, body = ErrorBody, description = "shutting down"),
        (status = 507, body = ErrorBody, description = "storing the job would leave less than DISK_RESERVE_BYTES free on the server's disk (the message names the bytes needed and free)"),
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
    let idle = state.config.upload_idle;
    let request = request.map(|body| Body::from_stream(cut_when_stalled(body, idle)));
    let id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("job", job_id = %id);
    let _submitting = Submitting::new(&state, &id);
    let (name, plan, kept) = match form {
        Form::Multipart => receive_multipart(&state, &id, request).await?,
        Form::Json => receive_json(&state, &id, request).await?,
    };
    // Known before the job is stored: once its tasks are in the database a dispatch round may
    // claim one at any moment.
    state.grid.inputs.insert_plan(&id, plan);
    state.grid.inputs.keep_resident(&id, &plan, kept);
    let inserted = match db::engine() {
        db::Engine::Sqlite => db::insert_job(&state.db, &id, &name, &plan)
            .instrument(span.clone())
            .await
            .map_err(Error::from),
        // The inputs go into the database with the job, for every instance (`db::chunks`).
        db::Engine::Postgres => {
            let store = state.grid.inputs.store();
            upload::insert_with_inputs(&state.db, store, &id, &name, &plan)
                .instrument(span.clone())
                .await
        }
    };
    if let Err(e) = inserted {
        state.grid.inputs.remove(&id);
        let _ = state.grid.inputs.store().remove(&id);
        return Err(e);
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
            k_split = plan.split,
            tasks = plan.tasks_total(),
            "job submitted"
        );
    });
    state.grid.progress.job(&id);
    state.grid.work_added().await;
    let body = Created {
        id,
        status: JobStatus::Queued,
        m: plan.m,
        k: plan.k,
        n: plan.n,
        dtype: plan.dtype,
        tile: plan.tile,
        k_split: plan.split,
        tasks_total: plan.tasks_total(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// On PostgreSQL, marks a job as being submitted here for as long as the submission runs
/// (see `Inputs::submitting`).
struct Submitting {
    grid: Arc<crate::grid::Grid>,
    id: String,
}

impl Submitting {
    fn new(state: &AppState, id: &str) -> Option<Self> {
        if db::engine() != db::Engine::Postgres {
            return None;
        }
        state.grid.inputs.submitting(id);
        Some(Submitting {
            grid: state.grid.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for Submitting {
    fn drop(&mut self) {
        self.grid.inputs.submitted(&self.id);
    }
}

/// What a job may take of the disk, from the configuration.
fn room(state: &AppState) -> Room {
    Room {
        max_job_bytes: state.config.limits.max_job_bytes,
        reserve_bytes: state.config.disk_reserve_bytes,
    }
}

/// Bytes free on the store's file system, measured off the async workers.
async fn free_bytes(state: &AppState) -> Result<u64> {
    let store = state.grid.inputs.store().clone();
    tokio::task::spawn_blocking(move || store.available_bytes())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(format!("measuring the free disk space: {e}")))
}

/// A JSON submission: parsed in memory (its body is bounded by `MAX_JSON_BODY_BYTES`), then
/// stored through the same writer as an upload.
async fn receive_json(
    state: &AppState,
    id: &str,
    request: Request,
) -> Result<(String, Plan, Kept)> {
    let limits = &state.config.limits;
    let body = read_json_body(
        request.into_body(),
        limits.max_json_body_bytes,
        usize::try_from(limits.max_job_bytes).unwrap_or(usize::MAX),
    )
    .await?;
    let max_elements = limits.max_job_elements;
    // Parsing large JSON matrices is CPU work: keep it off the async workers.
    let job = tokio::task::spawn_blocking(move || JsonJob::parse(&body, max_elements))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let plan = Plan::new(&job.a, &job.b, job.cut, &PlanLimits::from(limits))?;
    let needed = upload::job_bytes(plan.dtype, plan.m, plan.k, plan.n);
    let free = free_bytes(state).await?;
    room(state).check_with_partials(needed, plan.partials_bytes(), true, free)?;
    let mut writer = Writer::start(state.grid.inputs.store().clone(), id.to_owned());
    for (part, matrix) in [(Part::A, &job.a), (Part::B, &job.b)] {
        let hold = state.grid.inputs.reserve(part, matrix.data.len() as u64);
        writer.begin(part, matrix.shape(), false, hold).await?;
        writer.write(matrix.data.clone()).await?;
        writer.end().await?;
    }
    let kept = writer.finish(plan).await?;
    Ok((job.name, plan, kept))
}

/// Bytes of a multipart submission that are not matrix data: boundaries, part headers, the
/// two `.npy` headers and the small fields. A body announced longer than a job within
/// `MAX_JOB_BYTES` plus this is refused unread.
const NON_DATA_BYTES: u64 = 2 * npy::MAX_HEADER_BYTES as u64 + 64 * 1024;

/// What the multipart parser may hold that it has not handed out. It reads a chunk of the
/// body (hyper's, up to about half a MiB) before it looks for a part's end or headers in
/// what it holds, so an honest upload keeps a chunk or two there; a body of endless part
/// headers is cut at this bound instead of being held whole.
const READ_AHEAD_BYTES: u64 = 4 << 20;

/// Longest `tile`, `name` or `dtype` field read.
const SMALL_FIELD_BYTES: usize = 4096;

/// A multipart submission, streamed: each `.npy` header is judged as soon as it has come,
/// alone and against the other operand's, and its data then goes to the job's files as it
/// arrives. A refusal is answered at once; the rest of the body is read and dropped in the
/// background (up to [`REFUSED_BODY_DRAIN_BYTES`]), so that a small client still sending
/// gets to read the answer rather than a reset.
async fn receive_multipart(
    state: &AppState,
    id: &str,
    request: Request,
) -> Result<(String, Plan, Kept)> {
    let (parts, body) = request.into_parts();
    let allowance = Arc::new(Allowance::new());
    let body = Body::from_stream(metered(body, allowance.clone()));
    let mut multipart = Multipart::from_request(Request::from_parts(parts, body), state)
        .await
        .map_err(|e| Error::BadRequest(e.body_text()))?;
    let mut intake = Intake {
        state,
        id,
        allowance: &allowance,
        a: None,
        b: None,
        cut: Cut::default(),
        name: None,
        fields: Vec::new(),
        free: None,
        writer: None,
    };
    match intake.read(&mut multipart).await {
        Ok(received) => Ok(received),
        Err(refusal) => {
            if let Some(writer) = intake.writer.take() {
                writer.abort().await;
            }
            tokio::spawn(drain_fields(
                multipart,
                allowance,
                REFUSED_BODY_DRAIN_BYTES,
                REFUSED_BODY_DRAIN_TIME,
            ));
            Err(refusal)
        }
    }
}

/// What a multipart submission has said so far.
struct Intake<'r> {
    state: &'r AppState,
    id: &'r str,
    allowance: &'r Allowance,
    a: Option<Shape>,
    b: Option<Shape>,
    cut: Cut,
    name: Option<String>,
    /// The small fields read so far: each may come once.
    fields: Vec<&'static str>,
    /// Free bytes on the store's disk before anything of this job was written.
    free: Option<u64>,
    writer: Option<Writer>,
}

impl Intake<'_> {
    async fn read(&mut self, multipart: &mut Multipart) -> Result<(String, Plan, Kept)> {
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| self.multipart_error(e))?
        {
            let field_name = field.name().unwrap_or("").to_owned();
            let small = ["tile", "k_split", "name", "dtype"];
            if let Some(&known) = small.iter().find(|f| **f == field_name) {
                // A second value would silently replace the first, which was checked already.
                if self.fields.contains(&known) {
                    return Err(Error::BadRequest(format!("field {known} is given twice")));
                }
                self.fields.push(known);
            }
            match field_name.as_str() {
                "a" => self.matrix(Part::A, &mut field).await?,
                "b" => self.matrix(Part::B, &mut field).await?,
                "tile" => {
                    let text = self.small(&field_name, &mut field).await?;
                    let text = String::from_utf8_lossy(&text);
                    self.cut.tile = Some(text.trim().parse::<usize>().map_err(|_| {
                        Error::BadRequest(format!("tile must be a positive integer, not {text:?}"))
                    })?);
                    self.plan()?;
                }
                "k_split" => {
                    let text = self.small(&field_name, &mut field).await?;
                    let text = String::from_utf8_lossy(&text);
                    self.cut.split = Some(text.trim().parse::<usize>().map_err(|_| {
                        Error::BadRequest(format!(
                            "k_split must be a positive integer, not {text:?}"
                        ))
                    })?);
                    self.check_room().await?;
                }
                "name" => {
                    let text = self.small(&field_name, &mut field).await?;
                    self.name = Some(
                        String::from_utf8_lossy(&text)
                            .chars()
                            .take(jobs::MAX_NAME_CHARS)
                            .collect(),
                    );
                }
                "dtype" => {
                    // Given by the .npy files themselves.
                    self.small(&field_name, &mut field).await?;
                }
                other => {
                    return Err(Error::BadRequest(format!(
                        "unexpected field {other:?}; expected files a and b and optional tile, k_split, name"
                    )))
                }
            }
        }
        let missing = |f: &str| Error::BadRequest(format!("missing file {f} (a .npy file)"));
        self.a.ok_or_else(|| missing("a"))?;
        self.b.ok_or_else(|| missing("b"))?;
        let plan = self.plan()?.ok_or_else(|| missing("a"))?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal("an upload without a writer".into()))?;
        let kept = writer.finish(plan).await?;
        Ok((self.name.take().unwrap_or_default(), plan, kept))
    }

    /// The plan, once both operands are known: every refusal that their shapes and the tile
    /// decide, as early as they are known.
    fn plan(&self) -> Result<Option<Plan>> {
        let (Some(a), Some(b)) = (self.a, self.b) else {
            return Ok(None);
        };
        let limits = PlanLimits::from(&self.state.config.limits);
        Plan::for_operands(a, b, self.cut, &limits).map(Some)
    }

    /// One `.npy` file: its header, judged before its data is read, then its data, written
    /// as it comes.
    async fn matrix(&mut self, part: Part, field: &mut Field<'_>) -> Result<()> {
        let label = if part == Part::A { "a" } else { "b" };
        let slot = if part == Part::A { self.a } else { self.b };
        if slot.is_some() {
            return Err(Error::BadRequest(format!("file {label} is given twice")));
        }
        let max_elements = self.state.config.limits.max_job_elements;
        let mut head = Vec::new();
        let (header, rest) = loop {
            let Some(chunk) = next_chunk(field, self.allowance)
                .await
                .map_err(|e| self.multipart_error(e))?
            else {
                // Ended within the header: the whole-file parser names what is missing.
                let file = Bytes::from(head);
                return Err(npy::parse(label, &file, max_elements)
                    .err()
                    .unwrap_or_else(|| Error::BadRequest(format!("{label}: truncated header"))));
            };
            head.extend_from_slice(&chunk);
            if let Some(header) = npy::Header::parse(label, &head, max_elements)? {
                let rest = Bytes::from(head.split_off(header.len));
                break (header, rest);
            }
        };
        self.accept(part, &header).await?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::Internal("an upload without a writer".into()))?;
        let expected = header.data_bytes();
        let mut got = 0u64;
        let mut chunk = rest;
        loop {
            got += chunk.len() as u64;
            if got > expected {
                return Err(Error::BadRequest(format!(
                    "{label}: not a valid .npy file: shape ({}, {}) {} needs {expected} data \
                     bytes, the file has more",
                    header.rows,
                    header.cols,
                    header.dtype.name()
                )));
            }
            if !chunk.is_empty() {
                writer.write(chunk).await?;
            }
            match next_chunk(field, self.allowance).await {
                Ok(Some(next)) => chunk = next,
                Ok(None) => break,
                Err(e) => return Err(multipart_error(e, self.allowance)),
            }
        }
        if got < expected {
            return Err(Error::BadRequest(format!(
                "{label}: not a valid .npy file: shape ({}, {}) {} needs {expected} data bytes, \
                 the file has {got}",
                header.rows,
                header.cols,
                header.dtype.name()
            )));
        }
        writer.end().await
    }

    /// Takes an operand's header: refuses it if, with what is already known, the job cannot
    /// be planned or stored; otherwise lets its data in and starts its file.
    async fn accept(&mut self, part: Part, header: &npy::Header) -> Result<()> {
        match part {
            Part::A => self.a = Some(header.shape()),
            _ => self.b = Some(header.shape()),
        }
        self.check_room().await?;
        let inputs = &self.state.grid.inputs;
        let hold = inputs.reserve(part, header.data_bytes());
        let writer = self
            .writer
            .get_or_insert_with(|| Writer::start(inputs.store().clone(), self.id.to_owned()));
        writer
            .begin(part, header.shape(), header.big_endian, hold)
            .await
    }

    /// Refuses the job if, with what is known of it so far, it cannot be planned, or would
    /// take more than `MAX_JOB_BYTES` or the disk's room: as each operand's header comes,
    /// and again when `k_split` comes, as a split job's partial products take room too.
    async fn check_room(&mut self) -> Result<()> {
        let plan = self.plan()?;
        if let Some((needed, exact)) = upload::bytes_at_least(self.a, self.b) {
            let partials = plan.map_or(0, |p| p.partials_bytes());
            let free = match self.free {
                Some(free) => free,
                None => *self.free.insert(free_bytes(self.state).await?),
            };
            room(self.state).check_with_partials(needed, partials, exact, free)?;
        }
        Ok(())
    }

    /// A small field's text, refused past [`SMALL_FIELD_BYTES`].
    async fn small(&self, label: &str, field: &mut Field<'_>) -> Result<Vec<u8>> {
        let mut text = Vec::new();
        while let Some(chunk) = next_chunk(field, self.allowance)
            .await
            .map_err(|e| self.multipart_error(e))?
        {
            if text.len() + chunk.len() > SMALL_FIELD_BYTES {
                return Err(Error::BadRequest(format!(
                    "field {label} is longer than {SMALL_FIELD_BYTES} bytes"
                )));
            }
            text.extend_from_slice(&chunk);
        }
        Ok(text)
    }

    fn multipart_error(&self, e: MultipartError) -> Error {
        multipart_error(e, self.allowance)
    }
}

/// How far the multipart parser may read ahead of the fields' contents it has handed out:
/// [`READ_AHEAD_BYTES`], plus the one chunk that crosses the bound.
struct Allowance {
    /// Bytes read from the body.
    pulled: AtomicU64,
    /// Bytes of fields' contents handed out (and written, or dropped).
    consumed: AtomicU64,
    exceeded: AtomicBool,
}

impl Allowance {
    fn new() -> Self {
        Allowance {
            pulled: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    /// Counts `bytes` read from the body; false when the parser already holds its fill.
    fn pull(&self, bytes: u64) -> bool {
        let before = self.pulled.fetch_add(bytes, Ordering::Relaxed);
        let within = before <= self.consumed.load(Ordering::Relaxed) + READ_AHEAD_BYTES;
        if !within {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        within
    }

    fn consume(&self, bytes: usize) {
        self.consumed.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// A field's next chunk, counted as handed out.
async fn next_chunk(
    field: &mut Field<'_>,
    allowance: &Allowance,
) -> std::result::Result<Option<Bytes>, MultipartError> {
    let chunk = field.chunk().await?;
    if let Some(chunk) = &chunk {
        allowance.consume(chunk.len());
    }
    Ok(chunk)
}

/// Why a metered body was cut.
#[derive(Debug, thiserror::Error)]
#[error("the body holds more than its files' headers announce")]
struct OverAllowance;

/// `body`, cut once it brings more than `allowance` grants. The multipart parser buffers what
/// it has not yet handed out (a part's headers, say), so without this a body of endless part
/// headers would be held whole.
fn metered(
    body: Body,
    allowance: Arc<Allowance>,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, axum::Error>> {
    use futures_util::StreamExt;
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        if allowance.pull(chunk.len() as u64) {
            Ok(chunk)
        } else {
            Err(axum::Error::new(OverAllowance))
        }
    })
}

/// Why a submission's body was cut.
#[derive(Debug, thiserror::Error)]
#[error("the body sent nothing for {} s", .0.as_secs())]
struct Stalled(Duration);

/// `body`, cut with [`Stalled`] once it sends nothing for `idle` while it is waited for. An
/// upload's files are given their full size as soon as its headers are read, so a client
/// that stops sending would otherwise hold that disk, and its connection, for ever. The
/// clock runs only while the server waits for the client, never while it writes.
fn cut_when_stalled(
    body: Body,
    idle: Duration,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, axum::Error>> {
    use futures_util::StreamExt;
    futures_util::stream::unfold(Some(body.into_data_stream()), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(Stalled(idle))), None)),
        }
    })
}

/// The refusal for a body cut by [`cut_when_stalled`], if that is what `e` comes from.
fn stalled(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(Stalled(idle)) = e.downcast_ref::<Stalled>() {
            return Some(Error::Timeout(format!(
                "the upload sent nothing for {} s (UPLOAD_IDLE_SECS); nothing of it was kept",
                idle.as_secs()
            )));
        }
        cause = e.source();
    }
    None
}

/// Reads and drops what is left of a refused multipart body, as [`drain`] does a raw one.
async fn drain_fields(
    mut multipart: Multipart,
    allowance: Arc<Allowance>,
    bound: u64,
    time: Duration,
) -> u64 {
    let mut total = 0u64;
    let read = async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = next_chunk(&mut field, &allowance).await {
                total = total.saturating_add(chunk.len() as u64);
                if total > bound {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(time, read).await;
    total
}

/// The two forms a submission may take, told apart by its `Content-Type`.
enum Form {
    Multipart,
    Json,
}

/// Every refusal that the request's head alone decides, taken before a byte of its body is
/// read: a client without the token, or one that announces a body longer than any job within
/// `MAX_JOB_BYTES`, never gets the server to read its upload. (A JSON body's own, smaller limit is left to
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
        let max_job_bytes = state.config.limits.max_job_bytes;
        if let Some(n) =
            content_length(headers).filter(|&n| n > max_job_bytes.saturating_add(NON_DATA_BYTES))
        {
            // A and B are less than the whole job: no body this long holds a job within it.
            return Err(Error::PayloadTooLarge(format!(
                "request body of {n} bytes is larger than the configured limit: a job's A, B \
                 and C may take at most {max_job_bytes} bytes (MAX_JOB_BYTES)"
            )));
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

fn multipart_error(e: MultipartError, allowance: &Allowance) -> Error {
    if let Some(refusal) = stalled(&e) {
        refusal
    } else if allowance.exceeded() {
        Error::PayloadTooLarge(format!(
            "malformed multipart body: more than {READ_AHEAD_BYTES} bytes of part headers or \
             boundaries at once"
        ))
    } else {
        Error::BadRequest(format!("malformed multipart body: {}", e.body_text()))
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
        let frame = frame.map_err(|e| {
            stalled(&e)
                .unwrap_or_else(|| Error::BadRequest(format!("could not read the body: {e}")))
        })?;
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
    /// Columns of tasks: C's tile columns once per slice of k, slice after slice (a task in
    /// column `col` computes slice `col / (tile_cols / k_split)` of its tile).
    tile_cols: usize,
    k_split: usize,
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
    let plan = job.plan().map_err(Error::Internal)?;
    Ok(Json(Tiles {
        tile_rows: plan.tile_rows(),
        tile_cols: plan.task_cols(),
        k_split: plan.split,
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
