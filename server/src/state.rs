//! The state shared by HTTP routes, Socket.io handlers and background tasks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::SocketIo;

use crate::config::Config;
use crate::db::{self, Pool};
use crate::error::{Error, Result};
use crate::jobs::{Dtype, Plan};
use crate::scheduler::Scheduler;
use crate::sync::LockExt;
use crate::trust::{self, Record};

/// Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Pool,
    /// Emits broadcasts (dashboards, grid statistics) from outside any handler.
    pub io: SocketIo,
    pub scheduler: Arc<Scheduler>,
    pub workers: Arc<Workers>,
    pub inputs: Arc<InputCache>,
    /// Tile and job changes not yet sent to dashboards.
    pub pending: Arc<crate::broadcast::Pending>,
    /// Connection and event-rate limits per client.
    pub limits: Arc<ClientLimits>,
    /// Stores verified results, many per transaction.
    pub committer: crate::commit::Committer,
    /// Jobs known to be running, so a claim marks its job running only once.
    pub running_jobs: Arc<Mutex<HashSet<String>>>,
    /// When each caught worker's accepted results were last checked again (ms since the
    /// epoch): a later refusal re-checks only what was accepted since (see `socket::audit`).
    pub audited: Arc<Mutex<HashMap<String, i64>>>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set on SIGTERM/SIGINT: no new work is handed out or accepted.
    pub shutting_down: Arc<std::sync::atomic::AtomicBool>,
    pub started: Instant,
}

/// A registered worker connection. How the worker behind it stands is not here but in its
/// [`Record`], which all of the worker's connections share.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub worker_id: String,
    /// This connection's lease key (the socket id): leases belong to connections.
    pub session: String,
    /// The client's address group (IPv6: its /64), for per-address limits.
    pub address: IpAddr,
    pub name: String,
    pub threads: u32,
    pub user_agent: String,
    /// RFC 3339 time of registration.
    pub connected_at: String,
    pub visible: bool,
    pub on_battery: bool,
    /// Tasks delivered to this connection and not yet answered.
    pub leases: HashMap<i64, Lease>,
    /// `request_task`s waiting for a task. With `leases`, bounded by the tasks-per-worker
    /// limit; both change under the registry lock, so concurrent requests cannot overshoot.
    pub requested: usize,
    /// Recent speed from reported compute times (exponential average), in GFLOP/s.
    pub gflops: f64,
    /// The worker's panel cache, when it announced one.
    pub cache: Option<crate::panels::CacheModel>,
    /// What the server may still send this connection (see [`SendBudget`]).
    pub send_budget: SendBudget,
}

impl WorkerInfo {
    /// Leases the connection is holding: answered ones are the server's to finish.
    pub fn held(&self) -> usize {
        self.leases.values().filter(|l| !l.answered).count()
    }
}

/// Who a connection's worker is and how it stands: what an event handler needs, copied
/// without the connection's leases and cache model (a whole `WorkerInfo` clone per event
/// cost 5 % of the server's CPU under the throughput benchmark).
#[derive(Debug, Clone)]
pub struct Standing {
    pub worker_id: String,
    pub session: String,
    pub address: IpAddr,
    /// The worker's record, shared by all its connections.
    pub record: Record,
    pub gflops: f64,
    pub visible: bool,
}

impl Standing {
    pub fn holder(&self) -> db::Holder<'_> {
        db::Holder {
            session: &self.session,
            worker_id: &self.worker_id,
            address: self.address,
        }
    }
}

/// A task delivered to a connection: what its answer must look like and where it belongs.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job_id: String,
    pub tile_row: usize,
    pub tile_col: usize,
    /// Bytes the result must have.
    pub result_len: usize,
    /// Floating-point operations the tile takes (2·rows·k·cols), for the statistics: kept
    /// here so that counting them never needs the job's inputs, which may be gone by then.
    pub flops: f64,
    /// A copy of a task another connection holds (see `scheduler::duplicate`).
    pub duplicate: bool,
    /// Its result has arrived and is being verified and stored. Such a lease no longer counts
    /// against `MAX_TASKS_PER_WORKER`: the worker is not holding the task, the server is, and
    /// a worker that asks for its next task while sending a result must not be refused
    /// because the server's commits are behind. A second result for it is refused.
    pub answered: bool,
    /// Times the task was sent again in full after `panel_missing` (bounded by
    /// `trust::MAX_REDELIVERIES`: each re-send is megabytes).
    pub redelivered: u8,
}

/// Bytes the server may send one connection: a bucket refilled at `MAX_SEND_BYTES_PER_SEC`
/// holding four seconds' worth. A delivery is made while the bucket is not empty and then
/// takes its whole size, so one task is never split and a connection that asked for more than
/// its share waits for the bucket to refill: no client can make the server send more than
/// its rate, whatever it asks for.
#[derive(Debug, Clone)]
pub struct SendBudget {
    tokens: f64,
    last: Instant,
    per_sec: f64,
}

impl SendBudget {
    /// Seconds of sending the bucket holds.
    const BURST_SECONDS: f64 = 4.0;

    pub fn new(bytes_per_sec: u64) -> Self {
        let per_sec = bytes_per_sec as f64;
        SendBudget {
            tokens: per_sec * Self::BURST_SECONDS,
            last: Instant::now(),
            per_sec,
        }
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.per_sec * Self::BURST_SECONDS);
        self.last = now;
    }

    /// Whether anything may be sent now.
    pub fn available(&mut self) -> bool {
        self.refill(Instant::now());
        self.tokens > 0.0
    }

    /// Counts bytes sent (the bucket may go below zero: the next send waits longer).
    pub fn spend(&mut self, bytes: usize) {
        self.refill(Instant::now());
        self.tokens -= bytes as f64;
    }
}

/// Registered connections, and the records of the workers behind them. A `std` mutex: it is
/// never held across an `.await`.
#[derive(Default)]
pub struct Workers {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_sid: HashMap<Sid, WorkerInfo>,
    /// One record per worker with a connection here: every connection of a worker reads and
    /// changes the same one, so a worker caught lying on one connection is not trusted more
    /// on another.
    records: HashMap<String, Record>,
    /// Connections per worker, for its lease allowance (shared by its connections).
    by_worker: HashMap<String, Vec<Sid>>,
    /// Connections per address group, for the per-address lease cap.
    by_address: HashMap<IpAddr, Vec<Sid>>,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing the registry, so recover the data.
        self.registry.lock_or_recover()
    }

    /// Adds a connection. `record` is the worker's record as stored; when another of its
    /// connections is here already, the record in memory is the current one and is kept.
    pub fn insert(&self, sid: Sid, info: WorkerInfo, record: Record) {
        let mut reg = self.lock();
        reg.records.entry(info.worker_id.clone()).or_insert(record);
        reg.by_worker
            .entry(info.worker_id.clone())
            .or_default()
            .push(sid);
        reg.by_address.entry(info.address).or_default().push(sid);
        reg.by_sid.insert(sid, info);
    }

    pub fn remove(&self, sid: Sid) -> Option<WorkerInfo> {
        let mut reg = self.lock();
        let info = reg.by_sid.remove(&sid)?;
        if let Some(sids) = reg.by_address.get_mut(&info.address) {
            sids.retain(|s| *s != sid);
            if sids.is_empty() {
                reg.by_address.remove(&info.address);
            }
        }
        if let Some(sids) = reg.by_worker.get_mut(&info.worker_id) {
            sids.retain(|s| *s != sid);
            if sids.is_empty() {
                reg.by_worker.remove(&info.worker_id);
                reg.records.remove(&info.worker_id);
            }
        }
        Some(info)
    }

    pub fn worker_id(&self, sid: Sid) -> Option<String> {
        self.lock().by_sid.get(&sid).map(|w| w.worker_id.clone())
    }

    pub fn get(&self, sid: Sid) -> Option<WorkerInfo> {
        self.lock().by_sid.get(&sid).cloned()
    }

    /// What an event handler needs to know of a connection's worker.
    pub fn standing(&self, sid: Sid) -> Option<Standing> {
        let reg = self.lock();
        let w = reg.by_sid.get(&sid)?;
        Some(Standing {
            worker_id: w.worker_id.clone(),
            session: w.session.clone(),
            address: w.address,
            record: reg.records.get(&w.worker_id).cloned().unwrap_or_default(),
            gflops: w.gflops,
            visible: w.visible,
        })
    }

    pub fn with<R>(&self, sid: Sid, f: impl FnOnce(&mut WorkerInfo) -> R) -> Option<R> {
        self.lock().by_sid.get_mut(&sid).map(f)
    }

    /// Changes a worker's record, seen at once by all its connections here.
    pub fn with_record<R>(&self, worker_id: &str, f: impl FnOnce(&mut Record) -> R) -> Option<R> {
        self.lock().records.get_mut(worker_id).map(f)
    }

    /// Whether a connection may be handed one more task now, counting `extra` tasks already
    /// claimed for it and `extra_address` for its address in the dispatch round under way:
    /// its worker's lease allowance, its address's lease cap, and its send budget.
    pub fn may_lease(
        &self,
        sid: Sid,
        max_per_worker: usize,
        max_per_address: usize,
        extra: usize,
        extra_address: usize,
    ) -> bool {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let Some(w) = reg.by_sid.get(&sid) else {
            return false;
        };
        let allowance = reg
            .records
            .get(&w.worker_id)
            .map_or(trust::FIRST_LEASES, |r| r.lease_allowance(max_per_worker));
        // The worker's allowance covers all its connections here.
        let held = |sids: Option<&Vec<Sid>>| -> usize {
            sids.into_iter()
                .flatten()
                .filter_map(|s| reg.by_sid.get(s))
                .map(WorkerInfo::held)
                .sum()
        };
        let worker_held = held(reg.by_worker.get(&w.worker_id));
        if worker_held + extra >= allowance {
            return false;
        }
        let address_held = held(reg.by_address.get(&w.address));
        if address_held + extra_address >= max_per_address {
            return false;
        }
        reg.by_sid
            .get_mut(&sid)
            .is_some_and(|w| w.send_budget.available())
    }

    pub fn len(&self) -> usize {
        self.lock().by_sid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<WorkerInfo> {
        let mut all: Vec<_> = self.lock().by_sid.values().cloned().collect();
        all.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
        all
    }

    /// The connections of one worker (a browser may open several).
    pub fn sessions_of(&self, worker_id: &str) -> Vec<Sid> {
        self.lock()
            .by_worker
            .get(worker_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The connection whose lease key is `session`.
    pub fn by_session(&self, session: &str) -> Option<(Sid, WorkerInfo)> {
        self.lock()
            .by_sid
            .iter()
            .find(|(_, w)| w.session == session)
            .map(|(sid, w)| (*sid, w.clone()))
    }

    /// The connections holding a lease on `task_id`.
    pub fn holders(&self, task_id: i64) -> Vec<Sid> {
        self.lock()
            .by_sid
            .iter()
            .filter(|(_, w)| w.leases.contains_key(&task_id))
            .map(|(sid, _)| *sid)
            .collect()
    }
}

/// A job's operands, as workers are sent them: A row-major, B cut into column panels.
pub struct JobInputs {
    pub plan: Plan,
    pub a: Bytes,
    pub b_panels: Bytes,
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
        let plan = Plan {
            dtype: Dtype::parse(&job.dtype).map_err(Error::Internal)?,
            m: job.m as usize,
            k: job.k as usize,
            n: job.n as usize,
            tile: job.tile as usize,
        };
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

/// A socket that asked for work and has not been given any yet.
pub struct Waiter {
    pub socket: SocketRef,
    pub worker_id: String,
    pub session: String,
    pub address: IpAddr,
}

impl Waiter {
    pub fn holder(&self) -> db::Holder<'_> {
        db::Holder {
            session: &self.session,
            worker_id: &self.worker_id,
            address: self.address,
        }
    }
}

/// Engine.IO sessions and Socket.io connections open at once per client address group (see
/// `address::group`).
#[derive(Default)]
pub struct ClientLimits {
    per_ip: Mutex<HashMap<IpAddr, Open>>,
}

/// What one address group holds open.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    /// Engine.IO sessions, from the handshake until the session is gone, whether or not it
    /// ever connected to Socket.io.
    sessions: usize,
    /// Socket.io connections admitted by the connect middleware.
    connections: usize,
}

impl ClientLimits {
    /// Counts a new connection from `ip`, or refuses it (`None`) when that would pass `max`.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        events_per_sec: u32,
    ) -> Option<Admission> {
        let mut per_ip = self.per_ip.lock_or_recover();
        let open = per_ip.entry(ip).or_default();
        if open.connections >= max {
            return None;
        }
        open.connections += 1;
        let per_sec = f64::from(events_per_sec);
        Some(Admission {
            limits: self.clone(),
            ip,
            per_sec,
            bucket: Mutex::new((2.0 * per_sec, Instant::now())),
            closed: Default::default(),
        })
    }

    /// Counts a new Engine.IO session from `ip`, or refuses it (`None`) when that would pass
    /// `max`. The place is given back when the last clone of the returned [`Session`] is
    /// dropped.
    pub fn open_session(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Session> {
        let mut per_ip = self.per_ip.lock_or_recover();
        let open = per_ip.entry(ip).or_default();
        if open.sessions >= max {
            if *open == Open::default() {
                per_ip.remove(&ip);
            }
            return None;
        }
        open.sessions += 1;
        Some(Session {
            _place: Arc::new(SessionPlace {
                limits: self.clone(),
                ip,
            }),
        })
    }

    /// Connections counted for `ip` now.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        self.counts(ip).connections
    }

    /// Engine.IO sessions counted for `ip` now.
    #[cfg(test)]
    pub fn sessions(&self, ip: IpAddr) -> usize {
        self.counts(ip).sessions
    }

    #[cfg(test)]
    fn counts(&self, ip: IpAddr) -> Open {
        let per_ip = self.per_ip.lock_or_recover();
        per_ip.get(&ip).copied().unwrap_or_default()
    }

    fn release(&self, ip: IpAddr, what: impl FnOnce(&mut Open)) {
        let mut per_ip = self.per_ip.lock_or_recover();
        if let Some(open) = per_ip.get_mut(&ip) {
            what(open);
            if *open == Open::default() {
                per_ip.remove(&ip);
            }
        }
    }
}

/// One Engine.IO session's place in its address's budget. The handshake gate puts it in the
/// handshake request's extensions, which engineioxide keeps with the session for the
/// session's whole life (`SocketRef::req_parts`): the place is taken before the session
/// exists and given back when the session is dropped, however it ends (closed by the client,
/// a ping timeout, the connect timeout, or a failed upgrade), with no hook to forget.
#[derive(Clone)]
pub struct Session {
    /// Held, never read: its drop is what gives the place back.
    _place: Arc<SessionPlace>,
}

struct SessionPlace {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl Drop for SessionPlace {
    fn drop(&mut self) {
        self.limits.release(self.ip, |open| {
            open.sessions = open.sessions.saturating_sub(1)
        });
    }
}

/// One admitted connection: its share of its address's limit, its event budget, and whether
/// it has ended. Every handler of the connection holds it, so it lives exactly as long as the
/// socket. Its share goes back once: when the disconnect handler closes it, or when it is
/// dropped; socketioxide drops a socket without calling its disconnect handler when the client
/// leaves while its connect is still in flight, and those shares used to stay counted until
/// the address was refused for good.
pub struct Admission {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
    per_sec: f64,
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
    closed: std::sync::atomic::AtomicBool,
}

impl Admission {
    /// Takes one event from the connection's bucket, which refills at the configured rate and
    /// holds two seconds' worth, so bursts pass and sustained floods do not.
    pub fn allow_event(&self) -> bool {
        let now = Instant::now();
        let mut bucket = self.bucket.lock_or_recover();
        let (tokens, last) = &mut *bucket;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec)
            .min(2.0 * self.per_sec);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Marks the connection ended and gives its share of the address's limit back (once).
    pub fn close(&self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.limits.release(self.ip, |open| {
                open.connections = open.connections.saturating_sub(1);
            });
        }
    }

    /// Whether the connection has ended. A handler that was still running when it ended
    /// checks this after adding anything per connection, and takes it back.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.close();
    }
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(worker_id: &str, address: [u8; 4], leases: usize) -> WorkerInfo {
        let lease = Lease {
            job_id: "j".into(),
            tile_row: 0,
            tile_col: 0,
            result_len: 4,
            flops: 2.0,
            duplicate: false,
            answered: false,
            redelivered: 0,
        };
        WorkerInfo {
            worker_id: worker_id.into(),
            session: Sid::new().to_string(),
            address: IpAddr::from(address),
            name: String::new(),
            threads: 1,
            user_agent: String::new(),
            connected_at: String::new(),
            visible: true,
            on_battery: false,
            leases: (0..leases as i64).map(|id| (id, lease.clone())).collect(),
            requested: 0,
            gflops: 0.0,
            cache: None,
            send_budget: SendBudget::new(1 << 20),
        }
    }

    #[test]
    fn a_workers_connections_share_one_record_and_one_allowance() {
        let workers = Workers::default();
        let (first, second) = (Sid::new(), Sid::new());
        let trusted = Record {
            verified: 10,
            consecutive_verified: 10,
            ..Record::default()
        };
        workers.insert(first, connection("w", [10, 0, 0, 1], 0), trusted.clone());
        // The second connection brings the record as stored; the one in memory is current.
        workers.insert(second, connection("w", [10, 0, 0, 2], 0), Record::default());
        assert_eq!(workers.standing(second).map(|s| s.record), Some(trusted));
        workers.with_record("w", |r| r.refused(1));
        let after = workers.standing(second).expect("registered").record;
        assert_eq!((after.refused, after.consecutive_verified), (1, 0));
        // Allowance 2 after the refusal, for the worker as a whole.
        workers.with(first, |w| *w = connection("w", [10, 0, 0, 1], 1));
        assert!(workers.may_lease(second, 16, 64, 0, 0));
        assert!(
            !workers.may_lease(second, 16, 64, 1, 0),
            "one held, one claimed this round"
        );
        workers.remove(first);
        workers.remove(second);
        assert_eq!(
            workers.with_record("w", |_| ()),
            None,
            "the record goes with the last one"
        );
    }

    #[test]
    fn an_address_holds_at_most_its_cap_whoever_asks() {
        let workers = Workers::default();
        let sids: Vec<Sid> = (0..3).map(|_| Sid::new()).collect();
        for (i, sid) in sids.iter().enumerate() {
            let held = if i < 2 { 2 } else { 0 };
            workers.insert(
                *sid,
                connection(&format!("w{i}"), [10, 0, 0, 1], held),
                Record::default(),
            );
        }
        let elsewhere = Sid::new();
        workers.insert(
            elsewhere,
            connection("x", [10, 0, 0, 9], 0),
            Record::default(),
        );
        assert!(workers.may_lease(sids[2], 16, 5, 0, 0), "4 held of 5");
        assert!(
            !workers.may_lease(sids[2], 16, 5, 0, 1),
            "and one claimed this round"
        );
        assert!(
            workers.may_lease(elsewhere, 16, 5, 0, 0),
            "another address is apart"
        );
    }

    #[test]
    fn the_send_budget_holds_four_seconds_and_waits_when_spent() {
        let mut budget = SendBudget::new(1000);
        assert!(budget.available());
        budget.spend(3000);
        assert!(budget.available(), "1000 bytes left of 4000");
        budget.spend(5000); // one delivery may overdraw
        assert!(!budget.available(), "spent: wait for the refill");
    }

    #[test]
    fn an_admission_gives_its_place_back_once_whether_closed_or_dropped() {
        let limits = Arc::new(ClientLimits::default());
        let ip = IpAddr::from([10, 0, 0, 1]);
        let first = limits.admit(ip, 2, 10).expect("first of two");
        let second = limits.admit(ip, 2, 10).expect("second of two");
        assert!(
            limits.admit(ip, 2, 10).is_none(),
            "a third passes the limit"
        );
        assert_eq!(
            limits.open(IpAddr::from([10, 0, 0, 2])),
            0,
            "other addresses are apart"
        );

        first.close();
        assert!(first.is_closed());
        assert_eq!(limits.open(ip), 1);
        drop(first); // closed already: must not give the place back twice
        assert_eq!(limits.open(ip), 1);

        drop(second); // never closed, as when socketioxide drops a half-connected socket
        assert_eq!(limits.open(ip), 0);
        assert!(limits.admit(ip, 2, 10).is_some());
    }

    #[test]
    fn a_session_holds_its_place_until_its_last_clone_is_dropped() {
        let limits = Arc::new(ClientLimits::default());
        let ip = IpAddr::from([10, 0, 0, 1]);
        let first = limits.open_session(ip, 2).expect("first of two");
        let second = limits.open_session(ip, 2).expect("second of two");
        assert!(
            limits.open_session(ip, 2).is_none(),
            "a third passes the limit"
        );
        assert_eq!(limits.sessions(ip), 2);
        assert_eq!(limits.open(ip), 0, "sessions are not connections");

        // engineioxide clones the handshake's parts (and so the session) for an upgrade.
        let kept_by_the_session = first.clone();
        drop(first);
        assert_eq!(limits.sessions(ip), 2, "a clone still holds the place");
        drop(kept_by_the_session);
        assert_eq!(limits.sessions(ip), 1);

        // Connections are counted apart, and the entry goes once both are back to zero.
        let connection = limits.admit(ip, 1, 10).expect("a connection");
        drop(second);
        assert_eq!((limits.sessions(ip), limits.open(ip)), (0, 1));
        drop(connection);
        assert!(limits.per_ip.lock().expect("not poisoned").is_empty());
        assert!(limits.open_session(ip, 0).is_none(), "a zero limit refuses");
        assert!(
            limits.per_ip.lock().expect("not poisoned").is_empty(),
            "a refusal leaves nothing behind"
        );
    }

    #[test]
    fn the_event_budget_holds_two_seconds_worth() {
        let limits = Arc::new(ClientLimits::default());
        let admission = limits
            .admit(IpAddr::from([10, 0, 0, 1]), 1, 10)
            .expect("the first connection is admitted");
        let allowed = (0..100).filter(|_| admission.allow_event()).count();
        assert!(
            (20..=21).contains(&allowed),
            "allowed {allowed} of a burst of 100"
        );
    }
}
