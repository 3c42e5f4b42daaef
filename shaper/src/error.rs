//! The shaper's one error type: what stops it from starting, and what ends one connection
//! before its peers do (logged, never fatal to the others).

use std::io;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Checked when the arguments are parsed, so the message names the flag.
    #[error("--upstream must be host:port, not {0:?}")]
    Upstream(String),

    /// Rates, delays and intervals: a number of the flag's unit, 0 or more.
    #[error("expected a finite number ≥ 0, not {0:?}")]
    NotNonNegative(String),

    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },

    /// The upstream refused or could not be reached; the client's connection is reset.
    #[error("cannot connect to upstream {upstream}: {source}")]
    Connect { upstream: String, source: io::Error },

    /// The one line a test reads (`listening …`) could not be written.
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}
