//! What the grid tells connections on its own initiative, and the seam it says it through.
//!
//! The grid decides; a transport delivers. Replies to a worker's own events (`result_ack`,
//! `protocol_error`, …) are the return values of the grid's methods and are sent by the
//! transport that received the event; only messages the grid starts go through an
//! [`Outbox`]. Tests give the grid an outbox that records, and check its decisions without a
//! socket.

use crate::protocol::{Quarantined, TaskAssigned, TaskCancelled};

use super::ConnectionId;

/// A message the grid sends a connection.
#[derive(Debug)]
pub enum Message {
    /// `task_assigned`: a task to compute, with the panels the connection lacks.
    Task(TaskAssigned),
    /// `task_cancelled`: stop computing a task; its result is no longer wanted.
    Cancelled(TaskCancelled),
    /// `quarantined`: the worker gets no more tasks, and why.
    Quarantined(Quarantined),
}

/// The connection is gone, or its transport refused the message (a full buffer).
#[derive(Debug, thiserror::Error)]
#[error("could not send to connection {to}: {why}")]
pub struct Undelivered {
    pub to: ConnectionId,
    pub why: String,
}

/// Delivers the grid's messages. Sending never waits: a transport queues or refuses.
pub trait Outbox: Send + Sync + 'static {
    fn send(&self, to: ConnectionId, message: Message) -> Result<(), Undelivered>;

    /// Whether the connection is still open: a request from one that is not is dropped
    /// before a task is claimed for it.
    fn is_open(&self, connection: ConnectionId) -> bool;

    /// Connections here watching the grid's progress (dashboards): the instance reports them,
    /// so that any instance knows whether progress is worth sending at all.
    fn watchers(&self) -> usize;
}
