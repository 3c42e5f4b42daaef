//! Payloads of the Socket.io protocol between the orchestrator and workers, with the field
//! names the browser page and other clients rely on. Matrix data travels as binary
//! attachments (`Bytes`), never as JSON arrays of numbers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::jobs::Dtype;

/// `register_worker`: who the worker says it is. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RegisterWorker {
    /// Announces a panel cache (see `panels`); without it every task carries both panels.
    pub panel_cache: Option<PanelCacheOffer>,
    pub name: Option<String>,
    pub threads: Option<u32>,
    pub user_agent: Option<String>,
    pub token: Option<String>,
}

/// What a worker offers to keep between tasks.
#[derive(Debug, Default, Deserialize)]
pub struct PanelCacheOffer {
    /// Memory the worker sets aside for panels.
    pub budget_bytes: u64,
    /// Coming back after a lost connection: the panels it still holds, least recently used
    /// first (`panels::resume` decides which count; at most `panels::MAX_HELD_PANELS` are read).
    #[serde(default)]
    pub holds: Vec<String>,
}

/// `registration_ack`.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationAck {
    pub worker_id: String,
    /// Secret to present at the next `register_worker` to keep this identity and record.
    pub token: String,
    /// Set when this worker is quarantined: it will get no tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub lease_ms: u64,
    /// To a worker that announced a cache: the panels the server counts it as holding (of those
    /// it said it holds); it drops every other. Absent for a worker without a cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panels_kept: Option<Vec<String>>,
}

/// `heartbeat_ack`.
#[derive(Debug, Serialize)]
pub struct HeartbeatAck {
    /// Milliseconds since the Unix epoch.
    pub server_time: i64,
}

/// `worker_status`: what the page knows about its own situation.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WorkerStatus {
    pub visible: Option<bool>,
    pub on_battery: Option<bool>,
}

/// `task_assigned`: one tile of C to compute, `a` (m×k) and `b` (k×n) row-major little-endian.
#[derive(Debug, Serialize)]
pub struct TaskAssigned {
    pub task_id: i64,
    pub job_id: String,
    pub dtype: Dtype,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Absent when the worker's panel cache already holds `a_key`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "binary")]
    pub a: Option<Bytes>,
    /// Absent when the worker's panel cache already holds `b_key`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "binary")]
    pub b: Option<Bytes>,
    /// Cache keys of the two panels (`<job>:a:<row>`, `<job>:b:<col>`).
    pub a_key: String,
    pub b_key: String,
    /// Keys the worker must drop from its cache after storing this task's panels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evict: Vec<String>,
}

/// Serialises a present panel as bytes. Plain `Option<Bytes>` goes through `serialize_some`,
/// which socketioxide's encoder does not recognise as binary: the panel would travel as a JSON
/// array of numbers, several times larger.
fn binary<S: serde::Serializer>(panel: &Option<Bytes>, serializer: S) -> Result<S::Ok, S::Error> {
    match panel {
        Some(bytes) => serializer.serialize_bytes(bytes),
        None => serializer.serialize_none(),
    }
}

/// `panel_missing`: a caching worker lacks a panel the server thought it had.
#[derive(Debug, Deserialize)]
pub struct PanelMissing {
    pub task_id: i64,
}

/// `task_result`: the computed tile, `c` (m×n) in the task's layout.
#[derive(Debug, Deserialize)]
pub struct TaskResult {
    pub task_id: i64,
    pub c: Bytes,
    #[serde(default)]
    pub compute_ms: Option<f64>,
}

/// `result_ack`.
#[derive(Debug, Serialize)]
pub struct ResultAck {
    pub task_id: i64,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `task_failed`: the worker could not compute a task.
#[derive(Debug, Deserialize)]
pub struct TaskFailed {
    pub task_id: i64,
    #[serde(default)]
    pub error: String,
}

/// `task_cancelled`: stop computing this task (its job was cancelled or failed).
#[derive(Debug, Serialize)]
pub struct TaskCancelled {
    pub task_id: i64,
}

/// `quarantined`: the worker failed verification too often and gets no more tasks.
#[derive(Debug, Serialize)]
pub struct Quarantined {
    pub reason: String,
}

/// `protocol_error`: the event was not understood or not allowed; the connection goes on.
#[derive(Debug, Serialize)]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
}

/// `tile_update`, broadcast to dashboards.
#[derive(Debug, Serialize)]
pub struct TileUpdate<'a> {
    pub job_id: &'a str,
    pub task_id: i64,
    pub row: i64,
    pub col: i64,
    pub state: crate::status::TaskState,
}

/// `grid_stats`, broadcast to every socket every few seconds.
#[derive(Debug, Serialize)]
pub struct GridStats {
    pub workers_online: usize,
    pub tasks_per_sec: f64,
    pub gflops: f64,
    pub jobs_running: i64,
    pub server_time: i64,
}
