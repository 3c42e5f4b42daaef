//! `GET /api/jobs/{id}/result`: the product of a finished job, streamed from its `c.npy`.
//!
//! The file is already a valid `.npy`, so the default format sends it as it lies, with
//! `Range` (one range; see `ranges`) so an interrupted download can resume. `?format=json`
//! is encoded from the same file as it is sent. Either way a download holds a few chunks of
//! [`CHUNK`] bytes, whatever the product's size.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

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
use crate::store::{self, Part};

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
    if db::purged_at(&state.db, &id).await?.is_some() {
        return Err(gone());
    }
    db::mark_downloaded(&state.db, &id).await?;
    let path = state
        .grid
        .inputs
        .store()
        .path(&id, Part::C)
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
    let file = Arc::new(file);
    if json {
        return Ok(json_response(file, &plan));
    }
    let validators = Validators::of(len, meta.modified().map_err(io_error)?, meta.ino());
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
    let mut response = Response::new(file_body(file, start, end + 1));
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

fn io_error(e: io::Error) -> Error {
    Error::Internal(format!("reading the result: {e}"))
}

/// Bytes `from..to` of the file, read a [`CHUNK`] at a time as the client takes them. A read
/// error ends the body early, which the client sees as a broken transfer (its length was
/// promised in `Content-Length`).
fn file_body(file: Arc<File>, from: u64, to: u64) -> Body {
    Body::from_stream(pieces(file, from, to, |bytes| Ok(Bytes::from(bytes))))
}

/// The result as `{"c": [[...], ...]}`, encoded a [`CHUNK`] of the file at a time. The
/// numbers are written as `serde_json` writes an `f64`, as the whole-matrix answer that came
/// before this one did.
fn json_response(file: Arc<File>, plan: &Plan) -> Response {
    let dtype = plan.dtype;
    let e = dtype.size() as u64;
    let data = store::DATA_OFFSET;
    let to = data + (plan.m * plan.n) as u64 * e;
    let encoder = std::sync::Mutex::new(JsonRows::new(plan.m * plan.n, plan.n));
    // Pieces are whole elements: CHUNK is a multiple of every element size.
    let body = pieces(file, data, to, move |bytes| {
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

/// The file's bytes `from..to` in pieces of at most [`CHUNK`], each read (and passed through
/// `map`) on the blocking pool when the client is ready for it.
fn pieces<F>(
    file: Arc<File>,
    from: u64,
    to: u64,
    map: F,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send
where
    F: Fn(Vec<u8>) -> io::Result<Bytes> + Send + Sync + 'static,
{
    let map = Arc::new(map);
    futures_util::stream::unfold(from, move |at| {
        let (file, map) = (file.clone(), map.clone());
        async move {
            if at >= to {
                return None;
            }
            let n = CHUNK.min(to - at);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; n as usize];
                file.read_exact_at(&mut buf, at)?;
                map(buf)
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            // After an error the stream ends: nothing more is read.
            let next = if read.is_ok() { at + n } else { to };
            Some((read, next))
        }
    })
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
