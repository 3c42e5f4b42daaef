//! Handing tasks to workers: the queue of waiting requests, the one dispatcher that serves
//! it, deliveries, and copies of slow leases near the end of a job.
//!
//! Every `request_task` is answered by exactly one task. Requests wait in a FIFO queue; a
//! single dispatcher drains it whenever something may have changed (a request, a new job, a
//! task back in the queue). Having one dispatcher means no two claims race for the same
//! waiter and no wake-up is lost: `Notify` keeps a permit when nobody is waiting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::blocks::{JobBlocks, Partition, Side};
use crate::db;
use crate::error::{Error, Result};
use crate::panels::{self, Operand};
use crate::protocol::TaskAssigned;
use crate::status::TaskState;
use crate::sync::LockExt;

use super::registry::{Claimed, Held, Lease, NotRedelivered, PanelRef, Standing};
use super::{ConnectionId, Grid, Message};

/// A connection that asked for work and has not been given any yet.
pub struct Waiter {
    pub connection: ConnectionId,
    pub worker_id: String,
    pub address: IpAddr,
}

impl Waiter {
    pub fn holder(&self) -> db::Holder<'_> {
        db::Holder {
            connection: self.connection.as_str(),
            worker_id: &self.worker_id,
            address: self.address,
        }
    }
}

impl From<Standing> for Waiter {
    fn from(s: Standing) -> Self {
        Waiter {
            connection: s.connection,
            worker_id: s.worker_id,
            address: s.address,
        }
    }
}

/// The requests waiting for a task, and the dispatcher's wake-up.
#[derive(Default)]
pub struct Queue {
    waiting: Mutex<VecDeque<Waiter>>,
    wake: Notify,
}

impl Queue {
    /// Queues one request for work from a registered connection.
    pub fn push(&self, waiter: Waiter) {
        self.lock().push_back(waiter);
        self.wake.notify_one();
    }

    /// Something may be claimable now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Drops the requests of a connection that left.
    pub fn forget(&self, connection: ConnectionId) {
        self.lock().retain(|w| w.connection != connection);
    }

    /// Requests waiting for a task.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        self.waiting.lock_or_recover()
    }
}

/// Serves waiting requests until the process ends.
pub async fn run(grid: Arc<Grid>) {
    loop {
        grid.queue.wake.notified().await;
        if let Err(e) = dispatch(&grid).await {
            tracing::error!(error = %e, "dispatching tasks failed; retrying shortly");
            tokio::time::sleep(Duration::from_millis(200)).await;
            grid.wake();
        }
    }
}

/// Serves waiting requests in order. A request that finds nothing it may take (nothing
/// queued, or only tasks this worker was refused on) keeps its place, and the requests behind
/// it are still tried, so one excluded worker never blocks the others.
pub(super) async fn dispatch(grid: &Grid) -> Result<()> {
    if grid.is_shutting_down() {
        return Ok(());
    }
    let waiting: Vec<Waiter> = grid.queue.lock().drain(..).collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let waiting = in_turns(waiting, |w| w.connection, |c| grid.workers.held(c));
    let mut unserved: Vec<Waiter> = Vec::new();
    let outcome = serve(grid, waiting, &mut unserved).await;
    // Back at the front, ahead of requests that arrived meanwhile.
    let mut queue = grid.queue.lock();
    for waiter in unserved.into_iter().rev() {
        queue.push_front(waiter);
    }
    outcome
}

/// Orders a round's requests so that workers take turns: every worker's first task before
/// anyone's second, counting the tasks each already holds (`held`; `who` says whose each
/// request is). A worker that asks for several tasks at once (to keep one in hand while it
/// computes) would otherwise be served all of them, panels and all, while the worker behind
/// it in the queue sits idle: at the start of a job that idles every worker but the first for
/// several transfers. Stable, so requests keep their arrival order within a turn.
fn in_turns<W, K: std::hash::Hash + Eq + Copy>(
    waiting: Vec<W>,
    who: impl Fn(&W) -> K,
    held: impl Fn(K) -> usize,
) -> Vec<W> {
    let mut turn: HashMap<K, usize> = HashMap::new();
    let mut keyed: Vec<(usize, W)> = waiting
        .into_iter()
        .map(|waiter| {
            let key = who(&waiter);
            let next = turn.entry(key).or_insert_with(|| held(key));
            *next += 1;
            (*next, waiter)
        })
        .collect();
    keyed.sort_by_key(|(turn, _)| *turn);
    keyed.into_iter().map(|(_, waiter)| waiter).collect()
}

/// Longest a lease can be kept by heartbeats, in leases: twice the longest single extension
/// ([`lease_ms`] gives a hidden, slow worker up to 20), 20 minutes at the default `LEASE_MS`.
pub const MAX_LEASE_FACTOR: i64 = 40;

/// A lease long enough for a worker: the configured lease, plus four times the time its
/// measured speed (`gflops`, 0 when unknown) needs for a typical tile, longer again for a tab
/// in the background (browsers throttle those), at most 20 leases. A slow phone gets more
/// time than a desktop.
pub fn lease_ms(lease: Duration, gflops: f64, visible: bool) -> i64 {
    let base = lease.as_millis() as f64;
    // A 256×256 tile with k = 4096: 0.54 GFLOP.
    const TYPICAL_TILE_GFLOP: f64 = 2.0 * 256.0 * 256.0 * 4096.0 / 1e9;
    let compute_ms = if gflops > 0.0 {
        TYPICAL_TILE_GFLOP / gflops * 1000.0
    } else {
        0.0
    };
    let background = if visible { 1.0 } else { 4.0 };
    ((base + 4.0 * compute_ms) * background).min(base * 20.0) as i64
}

/// One dispatch round: every waiter's claim in one transaction (one commit for the round, not
/// one per task), then deliveries, then copies of slow leases for the waiters left without.
async fn serve(grid: &Grid, waiting: Vec<Waiter>, unserved: &mut Vec<Waiter>) -> Result<()> {
    // Each claim with the bytes of its panels in full.
    let mut claimed: Vec<(Waiter, db::Claimed, u64)> = Vec::new();
    let mut empty_handed: Vec<Waiter> = Vec::new();
    let mut starved: Vec<String> = Vec::new();
    let mut withheld: Vec<String> = Vec::new();
    let mut held_back: Vec<Waiter> = Vec::new();
    // PostgreSQL: the round's plain claims (no panels to prefer), made together at its end in
    // one statement (see `db::ClaimRound::claim_together`), with their lease lengths. Each
    // is counted against its worker's allowance as it is decided, its panels' bytes once known.
    let together_ok = db::engine() == db::Engine::Postgres;
    let mut together: Vec<(Waiter, i64)> = Vec::new();
    let round = async {
        let mut round = db::ClaimRound::begin(&grid.db).await?;
        for waiter in waiting {
            if !grid.outbox.is_open(waiter.connection) {
                continue;
            }
            if starved.contains(&waiter.worker_id) {
                empty_handed.push(waiter);
                continue;
            }
            if withheld.contains(&waiter.worker_id) {
                held_back.push(waiter);
                continue;
            }
            let id = waiter.connection;
            let pending = together.iter().map(|(w, _)| (w, 0));
            let earlier = claimed.iter().map(|(w, _, b)| (w, *b)).chain(pending);
            if !may_lease(grid, &waiter, earlier) {
                // Past its allowance, its address's cap or its send budget: it keeps its
                // place and is served when a lease ends or the budget refills.
                held_back.push(waiter);
                continue;
            }
            let lease_ms = grid
                .workers
                .standing(id)
                .map_or(grid.config.lease.as_millis() as i64, |w| {
                    lease_ms(grid.config.lease, w.gflops, w.visible)
                });
            let earlier: Vec<&db::Claimed> = claimed
                .iter()
                .filter(|(w, _, _)| w.connection == id)
                .map(|(_, t, _)| t)
                .collect();
            let held = held_panels(
                grid.workers
                    .cached_panels(id, earlier.first().map(|t| t.job_id.as_str())),
                &earlier,
            );
            if together_ok && held.is_none() {
                together.push((waiter, lease_ms));
                continue;
            }
            match claim(grid, &mut round, &waiter, lease_ms, held).await {
                Ok(Found::Task(task)) => {
                    let bytes = panel_bytes(grid, &task).await;
                    claimed.push((waiter, task, bytes));
                }
                Ok(Found::Nothing) => {
                    starved.push(waiter.worker_id.clone());
                    empty_handed.push(waiter);
                }
                // Not the end of the job: no copy of a slow lease either (on a slow link
                // every lease looks slow, and copies cost panels); it waits for a tile.
                Ok(Found::Withheld) => {
                    withheld.push(waiter.worker_id.clone());
                    held_back.push(waiter);
                }
                Err(e) => {
                    unserved.push(waiter);
                    return Err(e);
                }
            }
        }
        if !together.is_empty() {
            let holders: Vec<_> = together.iter().map(|(w, ms)| (w.holder(), *ms)).collect();
            let leased = round.claim_together(&holders).await?;
            drop(holders);
            for ((waiter, _), task) in together.drain(..).zip(leased) {
                let Some(task) = task else {
                    empty_handed.push(waiter);
                    continue;
                };
                // Counted at no bytes while the round was decided: checked again now that its
                // panels' size is known, and given back if the connection's budget is spent.
                if !may_lease(grid, &waiter, claimed.iter().map(|(w, _, b)| (w, *b))) {
                    round.give_back(task.id).await?;
                    held_back.push(waiter);
                    continue;
                }
                let bytes = panel_bytes(grid, &task).await;
                claimed.push((waiter, task, bytes));
            }
        }
        round.commit().await?;
        Ok::<(), Error>(())
    };
    if let Err(e) = round.await {
        // Nothing was leased: everyone waits for the next round.
        unserved.extend(claimed.into_iter().map(|(w, _, _)| w));
        unserved.extend(together.into_iter().map(|(w, _)| w));
        unserved.extend(empty_handed);
        unserved.extend(held_back);
        return Err(e);
    }
    unserved.extend(held_back);
    let mut outcome = Ok(());
    // Jobs whose first task this round sends: marked running once the round's tasks are all
    // on their way, as no task needs to wait for that write (it held a job's second task
    // back by about 2 ms, on the page's benchmark).
    let mut started: Vec<String> = Vec::new();
    for (waiter, task, _) in claimed {
        if grid
            .running_jobs
            .lock_or_recover()
            .insert(task.job_id.clone())
        {
            started.push(task.job_id.clone());
        }
        // Errors from here on must not end the round early: the rest of the claimed tasks
        // would stay leased with nobody told, and their waiters would be dropped.
        let delivered = deliver(grid, &waiter, &task, false, 0).await;
        if let Err(e) = delivered {
            tracing::warn!(task_id = task.id, error = %e, "could not deliver a task");
            if let Error::Gone(reason) = &e {
                // Its files are gone (removed by hand, or a restore without them): no task of
                // it can ever be sent, and retrying would spin for ever.
                if let Err(e) = grid.end_job(&task.job_id, Some(reason)).await {
                    tracing::error!(job_id = %task.job_id, error = %e, "failing a job failed");
                }
                unserved.push(waiter);
                continue;
            }
            let owner = waiter.connection.as_str();
            if let Err(e) = db::unclaim_task(&grid.db, task.id, owner).await {
                // The lease stays until it expires, or until a copy overtakes it.
                tracing::error!(task_id = task.id, error = %e, "could not re-queue a task");
            }
            unserved.push(waiter);
            outcome = Err(e);
            continue;
        }
        let state = TaskState::Leased;
        grid.progress
            .tile(&task.job_id, task.id, task.tile_row, task.tile_col, state);
    }
    for waiter in empty_handed {
        match duplicate(grid, &waiter).await {
            Ok(true) => {}
            Ok(false) => unserved.push(waiter),
            Err(e) => {
                unserved.push(waiter);
                outcome = Err(e);
            }
        }
    }
    // A job that has ended meanwhile stays as it ended.
    for job_id in started {
        if let Err(e) = db::mark_running(&grid.db, &job_id).await {
            tracing::warn!(job_id = %job_id, error = %e, "could not mark a job running");
            // A later claim tries again.
            grid.forget_running(&job_id);
        }
    }
    outcome
}

/// Whether `waiter` may be given one more task this round, after the claims made so far
/// (`earlier`: each with the bytes of its panels): within its allowance, its address's cap and
/// its send budget.
fn may_lease<'a>(
    grid: &Grid,
    waiter: &Waiter,
    earlier: impl Iterator<Item = (&'a Waiter, u64)>,
) -> bool {
    let mut so_far = Claimed::default();
    for (w, bytes) in earlier {
        if w.connection == waiter.connection {
            so_far.tasks += 1;
            so_far.bytes += bytes;
        }
        if w.address == waiter.address {
            so_far.at_address += 1;
        }
    }
    let limits = &grid.config.limits;
    let (per_worker, per_address) = (limits.max_tasks_per_worker, limits.max_leases_per_address);
    grid.workers
        .may_lease(waiter.connection, per_worker, per_address, so_far)
}

/// The bytes of a claimed task's panels in full (0 when its job's plan cannot be read: its
/// delivery will fail and say why).
async fn panel_bytes(grid: &Grid, task: &db::Claimed) -> u64 {
    match grid.inputs.plan(&grid.db, &task.job_id).await {
        Ok(plan) => {
            plan.panel_bytes(&plan.tile(task.tile_row as usize, task.tile_col as usize)) as u64
        }
        Err(_) => 0,
    }
}

/// Claims a task for a waiter. A worker without a cache takes the oldest task. A caching
/// one (`held`: what it holds) works in its job's blocks (see [`crate::blocks`]): its own, a
/// free one, or one it helps; then in those of the job it would start next. It waits
/// (`Found::Withheld`) rather than take a tile its job keeps for the tile's block owner.
async fn claim(
    grid: &Grid,
    round: &mut db::ClaimRound,
    waiter: &Waiter,
    lease_ms: i64,
    held: Option<Held>,
) -> Result<Found> {
    let Some(held) = held else {
        return Ok(found(round.claim(waiter.holder(), lease_ms).await?));
    };
    let first = match &held.job {
        Some(job) => Some(job.clone()),
        None => round.next_job(waiter.holder(), None).await?,
    };
    let mut withheld = false;
    if let Some(first) = first {
        match claim_in_blocks(grid, round, waiter, lease_ms, &first, &held).await? {
            task @ Found::Task(_) => return Ok(task),
            Found::Withheld => withheld = true,
            Found::Nothing => {}
        }
        if let Some(next) = round.next_job(waiter.holder(), Some(&first)).await? {
            let fresh = Held {
                job: Some(next.clone()),
                rows: Vec::new(),
                cols: Vec::new(),
                budget: held.budget,
            };
            match claim_in_blocks(grid, round, waiter, lease_ms, &next, &fresh).await? {
                task @ Found::Task(_) => return Ok(task),
                Found::Withheld => withheld = true,
                Found::Nothing => {}
            }
        }
    }
    if withheld {
        return Ok(Found::Withheld);
    }
    // Left: tasks the blocks could not give this worker (it was refused on them).
    Ok(found(round.claim(waiter.holder(), lease_ms).await?))
}

fn found(task: Option<db::Claimed>) -> Found {
    task.map_or(Found::Nothing, Found::Task)
}

/// What a claim came to.
enum Found {
    Task(db::Claimed),
    /// Tiles are left, but kept for their blocks' owners.
    Withheld,
    Nothing,
}

/// A task of `job` for a caching waiter: from the block it works; else from a free block it
/// takes (the job cut into blocks the first time a caching worker asks, for as many workers
/// as cache here then and within the smallest of their caches); else from the back of a block
/// it may help.
async fn claim_in_blocks(
    grid: &Grid,
    round: &mut db::ClaimRound,
    waiter: &Waiter,
    lease_ms: i64,
    job: &str,
    held: &Held,
) -> Result<Found> {
    let id = waiter.connection;
    // A job its cache still names may have ended, or be gone altogether: nothing to take.
    let plan = match grid.inputs.plan(&grid.db, job).await {
        Ok(plan) => plan,
        Err(Error::NotFound(_)) => return Ok(Found::Nothing),
        Err(e) => return Err(e),
    };
    // A split job's A panels are keyed by tile row and slice of k (`Plan::a_key`); the tasks
    // preferred are those in the rows held, whatever the slice.
    let rows: std::borrow::Cow<[i64]> = match plan.split {
        1 => held.rows.as_slice().into(),
        _ => held
            .rows
            .iter()
            .map(|r| r % plan.tile_rows() as i64)
            .collect(),
    };
    let panels = (&*rows, held.cols.as_slice());
    let in_block = async |round: &mut db::ClaimRound, block, side| {
        let within = Some((block, side));
        let task = round
            .claim_preferred(waiter.holder(), lease_ms, job, panels, within)
            .await?;
        Ok::<_, Error>(found(task))
    };
    let owned = {
        let blocks = grid.blocks.lock_or_recover();
        blocks
            .get(job)
            .and_then(|b| Some(b.partition.block(b.owned_by(id)?)))
    };
    if let Some(block) = owned {
        if let found @ Found::Task(_) = in_block(round, block, Side::Front).await? {
            return Ok(found);
        }
    }
    let existing = grid.blocks.lock_or_recover().get(job).map(|b| b.partition);
    let partition = existing.unwrap_or_else(|| {
        let full = plan.tile(0, 0);
        let (workers, smallest) = grid.workers.caching();
        Partition::choose(
            plan.tile_rows(),
            plan.task_cols(),
            workers,
            (full.rows * full.kn * plan.dtype.size()) as u64,
            (full.kn * full.cols * plan.dtype.size()) as u64,
            smallest.unwrap_or(held.budget),
        )
    });
    let queued: HashMap<usize, usize> = round
        .queued_by_block(job, partition.rows, partition.cols)
        .await?
        .into_iter()
        .filter_map(|((r, c), n)| {
            let (r, c) = (usize::try_from(r).ok()?, usize::try_from(c).ok()?);
            let block = partition.block_of(r * partition.rows, c * partition.cols);
            Some((block, usize::try_from(n).ok()?))
        })
        .collect();
    // Only a job with tiles left is cut (and kept until it ends): one that ended stays out.
    if queued.is_empty() {
        return Ok(Found::Nothing);
    }
    if existing.is_none() {
        let (workers, _) = grid.workers.caching();
        tracing::info!(
            job_id = job,
            workers,
            blocks = partition.count(),
            rows = partition.rows,
            cols = partition.cols,
            "job cut into blocks of tiles"
        );
    }
    grid.blocks
        .lock_or_recover()
        .entry(job.to_owned())
        .or_insert_with(|| JobBlocks::new(partition))
        .release(id);
    let alive = |c| grid.workers.contains(c);
    let taken = {
        let mut blocks = grid.blocks.lock_or_recover();
        blocks
            .get_mut(job)
            .and_then(|b| b.take(id, &queued, panels, alive))
    };
    if let Some(block) = taken {
        if let found @ Found::Task(_) = in_block(round, partition.block(block), Side::Front).await?
        {
            return Ok(found);
        }
        // Its tiles left are ones this worker was refused on: the block is for another.
        if let Some(b) = grid.blocks.lock_or_recover().get_mut(job) {
            b.release(id);
        }
    }
    let speed = |c| grid.workers.standing(c).map_or(0.0, |s| s.gflops);
    let (helped, unowned) = {
        let blocks = grid.blocks.lock_or_recover();
        let Some(b) = blocks.get(job) else {
            return Ok(Found::Nothing);
        };
        let owners = |o| (grid.workers.held(o), speed(o));
        let helped = b.to_help(id, &queued, panels, owners, speed(id));
        let unowned = queued
            .keys()
            .any(|&i| b.owner(i).is_none_or(|o| o == id || !alive(o)));
        (helped, unowned)
    };
    match helped {
        Some(block) => in_block(round, partition.block(block), Side::Back).await,
        // Tiles in a block nobody works are any worker's (this one was refused on them).
        None if unowned => Ok(Found::Nothing),
        None => Ok(Found::Withheld),
    }
}

/// What a caching worker holds (`cached`: of its main job, see
/// [`super::Workers::cached_panels`]), plus the panels of the tasks claimed for it earlier in
/// this round, which are on their way to it (its cache model learns of them only when they are
/// delivered). `None` for a worker without a cache: any task will do.
fn held_panels(cached: Option<Held>, earlier: &[&db::Claimed]) -> Option<Held> {
    let mut held = cached?;
    for task in earlier {
        if held.job.as_deref() == Some(task.job_id.as_str()) {
            held.rows.push(task.tile_row);
            held.cols.push(task.tile_col);
        }
    }
    Some(held)
}

/// Near the end of a job, when this worker would otherwise idle and another, slower one has
/// held a tile for a long time, hands this worker a copy. The first verified result wins;
/// the other holder is told `task_cancelled`. Only workers with a measured speed qualify,
/// and at most one copy of a tile is out at once.
async fn duplicate(grid: &Grid, waiter: &Waiter) -> Result<bool> {
    let Some(me) = grid.workers.standing(waiter.connection) else {
        return Ok(false);
    };
    if me.gflops <= 0.0 || me.record.quarantined.is_some() {
        return Ok(false);
    }
    // Leases younger than a second are never duplicated: the holder has barely started.
    let now = db::now_ms();
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let page = db::slow_leases(&grid.db, waiter.holder(), 1000, after, SLOW_LEASE_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        after = (last.updated_at, last.id);
        for lease in page {
            if let Some(claimed) = worth_a_copy(grid, &me, lease, now).await? {
                deliver(grid, waiter, &claimed, true, 0).await?;
                tracing::info!(task_id = claimed.id, worker_id = %waiter.worker_id, "duplicate of a slow lease");
                grid.metrics.duplicated();
                return Ok(true);
            }
        }
    }
}

/// Whether a copy of a `gflop` tile, leased `age_ms` ago to a holder of speed `holder_speed`
/// (GFLOP/s, 0 when unknown; a quarter for a hidden tab) whose tasks recently took
/// `turnaround_ms` from delivery to result (0 when unknown), would be finished sooner by a
/// worker of speed and turnaround `mine`: when this worker would finish well before the
/// holder is expected to. Each is expected to take its kernel's time or its usual turnaround,
/// whichever is longer: on a slow link a task waits seconds for its panels behind the tasks
/// before it, and judged by their kernels alone every lease there looked stalled and every
/// copy quick (a 4096² job over 8 home links sent 32 copies at its end, each with panels).
/// A holder past twice its expected time has stalled (its heartbeats keep the lease), so its
/// time left is unknown, as for one with no speed; one only a little late may still be about
/// to answer.
fn copy_pays(
    gflop: f64,
    (mine, my_turnaround_ms): (f64, f64),
    (holder_speed, turnaround_ms): (f64, f64),
    age_ms: f64,
) -> bool {
    let mine_ms = (gflop / mine * 1000.0).max(my_turnaround_ms);
    let expected_ms = (gflop / holder_speed * 1000.0).max(turnaround_ms);
    let holder_left_ms = if holder_speed > 0.0 && age_ms <= 2.0 * expected_ms {
        expected_ms - age_ms
    } else {
        f64::INFINITY
    };
    holder_left_ms > 2.0 * mine_ms && age_ms > 2.0 * mine_ms
}

/// Leases read at a time while looking for one worth a copy.
const SLOW_LEASE_PAGE: i64 = 64;

/// The task of `lease`, when giving the worker `me` a copy of it would finish it sooner.
async fn worth_a_copy(
    grid: &Grid,
    me: &Standing,
    lease: db::SlowLease,
    now: i64,
) -> Result<Option<db::Claimed>> {
    let plan = grid.inputs.plan(&grid.db, &lease.job_id).await?;
    // Exactly one connection must hold it: two means a copy is out already, none that the
    // page of leases read from the database is stale (the task was completed since, and its
    // holders let go of it), and a copy would be wasted work.
    if grid.workers.holders(lease.id).len() != 1 {
        return Ok(None);
    }
    let tile = plan.tile(lease.tile_row as usize, lease.tile_col as usize);
    let gflop = plan.flops(&tile) / 1e9;
    let age_ms = (now - lease.updated_at) as f64;
    let (holder_speed, holder_turnaround_ms) = grid.workers.holder_pace(&lease.connection);
    let mine = (me.gflops, me.turnaround_ms);
    if copy_pays(gflop, mine, (holder_speed, holder_turnaround_ms), age_ms) {
        return Ok(Some(db::Claimed {
            id: lease.id,
            job_id: lease.job_id,
            tile_row: lease.tile_row,
            tile_col: lease.tile_col,
        }));
    }
    Ok(None)
}

/// Sends a task with the panels the worker lacks, and records the lease (`duplicate`: a
/// copy of another connection's lease; `redelivered`: the times it was sent again in full
/// before).
async fn deliver(
    grid: &Grid,
    waiter: &Waiter,
    claimed: &db::Claimed,
    duplicate: bool,
    redelivered: u8,
) -> Result<()> {
    let (row, col) = (claimed.tile_row as usize, claimed.tile_col as usize);
    let (plan, tile, a, b) = grid
        .inputs
        .panels(&grid.db, &claimed.job_id, row, col)
        .await?;
    let a_key = panels::key(&claimed.job_id, Operand::A, plan.a_key(&tile));
    let b_key = panels::key(&claimed.job_id, Operand::B, tile.tile_col);
    let lease = Lease {
        job_id: claimed.job_id.clone(),
        tile_row: tile.tile_row,
        tile_col: tile.tile_col,
        result_len: plan.result_len(&tile),
        flops: plan.flops(&tile),
        duplicate,
        answered: false,
        redelivered,
        sent_at: std::time::Instant::now(),
    };
    let to = waiter.connection;
    let shipment = grid.workers.deliver(
        to,
        claimed.id,
        lease,
        PanelRef {
            key: &a_key,
            bytes: a.len() as u64,
        },
        PanelRef {
            key: &b_key,
            bytes: b.len() as u64,
        },
    );
    let sent =
        if shipment.send_a { a.len() } else { 0 } + if shipment.send_b { b.len() } else { 0 };
    let task = TaskAssigned {
        task_id: claimed.id,
        job_id: claimed.job_id.clone(),
        dtype: plan.dtype,
        m: tile.rows,
        k: tile.kn,
        n: tile.cols,
        a: shipment.send_a.then_some(a),
        b: shipment.send_b.then_some(b),
        a_key,
        b_key,
        evict: shipment.evict,
    };
    if let Err(e) = grid.outbox.send(to, Message::Task(task)) {
        grid.workers.undeliver(to, claimed.id);
        return Err(Error::Internal(e.to_string()));
    }
    crate::metrics::Metrics::add(&grid.metrics.bytes_sent, sent as u64);
    Ok(())
}

impl Grid {
    /// Sends a task again with both panels, to a caching worker that reported one missing.
    /// Its cache model starts afresh. Each re-send is megabytes, so a lease is re-sent a
    /// bounded number of times, and only within the connection's send budget.
    ///
    /// A refusal goes to `refuse` as soon as it is decided, before the lease is written back
    /// to the queue: a worker flooding reports fills its socket's buffer with refusals of
    /// leases it no longer holds, and the one that says why must not queue behind them.
    pub async fn redeliver(
        &self,
        from: &Standing,
        task_id: i64,
        refuse: impl FnOnce(NotRedelivered),
    ) -> Result<()> {
        let lease = match self.workers.redeliver(from.connection, task_id) {
            Ok(lease) => lease,
            Err(NotRedelivered::TooOften) => {
                refuse(NotRedelivered::TooOften);
                // Back to the queue for someone else; not counted against the task.
                db::unclaim_task(&self.db, task_id, from.connection.as_str()).await?;
                self.wake();
                return Ok(());
            }
            Err(why) => {
                refuse(why);
                return Ok(());
            }
        };
        let claimed = db::Claimed {
            id: task_id,
            job_id: lease.job_id,
            tile_row: lease.tile_row as i64,
            tile_col: lease.tile_col as i64,
        };
        let waiter = Waiter::from(from.clone());
        deliver(self, &waiter, &claimed, lease.duplicate, lease.redelivered).await?;
        tracing::info!(task_id, "panel missing: task sent again in full");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_turns_counting_what_they_hold() {
        // Requests in arrival order: a asks three times, b twice, c once; b holds one task.
        let waiting = vec![("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)];
        let held = |who: &str| usize::from(who == "b");
        let order = in_turns(waiting, |w| w.0, held);
        assert_eq!(
            order,
            [("a", 1), ("c", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)],
            "everyone's first before anyone's second; arrival order kept within a turn"
        );
    }

    #[test]
    fn leases_grow_for_slow_and_hidden_workers_up_to_twenty() {
        let lease = Duration::from_secs(30);
        assert_eq!(lease_ms(lease, 0.0, true), 30_000, "no speed measured yet");
        // A typical tile (0.54 GFLOP) at 1 GFLOP/s: four times 537 ms on top.
        assert_eq!(lease_ms(lease, 1.0, true), 32_147);
        assert!(lease_ms(lease, 0.1, true) > lease_ms(lease, 10.0, true));
        assert_eq!(
            lease_ms(lease, 0.0, false),
            120_000,
            "a tab in the background"
        );
        assert_eq!(
            lease_ms(lease, 1e-6, false),
            600_000,
            "never past 20 leases"
        );
        assert!(MAX_LEASE_FACTOR as f64 * 30_000.0 >= 2.0 * 600_000.0);
    }

    #[test]
    fn a_copy_pays_only_when_the_holder_is_late_or_unknown() {
        let gflop = 0.5; // 500 ms at 1 GFLOP/s, 50 ms at 10
                         // A fast worker, a holder of unknown speed: worth it once the lease is old enough.
        assert!(
            !copy_pays(gflop, (10.0, 0.0), (0.0, 0.0), 50.0),
            "barely started"
        );
        assert!(copy_pays(gflop, (10.0, 0.0), (0.0, 0.0), 200.0));
        // A holder as fast as this worker, on time: not worth it.
        assert!(!copy_pays(gflop, (10.0, 0.0), (10.0, 0.0), 40.0));
        // A slow holder early in its tile: this worker would finish well before it.
        assert!(copy_pays(gflop, (10.0, 0.0), (1.0, 0.0), 150.0));
        // The same holder almost done: not worth it.
        assert!(!copy_pays(gflop, (10.0, 0.0), (1.0, 0.0), 450.0));
        // Past twice its expected time it has stalled: worth it again.
        assert!(copy_pays(gflop, (10.0, 0.0), (1.0, 0.0), 1500.0));
        // A slower worker never overtakes a faster holder on time.
        assert!(!copy_pays(gflop, (1.0, 0.0), (10.0, 0.0), 60.0));
        // On slow links, where tasks take 3 s from delivery to result: a holder is on time at
        // 2 s though its kernel needs 50 ms, and a copy would take this worker 3 s too; at
        // 7 s the holder has stalled.
        let slow_link = (10.0, 3000.0);
        assert!(!copy_pays(gflop, slow_link, slow_link, 2000.0));
        assert!(copy_pays(gflop, slow_link, slow_link, 7000.0));
        // A worker on a fast link copies a lease of one on a slow link that is late.
        assert!(copy_pays(gflop, (10.0, 60.0), slow_link, 2500.0));
    }

    #[test]
    fn a_caching_worker_prefers_its_panels_and_those_on_their_way() {
        let claimed = |job: &str, row, col| db::Claimed {
            id: 0,
            job_id: job.into(),
            tile_row: row,
            tile_col: col,
        };
        assert_eq!(held_panels(None, &[]), None, "no cache: any task");
        let (on_way, other_job) = (claimed("j", 3, 4), claimed("x", 9, 9));
        let held = |rows: Vec<i64>, cols: Vec<i64>| Held {
            job: Some("j".to_owned()),
            rows,
            cols,
            budget: 100,
        };
        assert_eq!(
            held_panels(Some(held(vec![0], vec![1, 2])), &[&on_way, &other_job]),
            Some(held(vec![0, 3], vec![1, 2, 4])),
            "the panels of this round's earlier task of the same job count as held"
        );
    }
}
