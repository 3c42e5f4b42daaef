//! `brain-server`: reads the configuration, opens the database and serves.
//!
//! `brain-server backup FILE` writes an online backup of the database instead; `--help` lists
//! every setting.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use server::config::{AppEnv, Config, Settings};
use tracing_subscriber::EnvFilter;

/// The Distributed Brain orchestrator: shards matrix jobs into tile tasks and leases them to
/// browser workers. Without a command, serves.
#[derive(Parser)]
#[command(name = "brain-server", disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Write a consistent copy of DATABASE_PATH to FILE, while the server runs
    Backup {
        /// Where to write the copy; must not exist yet
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() {
    // Before clap reads the environment. A missing .env is normal; a malformed one is the
    // operator's to see in the logs.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let config = match Config::from_settings(cli.settings) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("brain-server: configuration error: {e}");
            std::process::exit(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,tower_http=info,socketioxide=warn,engineioxide=warn")
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if config.app_env == AppEnv::Production {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Some(Command::Backup { file }) = cli.command {
        return backup(&config, &file).await;
    }
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let database = config.database_path.clone();
    let (router, state) = match server::build(config).await {
        Ok(built) => built,
        Err(e) => {
            eprintln!(
                "brain-server: cannot open database {}: {e}",
                database.display()
            );
            std::process::exit(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("brain-server: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    // Tests and scripts read this line to find an ephemeral port.
    println!("listening on http://{local}");
    tracing::info!(%local, database = %database.display(), "server started");
    if let Err(e) = server::run(listener, router, state, shutdown_signal()).await {
        eprintln!("brain-server: {e}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn backup(config: &Config, dest: &std::path::Path) {
    if !config.database_path.exists() {
        eprintln!(
            "brain-server: no database at {}",
            config.database_path.display()
        );
        std::process::exit(1);
    }
    if dest.exists() {
        eprintln!("brain-server: {} exists; choose a new file", dest.display());
        std::process::exit(1);
    }
    let result = async {
        let pool = server::db::connect(&config.database_path).await?;
        server::db::backup(&pool, dest).await?;
        pool.close().await;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    match result {
        Ok(()) => println!(
            "backed up {} to {}",
            config.database_path.display(),
            dest.display()
        ),
        Err(e) => {
            eprintln!("brain-server: backup failed: {e}");
            std::process::exit(1);
        }
    }
}
