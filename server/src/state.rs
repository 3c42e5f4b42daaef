//! What the transports share: the configuration, the database, the Socket.io handle, the
//! grid, and the per-address limits.

use std::sync::Arc;
use std::time::Instant;

use socketioxide::SocketIo;

use crate::admission::ClientLimits;
use crate::bus::Adapter;
use crate::config::Config;
use crate::db::Pool;
use crate::grid::Grid;

/// Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Pool,
    /// Emits broadcasts (dashboards, grid statistics) from outside any handler.
    pub io: SocketIo<Adapter>,
    pub grid: Arc<Grid>,
    /// Connection and event-rate limits per client.
    pub limits: Arc<ClientLimits>,
    pub started: Instant,
    /// Today's statistics export, built once per UTC day (see `http::credit`).
    pub stats_export: Arc<crate::credit::DailyExport>,
}
