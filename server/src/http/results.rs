//! `GET /api/jobs/{id}/result`: the product of a finished job, assembled from its tiles.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{authorize, find_job, ErrorBody};
use crate::db;
use crate::error::{Error, Result};
use crate::jobs;
use crate::state::AppState;
use crate::status::JobStatus;
use crate::store::{self, Part};

#[derive(Deserialize, IntoParams)]
pub(super) struct ResultQuery {
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
pub(super) async fn job_result(
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
    let plan = job.plan().map_err(Error::Internal)?;
    let dtype = plan.dtype;
    if db::purged_at(&state.db, &id).await?.is_some() {
        return Err(Error::Gone(format!(
            "the result of job {id} was removed by the retention policy (RETENTION_HOURS)"
        )));
    }
    db::mark_downloaded(&state.db, &id).await?;
    let path = state
        .grid
        .inputs
        .store()
        .path(&id, Part::C)
        .map_err(|e| Error::Internal(e.to_string()))?;
    // Reading and encoding a large product is work: off the async workers.
    let body = tokio::task::spawn_blocking(move || -> Result<Response> {
        let file = std::fs::read(&path)
            .map_err(|e| Error::Internal(format!("reading the result: {e}")))?;
        let c = file
            .get(store::DATA_OFFSET as usize..)
            .filter(|c| c.len() == plan.m * plan.n * dtype.size())
            .ok_or_else(|| Error::Internal("the stored result has a wrong size".into()))?;
        if json {
            let values = jobs::to_f64(dtype, c);
            let rows: Vec<&[f64]> = values.chunks(plan.n).collect();
            Ok(Json(json!({ "c": rows })).into_response())
        } else {
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
