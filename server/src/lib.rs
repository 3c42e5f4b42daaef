//! Distributed Brain orchestrator: takes matrix-multiplication jobs over HTTP, shards them
//! into tile tasks stored in SQLite, leases the tasks to browser workers over Socket.io, and
//! assembles the product from their results.
//!
//! `main.rs` only reads the configuration and calls [`build`] and [`run`]. The end-to-end
//! tests (`tests/e2e`) run that binary on an ephemeral port with a temporary database; the
//! decisions it makes are unit-tested where they live (e.g. `trust`, `verify`, `jobs`).

pub mod address;
pub mod admission;
pub mod blocks;
pub mod broadcast;
pub mod bus;
pub mod commit;
pub mod config;
pub mod credit;
pub mod db;
pub mod error;
pub mod gate;
pub mod grid;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod npy;
pub mod panels;
pub mod peer;
pub mod protocol;
pub mod recovery;
pub mod socket;
pub mod state;
pub mod status;
pub mod store;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod trust;
pub mod upgrade;
pub mod upload;
pub mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method};
use axum::Router;
use socketioxide::extract::SocketRef;
use socketioxide::handler::ConnectHandler;
use socketioxide::{ParserConfig, SocketIo};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::{AllowedOrigins, Config};
use crate::grid::Grid;
use crate::state::AppState;

/// How long an Engine.IO session may go without connecting to Socket.io.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the database (re-queuing leases left by a previous process) and assembles the app:
/// HTTP routes, the Socket.io layer behind its handshake gate, and CORS, around one shared
/// [`AppState`].
pub async fn build(config: Config) -> Result<(Router, AppState), sqlx::Error> {
    if let Some(id) = &config.instance_id {
        db::set_instance(id)?;
    }
    let db = match &config.database_url {
        Some(url) => db::connect_postgres(url, config.database_max_connections).await?,
        None => db::connect(&config.database_path).await?,
    };
    let requeued = db::requeue_own_leases(&db).await?;
    db::forget_connections(&db).await?;
    if requeued > 0 {
        tracing::info!(requeued, "re-queued tasks leased before the restart");
    }
    let bus = match &config.redis_url {
        Some(url) => bus::Bus::connect(url)
            .await
            .map_err(|e| sqlx::Error::Configuration(format!("REDIS_URL: {e}").into()))?,
        None => bus::Bus::Alone,
    };
    let max_message = config.limits.max_message_bytes;
    let (socket_layer, io) = SocketIo::builder()
        .with_adapter::<bus::Adapter>(bus.adapter())
        .req_path(gate::SOCKET_IO_PATH)
        // An Engine.IO session that has not connected to Socket.io by then is closed: a
        // client sends its CONNECT right after the handshake, and a session refused at the
        // CONNECT, or never meant to connect, should not hold its place in the address's
        // session budget (see `gate`) for socketioxide's default 45 s.
        .connect_timeout(CONNECT_TIMEOUT)
        // A silent peer is noticed after interval + timeout; leases cover the rest.
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(10))
        // The three separate limits of Socket.io: long-polling bodies, websocket messages and
        // frames, and binary attachments. Workers use websockets; all three are the same.
        .max_payload(max_message as u64)
        .ws_max_message_size(max_message)
        .ws_max_frame_size(max_message)
        .with_parser(ParserConfig::common().max_incoming_binary_buf_size(max_message))
        .build_layer();
    for warning in &config.retired {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(config);
    let outbox = Box::new(socket::SocketOutbox(io.clone()));
    let store = Arc::new(store::Store::open(&config.data_dir).map_err(|e| {
        sqlx::Error::Configuration(format!("DATA_DIR {}: {e}", config.data_dir.display()).into())
    })?);
    match upgrade::move_blobs(&db, &store).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            jobs = n,
            "moved jobs' matrices from the database to DATA_DIR"
        ),
        Err(e) => {
            return Err(sqlx::Error::Protocol(format!(
                "moving jobs to DATA_DIR: {e}"
            )))
        }
    }
    let clean = store.take_clean_mark().map_err(|e| {
        sqlx::Error::Configuration(format!("DATA_DIR {}: {e}", config.data_dir.display()).into())
    })?;
    if !clean {
        match recovery::requeue_lost_tiles(&db, &store).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(tiles = n, "re-queued tiles lost in an unclean stop"),
            Err(e) => return Err(sqlx::Error::Protocol(format!("checking results: {e}"))),
        }
    }
    let state = AppState {
        grid: Grid::new(config.clone(), db.clone(), store, outbox),
        config,
        db,
        io: io.clone(),
        limits: Default::default(),
        started: Instant::now(),
        stats_export: Default::default(),
    };
    // The namespace handler captures the state rather than using socketioxide's `with_state`:
    // the state holds the `SocketIo` handle for broadcasts, which exists only once built.
    let admit_state = state.clone();
    // Everything happens in the middleware, before the client is told it is connected (see
    // `socket::admit`); the connect handler has nothing left to do.
    let handler = |_: SocketRef<bus::Adapter>| std::future::ready(());
    let middleware =
        move |s: SocketRef<bus::Adapter>| std::future::ready(socket::admit(&s, &admit_state));
    // With Redis, this subscribes to the other instances' messages.
    io.ns("/", handler.with(middleware))
        .await
        .map_err(|e| sqlx::Error::Configuration(format!("REDIS_URL: {e}").into()))?;
    let cors = cors_layer(&state.config.allowed_origins);
    // The gate runs before the Socket.io layer, so that a handshake is counted against its
    // address before socketioxide creates the session.
    let handshake_gate = axum::middleware::from_fn_with_state(state.clone(), gate::handshake);
    let router = http::router(state.clone())
        .layer(socket_layer)
        .layer(handshake_gate)
        .layer(cors)
        .layer(TraceLayer::new_for_http());
    Ok((router, state))
}

/// CORS for the API: a volunteer page served from another allowed origin uses every method
/// the API has, `PUT /api/me` (its name and team) included.
fn cors_layer(origins: &AllowedOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any);
    match origins {
        AllowedOrigins::Any => layer.allow_origin(Any),
        AllowedOrigins::List(list) => layer.allow_origin(AllowOrigin::list(
            list.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        )),
    }
}

/// Moves the rolling "24h" credit window on every [`CREDIT_SWEEP`] (and [`run`] once before it
/// serves). Every instance runs it; the sweep's transaction makes all but the first in an hour
/// find nothing to do. The boards lag the hour by at most this period.
async fn sweep_credit_window(pool: db::Pool) {
    let first = tokio::time::Instant::now() + CREDIT_SWEEP;
    let mut ticker = tokio::time::interval_at(first, CREDIT_SWEEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        sweep_credit_window_once(&pool).await;
    }
}

async fn sweep_credit_window_once(pool: &db::Pool) {
    match db::credit::sweep_credit_window(pool, db::now_ms()).await {
        Ok(Some(hour)) => tracing::info!(swept_through = hour, "credit window moved on"),
        Ok(None) => {}
        // The next sweep catches up, in one statement per table whatever the gap.
        Err(e) => tracing::warn!(error = %e, "sweeping the credit window failed"),
    }
}

/// How often the credit window is swept: an hour leaves the "24h" boards at most this late.
const CREDIT_SWEEP: Duration = Duration::from_secs(60);

/// Serves until `shutdown` completes, with the grid's loops and the broadcasts alongside.
pub async fn run(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut background = state.grid.spawn_loops();
    background.push(tokio::spawn(broadcast::broadcast_loop(state.clone())));
    // Once before serving, so that the boards never show hours that left while it was down.
    sweep_credit_window_once(&state.db).await;
    background.push(tokio::spawn(sweep_credit_window(state.db.clone())));
    let app = router.into_make_service_with_connect_info::<peer::Peer>();
    let st = state.clone();
    let graceful = async move {
        shutdown.await;
        // Stop handing out and accepting work, tell the pages (they reconnect quietly), let
        // results already being verified and committed finish, then close every socket.
        st.grid.shut_down();
        tracing::info!("shutting down: notifying workers");
        // Only this instance's sockets: with Redis, `emit` would reach every instance's.
        let _ = st
            .io
            .local()
            .emit(
                "server_shutdown",
                &serde_json::json!({ "reconnect_ms": 1000 }),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        st.io.close().await;
    };
    let served = axum::serve(peer::Listener(listener), app)
        .with_graceful_shutdown(graceful)
        .await;
    for task in background {
        task.abort();
    }
    // Whatever was still leased goes back to the queue now rather than at the next start.
    if let Err(e) = db::forget_connections(&state.db).await {
        tracing::error!(error = %e, "removing the published connections at shutdown failed");
    }
    match db::requeue_own_leases(&state.db).await {
        Ok(n) if n > 0 => tracing::info!(requeued = n, "leases returned to the queue"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "re-queuing leases at shutdown failed"),
    }
    state.db.close().await;
    // Nothing can write a tile any more: sync the results and leave the clean mark.
    let store = state.grid.store().clone();
    match tokio::task::spawn_blocking(move || store.mark_clean()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "syncing results at shutdown failed"),
        Err(e) => tracing::error!(error = %e, "syncing results at shutdown failed"),
    }
    tracing::info!("shut down");
    served
}
