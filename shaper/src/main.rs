//! `brain-shaper`: reads its flags, listens, prints `listening ADDR` on stdout, forwards until
//! a stop condition, and prints a one-line JSON summary on stderr. See `brain-shaper --help`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use shaper::stop::stop_when;
use shaper::{Args, Config, Error};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from(Args::parse());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brain-shaper: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    tracing::info!(
        "shaping {addr} → {}: {:?}, {}",
        config.upstream,
        config.profile,
        config.shape
    );
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {addr}")
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)?;
    drop(stdout);
    let (watch_stdin, max_run) = (config.watch_stdin, config.max_run);
    let summary = shaper::run(listener, config, async move {
        let reason = stop_when(watch_stdin, max_run).await;
        tracing::info!("stopping: {reason}");
    })
    .await;
    eprintln!("{}", summary.to_json());
    Ok(())
}
