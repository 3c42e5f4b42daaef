//! Socket.io event handlers: the worker protocol (see `protocol` for the payloads).
//!
//! Handlers are registered per connection in [`on_connect`]. Payloads are read with `TryData`
//! so a malformed one is answered with `protocol_error` instead of being dropped silently, and
//! no handler can take the connection or the server down.

use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::socket::DisconnectReason;

use crate::broadcast::{self, DASHBOARD_ROOM};
use crate::db;
use crate::protocol::{
    HeartbeatAck, ProtocolError, RegisterWorker, RegistrationAck, ResultAck, TaskFailed,
    TaskResult, WorkerStatus,
};
use crate::scheduler;
use crate::state::{AppState, Waiter, WorkerInfo};

/// Longest name or user agent kept for a worker.
const MAX_LABEL: usize = 200;

/// Registers the protocol's handlers on a new connection.
pub fn on_connect(socket: SocketRef, state: AppState) {
    tracing::debug!(sid = %socket.id, "socket connected");
    let st = state.clone();
    socket.on(
        "register_worker",
        move |s: SocketRef, data: TryData<RegisterWorker>, ack: AckSender| {
            let st = st.clone();
            async move { register(st, s, data, ack).await }
        },
    );
    let st = state.clone();
    socket.on("heartbeat", move |s: SocketRef, ack: AckSender| {
        let st = st.clone();
        async move { heartbeat(st, s, ack).await }
    });
    let st = state.clone();
    socket.on(
        "worker_status",
        move |s: SocketRef, data: TryData<WorkerStatus>| {
            let st = st.clone();
            async move {
                let Some(_) = registered(&st, &s) else { return };
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
        },
    );
    let st = state.clone();
    socket.on("request_task", move |s: SocketRef| {
        let st = st.clone();
        async move {
            let Some(worker_id) = registered(&st, &s) else {
                return;
            };
            st.scheduler.request(Waiter {
                socket: s,
                worker_id,
            });
        }
    });
    let st = state.clone();
    socket.on(
        "task_result",
        move |s: SocketRef, data: TryData<TaskResult>| {
            let st = st.clone();
            async move { task_result(st, s, data).await }
        },
    );
    let st = state.clone();
    socket.on(
        "task_failed",
        move |s: SocketRef, data: TryData<TaskFailed>| {
            let st = st.clone();
            async move { task_failed(st, s, data).await }
        },
    );
    socket.on("subscribe_dashboard", |s: SocketRef| async move {
        s.join(DASHBOARD_ROOM);
    });
    socket.on_fallback(
        |s: SocketRef, event: socketioxide::extract::Event| async move {
            protocol_error(&s, "unknown_event", format!("unknown event {:?}", &*event));
        },
    );
    let st = state;
    socket.on_disconnect(move |s: SocketRef, reason: DisconnectReason| {
        let st = st.clone();
        async move { disconnected(st, s, reason).await }
    });
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

/// The worker id of a registered socket; tells an unregistered one to register first.
fn registered(state: &AppState, socket: &SocketRef) -> Option<String> {
    let id = state.workers.worker_id(socket.id);
    if id.is_none() {
        protocol_error(
            socket,
            "not_registered",
            "send register_worker first".into(),
        );
    }
    id
}

fn label(value: Option<String>) -> String {
    value.unwrap_or_default().chars().take(MAX_LABEL).collect()
}

async fn register(
    state: AppState,
    socket: SocketRef,
    data: TryData<RegisterWorker>,
    ack: AckSender,
) {
    // No payload at all is a valid registration with every field defaulted.
    let info = match data.0 {
        Ok(info) => info,
        Err(e) if is_missing_payload(&e) => RegisterWorker::default(),
        Err(e) => return bad_payload(&socket, "register_worker", &e),
    };
    let worker_id = state
        .workers
        .worker_id(socket.id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let threads = info.threads.unwrap_or(1).clamp(1, 1024);
    let (name, user_agent) = (label(info.name), label(info.user_agent));
    if let Err(e) =
        db::upsert_worker(&state.db, &worker_id, &name, threads.into(), &user_agent).await
    {
        tracing::error!(error = %e, "storing a worker failed");
        return protocol_error(
            &socket,
            "unavailable",
            "the server cannot register workers right now".into(),
        );
    }
    let existing = state.workers.with(socket.id, |w| {
        w.name = name.clone();
        w.threads = threads;
        w.user_agent = user_agent.clone();
    });
    if existing.is_none() {
        state.workers.insert(
            socket.id,
            WorkerInfo {
                worker_id: worker_id.clone(),
                name,
                threads,
                user_agent,
                connected_at: rfc3339_now(),
                visible: true,
                on_battery: false,
                leases: Default::default(),
                gflops: 0.0,
            },
        );
    }
    tracing::info!(%worker_id, sid = %socket.id, threads, "worker registered");
    let reply = RegistrationAck {
        worker_id,
        heartbeat_interval_ms: state.config.heartbeat_interval.as_millis() as u64,
        lease_ms: state.config.lease.as_millis() as u64,
    };
    let _ = socket.emit("registration_ack", &reply);
    let _ = ack.send(&reply);
}

fn is_missing_payload(e: &impl std::fmt::Display) -> bool {
    // socketioxide reports an event without arguments as a deserialisation error of a
    // missing value; a present but wrong payload reports the field at fault instead.
    e.to_string().contains("first element not found")
}

async fn heartbeat(state: AppState, socket: SocketRef, ack: AckSender) {
    let Some(worker_id) = registered(&state, &socket) else {
        return;
    };
    let lease_ms = state.config.lease.as_millis() as i64;
    if let Err(e) = db::extend_leases(&state.db, &worker_id, lease_ms).await {
        tracing::error!(error = %e, "extending leases failed");
    }
    let reply = HeartbeatAck {
        server_time: db::now_ms(),
    };
    let _ = socket.emit("heartbeat_ack", &reply);
    let _ = ack.send(&reply);
}

async fn task_result(state: AppState, socket: SocketRef, data: TryData<TaskResult>) {
    let Some(worker_id) = registered(&state, &socket) else {
        return;
    };
    let result = match data.0 {
        Ok(r) => r,
        Err(e) => return bad_payload(&socket, "task_result", &e),
    };
    let task_id = result.task_id;
    let refuse = |reason: String| {
        let _ = socket.emit(
            "result_ack",
            &ResultAck {
                task_id,
                accepted: false,
                reason: Some(reason),
            },
        );
    };
    let expected = state
        .workers
        .with(socket.id, |w| w.leases.get(&task_id).copied())
        .flatten();
    let Some(expected) = expected else {
        return refuse("task is not leased to this worker".into());
    };
    if result.c.len() != expected {
        return refuse(format!(
            "result has {} bytes, the tile needs {expected}",
            result.c.len()
        ));
    }
    let compute_ms = result.compute_ms.filter(|ms| ms.is_finite() && *ms >= 0.0);
    let outcome = db::complete_task(&state.db, task_id, &worker_id, &result.c, compute_ms).await;
    state.workers.with(socket.id, |w| w.leases.remove(&task_id));
    match outcome {
        Ok(db::Completion::Accepted {
            job_id,
            tile_row,
            tile_col,
            job_status,
            ..
        }) => {
            let _ = socket.emit(
                "result_ack",
                &ResultAck {
                    task_id,
                    accepted: true,
                    reason: None,
                },
            );
            let flops = state
                .inputs
                .get(&state.db, &job_id)
                .await
                .map(|i| 2.0 * i.plan.k as f64 * expected as f64 / i.plan.dtype.size() as f64)
                .unwrap_or(0.0);
            state.stats.record(flops);
            if let Some(ms) = compute_ms.filter(|ms| *ms > 0.0) {
                let gflops = flops / ms / 1e6;
                state.workers.with(socket.id, |w| {
                    w.gflops = if w.gflops == 0.0 {
                        gflops
                    } else {
                        0.8 * w.gflops + 0.2 * gflops
                    };
                });
            }
            broadcast::tile(&state, &job_id, task_id, tile_row, tile_col, "done");
            state.stats.mark_dirty(&job_id);
            if job_status == "done" {
                tracing::info!(%job_id, "job done");
                state.inputs.remove(&job_id);
            }
        }
        Ok(db::Completion::Refused(reason)) => refuse(reason),
        Err(e) => {
            tracing::error!(error = %e, task_id, "storing a result failed");
            refuse("the server could not store the result; it will be re-queued".into());
        }
    }
}

async fn task_failed(state: AppState, socket: SocketRef, data: TryData<TaskFailed>) {
    let Some(worker_id) = registered(&state, &socket) else {
        return;
    };
    let failed = match data.0 {
        Ok(f) => f,
        Err(e) => return bad_payload(&socket, "task_failed", &e),
    };
    state
        .workers
        .with(socket.id, |w| w.leases.remove(&failed.task_id));
    let error: String = failed.error.chars().take(500).collect();
    match db::fail_task(&state.db, failed.task_id, &worker_id, &error).await {
        Ok(Some(task)) => {
            tracing::info!(task_id = task.id, %worker_id, error, "worker reported a failed task");
            if let Err(e) = scheduler::requeued(&state, &[task]).await {
                tracing::error!(error = %e, "re-queuing a failed task failed");
            }
        }
        Ok(None) => protocol_error(
            &socket,
            "unknown_task",
            format!("task {} is not leased to this worker", failed.task_id),
        ),
        Err(e) => tracing::error!(error = %e, "recording a failed task failed"),
    }
}

async fn disconnected(state: AppState, socket: SocketRef, reason: DisconnectReason) {
    state.scheduler.forget(socket.id);
    let Some(worker) = state.workers.remove(socket.id) else {
        return;
    };
    tracing::info!(worker_id = %worker.worker_id, ?reason, "worker disconnected");
    match db::release_worker(&state.db, &worker.worker_id).await {
        Ok(released) => {
            if let Err(e) = scheduler::requeued(&state, &released).await {
                tracing::error!(error = %e, "re-queuing a departed worker's tasks failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "releasing a departed worker's leases failed"),
    }
}

/// The current time as RFC 3339 (UTC, milliseconds), without a date-time dependency.
pub fn rfc3339_now() -> String {
    let ms = db::now_ms();
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
