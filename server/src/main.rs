//! `brain-server`: reads the configuration, opens the database and serves.
//!
//! `brain-server backup FILE` writes an online backup instead: the database to FILE and the
//! jobs' files to `jobs` beside it, where a server started with `DATABASE_PATH=FILE` finds
//! them; `--help` lists every setting.

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
    /// Write a consistent copy of DATABASE_PATH to FILE and of DATA_DIR to `jobs` beside it,
    /// while the server runs
    Backup {
        /// Where to write the database's copy (the jobs' files go to `jobs` beside it); neither
        /// may exist yet
        file: PathBuf,
    },
}

/// Buffers of a megabyte or more (panels, results, upload batches) come from `mmap` and go
/// back to the system when freed. By default glibc raises that threshold each time such a
/// buffer is freed, up to 32 MiB, after which panels of a few MiB are carved from its
/// per-thread arenas and stay there: with wasm volunteers on an 8192² job the server's peak
/// RSS was 316 MB with the default and 192 MB with this (`make bench-bigjob`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers() {
    // SAFETY: mallopt only sets a parameter of the allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers() {}

#[tokio::main]
async fn main() {
    return_large_buffers();
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
    if config.database_url.is_some() {
        eprintln!(
            "brain-server: DATABASE_URL is PostgreSQL, which this command does not copy: back it \
             up with pg_dump (or your provider's backups), and DATA_DIR beside it"
        );
        std::process::exit(1);
    }
    if !config.database_path.exists() {
        eprintln!(
            "brain-server: no database at {}",
            config.database_path.display()
        );
        std::process::exit(1);
    }
    // The jobs' files go where a server started with DATABASE_PATH=FILE looks for them.
    let dest_jobs = dest
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("jobs");
    for taken in [dest, dest_jobs.as_path()] {
        if taken.exists() {
            eprintln!(
                "brain-server: {} exists; choose a new file",
                taken.display()
            );
            std::process::exit(1);
        }
    }
    let result = async {
        let store = server::store::Store::open(&config.data_dir)
            .map_err(|e| format!("DATA_DIR {}: {e}", config.data_dir.display()))?;
        let pool = server::db::connect(&config.database_path)
            .await
            .map_err(|e| e.to_string())?;
        // The database first: every tile it calls done is in the files by then.
        server::db::backup(&pool, dest)
            .await
            .map_err(|e| e.to_string())?;
        pool.close().await;
        let dest_jobs = dest_jobs.clone();
        tokio::task::spawn_blocking(move || store.copy_to(&dest_jobs))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("copying the jobs' files: {e}"))
    }
    .await;
    match result {
        Ok(jobs) => println!(
            "backed up {} to {}, and {jobs} jobs' files to {}",
            config.database_path.display(),
            dest.display(),
            dest_jobs.display()
        ),
        Err(e) => {
            eprintln!("brain-server: backup failed: {e}");
            std::process::exit(1);
        }
    }
}
