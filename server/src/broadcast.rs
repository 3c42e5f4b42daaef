//! What dashboards and volunteers are told without asking: tile and job progress for the
//! `dashboard` room, and grid statistics for everyone.
//!
//! The grid notes progress as it happens (`grid::progress`); one ticker here flushes it a few
//! times a second, so a job finishing thousands of tiles a second costs dashboards a bounded
//! stream of messages and costs dispatch nothing when nobody watches.

use std::time::Duration;

use crate::db;
use crate::protocol::{GridStats, TileUpdate};
use crate::state::AppState;
use crate::status::JobStatus;

/// The room dashboards join with `subscribe_dashboard`.
pub const DASHBOARD_ROOM: &str = "dashboard";

/// Flushes progress to dashboards every 250 ms and grid statistics to everyone every 2 s.
pub async fn broadcast_loop(state: AppState) {
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        ticker.tick().await;
        ticks += 1;
        let (tiles, dirty) = state.grid.progress.take();
        // Progress made here goes to dashboards on every instance (through Redis when set):
        // worth sending when any instance has one.
        let load = state.grid.load();
        if load.dashboards > 0 {
            for t in &tiles {
                let update = TileUpdate {
                    job_id: &t.job_id,
                    task_id: t.task_id,
                    row: t.row,
                    col: t.col,
                    state: t.state,
                };
                let _ = state
                    .io
                    .to(DASHBOARD_ROOM)
                    .emit("tile_update", &update)
                    .await;
            }
            for job_id in dirty {
                match db::get_job(&state.db, &job_id).await {
                    Ok(Some(job)) => {
                        let _ = state.io.to(DASHBOARD_ROOM).emit("job_update", &job).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "reading a job for dashboards failed"),
                }
            }
        }
        if ticks.is_multiple_of(8) {
            let jobs_running = match db::counts(&state.db).await {
                Ok((jobs, _)) => jobs
                    .iter()
                    .filter(|(s, _)| *s == JobStatus::Running)
                    .map(|(_, c)| *c)
                    .sum(),
                Err(_) => 0,
            };
            let stats = GridStats {
                workers_online: load.workers as usize,
                tasks_per_sec: load.tasks_per_sec,
                gflops: load.gflops,
                jobs_running,
                server_time: db::now_ms(),
            };
            // The whole grid's figures, which every instance sends its own sockets.
            let _ = state.io.local().emit("grid_stats", &stats).await;
        }
    }
}
