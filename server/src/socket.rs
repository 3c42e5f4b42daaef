//! Socket.io event handlers: the worker protocol (see `protocol` for the payloads).
//!
//! Handlers are registered per connection in [`admit`], the connect middleware. Payloads are read with `TryData`
//! so a malformed one is answered with `protocol_error` instead of being dropped silently, and
//! no handler can take the connection or the server down.

use std::net::IpAddr;
use std::sync::Arc;

use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::socket::DisconnectReason;
use tracing::Instrument;

use crate::broadcast::{self, DASHBOARD_ROOM};
use crate::db;
use crate::metrics::Metrics;
use crate::panels::CacheModel;
use crate::protocol::{
    HeartbeatAck, PanelMissing, ProtocolError, Quarantined, RegisterWorker, RegistrationAck,
    ResultAck, TaskFailed, TaskResult, WorkerStatus,
};
use crate::scheduler::{self, NotRedelivered};
use crate::state::{Admission, AppState, Lease, SendBudget, Standing, Waiter, WorkerInfo};
use crate::status::TaskState;
use crate::sync::LockExt;
use crate::trust;
use crate::verify;

/// Longest name or user agent kept for a worker.
const MAX_LABEL: usize = 200;

/// Connect middleware: refuses a page from an origin outside `ALLOWED_ORIGINS`, counts the
/// connection against its address's limit and registers the protocol's handlers. All of it
/// happens here, before socketioxide tells the client it is connected: a refused client gets
/// `connect_error` with the reason, and an admitted one may send its first event the moment
/// it is told. The connect handler proper runs only after the connect packet has gone out,
/// and an event that arrives before its handler exists is dropped without a word; at server
/// start, when every page reconnects at once, that lost registrations.
pub fn admit(socket: &SocketRef, state: &AppState) -> Result<(), crate::gate::Refused> {
    let ip = client_ip(socket, state.config.limits.trust_proxy);
    let origins = &state.config.allowed_origins;
    if let Err(refused) = crate::gate::check_origin(origins, &socket.req_parts().headers) {
        tracing::warn!(%ip, %refused, "connection refused");
        return Err(refused);
    }
    let limits = &state.config.limits;
    match state
        .limits
        .admit(ip, limits.max_connections_per_ip, limits.max_events_per_sec)
    {
        Some(admission) => {
            register_handlers(socket, state.clone(), ip, Arc::new(admission));
            Ok(())
        }
        None => {
            tracing::warn!(%ip, "connection refused: too many from one address");
            Err(crate::gate::Refused::TooManyConnections(
                limits.max_connections_per_ip,
            ))
        }
    }
}

/// What every handler of one connection shares.
#[derive(Clone)]
struct Conn {
    st: AppState,
    /// Every log line of the connection's handlers carries the socket id, and the worker id
    /// once registered.
    span: tracing::Span,
    adm: Arc<Admission>,
}

fn register_handlers(socket: &SocketRef, state: AppState, ip: IpAddr, admission: Arc<Admission>) {
    let span =
        tracing::info_span!("connection", sid = %socket.id, %ip, worker_id = tracing::field::Empty);
    tracing::debug!(sid = %socket.id, %ip, "socket admitted");
    let conn = Conn {
        st: state,
        span,
        adm: admission,
    };
    let c = conn.clone();
    socket.on(
        "register_worker",
        move |s: SocketRef, data: TryData<RegisterWorker>, ack: AckSender| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if allowed(&adm, &st, &s) {
                    register(st, s, data, ack, &adm, ip).await;
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on("heartbeat", move |s: SocketRef, ack: AckSender| {
        let Conn { st, span, adm } = c.clone();
        async move {
            if allowed(&adm, &st, &s) {
                heartbeat(st, s, ack).await;
            }
        }
        .instrument(span)
    });
    let c = conn.clone();
    socket.on(
        "worker_status",
        move |s: SocketRef, data: TryData<WorkerStatus>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if !allowed(&adm, &st, &s) || registered(&st, &s).is_none() {
                    return;
                }
                match data.0 {
                    Ok(status) => {
                        st.workers.with(s.id, |w| {
                            if let Some(v) = status.visible {
                                w.visible = v;
                            }
                            if let Some(b) = status.on_battery {
                                w.on_battery = b;
                            }
                        });
                    }
                    Err(e) => bad_payload(&s, "worker_status", &e),
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on("request_task", move |s: SocketRef| {
        let Conn { st, span, adm } = c.clone();
        async move {
            if allowed(&adm, &st, &s) {
                request_task(&st, s, &adm);
            }
        }
        .instrument(span)
    });
    let c = conn.clone();
    socket.on(
        "task_result",
        move |s: SocketRef, data: TryData<TaskResult>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if allowed(&adm, &st, &s) {
                    task_result(st, s, data).await;
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on(
        "task_failed",
        move |s: SocketRef, data: TryData<TaskFailed>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if allowed(&adm, &st, &s) {
                    task_failed(st, s, data).await;
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on(
        "panel_missing",
        move |s: SocketRef, data: TryData<PanelMissing>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if allowed(&adm, &st, &s) {
                    panel_missing(st, s, data).await;
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on("subscribe_dashboard", move |s: SocketRef| {
        let Conn { st, span, adm } = c.clone();
        async move {
            if allowed(&adm, &st, &s) {
                s.join(DASHBOARD_ROOM);
            }
        }
        .instrument(span)
    });
    let c = conn.clone();
    socket.on_fallback(move |s: SocketRef, event: socketioxide::extract::Event| {
        let Conn { st, span, adm } = c.clone();
        async move {
            if allowed(&adm, &st, &s) {
                protocol_error(&s, "unknown_event", format!("unknown event {:?}", &*event));
            }
        }
        .instrument(span)
    });
    let c = conn;
    socket.on_disconnect(move |s: SocketRef, reason: DisconnectReason| {
        let Conn { st, span, adm } = c.clone();
        async move {
            adm.close();
            handle_disconnect(st, s, reason).await
        }
        .instrument(span)
    });
}

/// The client's address group, which its per-address limits count (see `address`): from the
/// handshake request, which the Engine.IO session keeps.
fn client_ip(socket: &SocketRef, trust_proxy: crate::address::TrustProxy) -> IpAddr {
    let parts = socket.req_parts();
    crate::address::client_key(&parts.headers, &parts.extensions, trust_proxy)
}

/// The per-connection event budget: a flooding client is told once and disconnected.
fn allowed(admission: &Admission, state: &AppState, socket: &SocketRef) -> bool {
    if admission.allow_event() {
        return true;
    }
    tracing::warn!(sid = %socket.id, "event flood; disconnecting");
    protocol_error(
        socket,
        "rate_limited",
        format!(
            "more than {} events per second; disconnecting",
            state.config.limits.max_events_per_sec
        ),
    );
    let s = socket.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = s.disconnect();
    });
    false
}

fn protocol_error(socket: &SocketRef, code: &'static str, message: String) {
    // A full buffer or a closed socket: the peer is gone or flooding; nothing more to do.
    let _ = socket.emit("protocol_error", &ProtocolError { code, message });
}

fn bad_payload(socket: &SocketRef, event: &str, error: &impl std::fmt::Display) {
    protocol_error(
        socket,
        "bad_payload",
        format!("malformed {event} payload: {error}"),
    );
}

/// The worker behind a registered socket; tells an unregistered one to register first.
fn registered(state: &AppState, socket: &SocketRef) -> Option<Standing> {
    let info = state.workers.standing(socket.id);
    if info.is_none() {
        protocol_error(
            socket,
            "not_registered",
            "send register_worker first".into(),
        );
    }
    info
}

fn label(value: Option<String>) -> String {
    value.unwrap_or_default().chars().take(MAX_LABEL).collect()
}

fn hash_token(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn register(
    state: AppState,
    socket: SocketRef,
    data: TryData<RegisterWorker>,
    ack: AckSender,
    admission: &Admission,
    address: IpAddr,
) {
    // No payload at all is a valid registration with every field defaulted.
    let info = match data.0 {
        Ok(info) => info,
        Err(e) if is_missing_payload(&e) => RegisterWorker::default(),
        Err(e) => return bad_payload(&socket, "register_worker", &e),
    };
    if state.workers.get(socket.id).is_some() {
        return protocol_error(
            &socket,
            "already_registered",
            "this connection is registered".into(),
        );
    }
    // A token the page kept from an earlier visit brings back the worker and its reputation;
    // anything else (none, or one we never issued) starts a new worker with a new token.
    let token = info
        .token
        .filter(|t| (32..=128).contains(&t.len()))
        .unwrap_or_else(new_token);
    let threads = info.threads.unwrap_or(1).clamp(1, 1024);
    let (name, user_agent) = (label(info.name), label(info.user_agent));
    let record = match db::register_worker(
        &state.db,
        &hash_token(&token),
        &name,
        threads.into(),
        &user_agent,
    )
    .await
    {
        Ok(record) => record,
        Err(e) => {
            tracing::error!(error = %e, "storing a worker failed");
            return protocol_error(
                &socket,
                "unavailable",
                "the server cannot register workers right now".into(),
            );
        }
    };
    let worker_id = record.id.clone();
    state.workers.insert(
        socket.id,
        WorkerInfo {
            worker_id: worker_id.clone(),
            session: socket.id.to_string(),
            address,
            name,
            threads,
            user_agent,
            connected_at: rfc3339_now(),
            visible: true,
            on_battery: false,
            leases: Default::default(),
            requested: 0,
            gflops: 0.0,
            cache: info
                .panel_cache
                .filter(|c| c.budget_bytes > 0)
                .map(|c| CacheModel::new(c.budget_bytes)),
            send_budget: SendBudget::new(state.config.limits.max_send_bytes_per_sec),
        },
        record.trust(),
    );
    if admission.is_closed() {
        // The client left while its record was being stored, and the disconnect handler
        // found no worker to remove: without this the worker would stay listed for good.
        state.workers.remove(socket.id);
        return;
    }
    tracing::Span::current().record("worker_id", tracing::field::display(&worker_id));
    tracing::info!(%worker_id, threads, "worker registered");
    let reply = RegistrationAck {
        worker_id,
        token,
        heartbeat_interval_ms: state.config.heartbeat_interval.as_millis() as u64,
        lease_ms: state.config.lease.as_millis() as u64,
        quarantined: record.quarantine_reason,
    };
    let _ = socket.emit("registration_ack", &reply);
    let _ = ack.send(&reply);
}

fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_missing_payload(e: &impl std::fmt::Display) -> bool {
    // socketioxide reports an event sent without arguments this way; a present but wrong
    // payload names the field at fault instead.
    e.to_string().contains("first element not found")
}

async fn heartbeat(state: AppState, socket: SocketRef, ack: AckSender) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let max_total_ms = state.config.lease.as_millis() as i64 * scheduler::MAX_LEASE_FACTOR;
    let lease_ms = scheduler::lease_ms(state.config.lease, worker.gflops, worker.visible);
    let extended = db::extend_leases(&state.db, &worker.session, lease_ms, max_total_ms);
    if let Err(e) = extended.await {
        tracing::error!(error = %e, "extending leases failed");
    }
    let reply = HeartbeatAck {
        server_time: db::now_ms(),
    };
    let _ = socket.emit("heartbeat_ack", &reply);
    let _ = ack.send(&reply);
}

fn request_task(state: &AppState, socket: SocketRef, admission: &Admission) {
    let Some(worker) = registered(state, &socket) else {
        return;
    };
    if let Some(reason) = &worker.record.quarantined {
        let _ = socket.emit(
            "quarantined",
            &Quarantined {
                reason: reason.clone(),
            },
        );
        return protocol_error(&socket, "quarantined", reason.clone());
    }
    let max = state.config.limits.max_tasks_per_worker;
    let held = state.workers.with(socket.id, |w| {
        let held = w.held() + w.requested;
        if held < max {
            w.requested += 1;
        }
        held
    });
    let held = held.unwrap_or(max);
    if held >= max {
        return protocol_error(
            &socket,
            "too_many_tasks",
            format!("this connection already holds or awaits {held} tasks (limit {max})"),
        );
    }
    let sid = socket.id;
    state.scheduler.request(Waiter {
        socket,
        worker_id: worker.worker_id,
        session: worker.session,
        address: worker.address,
    });
    if admission.is_closed() {
        // The disconnect handler may have forgotten this socket's requests just before.
        state.scheduler.forget(sid);
    }
}

async fn task_result(state: AppState, socket: SocketRef, data: TryData<TaskResult>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let result = match data.0 {
        Ok(r) => r,
        Err(e) => return bad_payload(&socket, "task_result", &e),
    };
    let task_id = result.task_id;
    Metrics::add(&state.metrics.bytes_received, result.c.len() as u64);
    if state.is_shutting_down() {
        // Not stored: the lease stays re-queueable and the page retries after reconnecting.
        let reason = "the server is shutting down; the task will be re-queued".to_owned();
        let _ = socket.emit(
            "result_ack",
            &ResultAck {
                task_id,
                accepted: false,
                reason: Some(reason),
            },
        );
        return;
    }
    let holder = worker.holder();
    let ack = |accepted: bool, reason: Option<String>| {
        let _ = socket.emit(
            "result_ack",
            &ResultAck {
                task_id,
                accepted,
                reason,
            },
        );
    };
    let lease = state
        .workers
        .with(socket.id, |w| match w.leases.get_mut(&task_id) {
            Some(lease) if !lease.answered => {
                lease.answered = true;
                Some(lease.clone())
            }
            _ => None,
        })
        .flatten();
    let Some(lease) = lease.as_ref() else {
        // Not ours: unknown, finished, another worker's, or a lease that ended. Nothing is
        // stored and nobody's reputation changes: late answers are normal churn.
        let reason = db::why_refused(&state.db, task_id, &worker.session)
            .await
            .unwrap_or_else(|_| "task is not leased to this worker".into());
        return ack(false, Some(reason));
    };
    let expected = lease.result_len;
    let checked = if result.c.len() != expected {
        Finding::Wrong(format!(
            "result has {} bytes, the tile needs {expected}",
            result.c.len()
        ))
    } else {
        verify_result(&state, &worker, lease, &result.c).await
    };
    if let Finding::NotChecked(reason) = checked {
        // The server's failure, not the worker's: no mark on its record, and the task goes
        // back to the queue as if it had never been handed out.
        tracing::error!(task_id, %reason, "a result could not be checked");
        state.workers.with(socket.id, |w| w.leases.remove(&task_id));
        if let Err(e) = db::unclaim_task(&state.db, task_id, &worker.session).await {
            tracing::error!(task_id, error = %e, "could not re-queue a task");
        }
        state.scheduler.wake();
        return ack(false, Some(reason));
    }
    if let Finding::Wrong(reason) = checked {
        state.workers.with(socket.id, |w| w.leases.remove(&task_id));
        state
            .workers
            .with_record(&worker.worker_id, |r| r.refused(1));
        tracing::warn!(task_id, worker_id = %worker.worker_id, %reason, "result refused");
        Metrics::add(&state.metrics.results_refused, 1);
        ack(false, Some(reason.clone()));
        return handle_refusal(&state, task_id, holder, &reason).await;
    }
    let compute_ms = result.compute_ms.filter(|ms| ms.is_finite() && *ms >= 0.0);
    let outcome = state
        .committer
        .complete(db::ToComplete {
            task_id,
            session: worker.session.clone(),
            worker_id: worker.worker_id.clone(),
            result: result.c.clone(),
            compute_ms,
            duplicate: lease.duplicate,
        })
        .await;
    state.workers.with(socket.id, |w| {
        // Only the lease this result answered: while it was being stored, the lease may have
        // expired and the task come back to this same connection as a new lease.
        if w.leases.get(&task_id).is_some_and(|l| l.answered) {
            w.leases.remove(&task_id);
        }
    });
    match outcome {
        Ok(db::Completion::Accepted {
            job_id,
            tile_row,
            tile_col,
            job_finished,
            job_age_s,
            ..
        }) => {
            ack(true, None);

            // The worker's lease allowance grew: a request it made past it may be served now.
            state.scheduler.wake();
            scheduler::cancel_copies(&state, task_id, socket.id);
            let flops = lease.flops;
            state.metrics.completed(flops);
            let gflops = compute_ms.filter(|ms| *ms > 0.0).map(|ms| flops / ms / 1e6);
            state
                .workers
                .with_record(&worker.worker_id, trust::Record::verified);
            state.workers.with(socket.id, |w| {
                if let Some(g) = gflops {
                    w.gflops = if w.gflops == 0.0 {
                        g
                    } else {
                        0.8 * w.gflops + 0.2 * g
                    };
                }
            });
            broadcast::tile(
                &state,
                &job_id,
                task_id,
                tile_row,
                tile_col,
                TaskState::Done,
            );
            if job_finished {
                tracing::info!(%job_id, seconds = job_age_s, "job done");
                state.metrics.job_finished(job_age_s);
                state.inputs.remove(&job_id);
                scheduler::forget_running(&state, &job_id);
            }
        }
        Ok(db::Completion::Refused(reason)) => ack(false, Some(reason)),
        Err(e) => {
            tracing::error!(error = %e, task_id, "storing a result failed");
            ack(
                false,
                Some("the server could not store the result; it will be re-queued".into()),
            );
        }
    }
}

/// What checking a result found.
enum Finding {
    Pass,
    /// The result is wrong: the worker's doing.
    Wrong(String),
    /// The server could not check it (the job's inputs unreadable, the check not run).
    NotChecked(String),
}

/// Checks a result against its inputs with Freivalds' algorithm (see `verify`), with as many
/// random vectors as the worker's record calls for, off the async workers.
async fn verify_result(
    state: &AppState,
    worker: &Standing,
    lease: &Lease,
    c: &bytes::Bytes,
) -> Finding {
    let Ok(inputs) = state.inputs.get(&state.db, &lease.job_id).await else {
        return Finding::NotChecked(
            "the job's inputs are unavailable; the task will be re-queued".into(),
        );
    };
    let plan = inputs.plan;
    let tile = plan.tile(lease.tile_row, lease.tile_col);
    let a = plan.a_panel(&inputs.a, &tile);
    let b = plan.b_panel(&inputs.b_panels, &tile);
    let c = c.clone();
    let vectors = worker.record.check_vectors();
    let started = std::time::Instant::now();
    let verdict = tokio::task::spawn_blocking(move || {
        verify::check(
            plan.dtype,
            &a,
            &b,
            &c,
            (tile.rows, plan.k, tile.cols),
            vectors,
            &mut rand::rng(),
        )
    })
    .await;
    let Ok(verdict) = verdict else {
        return Finding::NotChecked(
            "the server could not run the check; the task will be re-queued".into(),
        );
    };
    state.metrics.verification(started.elapsed());
    match verdict {
        verify::Verdict::Pass => Finding::Pass,
        verify::Verdict::Fail { row, diff, bound } => Finding::Wrong(format!(
            "verification failed: row {row} of the tile is off by {diff:.3e} (bound {bound:.3e})"
        )),
    }
}

/// After a refusal: the task goes back to the queue (never to this worker), the worker's
/// record drops, and a worker refused too often is quarantined and told why.
async fn handle_refusal(state: &AppState, task_id: i64, holder: db::Holder<'_>, reason: &str) {
    match db::refuse_result(&state.db, task_id, holder, reason).await {
        Ok((requeued, quarantined)) => {
            tokio::spawn(audit(state.clone(), holder.worker_id.to_owned()));
            if let Some(task) = requeued {
                if let Err(e) = scheduler::offer_again(state, &[task]).await {
                    tracing::error!(error = %e, "re-queuing a refused task failed");
                }
            }
            if let Some(why) = quarantined {
                scheduler::quarantine(state, holder.worker_id, &why).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "recording a refused result failed"),
    }
}

/// After a refusal, checks the worker's accepted results in running jobs again, with many
/// more vectors than they passed (as few as two, for a worker with a long record), and takes
/// back those that fail. A worker caught once may have slipped wrong tiles through before:
/// one vector lets errors that cancel in pairs within a row through half the time. What an
/// earlier audit of the same worker checked is not checked again, so a liar refused again and
/// again cannot make the server re-read and re-check its whole history each time.
async fn audit(state: AppState, worker_id: String) {
    let since = {
        let mut audited = state.audited.lock_or_recover();
        // Ten seconds of overlap: a result stored in a transaction that began before the last
        // audit but committed after it read is checked this time.
        audited
            .insert(worker_id.clone(), db::now_ms())
            .map_or(0, |last| last - 10_000)
    };
    let accepted = match db::accepted_in_running_jobs(&state.db, &worker_id, since).await {
        Ok(accepted) => accepted,
        Err(e) => return tracing::error!(error = %e, %worker_id, "reading results to audit failed"),
    };
    let mut wrong = Vec::new();
    for tile in accepted {
        let Ok(inputs) = state.inputs.get(&state.db, &tile.job_id).await else {
            continue; // the job ended meanwhile
        };
        let plan = inputs.plan;
        let t = plan.tile(tile.tile_row as usize, tile.tile_col as usize);
        let (a, b) = (
            plan.a_panel(&inputs.a, &t),
            plan.b_panel(&inputs.b_panels, &t),
        );
        let c = tile.result;
        let failed = tokio::task::spawn_blocking(move || {
            (0..trust::AUDIT_VECTORS / 6).any(|_| {
                let shape = (t.rows, plan.k, t.cols);
                let verdict = verify::check(plan.dtype, &a, &b, &c, shape, 6, &mut rand::rng());
                verdict != verify::Verdict::Pass
            })
        })
        .await;
        if failed.unwrap_or(false) {
            wrong.push(tile.id);
        }
    }
    if wrong.is_empty() {
        return;
    }
    let reason = "taken back: failed a second check after its worker was caught";
    match db::reopen(&state.db, &worker_id, &wrong, reason).await {
        Ok(reopened) => {
            tracing::warn!(%worker_id, tiles = reopened.len(), "accepted results taken back");
            let count = reopened.len() as i64;
            state.workers.with_record(&worker_id, |r| r.refused(count));
            Metrics::add(&state.metrics.results_refused, reopened.len() as u64);
            if let Err(e) = scheduler::offer_again(&state, &reopened).await {
                tracing::error!(error = %e, "re-queuing taken-back tasks failed");
            }
        }
        Err(e) => tracing::error!(error = %e, %worker_id, "taking back results failed"),
    }
}

async fn panel_missing(state: AppState, socket: SocketRef, data: TryData<PanelMissing>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let task_id = match data.0 {
        Ok(m) => m.task_id,
        Err(e) => return bad_payload(&socket, "panel_missing", &e),
    };
    let waiter = Waiter {
        socket: socket.clone(),
        worker_id: worker.worker_id,
        session: worker.session,
        address: worker.address,
    };
    match scheduler::redeliver(&state, &waiter, task_id).await {
        Ok(Ok(())) => tracing::info!(task_id, "panel missing: task sent again in full"),
        Ok(Err(NotRedelivered::NotLeased)) => protocol_error(
            &socket,
            "unknown_task",
            format!("task {task_id} is not leased to this worker"),
        ),
        Ok(Err(NotRedelivered::TooOften)) => protocol_error(
            &socket,
            "redelivery_limit",
            format!(
                "task {task_id} was sent again {} times already; it goes to another worker",
                trust::MAX_REDELIVERIES
            ),
        ),
        Ok(Err(NotRedelivered::OverBudget)) => protocol_error(
            &socket,
            "send_budget",
            format!(
                "more than {} bytes per second sent to this connection; ask again later",
                state.config.limits.max_send_bytes_per_sec
            ),
        ),
        Err(e) => tracing::error!(error = %e, task_id, "re-sending a task failed"),
    }
}

async fn task_failed(state: AppState, socket: SocketRef, data: TryData<TaskFailed>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let failed = match data.0 {
        Ok(f) => f,
        Err(e) => return bad_payload(&socket, "task_failed", &e),
    };
    let task_id = failed.task_id;
    state.workers.with(socket.id, |w| w.leases.remove(&task_id));
    let error: String = failed.error.chars().take(500).collect();
    let needed = state.config.max_task_failures as usize;
    match db::report_failure(&state.db, task_id, worker.holder(), &error, needed).await {
        Ok(Some(failure)) => {
            tracing::info!(task_id, worker_id = %worker.worker_id, error, "worker reported a failed task");
            if let Err(e) = scheduler::handle_failures(&state, &[failure]).await {
                tracing::error!(error = %e, "following up a failed task failed");
            }
        }
        Ok(None) => protocol_error(
            &socket,
            "unknown_task",
            format!("task {task_id} is not leased to this worker"),
        ),
        Err(e) => tracing::error!(error = %e, "recording a failed task failed"),
    }
}

async fn handle_disconnect(state: AppState, socket: SocketRef, reason: DisconnectReason) {
    state.scheduler.forget(socket.id);
    let Some(worker) = state.workers.remove(socket.id) else {
        return;
    };
    tracing::info!(worker_id = %worker.worker_id, ?reason, "worker disconnected");
    let holder = db::Holder {
        session: &worker.session,
        worker_id: &worker.worker_id,
        address: worker.address,
    };
    match db::release_session(&state.db, holder).await {
        Ok(released) => {
            if let Err(e) = scheduler::offer_again(&state, &released).await {
                tracing::error!(error = %e, "re-queuing a departed worker's tasks failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "releasing a departed worker's leases failed"),
    }
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
