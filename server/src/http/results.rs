//! `GET /api/jobs/{id}/result`: the product of a finished job, streamed from its `c.npy`.
//!
//! The file is already a valid `.npy`, so the default format sends it as it lies, with
//! `Range` (one range; see `ranges`) so an interrupted download can resume. `?format=json`
//! is encoded from the same file as it is sent. Either way a download holds a few chunks of
//! [`CHUNK`] bytes, whatever the product's size.
//!
//! On PostgreSQL there is no `c.npy`: the tiles are in the database (see `commit`), and the
//! same bytes are assembled as they are sent, a piece of rows of one band of tiles at a time
//! ([`PIECE_BYTES`]), ranges included.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::ranges::{self, Slice, Validators};
use super::{authorize, find_job, ErrorBody};
use crate::db;
use crate::error::{Error, Result};
use crate::jobs::{self, Plan};
use crate::state::AppState;
use crate::status::JobStatus;
use crate::store::{self, layout, Part};

/// Bytes of the file read per piece of a response: large enough that a piece costs little
/// more than its copy, small enough that the pieces a slow client leaves queued stay small.
const CHUNK: u64 = 256 * 1024;

#[derive(Deserialize, IntoParams)]
pub(super) struct ResultQuery {
    /// `npy` (default) or `json`.
    format: Option<String>,
}

/// `GET /api/jobs/{id}/result?format=json`.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the JSON result, which is written piece by piece"
)]
pub struct JsonResult {
    c: Vec<Vec<f64>>,
}

const NPY_DESCRIPTION: &str = "The product as `.npy` (the job's dtype), streamed from the \
    stored file. `Accept-Ranges: bytes`: send `Range: bytes=<from>-` to resume, with \
    `If-Range: <ETag>` so that a result that changed is sent whole (200) rather than spliced. \
    `?format=json` gives `{\"c\": [[...]]}`, streamed as it is encoded (no Content-Length, no \
    ranges); it is about five times the size of the `.npy` and slower to parse, so prefer \
    `.npy` for large products.";

/// The product, as `.npy` (same dtype as the job) or JSON; 409 until the job is done.
#[utoipa::path(get, path = "/api/jobs/{id}/result", tag = "jobs",
    description = NPY_DESCRIPTION,
    params(
        ("id" = String, Path),
        ResultQuery,
        ("Range" = Option<String>, Header,
            description = "One byte range of the `.npy`, e.g. `bytes=1048576-`; several ranges, \
            another unit or bad syntax are ignored (200 with the whole file). Ignored for JSON."),
        ("If-Range" = Option<String>, Header,
            description = "The `ETag` (or `Last-Modified`) of an earlier answer: the range is \
            sent only if the file is still the same, otherwise the whole file (200)."),
    ),
    responses(
        (status = 200, description = "the whole product",
            headers(
                ("ETag" = String, description = "strong validator of the `.npy` (not sent with JSON)"),
                ("Last-Modified" = String, description = "when the `.npy` was last written (not sent with JSON)"),
                ("Accept-Ranges" = String, description = "`bytes` for `.npy`"),
            ),
            content(
                (Vec<u8> = "application/octet-stream"),
                (JsonResult = "application/json"),
            )),
        (status = 206, description = "the requested range of the `.npy`",
            headers(
                ("Content-Range" = String, description = "`bytes <first>-<last>/<size>`"),
                ("ETag" = String, description = "strong validator of the `.npy`"),
            ),
            content((Vec<u8> = "application/octet-stream"))),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not done yet"),
        (status = 410, body = ErrorBody, description = "removed by the retention policy"),
        (status = 416, body = ErrorBody, description = "the range starts past the end of the `.npy`",
            headers(("Content-Range" = String, description = "`bytes */<size>`"))),
    ),
    security((), ("bearer" = [])))]
pub(super) async fn job_result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ResultQuery>,
    method: Method,
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
    let plan = job.plan().map_err(Error::Internal)?;
    let gone = || {
        Error::Gone(format!(
            "the result of job {id} was removed by the retention policy (RETENTION_HOURS)"
        ))
    };
    let lease = ReadLease::new(state.db.clone(), &id);
    if !lease.begin().await? {
        return Err(gone());
    }
    let (source, len, validators) = match db::engine() {
        db::Engine::Sqlite => open_file(&state, &id, &plan, gone).await?,
        db::Engine::Postgres => {
            // The tiles are in the database (see `commit`): the file is assembled as it is
            // sent. A done job's result never changes, so its end names it.
            let len = layout::file_len(&plan, Part::C);
            let finished = job.finished_at.map_or(0, |at| at.0.max(0) as u64);
            let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(finished);
            let tag = u64::from(crc32fast::hash(id.as_bytes()));
            let source = Source::Database {
                lease: Arc::new(lease),
                plan,
                rows: layout::Rows::new(&plan, PIECE_BYTES),
            };
            (source, len, Validators::of(len, modified, tag))
        }
    };
    if json {
        return Ok(json_response(source, &plan));
    }
    // Range handling is defined for GET only (RFC 9110 §14.2); HEAD answers as a plain GET.
    let slice = if method == Method::GET {
        let value = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        ranges::choose(
            value(header::RANGE),
            value(header::IF_RANGE),
            &validators,
            len,
        )
    } else {
        Slice::Whole
    };
    let (status, start, end) = match slice {
        Slice::Whole => (StatusCode::OK, 0, len - 1),
        Slice::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        Slice::Unsatisfiable => {
            let body = ErrorBody {
                error: format!(
                    "the range is past the end of the result ({len} bytes); \
                     ask for bytes=<from>- with <from> below {len}"
                ),
            };
            let range = format!("bytes */{len}");
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, range)],
                Json(body),
            )
                .into_response());
        }
    };
    let mut response = Response::new(file_body(source, start, end + 1));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let text = |s: String| HeaderValue::try_from(s).map_err(|e| Error::Internal(e.to_string()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        text(format!("attachment; filename=\"{id}.npy\""))?,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end + 1 - start));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, text(validators.etag.clone())?);
    headers.insert(header::LAST_MODIFIED, text(validators.last_modified())?);
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(
            header::CONTENT_RANGE,
            text(format!("bytes {start}-{end}/{len}"))?,
        );
    }
    Ok(response)
}

/// The job's `c.npy`, with its length and validators (SQLite: results live in files).
async fn open_file(
    state: &AppState,
    id: &str,
    plan: &Plan,
    gone: impl Fn() -> Error,
) -> Result<(Source, u64, Validators)> {
    let path = state
        .grid
        .inputs
        .store()
        .path(id, Part::C)
        .map_err(|e| Error::Internal(e.to_string()))?;
    // Opened once: the validators, the length and the bytes sent all come from this one file,
    // even if retention removes its name meanwhile.
    let opened = tokio::task::spawn_blocking(move || -> io::Result<(File, std::fs::Metadata)> {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        Ok((file, meta))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    let (file, meta) = match opened {
        Ok(opened) => opened,
        // Only retention removes a done job's result; it did so after the check above.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
        Err(e) => return Err(Error::Internal(format!("opening the result: {e}"))),
    };
    let len = meta.len();
    if len != store::DATA_OFFSET + (plan.m * plan.n * plan.dtype.size()) as u64 {
        return Err(Error::Internal(format!(
            "the stored result of job {id} has {len} bytes, not its shape's"
        )));
    }
    let validators = Validators::of(len, meta.modified().map_err(io_error)?, meta.ino());
    Ok((Source::File(Arc::new(file)), len, validators))
}

fn io_error(e: io::Error) -> Error {
    Error::Internal(format!("reading the result: {e}"))
}

/// Where a result's bytes come from.
#[derive(Clone)]
enum Source {
    /// Its `c.npy` (SQLite).
    File(Arc<File>),
    /// Its tiles in the database (PostgreSQL), read a piece of rows at a time, held for this
    /// download while it reads.
    Database {
        lease: Arc<ReadLease>,
        plan: Plan,
        rows: layout::Rows,
    },
}

/// Bytes `from..to` of the file, read a [`CHUNK`] at a time as the client takes them. A read
/// error ends the body early, which the client sees as a broken transfer (its length was
/// promised in `Content-Length`).
fn file_body(source: Source, from: u64, to: u64) -> Body {
    Body::from_stream(pieces(source, from, to, |bytes| Ok(Bytes::from(bytes))))
}

/// The result as `{"c": [[...], ...]}`, encoded a [`CHUNK`] of the file at a time. The
/// numbers are written as `serde_json` writes an `f64`, as the whole-matrix answer that came
/// before this one did.
fn json_response(source: Source, plan: &Plan) -> Response {
    let dtype = plan.dtype;
    let e = dtype.size() as u64;
    let data = store::DATA_OFFSET;
    let to = data + (plan.m * plan.n) as u64 * e;
    let encoder = std::sync::Mutex::new(JsonRows::new(plan.m * plan.n, plan.n));
    // Pieces are whole elements: CHUNK is a multiple of every element size, and the
    // database's pieces are whole rows.
    let body = pieces(source, data, to, move |bytes| {
        let mut text = Vec::with_capacity(bytes.len() * 6);
        let mut encoder = encoder
            .lock()
            .map_err(|_| io::Error::other("a JSON piece failed before this one"))?;
        encoder.encode(&jobs::to_f64(dtype, &bytes), &mut text);
        Ok(Bytes::from(text))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// How long a download holds a result's bytes in the database past its last read: retention
/// may purge the job meanwhile (no new download starts), but deletes the bytes only once no
/// download holds them. A client that stops reading for longer loses the rest.
const READ_LEASE: Duration = Duration::from_secs(60);

/// A download's hold on a job's result (`db::begin_read`), renewed as it reads.
struct ReadLease {
    pool: db::Pool,
    job_id: Arc<str>,
    renewed: std::sync::Mutex<Instant>,
}

impl ReadLease {
    fn new(pool: db::Pool, job_id: &str) -> ReadLease {
        ReadLease {
            pool,
            job_id: Arc::from(job_id),
            renewed: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn until() -> i64 {
        db::now_ms() + READ_LEASE.as_millis() as i64
    }

    /// False when the job is purged.
    async fn begin(&self) -> Result<bool> {
        Ok(db::begin_read(&self.pool, &self.job_id, Self::until()).await?)
    }

    /// Renews the lease when a third of it has passed; an error when the bytes are gone.
    async fn renew(&self) -> io::Result<()> {
        let due = {
            let renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
            renewed.elapsed() >= READ_LEASE / 3
        };
        if !due {
            return Ok(());
        }
        if !db::renew_read(&self.pool, &self.job_id, Self::until())
            .await
            .map_err(io::Error::other)?
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the result of job {} was removed by the retention policy",
                    self.job_id
                ),
            ));
        }
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }
}

/// Bytes of the result assembled per read on PostgreSQL: rows of every tile of a tile row,
/// one statement; memory holds about this much per download, whatever the product's size.
const PIECE_BYTES: usize = 1 << 20;

/// The bytes `from..to` in pieces (of at most [`CHUNK`] from a file; of whole rows within one
/// band of tiles, about [`PIECE_BYTES`], from the database), each read (and passed through
/// `map`) when the client is ready for it.
fn pieces<F>(
    source: Source,
    from: u64,
    to: u64,
    map: F,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send
where
    F: Fn(Vec<u8>) -> io::Result<Bytes> + Send + Sync + 'static,
{
    let map = Arc::new(map);
    futures_util::stream::unfold(from, move |at| {
        let (source, map) = (source.clone(), map.clone());
        async move {
            if at >= to {
                return None;
            }
            let read = match source {
                Source::File(file) => {
                    let n = CHUNK.min(to - at);
                    tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0; n as usize];
                        file.read_exact_at(&mut buf, at)?;
                        map(buf).map(|bytes| (bytes, at + n))
                    })
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
                }
                Source::Database { lease, plan, rows } => {
                    match read_piece(&lease, &plan, &rows, at).await {
                        Ok((piece, start)) => {
                            let end = (start + piece.len() as u64).min(to);
                            let wanted =
                                piece[(at - start) as usize..(end - start) as usize].to_vec();
                            tokio::task::spawn_blocking(move || {
                                map(wanted).map(|bytes| (bytes, end))
                            })
                            .await
                            .unwrap_or_else(|e| Err(io::Error::other(e)))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            // After an error the stream ends: nothing more is read.
            match read {
                Ok((bytes, next)) => Some((Ok(bytes), next)),
                Err(e) => Some((Err(e), to)),
            }
        }
    })
}

/// The piece of a result in the database that holds byte `at` of its `.npy`, and where the
/// piece starts: the header, or rows of one tile row gathered from its tiles.
async fn read_piece(
    lease: &ReadLease,
    plan: &Plan,
    rows: &layout::Rows,
    at: u64,
) -> io::Result<(Vec<u8>, u64)> {
    let (pool, job_id) = (&lease.pool, &*lease.job_id);
    let (segment, start, _) = rows.locate(at);
    let (tile_row, row0, count) = match segment {
        layout::Segment::Header => return Ok((store::header(plan.dtype, plan.m, plan.n), start)),
        layout::Segment::Rows {
            tile_row,
            row0,
            rows,
        } => (tile_row, row0, rows),
    };
    lease.renew().await?;
    let tile_cols = plan.tile_cols() as i64;
    let shape = (
        plan.tile as i64,
        plan.n as i64,
        plan.dtype.size() as i64,
        tile_cols,
    );
    let slices = db::chunks::read_band(
        pool,
        job_id,
        tile_row as i64,
        (row0 as i64, count as i64),
        shape,
    )
    .await
    .map_err(io::Error::other)?;
    let slices: Vec<&[u8]> = slices.iter().map(|(_, bytes)| &bytes[..]).collect();
    // A split job's: each tile's partials, one per slice of k, added in slice order.
    let summed: Vec<Vec<u8>>;
    let missing = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("tile row {tile_row} of job {job_id} is not all in the database"),
        )
    };
    let slices = if plan.split > 1 {
        if slices.len() != plan.task_cols() {
            return Err(missing());
        }
        let tile_cols = plan.tile_cols();
        summed = (0..tile_cols)
            .map(|col| {
                let mut sum = Vec::new();
                let partials = (0..plan.split).map(|s| slices[s * tile_cols + col]);
                store::add_in_order(plan.dtype, partials, &mut sum);
                sum
            })
            .collect();
        summed.iter().map(|tile| &tile[..]).collect()
    } else {
        slices
    };
    let piece = layout::assemble(count, &rows.widths(), &slices).ok_or_else(missing)?;
    Ok((piece, start))
}

/// Writes a matrix of `total` values, `cols` to a row, as the JSON `{"c": [[...], ...]}`,
/// given its values in pieces of any length. Jobs have no empty matrices, so `total` ≥ 1.
struct JsonRows {
    total: usize,
    cols: usize,
    /// Values written so far.
    next: usize,
}

impl JsonRows {
    fn new(total: usize, cols: usize) -> JsonRows {
        JsonRows {
            total,
            cols: cols.max(1),
            next: 0,
        }
    }

    fn encode(&mut self, values: &[f64], out: &mut Vec<u8>) {
        for &v in values {
            if self.next >= self.total {
                return;
            }
            out.extend_from_slice(match self.next {
                0 => b"{\"c\":[[".as_slice(),
                i if i % self.cols == 0 => b"],[",
                _ => b",",
            });
            // Writing an f64 to a Vec cannot fail; a non-finite one (never stored) is `null`.
            let _ = serde_json::to_writer(&mut *out, &v);
            self.next += 1;
            if self.next == self.total {
                out.extend_from_slice(b"]]}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_pieces_is_what_serde_json_writes_for_the_whole_matrix() {
        let values: Vec<f64> = (0..12).map(|i| f64::from(i as f32 * 0.1 - 0.5)).collect();
        for (rows, cols) in [(3, 4), (1, 12), (12, 1), (2, 6)] {
            let rows_of: Vec<&[f64]> = values.chunks(cols).collect();
            let want = serde_json::to_vec(&serde_json::json!({ "c": rows_of })).expect("json");
            for piece in [1, 2, 5, 7, 12] {
                let mut encoder = JsonRows::new(rows * cols, cols);
                let mut out = Vec::new();
                for chunk in values.chunks(piece) {
                    encoder.encode(chunk, &mut out);
                }
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&want),
                    "{rows}×{cols} in pieces of {piece}"
                );
            }
        }
    }
}
