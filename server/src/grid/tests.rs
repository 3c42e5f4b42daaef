//! The grid's decisions without a socket: a real database in a temporary folder, and an
//! outbox that records what the grid sends.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::registry::Standing;
use super::workers::Refusal;
use super::*;
use crate::jobs::{Dtype, Plan};
use crate::protocol::{RegisterWorker, ResultAck, TaskResult};
use crate::status::JobStatus;
use crate::store::{Part, Store};

/// Records every message; every connection is open.
#[derive(Default)]
struct Recorder(Mutex<Vec<(ConnectionId, Message)>>);

impl Outbox for Arc<Recorder> {
    fn send(&self, to: ConnectionId, message: Message) -> std::result::Result<(), Undelivered> {
        self.0.lock_or_recover().push((to, message));
        Ok(())
    }

    fn is_open(&self, _: ConnectionId) -> bool {
        true
    }

    fn watchers(&self) -> usize {
        0
    }
}

impl Recorder {
    fn take(&self) -> Vec<(ConnectionId, Message)> {
        std::mem::take(&mut *self.0.lock_or_recover())
    }
}

struct Setup {
    grid: Arc<Grid>,
    sent: Arc<Recorder>,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

/// A grid with settings (`("LEASE_MS", "100")`, …) on top of the defaults.
async fn setup_with(settings: &[(&str, &str)]) -> Setup {
    let dir = std::env::temp_dir().join(format!("brain-grid-{}", uuid::Uuid::new_v4()));
    let path = dir.join("brain.db");
    let config = crate::config::Config::from_lookup(|var| match var {
        "DATABASE_PATH" => Some(path.display().to_string()),
        _ => settings
            .iter()
            .find(|(name, _)| *name == var)
            .map(|(_, value)| value.to_string()),
    })
    .expect("valid settings");
    let db = db::connect(&path).await.expect("a database");
    let store = Arc::new(Store::open(&dir.join("jobs")).expect("a store"));
    let sent = Arc::new(Recorder::default());
    let grid = Grid::new(Arc::new(config), db, store, Box::new(sent.clone()));
    Setup { grid, sent, dir }
}

/// A 2×2·2×2 f64 job in one tile: A = [1 2; 3 4], B = [5 6; 7 8], C = [19 22; 43 50].
async fn one_tile_job(grid: &Grid) -> Vec<u8> {
    let plan = Plan {
        dtype: Dtype::F64,
        m: 2,
        k: 2,
        n: 2,
        tile: 2,
        split: 1,
    };
    let bytes = |v: [f64; 4]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let upload = grid.inputs.store().begin("job").expect("begun");
    for (part, values) in [
        (Part::A, [1.0, 2.0, 3.0, 4.0]),
        (Part::B, [5.0, 6.0, 7.0, 8.0]),
    ] {
        let data = bytes(values);
        upload
            .write_matrix(part, Dtype::F64, (2, 2), &data)
            .expect("written");
    }
    upload.finish(&plan).expect("stored");
    db::insert_job(&grid.db, "job", "test", &plan)
        .await
        .expect("stored");
    bytes([19.0, 22.0, 43.0, 50.0])
}

async fn volunteer(grid: &Grid, address: [u8; 4]) -> Standing {
    let id = ConnectionId::fresh();
    let info = RegisterWorker::default();
    grid.register(id, IpAddr::from(address), info)
        .await
        .expect("registered");
    grid.standing(id).expect("standing")
}

/// The result acknowledgement `take_result` gives.
async fn answer(grid: &Arc<Grid>, from: &Standing, task_id: i64, c: Vec<u8>) -> ResultAck {
    let result = TaskResult {
        task_id,
        c: Bytes::from(c),
        compute_ms: Some(1.0),
    };
    let mut acked = None;
    grid.take_result(from, result, |ack| acked = Some(ack))
        .await;
    acked.expect("every result is acknowledged")
}

fn task_sent(sent: &[(ConnectionId, Message)], to: ConnectionId) -> Option<i64> {
    sent.iter().find_map(|(c, m)| match m {
        Message::Task(t) if *c == to => Some(t.task_id),
        _ => None,
    })
}

/// Has `worker` ask for a task, runs a dispatch round, and returns the task it was sent.
async fn lease_one(grid: &Grid, sent: &Recorder, worker: &Standing) -> i64 {
    grid.request_task(worker.clone()).expect("queued");
    dispatch::dispatch(grid).await.expect("dispatched");
    task_sent(&sent.take(), worker.connection).expect("a task")
}

#[tokio::test]
async fn a_requested_task_is_sent_with_both_panels_and_its_right_answer_finishes_the_job() {
    let Setup { grid, sent, .. } = &setup().await;
    let c = one_tile_job(grid).await;
    let worker = volunteer(grid, [10, 0, 0, 1]).await;
    grid.request_task(worker.clone()).expect("queued");
    dispatch::dispatch(grid).await.expect("dispatched");
    let messages = sent.take();
    let Some((to, Message::Task(task))) = messages.first() else {
        panic!("a task is sent: {messages:?}");
    };
    assert_eq!(*to, worker.connection);
    assert_eq!((task.m, task.k, task.n), (2, 2, 2));
    assert!(
        task.a.is_some() && task.b.is_some(),
        "no cache: both panels"
    );
    let sent = task.a.as_ref().map_or(0, Bytes::len) + task.b.as_ref().map_or(0, Bytes::len);
    let plan = grid.inputs.plan(&grid.db, "job").await.expect("a plan");
    assert_eq!(
        plan.panel_bytes(&plan.tile(0, 0)) as u64,
        sent as u64,
        "what the send budget counts"
    );
    let ack = answer(grid, &worker, task.task_id, c).await;
    assert!(ack.accepted, "{ack:?}");
    let job = db::get_job(&grid.db, "job").await.expect("read");
    assert_eq!(job.map(|j| j.status), Some(JobStatus::Done));
    let record = grid.standing(worker.connection).expect("standing").record;
    assert_eq!(record.verified, 1);
}

#[tokio::test]
async fn a_wrong_answer_is_refused_and_its_task_never_goes_back_to_the_liar() {
    let Setup { grid, sent, .. } = &setup().await;
    let mut c = one_tile_job(grid).await;
    let liar = volunteer(grid, [10, 0, 0, 1]).await;
    let task_id = lease_one(grid, sent, &liar).await;
    c[0] ^= 0x40;
    let ack = answer(grid, &liar, task_id, c).await;
    assert!(!ack.accepted);
    assert!(
        ack.reason
            .as_deref()
            .unwrap_or("")
            .contains("verification failed"),
        "{ack:?}"
    );
    assert_eq!(
        grid.standing(liar.connection)
            .expect("standing")
            .record
            .refused,
        1
    );
    // The task is queued again, but not for the liar: its request waits.
    grid.request_task(liar.clone()).expect("queued");
    dispatch::dispatch(grid).await.expect("dispatched");
    assert_eq!(task_sent(&sent.take(), liar.connection), None);
    assert_eq!(grid.waiting(), 1);
    let honest = volunteer(grid, [10, 0, 0, 2]).await;
    assert_eq!(lease_one(grid, sent, &honest).await, task_id);
}

#[tokio::test]
async fn cancelling_a_job_tells_its_holder_to_stop_and_a_late_answer_is_refused() {
    let Setup { grid, sent, .. } = &setup().await;
    let c = one_tile_job(grid).await;
    let worker = volunteer(grid, [10, 0, 0, 1]).await;
    let task_id = lease_one(grid, sent, &worker).await;
    grid.end_job("job", None).await.expect("cancelled");
    let told = sent.take();
    assert!(
        matches!(told.as_slice(), [(to, Message::Cancelled(t))] if *to == worker.connection && t.task_id == task_id),
        "{told:?}"
    );
    let ack = answer(grid, &worker, task_id, c).await;
    assert!(!ack.accepted, "{ack:?}");
    let record = grid.standing(worker.connection).expect("standing").record;
    assert_eq!((record.verified, record.refused), (0, 0), "nobody's fault");
}

#[tokio::test]
async fn a_quarantined_worker_is_told_why_loses_its_leases_and_gets_no_more_work() {
    let Setup { grid, sent, .. } = &setup().await;
    one_tile_job(grid).await;
    let worker = volunteer(grid, [10, 0, 0, 1]).await;
    let task_id = lease_one(grid, sent, &worker).await;
    grid.quarantine(&worker.worker_id, "caught").await;
    let told = sent.take();
    assert!(
        matches!(told.as_slice(), [(_, Message::Quarantined(q))] if q.reason == "caught"),
        "{told:?}"
    );
    assert!(
        grid.workers.holders(task_id).is_empty(),
        "its lease went back"
    );
    let again = grid.standing(worker.connection).expect("standing");
    assert_eq!(
        grid.request_task(again),
        Err(Refusal::Quarantined("caught".into()))
    );
}

#[tokio::test]
async fn a_connection_asks_for_at_most_its_limit_and_its_requests_go_when_it_leaves() {
    let Setup { grid, .. } = &setup().await;
    let worker = volunteer(grid, [10, 0, 0, 1]).await;
    let max = grid.config.limits.max_tasks_per_worker;
    for _ in 0..max {
        grid.request_task(worker.clone()).expect("queued");
    }
    assert_eq!(
        grid.request_task(worker.clone()),
        Err(Refusal::TooManyTasks { held: max, max })
    );
    assert_eq!(grid.waiting(), max);
    grid.disconnect(worker.connection, "gone").await;
    assert_eq!(grid.waiting(), 0);
    assert_eq!(
        grid.standing(worker.connection).err(),
        Some(Refusal::NotRegistered)
    );
}

/// The grid knows nothing of its transports: no module of it names Socket.io, axum, or the
/// modules that speak them, so the import graph has no cycle between them and the core.
#[test]
fn the_grid_imports_no_transport() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/grid");
    let transports = [
        "socketioxide",
        "axum",
        "crate::socket",
        "crate::http",
        "crate::state",
        "crate::broadcast",
        "crate::gate",
        "crate::admission",
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("src/grid") {
        let path = entry.expect("an entry").path();
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable");
        for name in transports {
            assert!(!source.contains(name), "{} names {name}", path.display());
        }
        files += 1;
    }
    assert!(files >= 8, "read {files} files of src/grid");
}

#[tokio::test]
async fn a_job_whose_files_are_gone_fails_instead_of_being_offered_for_ever() {
    let Setup { grid, sent, .. } = &setup().await;
    one_tile_job(grid).await;
    grid.inputs.store().remove("job").expect("removed");
    let worker = volunteer(grid, [10, 0, 0, 1]).await;
    grid.request_task(worker.clone()).expect("queued");
    dispatch::dispatch(grid).await.expect("dispatched");
    assert_eq!(task_sent(&sent.take(), worker.connection), None);
    let job = db::get_job(&grid.db, "job")
        .await
        .expect("read")
        .expect("a job");
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap_or("")
            .contains("missing from DATA_DIR"),
        "{:?}",
        job.error
    );
    assert_eq!(grid.waiting(), 1, "the request waits for other work");
}

#[tokio::test]
async fn a_failure_reported_after_the_lease_ran_out_still_keeps_the_task_from_its_reporter() {
    let Setup { grid, sent, .. } = &setup_with(&[("LEASE_MS", "100")]).await;
    one_tile_job(grid).await;
    let slow = volunteer(grid, [10, 0, 0, 1]).await;
    let task_id = lease_one(grid, sent, &slow).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    failures::expire(grid).await.expect("swept");
    assert!(grid.workers.holders(task_id).is_empty());
    let late = crate::protocol::TaskFailed {
        task_id,
        error: "out of memory".into(),
    };
    assert_eq!(
        grid.report_failure(&slow, late).await,
        Err(Refusal::UnknownTask(task_id)),
        "the lease is gone"
    );
    grid.request_task(slow.clone()).expect("queued");
    dispatch::dispatch(grid).await.expect("dispatched");
    assert_eq!(
        task_sent(&sent.take(), slow.connection),
        None,
        "not offered again"
    );
    let other = volunteer(grid, [10, 0, 0, 2]).await;
    assert_eq!(lease_one(grid, sent, &other).await, task_id);
}

#[tokio::test]
async fn an_expired_lease_is_dropped_before_its_task_can_be_leased_again() {
    let Setup { grid, sent, .. } = &setup_with(&[("LEASE_MS", "100")]).await;
    one_tile_job(grid).await;
    let worker = volunteer(grid, [10, 0, 0, 1]).await;
    let task_id = lease_one(grid, sent, &worker).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    // The worker asks again while its lease is being expired: the round that serves it must
    // wait for the expiry to be done, or the sweeper would drop the new lease with the old.
    grid.request_task(worker.clone()).expect("queued");
    let expiring = db::expire_leases(&grid.db, 3).await.expect("swept");
    let round = tokio::spawn({
        let grid = grid.clone();
        async move { dispatch::dispatch(&grid).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !round.is_finished(),
        "the round waits for the sweeper's transaction"
    );
    for failure in expiring.failures() {
        grid.workers.withdraw(failure.task.id, None);
    }
    expiring.commit().await.expect("committed");
    round.await.expect("joined").expect("dispatched");
    assert_eq!(task_sent(&sent.take(), worker.connection), Some(task_id));
    assert_eq!(
        grid.workers.holders(task_id),
        vec![worker.connection],
        "the new lease stays"
    );
}

/// The server's modules import each other without a cycle (a top-level module, or a folder
/// such as `grid/` or `http/`, counts as one): transports above the grid, the grid above
/// the policies and storage, never back.
#[test]
fn the_server_modules_import_each_other_without_a_cycle() {
    use std::collections::{BTreeMap, BTreeSet};
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("a folder") {
                files.push(entry.expect("an entry").path());
            }
            continue;
        }
        let Ok(rel) = path.strip_prefix(&src) else {
            continue;
        };
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a test module, as below
        }
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|m| m.trim_end_matches(".rs").to_owned())
            .expect("a name");
        let source = std::fs::read_to_string(&path).expect("readable");
        // Tests may reach anywhere.
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                imports.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    assert!(
        imports.contains_key("grid") && imports.contains_key("socket"),
        "{imports:?}"
    );
    // Depth-first search; a module met again while on the path closes a cycle.
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module.to_owned());
        for next in imports.get(module).into_iter().flatten() {
            visit(next, imports, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        visit(module, &imports, &mut Vec::new(), &mut done);
    }
}
