//! Handing tasks to workers: the queue of waiting requests, the one dispatcher that serves
//! it, and the sweeper that takes back leases whose workers went quiet.
//!
//! Every `request_task` is answered by exactly one `task_assigned`. Requests wait in a FIFO
//! queue; a single dispatcher task drains it whenever something may have changed (a request,
//! a new job, a task back in the queue). Having one dispatcher means no two claims race for
//! the same waiter and no wake-up is lost: `Notify` keeps a permit when nobody is waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use socketioxide::socket::Sid;
use tokio::sync::Notify;

use crate::broadcast;
use crate::db::{self, Requeued};
use crate::error::Result;
use crate::panels::{self, Operand};
use crate::protocol::{Quarantined, TaskAssigned, TaskCancelled};
use crate::state::{AppState, Lease, Waiter};
use crate::status::TaskState;
use crate::sync::LockExt;
use crate::trust;

#[derive(Default)]
pub struct Scheduler {
    waiting: Mutex<VecDeque<Waiter>>,
    wake: Notify,
}

impl Scheduler {
    /// Queues one request for work from a registered socket.
    pub fn request(&self, waiter: Waiter) {
        self.lock().push_back(waiter);
        self.wake.notify_one();
    }

    /// Something may be claimable now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Drops the requests of a socket that left.
    pub fn forget(&self, sid: Sid) {
        self.lock().retain(|w| w.socket.id != sid);
    }

    /// Requests waiting for a task.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        self.waiting.lock_or_recover()
    }
}

/// Serves waiting requests until the process ends.
pub async fn dispatch_loop(state: AppState) {
    loop {
        state.scheduler.wake.notified().await;
        if let Err(e) = dispatch(&state).await {
            tracing::error!(error = %e, "dispatching tasks failed; retrying shortly");
            tokio::time::sleep(Duration::from_millis(200)).await;
            state.scheduler.wake();
        }
    }
}

/// Serves waiting requests in order. A request that finds nothing it may take (nothing
/// queued, or only tasks this worker was refused on) keeps its place, and the requests behind
/// it are still tried, so one excluded worker never blocks the others.
async fn dispatch(state: &AppState) -> Result<()> {
    if state.is_shutting_down() {
        return Ok(());
    }
    let waiting: Vec<Waiter> = state.scheduler.lock().drain(..).collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let waiting = take_turns(state, waiting);
    let mut unserved: Vec<Waiter> = Vec::new();
    let outcome = serve(state, waiting, &mut unserved).await;
    // Back at the front, ahead of requests that arrived meanwhile.
    let mut queue = state.scheduler.lock();
    for waiter in unserved.into_iter().rev() {
        queue.push_front(waiter);
    }
    outcome
}

/// Orders a round's requests so that workers take turns: every worker's first task before
/// anyone's second, counting the tasks each already holds. A worker that asks for several
/// tasks at once (to keep one in hand while it computes) would otherwise be served all of
/// them, panels and all, while the worker behind it in the queue sits idle: at the start of a
/// job that idles every worker but the first for several transfers. Stable, so requests keep
/// their arrival order within a turn.
fn take_turns(state: &AppState, waiting: Vec<Waiter>) -> Vec<Waiter> {
    in_turns(
        waiting,
        |waiter| waiter.socket.id,
        |sid| state.workers.with(sid, |w| w.held()).unwrap_or(0),
    )
}

/// [`take_turns`] over any requests: `who` says whose each is, `held` how many tasks that
/// one holds already.
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
async fn serve(state: &AppState, waiting: Vec<Waiter>, unserved: &mut Vec<Waiter>) -> Result<()> {
    let mut claimed: Vec<(Waiter, db::Claimed)> = Vec::new();
    let mut empty_handed: Vec<Waiter> = Vec::new();
    let mut starved: Vec<String> = Vec::new();
    let mut held_back: Vec<Waiter> = Vec::new();
    let round = async {
        let mut round = db::ClaimRound::begin(&state.db).await?;
        for waiter in waiting {
            if !waiter.socket.connected() {
                continue;
            }
            if starved.contains(&waiter.worker_id) {
                empty_handed.push(waiter);
                continue;
            }
            let sid = waiter.socket.id;
            let mine = claimed.iter().filter(|(w, _)| w.socket.id == sid).count();
            let at_address = claimed
                .iter()
                .filter(|(w, _)| w.address == waiter.address)
                .count();
            let limits = &state.config.limits;
            if !state.workers.may_lease(
                sid,
                limits.max_tasks_per_worker,
                limits.max_leases_per_address,
                mine,
                at_address,
            ) {
                // Past its allowance, its address's cap or its send budget: it keeps its
                // place and is served when a lease ends or the budget refills.
                held_back.push(waiter);
                continue;
            }
            let lease_ms = state
                .workers
                .standing(waiter.socket.id)
                .map_or(state.config.lease.as_millis() as i64, |w| {
                    lease_ms(state.config.lease, w.gflops, w.visible)
                });
            let earlier: Vec<db::Claimed> = claimed
                .iter()
                .filter(|(w, _)| w.socket.id == waiter.socket.id)
                .map(|(_, t)| t.clone())
                .collect();
            match claim_for(&mut round, state, &waiter, lease_ms, &earlier).await {
                Ok(Some(task)) => claimed.push((waiter, task)),
                Ok(None) => {
                    starved.push(waiter.worker_id.clone());
                    empty_handed.push(waiter);
                }
                Err(e) => {
                    unserved.push(waiter);
                    return Err(e);
                }
            }
        }
        round.commit().await
    };
    if let Err(e) = round.await {
        // Nothing was leased: everyone waits for the next round.
        unserved.extend(claimed.into_iter().map(|(w, _)| w));
        unserved.extend(empty_handed);
        unserved.extend(held_back);
        return Err(e.into());
    }
    unserved.extend(held_back);
    let mut outcome = Ok(());
    for (waiter, task) in claimed {
        let first = state
            .running_jobs
            .lock_or_recover()
            .insert(task.job_id.clone());
        // Errors from here on must not end the round early: the rest of the claimed tasks
        // would stay leased with nobody told, and their waiters would be dropped.
        if first {
            if let Err(e) = db::mark_running(&state.db, &task.job_id).await {
                tracing::warn!(job_id = %task.job_id, error = %e, "could not mark a job running");
                // A later claim tries again.
                state.running_jobs.lock_or_recover().remove(&task.job_id);
            }
        }
        if let Err(e) = deliver(state, &waiter, &task).await {
            tracing::warn!(task_id = task.id, error = %e, "could not deliver a task");
            if let Err(e) = db::unclaim_task(&state.db, task.id, &waiter.session).await {
                // The lease stays until it expires, or until a copy overtakes it.
                tracing::error!(task_id = task.id, error = %e, "could not re-queue a task");
            }
            unserved.push(waiter);
            outcome = Err(e);
            continue;
        }
        broadcast::tile(
            state,
            &task.job_id,
            task.id,
            task.tile_row,
            task.tile_col,
            TaskState::Leased,
        );
    }
    for waiter in empty_handed {
        match duplicate(state, &waiter).await {
            Ok(true) => {}
            Ok(false) => unserved.push(waiter),
            Err(e) => {
                unserved.push(waiter);
                outcome = Err(e);
            }
        }
    }
    outcome
}

/// Claims a task for a waiter, preferring for a caching worker the tasks whose panels it
/// already holds (both first, then one), so that fewer bytes travel. `earlier` are the tasks
/// claimed for the same connection earlier in this round: their panels are on their way to it
/// (its cache model learns of them only when they are delivered), so they count as held.
async fn claim_for(
    round: &mut db::ClaimRound,
    state: &AppState,
    waiter: &Waiter,
    lease_ms: i64,
    earlier: &[db::Claimed],
) -> Result<Option<db::Claimed>, sqlx::Error> {
    let preferred = state.workers.with(waiter.socket.id, |w| {
        let cache = w.cache.as_ref()?;
        let job = cache
            .main_job()
            .or_else(|| earlier.first().map(|t| t.job_id.clone()))?;
        let mut rows = cache.indices(&job, Operand::A);
        let mut cols = cache.indices(&job, Operand::B);
        for task in earlier.iter().filter(|t| t.job_id == job) {
            rows.push(task.tile_row);
            cols.push(task.tile_col);
        }
        Some((job, rows, cols))
    });
    if let Some(Some((job, rows, cols))) = preferred {
        let claimed = round
            .claim_preferred(waiter.holder(), lease_ms, &job, &rows, &cols)
            .await?;
        if claimed.is_some() {
            return Ok(claimed);
        }
    }
    round.claim(waiter.holder(), lease_ms).await
}

/// Near the end of a job, when this worker would otherwise idle and another, slower one has
/// held a tile for a long time, hands this worker a copy. The first verified result wins;
/// the other holder is told `task_cancelled`. Only workers with a measured speed qualify,
/// and at most one copy of a tile is out at once.
async fn duplicate(state: &AppState, waiter: &Waiter) -> Result<bool> {
    let Some(me) = state.workers.standing(waiter.socket.id) else {
        return Ok(false);
    };
    if me.gflops <= 0.0 || me.record.quarantined.is_some() {
        return Ok(false);
    }
    // Leases younger than a second are never duplicated: the holder has barely started.
    let now = db::now_ms();
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let page =
            db::slow_leases(&state.db, waiter.holder(), 1000, after, SLOW_LEASE_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        after = (last.updated_at, last.id);
        for lease in page {
            if let Some(claimed) = worth_a_copy(state, &me, lease, now).await? {
                deliver_as(state, waiter, &claimed, true, 0).await?;
                tracing::info!(task_id = claimed.id, worker_id = %waiter.worker_id, "duplicate of a slow lease");
                state.metrics.duplicated();
                return Ok(true);
            }
        }
    }
}

/// Whether a copy of a `gflop` tile, leased `age_ms` ago to a holder of speed `holder_speed`
/// (GFLOP/s, 0 when unknown; a quarter for a hidden tab), would be finished sooner by a worker
/// of speed `mine`: when this worker would finish well before the holder is expected to. A
/// holder past twice its expected time has stalled (its heartbeats keep the lease), so its
/// time left is unknown, as for one with no speed; one only a little late may still be about
/// to answer.
fn copy_pays(gflop: f64, mine: f64, holder_speed: f64, age_ms: f64) -> bool {
    let mine_ms = gflop / mine * 1000.0;
    let expected_ms = gflop / holder_speed * 1000.0;
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
    state: &AppState,
    me: &crate::state::Standing,
    lease: db::SlowLease,
    now: i64,
) -> Result<Option<db::Claimed>> {
    let inputs = state.inputs.get(&state.db, &lease.job_id).await?;
    // Exactly one connection must hold it: two means a copy is out already, none that the
    // page of leases read from the database is stale (the task was completed since, and its
    // holders let go of it), and a copy would be wasted work.
    if state.workers.holders(lease.id).len() != 1 {
        return Ok(None);
    }
    let tile = inputs
        .plan
        .tile(lease.tile_row as usize, lease.tile_col as usize);
    let gflop = 2.0 * (tile.rows * tile.cols * inputs.plan.k) as f64 / 1e9;
    let age_ms = (now - lease.updated_at) as f64;
    let holder_speed = state
        .workers
        .by_session(&lease.lease_owner)
        .map_or(
            0.0,
            |(_, w)| if w.visible { w.gflops } else { w.gflops / 4.0 },
        );
    if copy_pays(gflop, me.gflops, holder_speed, age_ms) {
        return Ok(Some(db::Claimed {
            id: lease.id,
            job_id: lease.job_id,
            tile_row: lease.tile_row,
            tile_col: lease.tile_col,
        }));
    }
    Ok(None)
}

async fn deliver(state: &AppState, waiter: &Waiter, claimed: &db::Claimed) -> Result<()> {
    deliver_as(state, waiter, claimed, false, 0).await
}

/// Sends a task with the panels the worker lacks, and records the lease (`redelivered`: the
/// times it was sent again in full before).
async fn deliver_as(
    state: &AppState,
    waiter: &Waiter,
    claimed: &db::Claimed,
    duplicate: bool,
    redelivered: u8,
) -> Result<()> {
    let inputs = state.inputs.get(&state.db, &claimed.job_id).await?;
    let plan = inputs.plan;
    let tile = plan.tile(claimed.tile_row as usize, claimed.tile_col as usize);
    let (a, b) = (
        plan.a_panel(&inputs.a, &tile),
        plan.b_panel(&inputs.b_panels, &tile),
    );
    let a_key = panels::key(&claimed.job_id, Operand::A, tile.tile_row);
    let b_key = panels::key(&claimed.job_id, Operand::B, tile.tile_col);
    let lease = Lease {
        job_id: claimed.job_id.clone(),
        tile_row: tile.tile_row,
        tile_col: tile.tile_col,
        result_len: plan.result_len(&tile),
        flops: 2.0 * (tile.rows * plan.k * tile.cols) as f64,
        duplicate,
        answered: false,
        redelivered,
    };
    // Record the lease before emitting so a fast result never finds it missing, and decide
    // against the worker's cache model which panels travel, in the same critical section.
    let (send_a, send_b, evict) = state
        .workers
        .with(waiter.socket.id, |w| {
            w.leases.insert(claimed.id, lease);
            w.requested = w.requested.saturating_sub(1);
            let Some(cache) = w.cache.as_mut() else {
                return (true, true, Vec::new());
            };
            let (has_a, has_b) = (cache.hit(&a_key), cache.hit(&b_key));
            let mut evict = Vec::new();
            if !has_a {
                evict.extend(cache.insert(a_key.clone(), a.len() as u64));
            }
            if !has_b {
                evict.extend(cache.insert(b_key.clone(), b.len() as u64));
            }
            (!has_a, !has_b, evict)
        })
        .unwrap_or((true, true, Vec::new()));
    let payload = TaskAssigned {
        task_id: claimed.id,
        job_id: claimed.job_id.clone(),
        dtype: plan.dtype,
        m: tile.rows,
        k: plan.k,
        n: tile.cols,
        a: send_a.then_some(a),
        b: send_b.then_some(b),
        a_key,
        b_key,
        evict,
    };
    let sent =
        payload.a.as_ref().map_or(0, |x| x.len()) + payload.b.as_ref().map_or(0, |x| x.len());
    state
        .workers
        .with(waiter.socket.id, |w| w.send_budget.spend(sent));
    if let Err(e) = waiter.socket.emit("task_assigned", &payload) {
        state.workers.with(waiter.socket.id, |w| {
            w.leases.remove(&claimed.id);
            w.requested += 1;
            // What the worker holds is unknown now: start its model afresh.
            if let Some(cache) = w.cache.as_mut() {
                cache.clear();
            }
        });
        return Err(crate::error::Error::Internal(format!("emit failed: {e}")));
    }
    crate::metrics::Metrics::add(&state.metrics.bytes_sent, sent as u64);
    Ok(())
}

/// Why a task was not sent again after `panel_missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRedelivered {
    /// The task is not leased to this connection.
    NotLeased,
    /// The lease was sent again in full `trust::MAX_REDELIVERIES` times already: it goes back
    /// to the queue instead.
    TooOften,
    /// The connection's send budget is spent; it may ask again when it has refilled.
    OverBudget,
}

/// Sends a task again with both panels, to a caching worker that reported one missing. Its
/// cache model starts afresh. Each re-send is megabytes, so a lease is re-sent a bounded
/// number of times, and only within the connection's send budget.
pub async fn redeliver(
    state: &AppState,
    waiter: &Waiter,
    task_id: i64,
) -> Result<std::result::Result<(), NotRedelivered>> {
    let lease = state.workers.with(waiter.socket.id, |w| {
        let Some(lease) = w.leases.get(&task_id).filter(|l| !l.answered) else {
            return Err(NotRedelivered::NotLeased);
        };
        if lease.redelivered >= trust::MAX_REDELIVERIES {
            w.leases.remove(&task_id);
            return Err(NotRedelivered::TooOften);
        }
        if !w.send_budget.available() {
            return Err(NotRedelivered::OverBudget);
        }
        if let Some(cache) = w.cache.as_mut() {
            cache.clear();
        }
        // `deliver_as` counts a delivery against a request.
        w.requested += 1;
        // Counted now, and the lease kept in place while it is sent again: `panel_missing`s
        // handled meanwhile must find it, and find it counted.
        let lease = w.leases.get_mut(&task_id).expect("looked up above");
        lease.redelivered += 1;
        Ok(lease.clone())
    });
    let lease = match lease {
        None => return Ok(Err(NotRedelivered::NotLeased)),
        Some(Err(NotRedelivered::TooOften)) => {
            // Back to the queue for someone else; not counted against the task.
            db::unclaim_task(&state.db, task_id, &waiter.session).await?;
            state.scheduler.wake();
            return Ok(Err(NotRedelivered::TooOften));
        }
        Some(Err(why)) => return Ok(Err(why)),
        Some(Ok(lease)) => lease,
    };
    let claimed = db::Claimed {
        id: task_id,
        job_id: lease.job_id,
        tile_row: lease.tile_row as i64,
        tile_col: lease.tile_col as i64,
    };
    deliver_as(state, waiter, &claimed, lease.duplicate, lease.redelivered).await?;
    Ok(Ok(()))
}

/// Takes back leases that passed their deadline, every quarter lease (at most every second).
pub async fn sweep_loop(state: AppState) {
    let period = (state.config.lease / 4).min(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = std::time::Instant::now();
    loop {
        ticker.tick().await;
        if let Some(retention) = state.config.retention {
            // Purging is cheap when there is nothing to purge, but needs no second precision.
            if last_purge.elapsed()
                >= (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
            {
                last_purge = std::time::Instant::now();
                match db::purge_finished(&state.db, retention.as_millis() as i64).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "retention: removed inputs and results"),
                    Err(e) => tracing::error!(error = %e, "retention sweep failed"),
                }
            }
        }
        // Starved requests are retried as leases age: a slow lease may now be worth a copy.
        if state.scheduler.waiting() > 0 {
            state.scheduler.wake();
        }
        match db::expire_leases(&state.db, state.config.max_task_failures as usize).await {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(count = expired.len(), "leases expired; tasks re-queued");
                for failure in &expired {
                    for sid in state.workers.holders(failure.task.id) {
                        state
                            .workers
                            .with(sid, |w| w.leases.remove(&failure.task.id));
                    }
                }
                if let Err(e) = handle_failures(&state, &expired).await {
                    tracing::error!(error = %e, "handling expired leases failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "sweeping leases failed"),
        }
    }
}

/// Follows up tasks that workers failed (reported, or let expire): their workers' records
/// drop (and may be quarantined), a task at fault fails its job, the others are offered to
/// waiting workers again.
pub async fn handle_failures(state: &AppState, failures: &[db::Failure]) -> Result<()> {
    for failure in failures {
        if let Some(worker_id) = &failure.worker_id {
            state.workers.with_record(worker_id, trust::Record::failed);
            if let Some(why) = &failure.quarantined {
                quarantine(state, worker_id, why).await;
            }
        }
        match &failure.fault {
            Some(reason) => end_job(state, &failure.task.job_id, Some(reason)).await?,
            None => offer_again(state, std::slice::from_ref(&failure.task)).await?,
        }
    }
    Ok(())
}

/// Stops giving work to a quarantined worker, on every connection it has here: its leases go
/// back to the queue (not counted against their tasks) and each connection is told why.
pub async fn quarantine(state: &AppState, worker_id: &str, reason: &str) {
    tracing::warn!(%worker_id, reason, "worker quarantined");
    state
        .workers
        .with_record(worker_id, |r| r.quarantined = Some(reason.to_owned()));
    for sid in state.workers.sessions_of(worker_id) {
        state.scheduler.forget(sid);
        let Some(holder) = state.workers.with(sid, |w| {
            let leases = std::mem::take(&mut w.leases);
            (!leases.is_empty()).then(|| (w.session.clone(), w.address))
        }) else {
            continue;
        };
        if let Some((session, address)) = holder {
            let holder = db::Holder {
                session: &session,
                worker_id,
                address,
            };
            match db::release_session(&state.db, holder).await {
                Ok(released) => {
                    let _ = offer_again(state, &released).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "releasing a quarantined worker's leases failed")
                }
            }
        }
        if let Some(s) = state.io.get_socket(sid) {
            let _ = s.emit(
                "quarantined",
                &Quarantined {
                    reason: reason.to_owned(),
                },
            );
        }
    }
}

/// Offers tasks that went back to the queue to waiting workers again. Whether a task fails
/// its job is decided where its failure is recorded (see [`handle_failures`]), never from a count here.
pub async fn offer_again(state: &AppState, tasks: &[Requeued]) -> Result<()> {
    for task in tasks {
        broadcast::tile(
            state,
            &task.job_id,
            task.id,
            task.tile_row,
            task.tile_col,
            TaskState::Queued,
        );
    }
    state.scheduler.wake();
    Ok(())
}

/// Ends a job: failed with `reason`, or cancelled when there is none. Workers computing its
/// tasks are told to stop. Returns whether the job was still open.
#[tracing::instrument(name = "job", skip(state, reason))]
pub async fn end_job(state: &AppState, job_id: &str, reason: Option<&str>) -> Result<()> {
    let withdrawn = match reason {
        Some(reason) => {
            tracing::warn!(job_id, reason, "job failed");
            db::fail_job(&state.db, job_id, reason).await?
        }
        None => db::cancel_job(&state.db, job_id).await?,
    };
    for (task_id, _) in withdrawn {
        for sid in state.workers.holders(task_id) {
            state.workers.with(sid, |w| w.leases.remove(&task_id));
            if let Some(socket) = state.io.get_socket(sid) {
                // The worker may already be gone; its result would be refused anyway.
                let _ = socket.emit("task_cancelled", &TaskCancelled { task_id });
            }
        }
    }
    state.inputs.remove(job_id);
    forget_running(state, job_id);
    broadcast::job(state, job_id);
    Ok(())
}

/// A job that ended leaves the set of running jobs, which would otherwise only grow.
pub fn forget_running(state: &AppState, job_id: &str) {
    state.running_jobs.lock_or_recover().remove(job_id);
}

/// After a task is completed by one connection, tells any other connection computing a copy
/// of it to stop.
pub fn cancel_copies(state: &AppState, task_id: i64, winner: Sid) {
    for sid in state.workers.holders(task_id) {
        if sid == winner {
            continue;
        }
        state.workers.with(sid, |w| w.leases.remove(&task_id));
        if let Some(socket) = state.io.get_socket(sid) {
            let _ = socket.emit("task_cancelled", &TaskCancelled { task_id });
        }
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
        assert!(!copy_pays(gflop, 10.0, 0.0, 50.0), "barely started");
        assert!(copy_pays(gflop, 10.0, 0.0, 200.0));
        // A holder as fast as this worker, on time: not worth it.
        assert!(!copy_pays(gflop, 10.0, 10.0, 40.0));
        // A slow holder early in its tile: this worker would finish well before it.
        assert!(copy_pays(gflop, 10.0, 1.0, 150.0));
        // The same holder almost done: not worth it.
        assert!(!copy_pays(gflop, 10.0, 1.0, 450.0));
        // Past twice its expected time it has stalled: worth it again.
        assert!(copy_pays(gflop, 10.0, 1.0, 1500.0));
        // A slower worker never overtakes a faster holder on time.
        assert!(!copy_pays(gflop, 1.0, 10.0, 60.0));
    }
}
