//! When the shaper stops: its stdin reaching EOF (the process that started it closed the pipe
//! or died), its time limit, or SIGINT/SIGTERM. A test can never leave it running.

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;

/// Why the shaper stopped, for its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    StdinClosed,
    TimeLimit,
    Signal,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::StdinClosed => "stdin closed",
            StopReason::TimeLimit => "--max-seconds reached",
            StopReason::Signal => "signal",
        })
    }
}

/// Completes when the first stop condition holds. `watch_stdin: false` ignores stdin.
pub async fn stop_when(watch_stdin: bool, max_run: Duration) -> StopReason {
    let stdin = async {
        match watch_stdin {
            true => stdin_closed().await,
            false => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stdin => StopReason::StdinClosed,
        () = tokio::time::sleep(max_run) => StopReason::TimeLimit,
        () = signalled() => StopReason::Signal,
    }
}

/// Completes at stdin's EOF (or read error). The blocking read runs on a thread of its own,
/// not on the runtime's blocking pool, whose threads the runtime would wait for at exit.
async fn stdin_closed() {
    let (closed, wait) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = closed.send(());
        });
    match spawned {
        // A dropped sender (the thread panicked) counts as closed too.
        Ok(_) => {
            let _ = wait.await;
        }
        Err(e) => {
            tracing::warn!("cannot watch stdin ({e}); --max-seconds still applies");
            std::future::pending::<()>().await;
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
