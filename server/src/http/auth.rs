//! `GET /api/auth`: whether the server would take the bearer token sent.
//!
//! A submission refused for its token can only be answered reliably before its body is sent:
//! the server does not read a refused upload past a small bound (see `jobs::submit_job`), and
//! a client still sending when the connection closes sees a broken pipe, not the 401. Asking
//! here first costs one small request and lets a client (the CLI does) name the problem
//! before it uploads megabytes for nothing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::{authorize, ErrorBody};
use crate::error::Result;
use crate::state::AppState;

/// Checks the token that submitting, cancelling and downloading need, with no other effect.
#[utoipa::path(get, path = "/api/auth", tag = "jobs",
    responses(
        (status = 204, description = "the token is accepted, or the server needs none"),
        (status = 401, body = ErrorBody, description = "API_TOKEN set and not given"),
    ),
    security((), ("bearer" = [])))]
pub(super) async fn check(State(state): State<AppState>, headers: HeaderMap) -> Result<StatusCode> {
    authorize(&state, &headers)?;
    Ok(StatusCode::NO_CONTENT)
}
