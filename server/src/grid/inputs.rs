//! The inputs of running jobs as dispatch and verification need them: each job's plan, and
//! its panels read from the store through a cache of bounded size (`PANEL_CACHE_BYTES`).
//!
//! A job's B that fits in half that budget is also held whole, as its upload gave it
//! ([`Inputs::reserve`], [`Inputs::keep_resident`]), while the job runs. Inputs are written
//! past the page cache, so without that a job's first B panel reads the whole of B cold from
//! the disk (a column panel has a piece in every row): 18–26 ms of a 2048² job's first task
//! on the page's benchmark (docs/benchmarks.md). A's first rows ([`A_FIRST_BYTES`]) are
//! kept from the upload too, as the first row panels in the cache. Beyond these, nothing of
//! a job's inputs is in memory, whatever the job's size.
//!
//! On PostgreSQL the inputs' home is the database (`db::chunks`), and the store in
//! `DATA_DIR` is this instance's copy of them: made the first time a panel of the job is
//! needed here, one fetch per job however many ask at once, and removed once the job has
//! ended (see [`Inputs::sweep_copies`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::db::{self, chunks, Engine, Pool};
use crate::error::{Error, Result};
use crate::jobs::{Plan, Tile};
use crate::panels::Operand;
use crate::store::{layout, Part, Store};
use crate::sync::LockExt;

/// How often an instance on PostgreSQL looks for copies of jobs that ended elsewhere.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Chunks fetched per statement when copying a job's inputs in: 4 MiB, held twice (the rows
/// as read, then as written).
const FETCH_CHUNKS: i64 = 4;

/// Whether this instance holds a job's inputs in its store: `true` once checked or copied.
/// Readers hold it shared while they read, so a copy being made or removed is never read.
type LocalCopy = Arc<RwLock<bool>>;

/// A panel's key: its job, its operand, and its tile row (A) or column (B).
type Key = (String, Operand, usize);

pub struct Inputs {
    store: Arc<Store>,
    /// Plans of the jobs seen running; a job's entry goes when it ends.
    plans: Mutex<HashMap<String, Plan>>,
    panels: Mutex<Panels>,
    budget_bytes: usize,
    /// On PostgreSQL: the jobs whose inputs this instance has copied in, or is copying.
    copies: Mutex<HashMap<String, LocalCopy>>,
    /// On PostgreSQL: jobs being submitted here, whose folder exists before their row does.
    submitting: Mutex<HashSet<String>>,
    /// When [`Inputs::sweep_copies`] last ran.
    swept: Mutex<Option<Instant>>,
    /// On PostgreSQL: jobs forgotten lately, and when. A task claimed just before its job
    /// ended may still ask for its panels; no copy is made for it (the job's folder would
    /// come back after its removal). Kept a minute.
    ended: Mutex<HashMap<String, Instant>>,
    /// B held whole, by job, as its upload wrote it (row-major), with the memory it holds.
    resident: Mutex<HashMap<String, (Bytes, Hold)>>,
    /// Bytes held by [`Hold`]s: uploads under way that keep a copy, and `resident`.
    held: Arc<AtomicUsize>,
}

/// What an upload kept in memory as well (little-endian, as written), each with the memory
/// it holds: for [`Inputs::keep_resident`].
#[derive(Debug, Default)]
pub struct Kept {
    /// A's first rows, up to [`A_FIRST_BYTES`].
    pub a: Option<(Vec<u8>, Hold)>,
    /// B whole.
    pub b: Option<(Vec<u8>, Hold)>,
}

/// Of A, the upload keeps this much of its first rows: the first row panels, which the job's
/// first tasks need the moment it is accepted. Read from the file (written past the page
/// cache) the first of them cost 5–6 ms of the first task, on the page's benchmark; the copy
/// costs the upload about 1 ms. The whole of A is not kept: each of its other panels is one
/// contiguous read, and holding all of it cost the upload about as much as it saved
/// (docs/benchmarks.md).
pub const A_FIRST_BYTES: usize = 4 << 20;

/// Bytes of the panel budget set aside for an input held whole; given back when dropped.
#[derive(Debug)]
pub struct Hold {
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl Hold {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
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
            copies: Mutex::default(),
            submitting: Mutex::default(),
            swept: Mutex::default(),
            ended: Mutex::default(),
            resident: Mutex::default(),
            held: Arc::default(),
        }
    }

    /// Sets memory aside for an input of `bytes` to be held as its upload comes, if it fits:
    /// a B whole, an A's first [`A_FIRST_BYTES`]. All holds together take at most half the
    /// panel budget, so the panel cache always keeps the other half. `None`: the input is
    /// read from the store as it is needed.
    pub fn reserve(&self, part: Part, bytes: u64) -> Option<Hold> {
        let bytes = usize::try_from(bytes).ok()?;
        let bytes = match part {
            Part::A => bytes.min(A_FIRST_BYTES),
            Part::B => bytes,
            Part::C | Part::Partials => return None,
        };
        let limit = self.budget_bytes / 2;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|after| *after <= limit)
            })
            .ok()?;
        let hold = Hold {
            bytes,
            held: self.held.clone(),
        };
        // The copy is made as the upload comes: the cache gives the room up now, so that the
        // two together stay within the budget all along.
        self.trim(&mut self.panels.lock_or_recover(), None);
        Some(hold)
    }

    /// Keeps a job's B that its upload held whole (row-major, as in its file), until the job
    /// is removed; not if its length does not match the plan. A's first rows go into the
    /// panel cache as the row panels they hold whole.
    pub fn keep_resident(&self, job_id: &str, plan: &Plan, kept: Kept) {
        // A split job's A panels are pieces of rows: only a whole-k job's are A's first rows.
        if let Some((bytes, _hold)) = kept.a.filter(|_| plan.split == 1) {
            let first = Bytes::from(bytes);
            let row = plan.k * plan.dtype.size();
            for tile_row in 0..plan.tile_rows() {
                let t = plan.tile(tile_row, 0);
                let (from, to) = (t.row0 * row, (t.row0 + t.rows) * row);
                if to > first.len() {
                    break;
                }
                self.keep(
                    (job_id.to_owned(), Operand::A, tile_row),
                    first.slice(from..to),
                );
            }
        }
        let Some((bytes, hold)) = kept.b else { return };
        if bytes.len() == plan.k * plan.n * plan.dtype.size() {
            self.resident
                .lock_or_recover()
                .insert(job_id.to_owned(), (Bytes::from(bytes), hold));
        }
    }

    /// A B panel gathered from a B held whole: one piece a row.
    async fn resident_panel(
        &self,
        job_id: &str,
        plan: &Plan,
        tile: &Tile,
    ) -> Option<Result<Bytes>> {
        let b = self.resident.lock_or_recover().get(job_id)?.0.clone();
        let (plan, tile) = (*plan, *tile);
        let cut = tokio::task::spawn_blocking(move || Bytes::from(column_panel(&b, &plan, &tile)));
        Some(cut.await.map_err(|e| Error::Internal(e.to_string())))
    }

    /// Bytes of inputs held whole (and of uploads under way that hold a copy).
    pub fn resident_bytes(&self) -> usize {
        self.held.load(Ordering::Acquire)
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
        let a = self.panel(db, job_id, &plan, &tile, Operand::A).await?;
        let b = self.panel(db, job_id, &plan, &tile, Operand::B).await?;
        Ok((plan, tile, a, b))
    }

    async fn panel(
        &self,
        db: &Pool,
        job_id: &str,
        plan: &Plan,
        tile: &Tile,
        operand: Operand,
    ) -> Result<Bytes> {
        let index = match operand {
            Operand::A => plan.a_key(tile),
            Operand::B => tile.tile_col,
        };
        let key = (job_id.to_owned(), operand, index);
        if let Some(hit) = self.touch(&key) {
            return Ok(hit);
        }
        if operand == Operand::B {
            if let Some(cut) = self.resident_panel(job_id, plan, tile).await {
                let panel = cut?;
                self.keep(key, panel.clone());
                return Ok(panel);
            }
        }
        // On PostgreSQL: the inputs copied in, and kept while they are read.
        let _copy = match db::engine() {
            Engine::Sqlite => None,
            Engine::Postgres => Some(self.copy(db, job_id, plan).await?),
        };
        let (store, job, plan, tile) = (self.store.clone(), job_id.to_owned(), *plan, *tile);
        let read = tokio::task::spawn_blocking(move || store.panel(&job, &plan, &tile, operand))
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

    /// This instance's copy of a job's inputs (PostgreSQL), made now if it has none: one
    /// fetch at a time per job; whoever asks meanwhile waits for it. Held shared while read.
    async fn copy(
        &self,
        db: &Pool,
        job_id: &str,
        plan: &Plan,
    ) -> Result<OwnedRwLockReadGuard<bool>> {
        let ended = || {
            let ended = self.ended.lock_or_recover().contains_key(job_id);
            ended.then(|| Error::Gone("the job has ended".into()))
        };
        if let Some(e) = ended() {
            return Err(e);
        }
        let copy = self
            .copies
            .lock_or_recover()
            .entry(job_id.to_owned())
            .or_default()
            .clone();
        let held = copy.clone().read_owned().await;
        if *held {
            return Ok(held);
        }
        drop(held);
        let mut made = copy.write_owned().await;
        if !*made {
            if let Some(e) = ended() {
                return Err(e);
            }
            for part in [Part::A, Part::B] {
                if let Err(e) = self.fetch(db, job_id, plan, part).await {
                    // The next reader tries afresh; a job that ended leaves no entry behind.
                    self.copies.lock_or_recover().remove(job_id);
                    let Error::NotFound(why) = e else {
                        return Err(e);
                    };
                    // Its inputs are gone from the database: the job ended. Nothing of the
                    // copy begun here stays.
                    let (store, job) = (self.store.clone(), job_id.to_owned());
                    let _ = tokio::task::spawn_blocking(move || store.remove(&job)).await;
                    return Err(Error::Gone(format!(
                        "its inputs are missing from the database ({why})"
                    )));
                }
            }
            *made = true;
        }
        Ok(made.downgrade())
    }

    /// Copies one input from the database into the store, unless it is there already.
    async fn fetch(&self, db: &Pool, job_id: &str, plan: &Plan, part: Part) -> Result<()> {
        let (store, job) = (self.store.clone(), job_id.to_owned());
        let blocking = |e: tokio::task::JoinError| Error::Internal(e.to_string());
        let io =
            |e: std::io::Error| Error::Internal(format!("copying the inputs of job {job_id}: {e}"));
        let there = tokio::task::spawn_blocking(move || store.has(&job, part))
            .await
            .map_err(blocking)?
            .map_err(io)?;
        if there {
            return Ok(());
        }
        let started = Instant::now();
        let len = layout::file_len(plan, part);
        let count = layout::chunk_count(len, chunks::CHUNK_BYTES) as i64;
        let name = if part == Part::A { "a" } else { "b" };
        let (store, job) = (self.store.clone(), job_id.to_owned());
        let mut replica = tokio::task::spawn_blocking(move || store.replica(&job, part))
            .await
            .map_err(blocking)?
            .map_err(io)?;
        let mut seq = 0;
        while seq < count {
            let batch =
                chunks::read_chunks(db, job_id, name, seq, FETCH_CHUNKS.min(count - seq)).await?;
            let expected = FETCH_CHUNKS.min(count - seq);
            if batch.len() as i64 != expected
                || batch
                    .iter()
                    .enumerate()
                    .any(|(i, (s, _))| *s != seq + i as i64)
            {
                return Err(Error::NotFound(format!("chunk {seq} of {name} is missing")));
            }
            replica = tokio::task::spawn_blocking(move || {
                batch
                    .iter()
                    .try_for_each(|(_, bytes)| replica.write(bytes))
                    .map(|()| replica)
            })
            .await
            .map_err(blocking)?
            .map_err(io)?;
            seq += expected;
        }
        tokio::task::spawn_blocking(move || replica.finish(len))
            .await
            .map_err(blocking)?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(e.to_string()),
                _ => io(e),
            })?;
        tracing::info!(
            job_id,
            input = name,
            bytes = len,
            ms = started.elapsed().as_millis() as u64,
            "copied a job's input from the database"
        );
        Ok(())
    }

    /// On PostgreSQL: waits until no copy of a job's inputs is being made or read here, and
    /// keeps it so while the caller removes the job's files (see `Grid::forget_job`).
    pub async fn hold(&self, job_id: &str) -> Option<tokio::sync::OwnedRwLockWriteGuard<bool>> {
        if db::engine() != Engine::Postgres {
            return None;
        }
        let copy = self.copies.lock_or_recover().get(job_id).cloned()?;
        Some(copy.write_owned().await)
    }

    /// Notes a job being submitted here (PostgreSQL), until [`Inputs::submitted`]: its
    /// folder exists before its row, and the sweep must not take it for an ended job's.
    pub fn submitting(&self, job_id: &str) {
        self.submitting.lock_or_recover().insert(job_id.to_owned());
    }

    pub fn submitted(&self, job_id: &str) {
        self.submitting.lock_or_recover().remove(job_id);
    }

    /// On PostgreSQL, every [`SWEEP_EVERY`] (and at the first call): removes this instance's
    /// copies of jobs that ended, here or on another instance, and the inputs in the database
    /// of ended jobs that an instance left behind (it died between a job's end and their
    /// deletion). Bounded by the jobs with a folder here.
    pub async fn sweep_copies(&self, db: &Pool) {
        if db::engine() != Engine::Postgres {
            return;
        }
        {
            let mut swept = self.swept.lock_or_recover();
            if swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *swept = Some(Instant::now());
        }
        self.ended
            .lock_or_recover()
            .retain(|_, at| at.elapsed() < Duration::from_secs(60));
        match chunks::drop_ended_inputs(db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                chunks = n,
                "deleted the inputs that ended jobs left in the database"
            ),
            Err(e) => tracing::error!(error = %e, "deleting ended jobs' inputs failed"),
        }
        // In this order: a folder listed here whose job was not being submitted when the
        // list of those was taken has its row already, if it ever will.
        let store = self.store.clone();
        let Ok(Ok(here)) = tokio::task::spawn_blocking(move || store.jobs()).await else {
            return;
        };
        let submitting = self.submitting.lock_or_recover().clone();
        let open: HashSet<String> = match chunks::open_jobs(db).await {
            Ok(open) => open.into_iter().collect(),
            Err(e) => return tracing::error!(error = %e, "listing open jobs failed"),
        };
        for job_id in here {
            if open.contains(&job_id) || submitting.contains(&job_id) {
                continue;
            }
            self.drop_copy(&job_id).await;
        }
    }

    /// Removes this instance's copy of a job's inputs, and forgets the job, once no reader
    /// holds it.
    async fn drop_copy(&self, job_id: &str) {
        let copy = self.copies.lock_or_recover().get(job_id).cloned();
        let held = match copy {
            Some(copy) => Some(copy.write_owned().await),
            None => None,
        };
        self.remove(job_id);
        let (store, job) = (self.store.clone(), job_id.to_owned());
        match tokio::task::spawn_blocking(move || store.remove(&job)).await {
            Ok(Ok(())) => tracing::info!(job_id, "removed the copy of an ended job's inputs"),
            Ok(Err(e)) => tracing::error!(job_id, error = %e, "removing a job's inputs failed"),
            Err(_) => {}
        }
        drop(held);
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
        self.trim(p, Some(&key));
    }

    /// Drops the least recently used panels until the cache fits what the budget leaves
    /// beside the inputs held whole; `keeping` stays whatever it costs.
    fn trim(&self, p: &mut Panels, keeping: Option<&Key>) {
        let budget = self.budget_bytes.saturating_sub(self.resident_bytes());
        while p.bytes > budget {
            let oldest = p
                .map
                .iter()
                .filter(|(k, _)| Some(*k) != keeping)
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

    /// Forgets a job that ended: its plan, its panels, its inputs held whole, and whether its
    /// inputs are copied here.
    pub fn remove(&self, job_id: &str) {
        self.plans.lock_or_recover().remove(job_id);
        self.resident.lock_or_recover().remove(job_id);
        if db::engine() == Engine::Postgres {
            self.copies.lock_or_recover().remove(job_id);
            let now = Instant::now();
            self.ended.lock_or_recover().insert(job_id.to_owned(), now);
        }
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

/// The column panel of `tile` in B (k×n row-major): kn×cols, row-major, as
/// [`Store::panel`] reads it from B's file.
fn column_panel(b: &[u8], plan: &Plan, tile: &Tile) -> Vec<u8> {
    let e = plan.dtype.size();
    let (row, width) = (plan.n * e, tile.cols * e);
    let mut out = Vec::with_capacity(tile.kn * width);
    for p in tile.k0..tile.k0 + tile.kn {
        let at = p * row + tile.col0 * e;
        out.extend_from_slice(&b[at..at + width]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Dtype;

    /// A store in a fresh folder, and the folder (for the test to remove).
    fn temp_store() -> (Arc<Store>, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("brain-inputs-{}", uuid::Uuid::new_v4()));
        (Arc::new(Store::open(&root).expect("a store")), root)
    }

    #[tokio::test]
    async fn panels_are_read_once_and_the_cache_keeps_to_its_budget() {
        let (store, root) = temp_store();
        // A 4×2·2×4 f64 job in 1×1 tiles: every panel is 16 bytes.
        let plan = Plan {
            dtype: Dtype::F64,
            m: 4,
            k: 2,
            n: 4,
            tile: 1,
            split: 1,
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
        assert_eq!(inputs.cached_bytes(), 32, "A's row 1 and B's column 2");
        // A copy about to be held takes its room from the cache at once.
        let hold = inputs.reserve(Part::B, 24).expect("half the budget");
        assert!(
            inputs.cached_bytes() <= 48 - 24,
            "{}",
            inputs.cached_bytes()
        );
        drop(hold);
        inputs.remove("job");
        assert_eq!(inputs.cached_bytes(), 0);
        pool.close().await;
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn inputs_held_whole_serve_the_panels_the_files_would_within_half_the_budget() {
        use crate::jobs::Shape;
        use crate::upload::Writer;
        let (store, root) = temp_store();
        // 5×3·3×7 f32 in tiles of 2: edge tiles narrower than the rest.
        let plan = Plan {
            dtype: Dtype::F32,
            m: 5,
            k: 3,
            n: 7,
            tile: 2,
            split: 1,
        };
        let b_bytes = 3 * 7 * 4;
        // Half of 400 bytes: B's 84 fits; beside A's first 40 bytes it fits once, not twice.
        let inputs = Inputs::new(store.clone(), 400);
        assert!(
            inputs.reserve(Part::B, 201).is_none(),
            "more than half the budget"
        );
        let first = inputs.reserve(Part::B, b_bytes);
        assert!(first.is_some());
        assert!(inputs.reserve(Part::C, 1).is_none(), "C is never held");
        drop(first);
        assert_eq!(
            inputs.resident_bytes(),
            0,
            "a hold dropped gives its bytes back"
        );
        let big = Inputs::new(store.clone(), 64 << 20);
        assert_eq!(
            big.reserve(Part::A, 1 << 30).map(|h| h.bytes()),
            Some(A_FIRST_BYTES),
            "of A, only its first rows"
        );

        // B comes big-endian; what is held is what the file holds, little-endian. Of A, 40
        // bytes are kept: its first row panel whole (2 rows of 3 f32, 24 bytes), and part of
        // its second.
        let values = |count: usize, from: f32| (0..count).map(move |i| from + i as f32);
        let a: Bytes = values(15, 1.0).flat_map(f32::to_le_bytes).collect();
        let b: Bytes = values(21, 100.0).flat_map(f32::to_be_bytes).collect();
        let shape = |rows, cols| Shape {
            dtype: Dtype::F32,
            rows,
            cols,
        };
        let mut w = Writer::start(store.clone(), "job".into());
        w.begin(Part::A, shape(5, 3), false, inputs.reserve(Part::A, 40))
            .await
            .expect("a");
        w.write(a).await.expect("data");
        w.end().await.expect("whole");
        w.begin(Part::B, shape(3, 7), true, inputs.reserve(Part::B, b_bytes))
            .await
            .expect("b");
        assert!(inputs.reserve(Part::B, b_bytes).is_none(), "76 bytes left");
        w.write(b.slice(..10)).await.expect("data");
        w.write(b.slice(10..)).await.expect("data");
        w.end().await.expect("whole");
        let kept = w.finish(plan).await.expect("stored");
        assert_eq!(inputs.resident_bytes(), b_bytes as usize + 40);
        inputs.insert_plan("job", plan);
        inputs.keep_resident("job", &plan, kept);
        assert_eq!(
            inputs.resident_bytes(),
            b_bytes as usize,
            "A's rows are cached panels now, under the cache's own count"
        );

        let pool = db::connect(&root.join("brain.db"))
            .await
            .expect("a database");
        let from_files: Vec<_> = plan
            .tiles()
            .map(|t| store.panels("job", &plan, &t).expect("read"))
            .collect();
        // B's panels and A's first now come from memory: the files can go. A's other panels
        // would come from the store.
        for part in [Part::A, Part::B] {
            std::fs::remove_file(store.path("job", part).expect("path")).expect("removed");
        }
        for (t, (fa, fb)) in plan.tiles().zip(&from_files) {
            let got = inputs.panels(&pool, "job", t.tile_row, t.tile_col).await;
            if t.tile_row > 0 {
                assert!(got.is_err(), "A's panel {} is not kept", t.tile_row);
                continue;
            }
            let (_, _, pa, pb) = got.expect("panels");
            assert_eq!((&pa[..], &pb[..]), (&fa[..], &fb[..]), "tile {t:?}");
        }
        inputs.remove("job");
        assert_eq!(
            inputs.resident_bytes(),
            0,
            "the job's end gives its hold back"
        );
        assert!(
            inputs.panels(&pool, "job", 0, 0).await.is_err(),
            "nothing of the job left"
        );
        pool.close().await;
        let _ = std::fs::remove_dir_all(root);
    }
}
