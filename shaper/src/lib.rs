//! `brain-shaper`: a userspace TCP proxy that makes a loopback connection behave like a
//! campus, home or mobile link (this machine's kernel has no `netem`). Tests and benchmarks put
//! it between a worker and the server.
//!
//! `policy` holds every shaping decision (rate, delay, jitter, resets, queue bounds) without
//! sockets; `proxy` applies them to real connections; `config` reads the flags once; `stop`
//! says when the shaper ends.

pub mod config;
pub mod error;
pub mod policy;
pub mod proxy;
pub mod stop;

pub use config::{Args, Config, Profile};
pub use error::Error;
pub use proxy::{run, Summary};
