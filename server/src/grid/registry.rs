//! The registry: the connections of registered workers, the leases each holds, and the
//! records of the workers behind them.
//!
//! A lease lives in two places, the task's row in the database and the connection holding it
//! here; every change to the second goes through the lease methods of [`Workers`], named for
//! what happens to the lease (delivered, answered, dropped, withdrawn), so that the places
//! that must keep the two in step are few and easy to find.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::db;
use crate::panels::CacheModel;
use crate::sync::LockExt;
use crate::trust::{self, Record};

/// Identifies one connection of a worker: the key its leases are stored under (the tasks
/// table's `lease_owner`) and the address the outbox sends to. Transports make one from
/// their own id; Socket.io's session ids are 16 url-safe characters, and so are these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId([u8; ConnectionId::LEN]);

impl ConnectionId {
    const LEN: usize = 16;

    /// An id of exactly 16 url-safe characters; `None` for anything else.
    pub fn parse(id: &str) -> Option<Self> {
        let bytes: [u8; Self::LEN] = id.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .then_some(ConnectionId(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only url-safe ASCII gets in (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// A fresh id, for tests that need connections without a transport.
    #[cfg(test)]
    pub fn fresh() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::parse(&format!("test{n:012}")).expect("16 url-safe characters")
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionId({})", self.as_str())
    }
}

/// What a caching connection holds of one job (its rows of A and columns of B; none when it
/// holds nothing of any job yet) and the size of its cache in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub job: Option<String>,
    pub rows: Vec<i64>,
    pub cols: Vec<i64>,
    pub budget: u64,
}

/// A registered worker connection. How the worker behind it stands is not here but in its
/// [`Record`], which all of the worker's connections share.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: ConnectionId,
    pub worker_id: String,
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
    leases: HashMap<i64, Lease>,
    /// `request_task`s waiting for a task. With `leases`, bounded by the tasks-per-worker
    /// limit; both change under the registry lock, so concurrent requests cannot overshoot.
    requested: usize,
    /// Recent speed from reported compute times (exponential average), in GFLOP/s.
    pub gflops: f64,
    /// Recent time from a task's delivery to its result (exponential average, ms; 0 until
    /// measured): the kernel, and also the wait for its panels behind the tasks before it on
    /// the connection's link, which on a slow link is most of it.
    pub turnaround_ms: f64,
    /// The worker's panel cache, when it announced one.
    cache: Option<CacheModel>,
    /// What the server may still send this connection (see [`SendBudget`]).
    send_budget: SendBudget,
}

impl Connection {
    /// A connection with no leases yet; `cache` is the model of the panel cache it announced
    /// (see `panels::resume`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ConnectionId,
        worker_id: String,
        address: IpAddr,
        name: String,
        threads: u32,
        user_agent: String,
        cache: Option<CacheModel>,
        send_bytes_per_sec: u64,
    ) -> Self {
        Connection {
            id,
            worker_id,
            address,
            name,
            threads,
            user_agent,
            connected_at: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string(),
            visible: true,
            on_battery: false,
            leases: HashMap::new(),
            requested: 0,
            gflops: 0.0,
            turnaround_ms: 0.0,
            cache,
            send_budget: SendBudget::new(send_bytes_per_sec),
        }
    }

    /// Leases delivered to the connection and not yet finished, answered or not.
    pub fn leases(&self) -> usize {
        self.leases.len()
    }

    /// Leases the connection is holding: answered ones are the server's to finish.
    pub fn held(&self) -> usize {
        self.leases.values().filter(|l| !l.answered).count()
    }

    /// The worker's speed as a lease holder: a quarter for a tab in the background, which
    /// browsers throttle.
    pub fn holder_speed(&self) -> f64 {
        if self.visible {
            self.gflops
        } else {
            self.gflops / 4.0
        }
    }
}

/// Who a connection's worker is and how it stands: what an event handler needs, copied
/// without the connection's leases and cache model (a whole `Connection` clone per event
/// cost 5 % of the server's CPU under the throughput benchmark).
#[derive(Debug, Clone)]
pub struct Standing {
    pub connection: ConnectionId,
    pub worker_id: String,
    pub address: IpAddr,
    /// The worker's record, shared by all its connections.
    pub record: Record,
    pub gflops: f64,
    /// See [`Connection::turnaround_ms`].
    pub turnaround_ms: f64,
    pub visible: bool,
}

impl Standing {
    pub fn holder(&self) -> db::Holder<'_> {
        db::Holder {
            connection: self.connection.as_str(),
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
    /// A copy of a task another connection holds (see `dispatch::duplicate`).
    pub duplicate: bool,
    /// Its result has arrived and is being verified and stored. Such a lease no longer counts
    /// against `MAX_TASKS_PER_WORKER`: the worker is not holding the task, the server is, and
    /// a worker that asks for its next task while sending a result must not be refused
    /// because the server's commits are behind. A second result for it is refused.
    pub answered: bool,
    /// Times the task was sent again in full after `panel_missing` (bounded by
    /// `trust::MAX_REDELIVERIES`: each re-send is megabytes).
    pub redelivered: u8,
    /// When it was handed to the connection, for the connection's turnaround.
    pub sent_at: std::time::Instant,
}

/// Which of a task's panels travel with it, decided against the connection's cache model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub send_a: bool,
    pub send_b: bool,
    /// Keys the worker must drop to make room.
    pub evict: Vec<String>,
}

/// A panel of a delivery: its cache key and size.
pub struct PanelRef<'a> {
    pub key: &'a str,
    pub bytes: u64,
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
        self.covers(0)
    }

    /// Whether something may still be sent once `promised` bytes, already decided on but not
    /// yet sent, have gone.
    pub fn covers(&mut self, promised: u64) -> bool {
        self.refill(Instant::now());
        self.tokens > promised as f64
    }

    /// Counts bytes sent (the bucket may go below zero: the next send waits longer).
    pub fn spend(&mut self, bytes: usize) {
        self.refill(Instant::now());
        self.tokens -= bytes as f64;
    }
}

/// What a dispatch round has claimed so far for one connection (`tasks`, and `bytes`: their
/// panels in full) and for its address (`at_address`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claimed {
    pub tasks: usize,
    pub at_address: usize,
    pub bytes: u64,
}

/// Registered connections, and the records of the workers behind them. A `std` mutex: it is
/// never held across an `.await`.
#[derive(Default)]
pub struct Workers {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<ConnectionId, Connection>,
    /// One record per worker with a connection here: every connection of a worker reads and
    /// changes the same one, so a worker caught lying on one connection is not trusted more
    /// on another.
    records: HashMap<String, Record>,
    /// Connections per worker, for its lease allowance (shared by its connections).
    by_worker: HashMap<String, Vec<ConnectionId>>,
    /// Connections per address group, for the per-address lease cap.
    by_address: HashMap<IpAddr, Vec<ConnectionId>>,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock_or_recover()
    }

    /// Adds a connection. `record` is the worker's record as stored; when another of its
    /// connections is here already, the record in memory is the current one and is kept.
    pub fn insert(&self, conn: Connection, record: Record) {
        let mut reg = self.lock();
        reg.records.entry(conn.worker_id.clone()).or_insert(record);
        reg.by_worker
            .entry(conn.worker_id.clone())
            .or_default()
            .push(conn.id);
        reg.by_address
            .entry(conn.address)
            .or_default()
            .push(conn.id);
        reg.by_id.insert(conn.id, conn);
    }

    pub fn remove(&self, id: ConnectionId) -> Option<Connection> {
        let mut reg = self.lock();
        let conn = reg.by_id.remove(&id)?;
        if let Some(ids) = reg.by_address.get_mut(&conn.address) {
            ids.retain(|c| *c != id);
            if ids.is_empty() {
                reg.by_address.remove(&conn.address);
            }
        }
        if let Some(ids) = reg.by_worker.get_mut(&conn.worker_id) {
            ids.retain(|c| *c != id);
            if ids.is_empty() {
                reg.by_worker.remove(&conn.worker_id);
                reg.records.remove(&conn.worker_id);
            }
        }
        Some(conn)
    }

    pub fn contains(&self, id: ConnectionId) -> bool {
        self.lock().by_id.contains_key(&id)
    }

    /// What an event handler needs to know of a connection's worker.
    pub fn standing(&self, id: ConnectionId) -> Option<Standing> {
        let reg = self.lock();
        let c = reg.by_id.get(&id)?;
        Some(Standing {
            connection: id,
            worker_id: c.worker_id.clone(),
            address: c.address,
            record: reg.records.get(&c.worker_id).cloned().unwrap_or_default(),
            gflops: c.gflops,
            turnaround_ms: c.turnaround_ms,
            visible: c.visible,
        })
    }

    /// Changes what the page says of its situation.
    pub fn set_status(&self, id: ConnectionId, visible: Option<bool>, on_battery: Option<bool>) {
        if let Some(c) = self.lock().by_id.get_mut(&id) {
            if let Some(v) = visible {
                c.visible = v;
            }
            if let Some(b) = on_battery {
                c.on_battery = b;
            }
        }
    }

    /// Folds a tile's measured speed into the connection's recent speed.
    pub fn record_speed(&self, id: ConnectionId, gflops: f64) {
        if let Some(c) = self.lock().by_id.get_mut(&id) {
            c.gflops = if c.gflops == 0.0 {
                gflops
            } else {
                0.8 * c.gflops + 0.2 * gflops
            };
        }
    }

    /// Changes a worker's record, seen at once by all its connections here.
    pub fn with_record<R>(&self, worker_id: &str, f: impl FnOnce(&mut Record) -> R) -> Option<R> {
        self.lock().records.get_mut(worker_id).map(f)
    }

    /// Counts one more request for work from a connection, unless what it holds and awaits
    /// reaches `max`: then the count it has (`Err`).
    pub fn request(&self, id: ConnectionId, max: usize) -> Result<(), usize> {
        let mut reg = self.lock();
        let Some(c) = reg.by_id.get_mut(&id) else {
            return Err(max);
        };
        let held = c.held() + c.requested;
        if held >= max {
            return Err(held);
        }
        c.requested += 1;
        Ok(())
    }

    /// Whether a connection may be handed one more task now, counting what the dispatch
    /// round under way has claimed already (see [`Claimed`]): its worker's lease allowance,
    /// its address's lease cap, and its send budget. The budget counts the claimed tasks'
    /// panels too: they are sent only after the round, and a round that checked the budget
    /// alone would hand one connection as many tasks as its allowance, all on one refill.
    pub fn may_lease(
        &self,
        id: ConnectionId,
        max_per_worker: usize,
        max_per_address: usize,
        claimed: Claimed,
    ) -> bool {
        let Claimed {
            tasks: extra,
            at_address: extra_address,
            bytes: extra_bytes,
        } = claimed;
        let mut guard = self.lock();
        let reg = &mut *guard;
        let Some(c) = reg.by_id.get(&id) else {
            return false;
        };
        let allowance = reg
            .records
            .get(&c.worker_id)
            .map_or(trust::FIRST_LEASES, |r| r.lease_allowance(max_per_worker));
        // The worker's allowance covers all its connections here.
        let held = |ids: Option<&Vec<ConnectionId>>| -> usize {
            ids.into_iter()
                .flatten()
                .filter_map(|i| reg.by_id.get(i))
                .map(Connection::held)
                .sum()
        };
        let worker_held = held(reg.by_worker.get(&c.worker_id));
        if worker_held + extra >= allowance {
            return false;
        }
        let address_held = held(reg.by_address.get(&c.address));
        if address_held + extra_address >= max_per_address {
            return false;
        }
        reg.by_id
            .get_mut(&id)
            .is_some_and(|c| c.send_budget.covers(extra_bytes))
    }

    /// Tasks a connection holds now.
    pub fn held(&self, id: ConnectionId) -> usize {
        self.lock().by_id.get(&id).map_or(0, Connection::held)
    }

    /// What a connection's panel cache holds of its main job (or of `fallback_job` when it
    /// has none yet), and its size. `None` without a cache.
    pub fn cached_panels(&self, id: ConnectionId, fallback_job: Option<&str>) -> Option<Held> {
        let reg = self.lock();
        let cache = reg.by_id.get(&id)?.cache.as_ref()?;
        let job = cache.main_job().or_else(|| fallback_job.map(str::to_owned));
        let (rows, cols) = match &job {
            Some(job) => (
                cache.indices(job, crate::panels::Operand::A),
                cache.indices(job, crate::panels::Operand::B),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Some(Held {
            job,
            rows,
            cols,
            budget: cache.budget(),
        })
    }

    /// Connections that announced a panel cache, and the smallest of their caches: a job is
    /// cut into at least as many blocks, each fitting every one of them.
    pub fn caching(&self) -> (usize, Option<u64>) {
        let reg = self.lock();
        let caches = reg.by_id.values().filter_map(|c| c.cache.as_ref());
        caches.fold((0, None), |(n, least), cache| {
            let budget = cache.budget();
            (n + 1, Some(least.map_or(budget, |l: u64| l.min(budget))))
        })
    }

    // ---- Leases -------------------------------------------------------------------------

    /// Records a task delivered to a connection, answering one of its requests, and decides
    /// against its cache model which panels travel, in one critical section: the lease is
    /// there before the task is sent, so a fast result never finds it missing. `sent` is
    /// what the delivery will cost the send budget, given which panels travel.
    pub fn deliver(
        &self,
        id: ConnectionId,
        task_id: i64,
        lease: Lease,
        a: PanelRef<'_>,
        b: PanelRef<'_>,
    ) -> Shipment {
        let mut reg = self.lock();
        let Some(c) = reg.by_id.get_mut(&id) else {
            return Shipment {
                send_a: true,
                send_b: true,
                evict: Vec::new(),
            };
        };
        c.leases.insert(task_id, lease);
        c.requested = c.requested.saturating_sub(1);
        let shipment = match c.cache.as_mut() {
            None => Shipment {
                send_a: true,
                send_b: true,
                evict: Vec::new(),
            },
            Some(cache) => {
                let (has_a, has_b) = (cache.hit(a.key), cache.hit(b.key));
                let mut evict = Vec::new();
                if !has_a {
                    evict.extend(cache.insert(a.key.to_owned(), a.bytes));
                }
                if !has_b {
                    evict.extend(cache.insert(b.key.to_owned(), b.bytes));
                }
                Shipment {
                    send_a: !has_a,
                    send_b: !has_b,
                    evict,
                }
            }
        };
        let sent =
            if shipment.send_a { a.bytes } else { 0 } + if shipment.send_b { b.bytes } else { 0 };
        c.send_budget.spend(sent as usize);
        shipment
    }

    /// Takes back a delivery that could not be sent: the lease goes, the request it answered
    /// waits again, and the cache model starts afresh (what the worker holds is unknown now).
    pub fn undeliver(&self, id: ConnectionId, task_id: i64) {
        if let Some(c) = self.lock().by_id.get_mut(&id) {
            c.leases.remove(&task_id);
            c.requested += 1;
            if let Some(cache) = c.cache.as_mut() {
                cache.clear();
            }
        }
    }

    /// Whether the connection holds a lease on the task that no result has answered yet.
    pub fn awaits(&self, id: ConnectionId, task_id: i64) -> bool {
        self.lock()
            .by_id
            .get(&id)
            .and_then(|c| c.leases.get(&task_id))
            .is_some_and(|l| !l.answered)
    }

    /// Marks a lease answered when a result for it arrives, and returns it; `None` when the
    /// connection does not hold it, or answered it already.
    pub fn answer(&self, id: ConnectionId, task_id: i64) -> Option<Lease> {
        let mut reg = self.lock();
        let lease = reg.by_id.get_mut(&id)?.leases.get_mut(&task_id)?;
        if lease.answered {
            return None;
        }
        lease.answered = true;
        let (lease, took) = (
            lease.clone(),
            lease.sent_at.elapsed().as_secs_f64() * 1000.0,
        );
        if let Some(c) = reg.by_id.get_mut(&id) {
            c.turnaround_ms = if c.turnaround_ms == 0.0 {
                took
            } else {
                0.8 * c.turnaround_ms + 0.2 * took
            };
        }
        Some(lease)
    }

    /// Drops a connection's lease on a task: its result was refused or could not be checked,
    /// or the worker gave it up.
    pub fn drop_lease(&self, id: ConnectionId, task_id: i64) {
        if let Some(c) = self.lock().by_id.get_mut(&id) {
            c.leases.remove(&task_id);
        }
    }

    /// Drops a lease once its result is stored, if it is still the lease that result
    /// answered: while the result was being stored the lease may have expired and the task
    /// come back to the same connection as a new lease.
    pub fn drop_answered(&self, id: ConnectionId, task_id: i64) {
        if let Some(c) = self.lock().by_id.get_mut(&id) {
            if c.leases.get(&task_id).is_some_and(|l| l.answered) {
                c.leases.remove(&task_id);
            }
        }
    }

    /// Takes a task back from every connection holding it but `except`, and returns them
    /// (they are to be told to stop).
    pub fn withdraw(&self, task_id: i64, except: Option<ConnectionId>) -> Vec<ConnectionId> {
        let mut reg = self.lock();
        let mut from = Vec::new();
        for (id, c) in reg.by_id.iter_mut() {
            if Some(*id) != except && c.leases.remove(&task_id).is_some() {
                from.push(*id);
            }
        }
        from
    }

    /// The jobs of the tasks leased here.
    pub fn leased_jobs(&self) -> Vec<String> {
        let reg = self.lock();
        let mut jobs: Vec<String> = reg
            .by_id
            .values()
            .flat_map(|c| c.leases.values().map(|l| l.job_id.clone()))
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        jobs
    }

    /// Takes back every lease of a job: the connections and tasks they held.
    pub fn withdraw_job(&self, job_id: &str) -> Vec<(ConnectionId, i64)> {
        let mut reg = self.lock();
        let mut from = Vec::new();
        for (id, c) in reg.by_id.iter_mut() {
            c.leases.retain(|task_id, lease| {
                let keep = lease.job_id != job_id;
                if !keep {
                    from.push((*id, *task_id));
                }
                keep
            });
        }
        from
    }

    /// Drops every lease of a connection; whether it had any.
    pub fn drop_all(&self, id: ConnectionId) -> bool {
        self.lock()
            .by_id
            .get_mut(&id)
            .is_some_and(|c| !std::mem::take(&mut c.leases).is_empty())
    }

    /// Prepares a lease to be sent again in full after `panel_missing`: counts the re-send
    /// and the request it answers, and starts the cache model afresh. A lease re-sent
    /// `MAX_REDELIVERIES` times already is dropped instead (`TooOften`), and nothing is sent
    /// past the send budget.
    pub fn redeliver(&self, id: ConnectionId, task_id: i64) -> Result<Lease, NotRedelivered> {
        let mut reg = self.lock();
        let Some(c) = reg.by_id.get_mut(&id) else {
            return Err(NotRedelivered::NotLeased);
        };
        let Some(lease) = c.leases.get(&task_id).filter(|l| !l.answered) else {
            return Err(NotRedelivered::NotLeased);
        };
        if lease.redelivered >= trust::MAX_REDELIVERIES {
            c.leases.remove(&task_id);
            return Err(NotRedelivered::TooOften);
        }
        if !c.send_budget.available() {
            return Err(NotRedelivered::OverBudget);
        }
        if let Some(cache) = c.cache.as_mut() {
            cache.clear();
        }
        // The delivery counts itself against a request.
        c.requested += 1;
        // Counted now, and the lease kept in place while it is sent again: `panel_missing`s
        // handled meanwhile must find it, and find it counted.
        let Some(lease) = c.leases.get_mut(&task_id) else {
            return Err(NotRedelivered::NotLeased);
        };
        lease.redelivered += 1;
        Ok(lease.clone())
    }

    /// The connections holding a lease on `task_id`.
    pub fn holders(&self, task_id: i64) -> Vec<ConnectionId> {
        self.lock()
            .by_id
            .iter()
            .filter(|(_, c)| c.leases.contains_key(&task_id))
            .map(|(id, _)| *id)
            .collect()
    }

    // ---- Views --------------------------------------------------------------------------

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every connection, oldest first.
    pub fn snapshot(&self) -> Vec<Connection> {
        let mut all: Vec<_> = self.lock().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.connected_at.cmp(&b.connected_at));
        all
    }

    /// `f` of every connection, without copying the connections.
    pub fn map<T>(&self, f: impl Fn(&Connection) -> T) -> Vec<T> {
        self.lock().by_id.values().map(f).collect()
    }

    /// The connections of one worker (a browser may open several).
    pub fn connections_of(&self, worker_id: &str) -> Vec<ConnectionId> {
        self.lock()
            .by_worker
            .get(worker_id)
            .cloned()
            .unwrap_or_default()
    }

    /// A lease holder's speed (see [`Connection::holder_speed`]) and its recent turnaround
    /// (`Connection::turnaround_ms`); zeros when unknown.
    pub fn holder_pace(&self, connection: &str) -> (f64, f64) {
        ConnectionId::parse(connection)
            .and_then(|id| {
                let reg = self.lock();
                let c = reg.by_id.get(&id)?;
                Some((c.holder_speed(), c.turnaround_ms))
            })
            .unwrap_or((0.0, 0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            job_id: "j".into(),
            tile_row: 0,
            tile_col: 0,
            result_len: 4,
            flops: 2.0,
            duplicate: false,
            answered: false,
            redelivered: 0,
            sent_at: std::time::Instant::now(),
        }
    }

    fn claimed(tasks: usize, at_address: usize, bytes: u64) -> Claimed {
        Claimed {
            tasks,
            at_address,
            bytes,
        }
    }

    #[test]
    fn a_round_hands_out_no_more_than_the_send_budget_holds() {
        let workers = Workers::default();
        let mut c = connection("w", [10, 0, 0, 1], 0);
        c.send_budget = SendBudget::new(1000); // 4000 bytes in the bucket
        let id = c.id;
        let trusted = Record {
            verified: 10,
            consecutive_verified: 10,
            ..Record::default()
        };
        workers.insert(c, trusted);
        assert!(workers.may_lease(id, 16, 64, claimed(1, 1, 3000)));
        assert!(
            !workers.may_lease(id, 16, 64, claimed(1, 1, 4000)),
            "one task of 4000 bytes claimed this round empties the bucket"
        );
    }

    /// Delivers task `task_id` of job `j`, panels (0, 0), to a connection.
    fn deliver(workers: &Workers, id: ConnectionId, task_id: i64) -> Shipment {
        let a = PanelRef {
            key: "j:a:0",
            bytes: 4,
        };
        let b = PanelRef {
            key: "j:b:0",
            bytes: 4,
        };
        workers.deliver(id, task_id, lease(), a, b)
    }

    /// A registry of one connection holding `leases` tasks, of a worker with no record.
    fn one_connection(leases: usize) -> (Workers, ConnectionId) {
        let workers = Workers::default();
        let c = connection("w", [10, 0, 0, 1], leases);
        let id = c.id;
        workers.insert(c, Record::default());
        (workers, id)
    }

    fn connection(worker_id: &str, address: [u8; 4], leases: usize) -> Connection {
        let mut c = Connection::new(
            ConnectionId::fresh(),
            worker_id.into(),
            IpAddr::from(address),
            String::new(),
            1,
            String::new(),
            None,
            1 << 20,
        );
        c.leases = (0..leases as i64).map(|id| (id, lease())).collect();
        c
    }

    #[test]
    fn a_job_ended_elsewhere_is_withdrawn_from_every_connection_here_and_only_it() {
        let workers = Workers::default();
        let (mut one, mut two) = (
            connection("w1", [10, 0, 0, 1], 0),
            connection("w2", [10, 0, 0, 2], 0),
        );
        let of = |job: &str| Lease {
            job_id: job.into(),
            ..lease()
        };
        one.leases = [(1, of("ended")), (2, of("running"))].into_iter().collect();
        two.leases = [(3, of("ended"))].into_iter().collect();
        let (one_id, two_id) = (one.id, two.id);
        workers.insert(one, Record::default());
        workers.insert(two, Record::default());
        assert_eq!(workers.leased_jobs(), ["ended", "running"]);
        let mut withdrawn = workers.withdraw_job("ended");
        withdrawn.sort_by_key(|(_, task)| *task);
        assert_eq!(withdrawn, [(one_id, 1), (two_id, 3)]);
        assert_eq!(workers.leased_jobs(), ["running"]);
        assert!(workers.withdraw_job("ended").is_empty());
    }

    #[test]
    fn connection_ids_are_sixteen_url_safe_characters() {
        assert!(ConnectionId::parse("AbCdEfGh-_123456").is_some());
        assert!(ConnectionId::parse("short").is_none());
        assert!(ConnectionId::parse("AbCdEfGh/_123456").is_none());
        let id = ConnectionId::fresh();
        assert_eq!(ConnectionId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn a_workers_connections_share_one_record_and_one_allowance() {
        let workers = Workers::default();
        let (first, second) = (
            connection("w", [10, 0, 0, 1], 0),
            connection("w", [10, 0, 0, 2], 0),
        );
        let (first_id, second_id) = (first.id, second.id);
        let trusted = Record {
            verified: 10,
            consecutive_verified: 10,
            ..Record::default()
        };
        workers.insert(first, trusted.clone());
        // The second connection brings the record as stored; the one in memory is current.
        workers.insert(second, Record::default());
        assert_eq!(workers.standing(second_id).map(|s| s.record), Some(trusted));
        workers.with_record("w", |r| r.count_refused(1));
        let after = workers.standing(second_id).expect("registered").record;
        assert_eq!((after.refused, after.consecutive_verified), (1, 0));
        // Allowance 2 after the refusal, for the worker as a whole.
        deliver(&workers, first_id, 7);
        assert!(workers.may_lease(second_id, 16, 64, Claimed::default()));
        assert!(
            !workers.may_lease(second_id, 16, 64, claimed(1, 0, 0)),
            "one held, one claimed this round"
        );
        workers.remove(first_id);
        workers.remove(second_id);
        assert_eq!(
            workers.with_record("w", |_| ()),
            None,
            "the record goes with the last one"
        );
    }

    #[test]
    fn an_address_holds_at_most_its_cap_whoever_asks() {
        let workers = Workers::default();
        let mut ids = Vec::new();
        for i in 0..3 {
            let held = if i < 2 { 2 } else { 0 };
            let c = connection(&format!("w{i}"), [10, 0, 0, 1], held);
            ids.push(c.id);
            workers.insert(c, Record::default());
        }
        let elsewhere = connection("x", [10, 0, 0, 9], 0);
        let elsewhere_id = elsewhere.id;
        workers.insert(elsewhere, Record::default());
        assert!(
            workers.may_lease(ids[2], 16, 5, Claimed::default()),
            "4 held of 5"
        );
        assert!(
            !workers.may_lease(ids[2], 16, 5, claimed(0, 1, 0)),
            "and one claimed this round"
        );
        assert!(
            workers.may_lease(elsewhere_id, 16, 5, Claimed::default()),
            "another address is apart"
        );
    }

    #[test]
    fn a_lease_is_answered_once_and_dropped_only_if_still_the_answered_one() {
        let (workers, id) = one_connection(0);
        assert_eq!(workers.request(id, 2), Ok(()));
        deliver(&workers, id, 7);
        assert_eq!(workers.held(id), 1);
        assert!(workers.answer(id, 7).is_some());
        assert!(
            workers.answer(id, 7).is_none(),
            "a second result is refused"
        );
        assert_eq!(workers.held(id), 0, "an answered lease is the server's");
        assert_eq!(workers.holders(7), vec![id]);
        workers.drop_answered(id, 7);
        assert!(workers.holders(7).is_empty());
        // A new lease on the same task after the first expired is not dropped by the old result.
        deliver(&workers, id, 7);
        workers.drop_answered(id, 7);
        assert_eq!(workers.holders(7), vec![id]);
        assert_eq!(workers.withdraw(7, None), vec![id]);
        assert!(workers.holders(7).is_empty());
    }

    #[test]
    fn requests_and_holdings_never_pass_the_per_connection_limit() {
        let (workers, id) = one_connection(1);
        assert_eq!(workers.request(id, 3), Ok(()));
        assert_eq!(workers.request(id, 3), Ok(()));
        assert_eq!(workers.request(id, 3), Err(3), "one held and two awaited");
        assert_eq!(
            workers.request(ConnectionId::fresh(), 3),
            Err(3),
            "unknown connections get nothing"
        );
    }

    #[test]
    fn a_lease_is_sent_again_a_bounded_number_of_times() {
        let (workers, id) = one_connection(1);
        for n in 1..=trust::MAX_REDELIVERIES {
            assert_eq!(workers.redeliver(id, 0).map(|l| l.redelivered), Ok(n));
        }
        assert_eq!(
            workers.redeliver(id, 0).err(),
            Some(NotRedelivered::TooOften)
        );
        assert_eq!(
            workers.redeliver(id, 0).err(),
            Some(NotRedelivered::NotLeased),
            "and then it is gone"
        );
    }

    #[test]
    fn blocks_are_counted_for_the_caching_connections_and_sized_for_the_smallest_cache() {
        let workers = Workers::default();
        assert_eq!(workers.caching(), (0, None));
        for (i, budget) in [(1, Some(100)), (2, None), (3, Some(50))] {
            let mut c = connection(&format!("w{i}"), [10, 0, 0, i], 0);
            c.cache = budget.map(CacheModel::new);
            workers.insert(c, Record::default());
        }
        assert_eq!(workers.caching(), (2, Some(50)));
    }

    #[test]
    fn a_caching_connection_is_sent_only_the_panels_it_lacks() {
        let workers = Workers::default();
        let mut c = connection("w", [10, 0, 0, 1], 0);
        c.cache = Some(CacheModel::new(100));
        let id = c.id;
        workers.insert(c, Record::default());
        let ship = |task, a, b| {
            workers.deliver(
                id,
                task,
                lease(),
                PanelRef { key: a, bytes: 40 },
                PanelRef { key: b, bytes: 40 },
            )
        };
        assert_eq!(
            (
                ship(1, "j:a:0", "j:b:0").send_a,
                ship(2, "j:a:0", "j:b:1").send_a
            ),
            (true, false)
        );
        let third = ship(3, "j:a:1", "j:b:1");
        assert!(third.send_a && !third.send_b);
        assert!(
            !third.evict.is_empty(),
            "120 bytes of panels in a cache of 100"
        );
        assert_eq!(
            workers.cached_panels(id, None).and_then(|held| held.job),
            Some("j".to_owned())
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
}
