//! The inputs of running jobs as dispatch and verification need them: each job's plan, and
//! its panels read from the store through a cache of bounded size (`PANEL_CACHE_BYTES`).
//! Nothing else of a job's inputs is ever in memory, whatever the job's size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::db::{self, Pool};
use crate::error::{Error, Result};
use crate::jobs::{Plan, Tile};
use crate::panels::Operand;
use crate::store::{Part, Store};
use crate::sync::LockExt;

/// A panel's key: its job, its operand, and its tile row (A) or column (B).
type Key = (String, Operand, usize);

pub struct Inputs {
    store: Arc<Store>,
    /// Plans of the jobs seen running; a job's entry goes when it ends.
    plans: Mutex<HashMap<String, Plan>>,
    panels: Mutex<Panels>,
    budget_bytes: usize,
}

/// Panels with the time each was last used: a hit only stamps its panel (every task touches
/// two), and the least recently used is looked for only when the budget is passed.
#[derive(Default)]
struct Panels {
    map: HashMap<Key, (Bytes, u64)>,
    /// The last stamp given.
    clock: u64,
    bytes: usize,
}

impl Inputs {
    pub fn new(store: Arc<Store>, budget_bytes: usize) -> Self {
        Inputs {
            store,
            plans: Mutex::default(),
            panels: Mutex::default(),
            budget_bytes,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Notes a job's plan as it is submitted, so its first tasks need no database read.
    pub fn insert_plan(&self, job_id: &str, plan: Plan) {
        self.plans.lock_or_recover().insert(job_id.to_owned(), plan);
    }

    /// A job's plan.
    pub async fn plan(&self, db: &Pool, job_id: &str) -> Result<Plan> {
        if let Some(plan) = self.plans.lock_or_recover().get(job_id) {
            return Ok(*plan);
        }
        let job = db::get_job(db, job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no job {job_id}")))?;
        let plan = job.plan().map_err(Error::Internal)?;
        self.insert_plan(job_id, plan);
        Ok(plan)
    }

    /// A tile of a job, with its panels of A and B.
    pub async fn panels(
        &self,
        db: &Pool,
        job_id: &str,
        tile_row: usize,
        tile_col: usize,
    ) -> Result<(Plan, Tile, Bytes, Bytes)> {
        let plan = self.plan(db, job_id).await?;
        let tile = plan.tile(tile_row, tile_col);
        let a = self.panel(job_id, &plan, &tile, Operand::A).await?;
        let b = self.panel(job_id, &plan, &tile, Operand::B).await?;
        Ok((plan, tile, a, b))
    }

    async fn panel(
        &self,
        job_id: &str,
        plan: &Plan,
        tile: &Tile,
        operand: Operand,
    ) -> Result<Bytes> {
        let index = match operand {
            Operand::A => tile.tile_row,
            Operand::B => tile.tile_col,
        };
        let key = (job_id.to_owned(), operand, index);
        if let Some(hit) = self.touch(&key) {
            return Ok(hit);
        }
        let (store, job, plan, tile) = (self.store.clone(), job_id.to_owned(), *plan, *tile);
        let read = tokio::task::spawn_blocking(move || match operand {
            Operand::A => store.read_rows(&job, Part::A, plan.dtype, plan.k, tile.row0, tile.rows),
            Operand::B => store.read_block(
                &job,
                Part::B,
                plan.dtype,
                plan.n,
                (0, plan.k),
                (tile.col0, tile.cols),
            ),
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| match e.kind() {
            // Gone for good: the job cannot go on (see `dispatch::serve`).
            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof => {
                Error::Gone(format!("its inputs are missing from DATA_DIR ({e})"))
            }
            _ => Error::Internal(format!("reading a panel of job {job_id}: {e}")),
        })?;
        let panel = Bytes::from(read);
        self.keep(key, panel.clone());
        Ok(panel)
    }

    fn touch(&self, key: &Key) -> Option<Bytes> {
        let mut guard = self.panels.lock_or_recover();
        let p = &mut *guard;
        p.clock += 1;
        let (panel, used) = p.map.get_mut(key)?;
        *used = p.clock;
        Some(panel.clone())
    }

    /// Keeps a panel, dropping the least recently used past the budget (the newest always
    /// stays: it is about to be sent).
    fn keep(&self, key: Key, panel: Bytes) {
        let mut guard = self.panels.lock_or_recover();
        let p = &mut *guard;
        p.clock += 1;
        p.bytes += panel.len();
        if let Some((old, _)) = p.map.insert(key.clone(), (panel, p.clock)) {
            p.bytes -= old.len();
        }
        while p.map.len() > 1 && p.bytes > self.budget_bytes {
            let oldest = p
                .map
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some((gone, _)) = p.map.remove(&oldest) {
                p.bytes -= gone.len();
            }
        }
    }

    /// Bytes of panels held now.
    pub fn cached_bytes(&self) -> usize {
        self.panels.lock_or_recover().bytes
    }

    /// Forgets a job that ended: its plan and its panels.
    pub fn remove(&self, job_id: &str) {
        self.plans.lock_or_recover().remove(job_id);
        let mut guard = self.panels.lock_or_recover();
        let p = &mut *guard;
        let mut freed = 0;
        p.map.retain(|(job, _, _), (panel, _)| {
            let keep = job != job_id;
            if !keep {
                freed += panel.len();
            }
            keep
        });
        p.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Dtype;

    #[tokio::test]
    async fn panels_are_read_once_and_the_cache_keeps_to_its_budget() {
        let root = std::env::temp_dir().join(format!("brain-inputs-{}", uuid::Uuid::new_v4()));
        let store = Arc::new(Store::open(&root).expect("a store"));
        // A 4×2·2×4 f64 job in 1×1 tiles: every panel is 16 bytes.
        let plan = Plan {
            dtype: Dtype::F64,
            m: 4,
            k: 2,
            n: 4,
            tile: 1,
        };
        let upload = store.begin("job").expect("begun");
        for part in [Part::A, Part::B] {
            let (rows, cols) = if part == Part::A { (4, 2) } else { (2, 4) };
            let mut w = upload
                .matrix(part, Dtype::F64, rows, cols, false)
                .expect("file");
            let data: Vec<u8> = (0..8).flat_map(|v| f64::from(v).to_le_bytes()).collect();
            w.write(&data).expect("fits");
            w.finish().expect("whole");
        }
        upload.finish(&plan).expect("finished");
        let inputs = Inputs::new(store.clone(), 48);
        inputs.insert_plan("job", plan);
        let pool = db::connect(&root.join("brain.db"))
            .await
            .expect("a database");
        let (_, tile, a, b) = inputs.panels(&pool, "job", 1, 2).await.expect("panels");
        assert_eq!((tile.row0, tile.col0), (1, 2));
        let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(&a[..], &f64s(&[2.0, 3.0])[..], "row 1 of A");
        assert_eq!(&b[..], &f64s(&[2.0, 6.0])[..], "column 2 of B");
        // Served from memory now, even with the file gone.
        store.remove_inputs("job").expect("removed");
        assert!(inputs.panels(&pool, "job", 1, 2).await.is_ok());
        assert!(
            inputs.panels(&pool, "job", 3, 3).await.is_err(),
            "not cached"
        );
        assert!(inputs.cached_bytes() <= 48);
        inputs.remove("job");
        assert_eq!(inputs.cached_bytes(), 0);
        pool.close().await;
        let _ = std::fs::remove_dir_all(root);
    }
}
