//! The Socket.io transport of the worker protocol (see `protocol` for the payloads): admission,
//! payload decoding, and replies. What each event does is decided by the grid.
//!
//! Handlers are registered per connection in [`admit`], the connect middleware. Payloads are
//! read with `TryData` so a malformed one is answered with `protocol_error` instead of being
//! dropped silently, and no handler can take the connection or the server down. The grid's
//! own messages go out through [`SocketOutbox`].

use std::net::IpAddr;
use std::sync::Arc;

use std::str::FromStr;

use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::socket::{DisconnectReason, Sid};
use socketioxide::SocketIo;
use tracing::Instrument;

use crate::admission::Admission;
use crate::broadcast::DASHBOARD_ROOM;
use crate::bus::Adapter;
use crate::db;
use crate::grid::registry::{NotRedelivered, Standing};
use crate::grid::workers::Refusal;
use crate::grid::{ConnectionId, Message, Outbox, Undelivered};
use crate::protocol::{
    HeartbeatAck, PanelMissing, ProtocolError, Quarantined, RegisterWorker, TaskFailed, TaskResult,
    WorkerStatus,
};
use crate::state::AppState;

/// Connect middleware: refuses a page from an origin outside `ALLOWED_ORIGINS`, counts the
/// connection against its address's limit and registers the protocol's handlers. All of it
/// happens here, before socketioxide tells the client it is connected: a refused client gets
/// `connect_error` with the reason, and an admitted one may send its first event the moment
/// it is told. The connect handler proper runs only after the connect packet has gone out,
/// and an event that arrives before its handler exists is dropped without a word; at server
/// start, when every page reconnects at once, that lost registrations.
pub fn admit(socket: &SocketRef<Adapter>, state: &AppState) -> Result<(), crate::gate::Refused> {
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

fn register_handlers(
    socket: &SocketRef<Adapter>,
    state: AppState,
    ip: IpAddr,
    admission: Arc<Admission>,
) {
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
        move |s: SocketRef<Adapter>, data: TryData<RegisterWorker>, ack: AckSender<Adapter>| {
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
    socket.on(
        "heartbeat",
        move |s: SocketRef<Adapter>, ack: AckSender<Adapter>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if allowed(&adm, &st, &s) {
                    heartbeat(st, s, ack).await;
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on(
        "worker_status",
        move |s: SocketRef<Adapter>, data: TryData<WorkerStatus>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if !allowed(&adm, &st, &s) || registered(&st, &s).is_none() {
                    return;
                }
                match data.0 {
                    Ok(status) => st.grid.workers.set_status(
                        connection(&s),
                        status.visible,
                        status.on_battery,
                    ),
                    Err(e) => bad_payload(&s, "worker_status", &e),
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on("request_task", move |s: SocketRef<Adapter>| {
        let Conn { st, span, adm } = c.clone();
        async move {
            if adm.spend_earned() || allowed(&adm, &st, &s) {
                request_task(&st, s, &adm);
            }
        }
        .instrument(span)
    });
    let c = conn.clone();
    socket.on(
        "task_result",
        move |s: SocketRef<Adapter>, data: TryData<TaskResult>| {
            let Conn { st, span, adm } = c.clone();
            async move {
                // A result for a task this connection holds is the server's pace, not the
                // client's: it costs no budget, and earns the request for the next task.
                let answers = data
                    .0
                    .as_ref()
                    .is_ok_and(|r| st.grid.workers.awaits(connection(&s), r.task_id));
                if answers {
                    adm.earn_request(st.config.limits.max_tasks_per_worker);
                }
                if answers || allowed(&adm, &st, &s) {
                    task_result(st, s, data).await;
                }
            }
            .instrument(span)
        },
    );
    let c = conn.clone();
    socket.on(
        "task_failed",
        move |s: SocketRef<Adapter>, data: TryData<TaskFailed>| {
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
        move |s: SocketRef<Adapter>, data: TryData<PanelMissing>| {
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
    socket.on("subscribe_dashboard", move |s: SocketRef<Adapter>| {
        let Conn { st, span, adm } = c.clone();
        async move {
            if allowed(&adm, &st, &s) {
                s.join(DASHBOARD_ROOM);
            }
        }
        .instrument(span)
    });
    let c = conn.clone();
    socket.on_fallback(
        move |s: SocketRef<Adapter>, event: socketioxide::extract::Event| {
            let Conn { st, span, adm } = c.clone();
            async move {
                if allowed(&adm, &st, &s) {
                    protocol_error(&s, "unknown_event", format!("unknown event {:?}", &*event));
                }
            }
            .instrument(span)
        },
    );
    let c = conn;
    socket.on_disconnect(move |s: SocketRef<Adapter>, reason: DisconnectReason| {
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
fn client_ip(socket: &SocketRef<Adapter>, trust_proxy: crate::address::TrustProxy) -> IpAddr {
    let parts = socket.req_parts();
    crate::address::client_key(&parts.headers, &parts.extensions, trust_proxy)
}

/// The per-connection event budget: a flooding client is told once and disconnected.
fn allowed(admission: &Admission, state: &AppState, socket: &SocketRef<Adapter>) -> bool {
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

fn protocol_error(socket: &SocketRef<Adapter>, code: &'static str, message: String) {
    // A full buffer or a closed socket: the peer is gone or flooding; nothing more to do.
    let _ = socket.emit("protocol_error", &ProtocolError { code, message });
}

fn bad_payload(socket: &SocketRef<Adapter>, event: &str, error: &impl std::fmt::Display) {
    protocol_error(
        socket,
        "bad_payload",
        format!("malformed {event} payload: {error}"),
    );
}

/// The grid's id for a socket.
fn connection(socket: &SocketRef<Adapter>) -> ConnectionId {
    // Socket.io session ids are 16 url-safe characters, as connection ids are.
    ConnectionId::parse(socket.id.as_str())
        .unwrap_or_else(|| unreachable!("socketioxide session ids are 16 url-safe characters"))
}

/// Sends a refusal as `protocol_error` (and `quarantined` too, for a quarantined worker, so
/// that the page shows why it gets nothing).
fn refuse(socket: &SocketRef<Adapter>, refusal: Refusal) {
    if let Refusal::Quarantined(reason) = &refusal {
        let _ = socket.emit(
            "quarantined",
            &Quarantined {
                reason: reason.clone(),
            },
        );
    }
    protocol_error(socket, refusal.code(), refusal.to_string());
}

/// The worker behind a registered socket; tells an unregistered one to register first.
fn registered(state: &AppState, socket: &SocketRef<Adapter>) -> Option<Standing> {
    state
        .grid
        .standing(connection(socket))
        .map_err(|refusal| refuse(socket, refusal))
        .ok()
}

async fn register(
    state: AppState,
    socket: SocketRef<Adapter>,
    data: TryData<RegisterWorker>,
    ack: AckSender<Adapter>,
    admission: &Admission,
    address: IpAddr,
) {
    // No payload at all is a valid registration with every field defaulted.
    let info = match data.0 {
        Ok(info) => info,
        Err(e) if is_missing_payload(&e) => RegisterWorker::default(),
        Err(e) => return bad_payload(&socket, "register_worker", &e),
    };
    let id = connection(&socket);
    let reply = match state.grid.register(id, address, info).await {
        Ok(reply) => reply,
        Err(refusal) => return refuse(&socket, refusal),
    };
    if admission.is_closed() {
        // The client left while its record was being stored, and the disconnect handler
        // found no worker to remove: without this the worker would stay listed for good.
        state.grid.workers.remove(id);
        return;
    }
    tracing::Span::current().record("worker_id", tracing::field::display(&reply.worker_id));
    let _ = socket.emit("registration_ack", &reply);
    let _ = ack.send(&reply);
}

fn is_missing_payload(e: &impl std::fmt::Display) -> bool {
    // socketioxide reports an event sent without arguments this way; a present but wrong
    // payload names the field at fault instead.
    e.to_string().contains("first element not found")
}

async fn heartbeat(state: AppState, socket: SocketRef<Adapter>, ack: AckSender<Adapter>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    state.grid.heartbeat(&worker).await;
    let reply = HeartbeatAck {
        server_time: db::now_ms(),
    };
    let _ = socket.emit("heartbeat_ack", &reply);
    let _ = ack.send(&reply);
}

fn request_task(state: &AppState, socket: SocketRef<Adapter>, admission: &Admission) {
    let Some(worker) = registered(state, &socket) else {
        return;
    };
    if let Err(refusal) = state.grid.request_task(worker) {
        return refuse(&socket, refusal);
    }
    if admission.is_closed() {
        // The disconnect handler may have forgotten this socket's requests just before.
        state.grid.forget_requests(connection(&socket));
    }
}

async fn task_result(state: AppState, socket: SocketRef<Adapter>, data: TryData<TaskResult>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let result = match data.0 {
        Ok(r) => r,
        Err(e) => return bad_payload(&socket, "task_result", &e),
    };
    let reply = |ack| {
        let _ = socket.emit("result_ack", &ack);
    };
    state.grid.take_result(&worker, result, reply).await;
}

async fn panel_missing(state: AppState, socket: SocketRef<Adapter>, data: TryData<PanelMissing>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let task_id = match data.0 {
        Ok(m) => m.task_id,
        Err(e) => return bad_payload(&socket, "panel_missing", &e),
    };
    let refuse = |why| {
        refuse(
            &socket,
            match why {
                NotRedelivered::NotLeased => Refusal::UnknownTask(task_id),
                NotRedelivered::TooOften => Refusal::RedeliveryLimit {
                    task_id,
                    times: crate::trust::MAX_REDELIVERIES,
                },
                NotRedelivered::OverBudget => {
                    Refusal::SendBudget(state.config.limits.max_send_bytes_per_sec)
                }
            },
        )
    };
    if let Err(e) = state.grid.redeliver(&worker, task_id, refuse).await {
        tracing::error!(error = %e, task_id, "re-sending a task failed");
    }
}

async fn task_failed(state: AppState, socket: SocketRef<Adapter>, data: TryData<TaskFailed>) {
    let Some(worker) = registered(&state, &socket) else {
        return;
    };
    let failed = match data.0 {
        Ok(f) => f,
        Err(e) => return bad_payload(&socket, "task_failed", &e),
    };
    if let Err(refusal) = state.grid.report_failure(&worker, failed).await {
        refuse(&socket, refusal);
    }
}

async fn handle_disconnect(state: AppState, socket: SocketRef<Adapter>, reason: DisconnectReason) {
    let reason = format!("{reason:?}");
    state.grid.disconnect(connection(&socket), &reason).await;
}

/// The grid's outbox over Socket.io: a message to a connection is an event on its socket.
pub struct SocketOutbox(pub SocketIo<Adapter>);

impl SocketOutbox {
    fn socket(&self, to: ConnectionId) -> Option<SocketRef<Adapter>> {
        let sid = Sid::from_str(to.as_str()).ok()?;
        self.0.get_socket(sid)
    }
}

impl Outbox for SocketOutbox {
    fn send(&self, to: ConnectionId, message: Message) -> Result<(), Undelivered> {
        let undelivered = |why: String| Undelivered { to, why };
        let socket = self
            .socket(to)
            .ok_or_else(|| undelivered("the connection is gone".into()))?;
        let sent = match &message {
            Message::Task(task) => socket.emit("task_assigned", task),
            Message::Cancelled(cancelled) => socket.emit("task_cancelled", cancelled),
            Message::Quarantined(quarantined) => socket.emit("quarantined", quarantined),
        };
        sent.map_err(|e| undelivered(e.to_string()))
    }

    fn is_open(&self, connection: ConnectionId) -> bool {
        self.socket(connection).is_some_and(|s| s.connected())
    }

    fn watchers(&self) -> usize {
        // This instance's sockets only: the others report their own.
        self.0.to(DASHBOARD_ROOM).sockets().len()
    }
}
