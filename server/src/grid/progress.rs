//! Progress not yet shown to dashboards: tile changes and jobs whose counts changed.
//!
//! The hot paths note changes here and return; a transport flushes them a few times a second
//! (see `broadcast`), so a job finishing thousands of tiles a second costs dashboards a
//! bounded stream of messages and costs dispatch nothing when nobody watches.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::status::TaskState;
use crate::sync::LockExt;

/// A tile's new state, waiting for the next flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileChange {
    pub job_id: String,
    pub task_id: i64,
    pub row: i64,
    pub col: i64,
    pub state: TaskState,
}

#[derive(Default)]
pub struct Progress {
    tiles: Mutex<Vec<TileChange>>,
    jobs: Mutex<HashSet<String>>,
}

impl Progress {
    /// Notes that a job's progress changed (its row is sent at the next flush).
    pub fn job(&self, job_id: &str) {
        self.jobs.lock_or_recover().insert(job_id.to_owned());
    }

    /// Notes a tile's new state, and that its job's progress changed.
    pub fn tile(&self, job_id: &str, task_id: i64, row: i64, col: i64, state: TaskState) {
        self.job(job_id);
        self.tiles.lock_or_recover().push(TileChange {
            job_id: job_id.to_owned(),
            task_id,
            row,
            col,
            state,
        });
    }

    /// Everything noted since the last call: tile changes in order, and the changed jobs.
    pub fn take(&self) -> (Vec<TileChange>, Vec<String>) {
        let tiles = std::mem::take(&mut *self.tiles.lock_or_recover());
        let jobs = self.jobs.lock_or_recover().drain().collect();
        (tiles, jobs)
    }
}
