//! The server's one error type and how each kind answers over HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Everything a request can fail with. Client mistakes carry a message meant for the client;
/// internal causes are logged and answered with a generic message, never leaked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong API token (send Authorization: Bearer <token>)")]
    Unauthorized,
    /// A volunteer's own request without the worker token its page was given.
    #[error("missing or unknown worker token (send Authorization: Bearer <the token from registration_ack>)")]
    UnknownWorker,
    /// A volunteer's own request from a quarantined worker, with the quarantine's reason.
    #[error("this volunteer is quarantined: {0}. A quarantined volunteer earns nothing and is not listed")]
    Quarantined(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// The client stopped sending its request's body.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Gone(String),
    /// Storing the job would leave the disk with less than its reserve free.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
    #[error("internal error")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized | Error::UnknownWorker => StatusCode::UNAUTHORIZED,
            Error::Quarantined(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Gone(_) => StatusCode::GONE,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Database(cause) => tracing::error!(%cause, "database error"),
            Error::Internal(cause) => tracing::error!(%cause, "internal error"),
            _ => {}
        }
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
