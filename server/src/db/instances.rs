//! The instances sharing a PostgreSQL database: each says every second that it is alive and
//! what it carries, so that the others can take back the leases of one that went silent, and
//! every instance can show the whole grid's figures. SQLite has one instance, and nothing here
//! touches its database.

use super::*;

/// What one instance carries; summed over the live instances for the grid's figures.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Load {
    /// Registered workers connected to it.
    pub workers: i64,
    /// Connections watching progress (dashboards).
    pub dashboards: i64,
    /// Verified completions per second, recently.
    pub tasks_per_sec: f64,
    pub gflops: f64,
}

impl std::ops::Add for Load {
    type Output = Load;

    fn add(self, o: Load) -> Load {
        Load {
            workers: self.workers + o.workers,
            dashboards: self.dashboards + o.dashboards,
            tasks_per_sec: self.tasks_per_sec + o.tasks_per_sec,
            gflops: self.gflops + o.gflops,
        }
    }
}

/// Says this instance is alive, carrying `load`.
pub async fn instance_alive(pool: &Pool, load: Load) -> Result<(), sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok(());
    }
    sqlx::query(sql(
        "INSERT INTO instances (id, seen_at, workers, dashboards, tasks_per_sec, gflops) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (id) DO UPDATE SET seen_at = ?2, workers = ?3, dashboards = ?4, \
             tasks_per_sec = ?5, gflops = ?6",
    ))
    .bind(instance())
    .bind(now_ms())
    .bind(load.workers)
    .bind(load.dashboards)
    .bind(load.tasks_per_sec)
    .bind(load.gflops)
    .execute(pool)
    .await
    .map(|_| ())
}

/// What the other instances heard from in the last `timeout_ms` carry, together.
pub async fn others_load(pool: &Pool, timeout_ms: i64) -> Result<Load, sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok(Load::default());
    }
    let (workers, dashboards, tasks_per_sec, gflops): (i64, i64, f64, f64) =
        sqlx::query_as(sql("SELECT CAST(COALESCE(SUM(workers), 0) AS BIGINT), \
             CAST(COALESCE(SUM(dashboards), 0) AS BIGINT), \
             CAST(COALESCE(SUM(tasks_per_sec), 0) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(gflops), 0) AS DOUBLE PRECISION) \
         FROM instances WHERE id <> ?1 AND seen_at >= ?2"))
        .bind(instance())
        .bind(now_ms() - timeout_ms)
        .fetch_one(pool)
        .await?;
    Ok(Load {
        workers,
        dashboards,
        tasks_per_sec,
        gflops,
    })
}

/// Which of `job_ids` have ended (done, failed or cancelled): on PostgreSQL, maybe on another
/// instance, whose connections are not this one's to tell.
pub async fn ended_jobs(pool: &Pool, job_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut ended = Vec::new();
    // Bounded statements: the jobs of every lease an instance holds can be many.
    for ids in job_ids.chunks(100) {
        let marks = vec!["?"; ids.len()].join(", ");
        let statement = dialect(format!(
            "SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled') \
             AND id IN ({marks})"
        ));
        let mut query = sqlx::query_as::<_, (String,)>(&statement);
        for id in ids {
            query = query.bind(id);
        }
        ended.extend(query.fetch_all(pool).await?.into_iter().map(|(id,)| id));
    }
    Ok(ended)
}

/// Puts back in the queue the leases of instances silent for `timeout_ms`, and forgets them:
/// such an instance was killed or cut off, and its workers have lost their connection to it.
/// The leases are not counted against their workers, who did nothing wrong. Any instance may
/// run this, and two at once do the same work harmlessly.
pub async fn requeue_silent_instances(pool: &Pool, timeout_ms: i64) -> Result<u64, sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok(0);
    }
    let now = now_ms();
    let mut tx = begin_write(pool).await?;
    let requeued = sqlx::query(sql(
        "UPDATE tasks SET state = 'queued', lease_owner = NULL, lease_worker = NULL, \
             lease_address = NULL, lease_deadline = NULL, \
             last_error = 'its instance stopped answering', updated_at = ?1 \
         WHERE state = 'leased' AND lease_instance IN \
             (SELECT id FROM instances WHERE seen_at < ?2 AND id <> ?3)",
    ))
    .bind(now)
    .bind(now - timeout_ms)
    .bind(instance())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(sql("DELETE FROM connections WHERE instance IN \
             (SELECT id FROM instances WHERE seen_at < ? AND id <> ?)"))
    .bind(now - timeout_ms)
    .bind(instance())
    .execute(&mut *tx)
    .await?;
    sqlx::query(sql("DELETE FROM instances WHERE seen_at < ? AND id <> ?"))
        .bind(now - timeout_ms)
        .bind(instance())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(requeued)
}

/// A worker's connection as its instance publishes it for the others to list.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Listed {
    pub id: String,
    pub worker_id: String,
    pub name: String,
    pub threads: i64,
    pub user_agent: String,
    pub connected_at: String,
    pub gflops: f64,
    /// 1 or 0 (stored as integers on both engines).
    pub visible: i64,
    pub on_battery: i64,
}

/// A connection on another instance, with the tasks it holds.
#[derive(Debug, Clone, FromRow)]
pub struct Remote {
    #[sqlx(flatten)]
    pub listed: Listed,
    pub tasks_leased: i64,
}

/// Publishes this instance's connections: `changed` ones (new, or with new figures) are
/// written, `gone` ones removed; one transaction.
pub async fn publish_connections(
    pool: &Pool,
    changed: &[Listed],
    gone: &[String],
) -> Result<(), sqlx::Error> {
    if engine() == Engine::Sqlite || (changed.is_empty() && gone.is_empty()) {
        return Ok(());
    }
    let mut tx = begin_write(pool).await?;
    for id in gone {
        sqlx::query(sql("DELETE FROM connections WHERE id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    for c in changed {
        sqlx::query(sql(
            "INSERT INTO connections (id, instance, worker_id, name, threads, user_agent, \
                 connected_at, gflops, visible, on_battery) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (id) DO UPDATE SET gflops = ?8, visible = ?9, on_battery = ?10",
        ))
        .bind(&c.id)
        .bind(instance())
        .bind(&c.worker_id)
        .bind(&c.name)
        .bind(c.threads)
        .bind(&c.user_agent)
        .bind(&c.connected_at)
        .bind(c.gflops)
        .bind(c.visible)
        .bind(c.on_battery)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Removes this instance's published connections: at start (a restart under the same name
/// has none of them any more) and at a clean stop.
pub async fn forget_connections(pool: &Pool) -> Result<(), sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok(());
    }
    sqlx::query(sql("DELETE FROM connections WHERE instance = ?"))
        .bind(instance())
        .execute(pool)
        .await
        .map(|_| ())
}

/// The connections of the other instances heard from in the last `timeout_ms`, with their
/// workers' records.
pub async fn others_connections(
    pool: &Pool,
    timeout_ms: i64,
) -> Result<(Vec<Remote>, Vec<WorkerRecord>), sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok((Vec::new(), Vec::new()));
    }
    let since = now_ms() - timeout_ms;
    let remote = sqlx::query_as(sql(
        "SELECT c.id, c.worker_id, c.name, c.threads, c.user_agent, c.connected_at, c.gflops, \
             c.visible, c.on_battery, \
             (SELECT COUNT(*) FROM tasks t WHERE t.state = 'leased' AND t.lease_owner = c.id) \
                 AS tasks_leased \
         FROM connections c JOIN instances i ON i.id = c.instance \
         WHERE c.instance <> ?1 AND i.seen_at >= ?2 ORDER BY c.connected_at, c.id",
    ))
    .bind(instance())
    .bind(since)
    .fetch_all(pool)
    .await?;
    let records = sqlx::query_as(&dialect(format!(
        "SELECT {WORKER_COLUMNS} FROM workers WHERE id IN \
             (SELECT c.worker_id FROM connections c JOIN instances i ON i.id = c.instance \
              WHERE c.instance <> ?1 AND i.seen_at >= ?2)"
    )))
    .bind(instance())
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok((remote, records))
}

/// The channel on which instances sharing PostgreSQL tell one another there is new work.
const WORK_CHANNEL: &str = "brain_work";

/// Tells the other instances sharing PostgreSQL that there is new work (a job was submitted),
/// so that the requests waiting on them are served now rather than at their next sweep.
pub async fn announce_work(pool: &Pool) -> Result<(), sqlx::Error> {
    if engine() == Engine::Sqlite {
        return Ok(());
    }
    sqlx::query(sql("SELECT pg_notify(?, '')"))
        .bind(WORK_CHANNEL)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Calls `work` whenever an instance announces work, until the process ends. Its own
/// connection to PostgreSQL at `url` (a listener holds one), taken again after a loss; what
/// is announced while it is away is picked up by the sweeps meanwhile.
pub async fn listen_for_work(url: String, work: impl Fn()) {
    loop {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(WORK_CHANNEL).await?;
            loop {
                listener.recv().await?;
                work();
            }
        };
        let stopped: Result<(), sqlx::Error> = listening.await;
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "listening for other instances' work failed; again in 1 s");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
