//! The CLI's one error type. Each variant is a different thing the user can do something
//! about, so its message names the server, file or job involved.

use std::io;
use std::path::PathBuf;

use reqwest::StatusCode;

/// Everything a command can fail with; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Checked before any request so the message points at the flag, not at a network error.
    #[error("--server must be an http:// or https:// URL, not {url:?}")]
    ServerUrl { url: String },

    /// No connection at all: wrong URL, server down, DNS or TLS failure.
    #[error("cannot reach server at {url}: {cause}")]
    Unreachable { url: String, cause: String },

    /// Connected, but the exchange broke off (timeout, reset mid-transfer).
    #[error("request to {url} failed: {cause}")]
    Transport { url: String, cause: String },

    /// A 4xx or 5xx; `message` is the server's own `error` text, which already says what to fix.
    #[error("server answered {status}: {message}")]
    Server { status: StatusCode, message: String },

    /// A 2xx whose body is not what the API promises: most likely not a Distributed Brain
    /// server at that URL, or a different version.
    #[error("unexpected answer from {url}: {cause}")]
    Protocol { url: String, cause: String },

    /// A download broke off; what came is kept in `part` for the next try to resume.
    #[error(
        "download from {url} broke off after {got}{} bytes ({cause}); {} keeps what came: run the same command again to resume",
        total.map(|t| format!(" of {t}")).unwrap_or_default(),
        part.display()
    )]
    Interrupted {
        url: String,
        cause: String,
        got: u64,
        total: Option<u64>,
        part: PathBuf,
    },

    #[error("cannot read {}: {source}", path.display())]
    Input { path: PathBuf, source: io::Error },

    #[error("cannot write {}: {source}", path.display())]
    Output { path: PathBuf, source: io::Error },

    /// `--wait` saw the job end without a result; `detail` is `: <the job's error>` or empty.
    #[error("job {id} {status}{detail}")]
    JobEnded {
        id: String,
        status: String,
        detail: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Worth retrying while waiting on a job: the server may be restarting (it keeps its jobs
    /// across restarts) or briefly overloaded, and the job is still there when it comes back.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Transport { .. } | Error::Interrupted { .. } => true,
            Error::Server { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}
