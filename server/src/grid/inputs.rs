//! The operands of running jobs, kept in memory for dispatch and verification.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::db::{self, Pool};
use crate::error::{Error, Result};
use crate::jobs::{Plan, Tile};
use crate::sync::LockExt;

/// A job's operands, as workers are sent them: A row-major, B cut into column panels.
pub struct JobInputs {
    pub plan: Plan,
    pub a: Bytes,
    pub b_panels: Bytes,
}

impl JobInputs {
    /// The bytes of a tile's two panels, as a delivery without a cache sends them.
    pub fn panel_bytes(&self, tile_row: i64, tile_col: i64) -> u64 {
        let p = &self.plan;
        let t = p.tile(tile_row as usize, tile_col as usize);
        ((t.rows * p.k + p.k * t.cols) * p.dtype.size()) as u64
    }

    /// A tile's panels: its rows of A and its column panel of B, as zero-copy slices.
    pub fn panels(&self, tile: &Tile) -> (Bytes, Bytes) {
        (
            self.plan.a_panel(&self.a, tile),
            self.plan.b_panel(&self.b_panels, tile),
        )
    }
}

/// Keeps the operands of running jobs in memory so that handing out a task is two zero-copy
/// slices rather than a read of two panels from SQLite. Loaded on first use, dropped when the
/// job ends, and bounded: past the budget the least recently used job is dropped (it is
/// simply read again if needed).
pub struct InputCache {
    entries: Mutex<CacheEntries>,
    budget_bytes: usize,
}

#[derive(Default)]
struct CacheEntries {
    map: HashMap<String, Arc<JobInputs>>,
    /// Least recently used first.
    order: VecDeque<String>,
}

impl InputCache {
    pub fn new(budget_bytes: usize) -> Self {
        InputCache {
            entries: Mutex::default(),
            budget_bytes,
        }
    }

    pub async fn get(&self, db: &Pool, job_id: &str) -> Result<Arc<JobInputs>> {
        if let Some(hit) = self.touch(job_id) {
            return Ok(hit);
        }
        let job = db::get_job(db, job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {job_id}")))?;
        let (a, b_panels) = db::job_inputs(db, job_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("inputs of job {job_id} are missing")))?;
        let plan = job.plan().map_err(Error::Internal)?;
        let inputs = Arc::new(JobInputs { plan, a, b_panels });
        self.insert(job_id, inputs.clone());
        Ok(inputs)
    }

    fn touch(&self, job_id: &str) -> Option<Arc<JobInputs>> {
        let mut guard = self.entries.lock_or_recover();
        let CacheEntries { map, order } = &mut *guard;
        let hit = map.get(job_id).cloned()?;
        order.retain(|id| id != job_id);
        order.push_back(job_id.to_owned());
        Some(hit)
    }

    /// Keeps a job's operands from the moment it is submitted, so its first tasks go out
    /// without reading back from the database what the request just wrote there.
    pub fn insert(&self, job_id: &str, inputs: Arc<JobInputs>) {
        let mut guard = self.entries.lock_or_recover();
        let CacheEntries { map, order } = &mut *guard;
        map.insert(job_id.to_owned(), inputs);
        order.retain(|id| id != job_id);
        order.push_back(job_id.to_owned());
        let size = |m: &HashMap<String, Arc<JobInputs>>| {
            m.values()
                .map(|i| i.a.len() + i.b_panels.len())
                .sum::<usize>()
        };
        while order.len() > 1 && size(map) > self.budget_bytes {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    pub fn remove(&self, job_id: &str) {
        let mut guard = self.entries.lock_or_recover();
        let CacheEntries { map, order } = &mut *guard;
        map.remove(job_id);
        order.retain(|id| id != job_id);
    }
}
