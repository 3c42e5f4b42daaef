//! `brain-server`: reads the configuration, opens the database and serves.

use server::config::{AppEnv, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let config = match Config::from_env() {
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
