//! HTTP routes, one module per resource: `auth` (checking the API token), `health` (health and
//! status), `jobs` (submission, listing, cancelling, tiles), `results` (the product's
//! download, with `ranges` deciding which bytes of it a request gets), `workers`, `metrics`
//! (`/metrics` and the request timing behind it), `credit` (boards, profiles, names, moving an
//! identity, the statistics export) and `openapi` (the document). This module
//! holds the router and what several resources share: the API token check, looking a job
//! up, and the error body.

mod auth;
mod credit;
mod health;
mod jobs;
mod metrics;
mod openapi;
mod ranges;
mod results;
mod workers;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tower_http::services::{ServeDir, ServeFile};
use utoipa::ToSchema;

pub use openapi::ApiDoc;

use crate::db;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The HTTP side of the app; the Socket.io layer and CORS are added in [`crate::build`].
pub fn router(state: AppState) -> Router {
    let web = &state.config.web_dir;
    let static_files = ServeDir::new(web).append_index_html_on_directories(true);
    Router::new()
        .route("/health", get(health::health))
        .route("/api/status", get(health::status))
        .route("/api/auth", get(auth::check))
        .route(
            "/api/jobs",
            get(jobs::list_jobs)
                .post(jobs::submit_job)
                // A submission bounds itself: JSON by MAX_JSON_BODY_BYTES, an upload by its
                // headers, MAX_JOB_BYTES and the disk (see `jobs::receive_multipart`).
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/jobs/{id}",
            get(jobs::get_job).delete(jobs::cancel_job),
        )
        .route("/api/jobs/{id}/result", get(results::job_result))
        .route("/api/jobs/{id}/tiles", get(jobs::job_tiles))
        .route("/api/workers", get(workers::workers))
        .route("/api/leaderboard", get(credit::leaderboard))
        .route("/api/volunteers/{id}", get(credit::volunteer))
        .route("/api/me", get(credit::me).put(credit::set_me))
        .route("/api/me/transfer", post(credit::issue_transfer))
        .route("/api/transfer", post(credit::redeem_transfer))
        .route("/api/stats/export", get(credit::export))
        .route("/metrics", get(metrics::render))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route_service("/dashboard", ServeFile::new(web.join("dashboard.html")))
        .route_service("/profile", ServeFile::new(web.join("profile.html")))
        .fallback_service(static_files)
        // A layer, not a route layer: requests no route matches are counted too (under one
        // label, see `metrics::track_http`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_http,
        ))
        .with_state(state)
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

async fn find_job(state: &AppState, id: &str) -> Result<db::JobRow> {
    db::get_job(&state.db, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no job with id {id}")))
}

/// The error body of every 4xx and 5xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: String,
}
