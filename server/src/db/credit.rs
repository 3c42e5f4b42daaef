//! Credit: the aggregate tables the commit and the audit keep (`grant`, `withdraw`, `unlist`,
//! called inside their transactions), the sweep that moves the rolling "24h" window on, the
//! boards and profiles read from them, the opt-in names and teams, and the transfer codes that
//! move an identity to another browser. No query here sums results: every figure is a row of
//! an aggregate.

// The parent holds the imports every table group shares.
use super::*;

use crate::credit::{Amount, Board, BoardQuery, Holder, Period};

/// An aggregate a grant or a withdrawal moves: a volunteer's or its team's credit, all time,
/// per day, per hour, or over the rolling window.
struct Aggregate {
    table: &'static str,
    /// The column the row is kept under: the volunteer's or the team's id.
    key: &'static str,
    bucket: Bucket,
}

/// How an aggregate's rows are cut in time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// One row per holder, all time.
    None,
    /// One row per holder and UTC day (`day`).
    Day,
    /// One row per holder and hour (`hour`), kept while the hour is in the window.
    Hour,
    /// One row per holder: the sum of its hourly rows, the rolling "24h" window.
    Window,
}

impl Bucket {
    /// The column a row's time is kept in, for the bucketed ones.
    fn column(self) -> Option<&'static str> {
        match self {
            Bucket::Day => Some("day"),
            Bucket::Hour => Some("hour"),
            Bucket::None | Bucket::Window => None,
        }
    }
}

const AGGREGATES: [Aggregate; 8] = [
    Aggregate {
        table: "volunteer_credit",
        key: "worker_id",
        bucket: Bucket::None,
    },
    Aggregate {
        table: "volunteer_credit_daily",
        key: "worker_id",
        bucket: Bucket::Day,
    },
    Aggregate {
        table: "volunteer_credit_hourly",
        key: "worker_id",
        bucket: Bucket::Hour,
    },
    Aggregate {
        table: "volunteer_credit_24h",
        key: "worker_id",
        bucket: Bucket::Window,
    },
    Aggregate {
        table: "team_credit",
        key: "team_id",
        bucket: Bucket::None,
    },
    Aggregate {
        table: "team_credit_daily",
        key: "team_id",
        bucket: Bucket::Day,
    },
    Aggregate {
        table: "team_credit_hourly",
        key: "team_id",
        bucket: Bucket::Hour,
    },
    Aggregate {
        table: "team_credit_24h",
        key: "team_id",
        bucket: Bucket::Window,
    },
];

/// The hour the rolling window has been swept through, read in the caller's transaction before
/// it grants or withdraws. On PostgreSQL the row is share-locked: no sweep (which locks it
/// for update) can run between this read and the caller's commit, so a withdrawal never takes
/// out of the window what a concurrent sweep is taking out too, and grants and withdrawals do
/// not wait for one another. On SQLite the caller's write transaction already excludes a sweep.
pub(super) async fn window(conn: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    let text = match engine() {
        Engine::Sqlite => "SELECT swept_through FROM credit_window WHERE id = 1",
        Engine::Postgres => "SELECT swept_through FROM credit_window WHERE id = 1 FOR SHARE",
    };
    let (swept,): (i64,) = sqlx::query_as(text).fetch_one(&mut *conn).await?;
    Ok(swept)
}

/// Adds a batch's credit to a volunteer's totals, day, hour and window, and to its team's.
/// `swept_through` is [`window`]'s, read in the same transaction.
pub(super) async fn grant(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
    swept_through: i64,
) -> Result<(), sqlx::Error> {
    move_credit(conn, holder, amount, swept_through, Direction::Grant).await
}

/// Takes back what [`grant`] gave for results an audit took back: from the day, hour and team
/// they were granted to, and from the window unless a sweep already took their hour out.
pub(super) async fn withdraw(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
    swept_through: i64,
) -> Result<(), sqlx::Error> {
    move_credit(conn, holder, amount, swept_through, Direction::Withdraw).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Grant,
    Withdraw,
}

/// One statement per aggregate of `holder` (its team's only when it has one; the hourly and
/// window ones only while its hour is in the window). Every statement binds the same way: the
/// key as ?1, the day or hour as ?2 where there is one, then flops, tiles and compute time. A
/// grant creates the row it adds to; a withdrawal only ever follows its grant, and the sweep
/// deletes neither an hour still in the window nor a window row with credit, so its rows exist.
async fn move_credit(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
    swept_through: i64,
    direction: Direction,
) -> Result<(), sqlx::Error> {
    let windowed = crate::credit::in_window(holder.hour, swept_through);
    for Aggregate { table, key, bucket } in AGGREGATES {
        if matches!(bucket, Bucket::Hour | Bucket::Window) && !windowed {
            continue;
        }
        let id = match key {
            "worker_id" => holder.worker_id.as_str(),
            _ => match &holder.team_id {
                Some(team) => team.as_str(),
                None => continue,
            },
        };
        let column = bucket.column();
        let (keys, first) = match column {
            Some(column) => (format!("{key}, {column}"), 3),
            None => (key.to_owned(), 2),
        };
        let [f, t, c] = [first, first + 1, first + 2];
        let text = match direction {
            Direction::Grant => format!(
                "INSERT INTO {table} ({keys}, flops, tiles, compute_ms) \
                 VALUES (?1, {}?{f}, ?{t}, ?{c}) \
                 ON CONFLICT ({keys}) DO UPDATE SET flops = {table}.flops + excluded.flops, \
                     tiles = {table}.tiles + excluded.tiles, \
                     compute_ms = {table}.compute_ms + excluded.compute_ms",
                if column.is_some() { "?2, " } else { "" }
            ),
            Direction::Withdraw => format!(
                "UPDATE {table} SET flops = flops - ?{f}, tiles = tiles - ?{t}, \
                     compute_ms = compute_ms - ?{c} WHERE {key} = ?1{}",
                column.map_or(String::new(), |column| format!(" AND {column} = ?2"))
            ),
        };
        let text = dialect(text);
        let mut query = sqlx::query(&text).bind(id);
        match bucket {
            Bucket::Day => query = query.bind(holder.day),
            Bucket::Hour => query = query.bind(holder.hour),
            Bucket::None | Bucket::Window => {}
        }
        query
            .bind(amount.flops)
            .bind(amount.tiles)
            .bind(amount.compute_ms)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Takes the hours that left the rolling window at `now` out of it: in one write transaction,
/// the window's sums lose the hourly rows of every hour after the last sweep up to
/// `credit::window_swept_through(now)`, rows left at zero go, and so do those hourly rows.
/// One statement per table whatever the gap since the last sweep (a server down for a week
/// included), touching only the volunteers and teams that earned in the hours swept. Every
/// instance may call it: the locked `credit_window` row makes a second call find nothing to do.
/// Returns the hour swept through, or `None` when the window was already there.
pub async fn sweep_credit_window(pool: &Pool, now: i64) -> Result<Option<i64>, sqlx::Error> {
    let target = crate::credit::window_swept_through(now);
    // Most calls have nothing to do: they find out without taking a lock.
    let (swept,): (i64,) =
        sqlx::query_as(sql("SELECT swept_through FROM credit_window WHERE id = 1"))
            .fetch_one(pool)
            .await?;
    if target <= swept {
        return Ok(None);
    }
    let mut tx = begin_write(pool).await?;
    let text = match engine() {
        Engine::Sqlite => "SELECT swept_through FROM credit_window WHERE id = 1",
        Engine::Postgres => "SELECT swept_through FROM credit_window WHERE id = 1 FOR UPDATE",
    };
    let (swept,): (i64,) = sqlx::query_as(text).fetch_one(&mut *tx).await?;
    if target <= swept {
        return Ok(None); // another instance swept meanwhile
    }
    for (table, key) in [
        ("volunteer_credit", "worker_id"),
        ("team_credit", "team_id"),
    ] {
        let leaving = format!("SELECT {key} FROM {table}_hourly WHERE hour > ?1 AND hour <= ?2");
        let sum = |column: &str| {
            format!(
                "{column} = {column} - (SELECT CAST(COALESCE(SUM(h.{column}), 0) AS BIGINT) \
                     FROM {table}_hourly h WHERE h.{key} = {table}_24h.{key} \
                         AND h.hour > ?1 AND h.hour <= ?2)"
            )
        };
        let statements = [
            format!(
                "UPDATE {table}_24h SET {}, {}, {} WHERE {key} IN ({leaving})",
                sum("flops"),
                sum("tiles"),
                sum("compute_ms")
            ),
            format!(
                "DELETE FROM {table}_24h WHERE flops = 0 AND tiles = 0 AND {key} IN ({leaving})"
            ),
            format!("DELETE FROM {table}_hourly WHERE hour > ?1 AND hour <= ?2"),
        ];
        for text in statements {
            sqlx::query(&dialect(text))
                .bind(swept)
                .bind(target)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(sql(
        "UPDATE credit_window SET swept_through = ? WHERE id = 1",
    ))
    .bind(target)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(target))
}

/// Takes a quarantined volunteer off every board (its rows stay, unlisted).
pub(super) async fn unlist(
    conn: &mut sqlx::AnyConnection,
    worker_id: &str,
) -> Result<(), sqlx::Error> {
    // Every board a volunteer is on: all time, per day and the last 24 hours.
    for text in [
        "UPDATE volunteer_credit SET listed = 0 WHERE worker_id = ?",
        "UPDATE volunteer_credit_daily SET listed = 0 WHERE worker_id = ?",
        "UPDATE volunteer_credit_24h SET listed = 0 WHERE worker_id = ?",
    ] {
        sqlx::query(sql(text))
            .bind(worker_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// One row of a board: a volunteer (with its team's name) or a team (with its members).
#[derive(Debug, FromRow)]
pub struct BoardRow {
    pub id: String,
    /// The display name; `None` for a volunteer who set none.
    pub name: Option<String>,
    pub team: Option<String>,
    pub members: Option<i64>,
    pub flops: i64,
    pub tiles: i64,
}

/// A page of a board and how many rows the whole board has. Each query walks its rank index
/// (`*_rank` in the credit migrations) from the top: its cost is the page's offset plus its
/// size, whatever the number of volunteers. The page is cut before the names are joined, so
/// the rows skipped cost an index step each, not a join (the last page of 100,000 volunteers
/// took 204 ms with the joins first, tests/e2e/bench-credit.mjs). The "24h" boards read the
/// window's sums (`*_24h`) the same way as the all-time boards read the totals.
pub async fn board(pool: &Pool, query: &BoardQuery) -> Result<(Vec<BoardRow>, i64), sqlx::Error> {
    let (rows, total) = match (query.board, query.period) {
        (Board::Volunteers, Period::All) => (
            sql(
                "SELECT v.worker_id AS id, w.display_name AS name, tm.name AS team, \
                     CAST(NULL AS BIGINT) AS members, v.flops, v.tiles \
                 FROM (SELECT worker_id, flops, tiles FROM volunteer_credit \
                       WHERE listed = 1 AND flops > 0 \
                       ORDER BY flops DESC, worker_id LIMIT ?1 OFFSET ?2) v \
                     JOIN workers w ON w.id = v.worker_id \
                     LEFT JOIN teams tm ON tm.id = w.team_id \
                 ORDER BY v.flops DESC, v.worker_id",
            ),
            sql("SELECT COUNT(*) FROM volunteer_credit WHERE listed = 1 AND flops > 0"),
        ),
        (Board::Volunteers, Period::Last24h) => (
            sql(
                "SELECT v.worker_id AS id, w.display_name AS name, tm.name AS team, \
                     CAST(NULL AS BIGINT) AS members, v.flops, v.tiles \
                 FROM (SELECT worker_id, flops, tiles FROM volunteer_credit_24h \
                       WHERE listed = 1 AND flops > 0 \
                       ORDER BY flops DESC, worker_id LIMIT ?1 OFFSET ?2) v \
                     JOIN workers w ON w.id = v.worker_id \
                     LEFT JOIN teams tm ON tm.id = w.team_id \
                 ORDER BY v.flops DESC, v.worker_id",
            ),
            sql("SELECT COUNT(*) FROM volunteer_credit_24h WHERE listed = 1 AND flops > 0"),
        ),
        (Board::Teams, Period::All) => (
            sql(
                "SELECT t.team_id AS id, tm.name AS name, CAST(NULL AS TEXT) AS team, \
                     (SELECT COUNT(*) FROM workers w WHERE w.team_id = t.team_id) AS members, \
                     t.flops, t.tiles \
                 FROM team_credit t JOIN teams tm ON tm.id = t.team_id \
                 WHERE t.flops > 0 \
                 ORDER BY t.flops DESC, t.team_id LIMIT ?1 OFFSET ?2",
            ),
            sql("SELECT COUNT(*) FROM team_credit WHERE flops > 0"),
        ),
        (Board::Teams, Period::Last24h) => (
            sql(
                "SELECT t.team_id AS id, tm.name AS name, CAST(NULL AS TEXT) AS team, \
                     (SELECT COUNT(*) FROM workers w WHERE w.team_id = t.team_id) AS members, \
                     t.flops, t.tiles \
                 FROM team_credit_24h t JOIN teams tm ON tm.id = t.team_id \
                 WHERE t.flops > 0 \
                 ORDER BY t.flops DESC, t.team_id LIMIT ?1 OFFSET ?2",
            ),
            sql("SELECT COUNT(*) FROM team_credit_24h WHERE flops > 0"),
        ),
    };
    // One snapshot for both: a volunteer quarantined between them was counted out of the
    // total and still listed in the page (the PostgreSQL e2e pass saw it once).
    let mut tx = begin_snapshot(pool).await?;
    let rows = sqlx::query_as(rows)
        .bind(i64::from(query.per_page))
        .bind(query.offset())
        .fetch_all(&mut *tx)
        .await?;
    let (total,): (i64,) = sqlx::query_as(total).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok((rows, total))
}

/// A volunteer's public figures.
#[derive(Debug, FromRow)]
pub struct VolunteerRow {
    pub id: String,
    pub name: Option<String>,
    pub team: Option<String>,
    pub quarantine_reason: Option<String>,
    pub flops: i64,
    pub tiles: i64,
    pub compute_ms: i64,
    /// Flops in the rolling window (the "24h" board's figure).
    pub flops_24h: i64,
    /// Still on the boards (not quarantined).
    pub listed: i64,
}

/// One day of a volunteer's history.
#[derive(Debug, FromRow)]
pub struct DayRow {
    pub day: i64,
    pub flops: i64,
    pub tiles: i64,
}

/// A volunteer's totals, its days since `first_day` (oldest first), and its rank on the
/// all-time board (`None` when it is not on it).
pub async fn volunteer(
    pool: &Pool,
    id: &str,
    first_day: i64,
) -> Result<Option<(VolunteerRow, Vec<DayRow>, Option<i64>)>, sqlx::Error> {
    let row: Option<VolunteerRow> = sqlx::query_as(sql(
        "SELECT w.id, w.display_name AS name, tm.name AS team, w.quarantine_reason, \
             CAST(COALESCE(v.flops, 0) AS BIGINT) AS flops, \
             CAST(COALESCE(v.tiles, 0) AS BIGINT) AS tiles, \
             CAST(COALESCE(v.compute_ms, 0) AS BIGINT) AS compute_ms, \
             CAST(COALESCE(d.flops, 0) AS BIGINT) AS flops_24h, \
             CAST(COALESCE(v.listed, 1) AS BIGINT) AS listed \
         FROM workers w LEFT JOIN teams tm ON tm.id = w.team_id \
             LEFT JOIN volunteer_credit v ON v.worker_id = w.id \
             LEFT JOIN volunteer_credit_24h d ON d.worker_id = w.id \
         WHERE w.id = ?",
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let days: Vec<DayRow> =
        sqlx::query_as(sql("SELECT day, flops, tiles FROM volunteer_credit_daily \
         WHERE worker_id = ? AND day >= ? ORDER BY day"))
        .bind(id)
        .bind(first_day)
        .fetch_all(pool)
        .await?;
    let rank = if row.listed == 1 && row.flops > 0 {
        let (ahead,): (i64,) = sqlx::query_as(sql(
            "SELECT COUNT(*) FROM volunteer_credit WHERE listed = 1 AND flops > 0 \
                 AND (flops > ?1 OR (flops = ?1 AND worker_id < ?2))",
        ))
        .bind(row.flops)
        .bind(id)
        .fetch_one(pool)
        .await?;
        Some(ahead + 1)
    } else {
        None
    };
    Ok(Some((row, days, rank)))
}

/// The worker a token belongs to, by the token's hash: its id and, when it is quarantined,
/// why. `None` for a token never issued.
pub async fn worker_by_token(
    pool: &Pool,
    token_hash: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT id, quarantine_reason FROM workers WHERE token_hash = ?",
    ))
    .bind(token_hash)
    .fetch_optional(pool)
    .await
}

/// Sets the display name and team of worker `worker_id`, creating the team when no team has
/// its key yet (`name` and `team` already checked by `credit::parse_name`; `None` clears).
pub async fn set_profile(
    pool: &Pool,
    worker_id: &str,
    name: Option<&str>,
    team: Option<(&str, &str)>,
) -> Result<(), sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    let team_id = match team {
        None => None,
        Some((team_name, key)) => {
            sqlx::query(sql(
                "INSERT INTO teams (id, name, name_key, created_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (name_key) DO NOTHING",
            ))
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(team_name)
            .bind(key)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            let (id,): (String,) = sqlx::query_as(sql("SELECT id FROM teams WHERE name_key = ?"))
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            Some(id)
        }
    };
    sqlx::query(sql(
        "UPDATE workers SET display_name = ?, team_id = ? WHERE id = ?",
    ))
    .bind(name)
    .bind(team_id)
    .bind(worker_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A transfer code to keep for `worker_id` (`credit::TransferCode`: the code's hash and the
/// token sealed with it), expiring at `expires_at`.
pub struct NewTransferCode<'a> {
    pub worker_id: &'a str,
    pub code_hash: &'a str,
    pub sealed_token: &'a str,
    pub expires_at: i64,
}

/// Keeps `code` as its worker's one live transfer code, replacing the one it had, unless
/// `max_live` codes of other workers are live at `now`: then nothing is kept and this
/// returns `false`. First it deletes up to `sweep` expired codes, oldest first (the expiry
/// index makes that a walk of `sweep` entries).
///
/// The count and the insert are one transaction: on SQLite it holds the write lock, so the
/// bound is exact; on PostgreSQL concurrent issues may each see room for one, so the table
/// can pass `max_live` by as many requests as run at once, never without bound.
pub async fn store_transfer_code(
    pool: &Pool,
    code: &NewTransferCode<'_>,
    now: i64,
    max_live: i64,
    sweep: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    sqlx::query(sql(
        "DELETE FROM transfer_codes WHERE code_hash IN (SELECT code_hash FROM transfer_codes \
             WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
    ))
    .bind(now)
    .bind(sweep)
    .execute(&mut *tx)
    .await?;
    // Counted up to the bound only: the count costs what the bound allows, however many
    // expired rows are still waiting for a sweep.
    let (live,): (i64,) =
        sqlx::query_as(sql("SELECT COUNT(*) FROM (SELECT 1 FROM transfer_codes \
             WHERE expires_at > ? AND worker_id <> ? LIMIT ?) AS live"))
        .bind(now)
        .bind(code.worker_id)
        .bind(max_live)
        .fetch_one(&mut *tx)
        .await?;
    if live >= max_live {
        tx.commit().await?; // the sweep stands
        return Ok(false);
    }
    // A new code replaces the worker's previous one in the same statement, so that two
    // concurrent issues for one worker leave one row, the later one's.
    sqlx::query(sql(
        "INSERT INTO transfer_codes (code_hash, worker_id, sealed_token, expires_at) \
         VALUES (?, ?, ?, ?) \
         ON CONFLICT (worker_id) DO UPDATE SET code_hash = excluded.code_hash, \
             sealed_token = excluded.sealed_token, expires_at = excluded.expires_at",
    ))
    .bind(code.code_hash)
    .bind(code.worker_id)
    .bind(code.sealed_token)
    .bind(code.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A transfer code's row as it was deleted.
#[derive(FromRow)]
struct TakenCode {
    worker_id: String,
    sealed_token: String,
    expires_at: i64,
}

/// A transfer code taken by its redeem, with its worker's token hash and standing.
#[derive(Debug)]
pub struct RedeemedCode {
    pub worker_id: String,
    pub sealed_token: String,
    pub expires_at: i64,
    pub token_hash: Option<String>,
    pub quarantine_reason: Option<String>,
}

/// Takes the transfer code whose hash is `code_hash`: the row is deleted by the statement that
/// reads it, so of two redeems of one code only one gets it (SQLite serialises the two
/// deletes; on PostgreSQL the second waits for the first's row lock, then finds no row). An
/// expired code is taken too; whether it still counts is the caller's decision.
pub async fn redeem_transfer_code(
    pool: &Pool,
    code_hash: &str,
) -> Result<Option<RedeemedCode>, sqlx::Error> {
    let taken: Option<TakenCode> =
        sqlx::query_as(sql("DELETE FROM transfer_codes WHERE code_hash = ? \
         RETURNING worker_id, sealed_token, expires_at"))
        .bind(code_hash)
        .fetch_optional(pool)
        .await?;
    let Some(taken) = taken else { return Ok(None) };
    let (token_hash, quarantine_reason): (Option<String>, Option<String>) = sqlx::query_as(sql(
        "SELECT token_hash, quarantine_reason FROM workers WHERE id = ?",
    ))
    .bind(&taken.worker_id)
    .fetch_one(pool)
    .await?;
    Ok(Some(RedeemedCode {
        worker_id: taken.worker_id,
        sealed_token: taken.sealed_token,
        expires_at: taken.expires_at,
        token_hash,
        quarantine_reason,
    }))
}

/// A volunteer's or team's totals, as the export lists them.
#[derive(Debug, FromRow)]
pub struct ExportRow {
    pub id: String,
    pub name: Option<String>,
    pub team: Option<String>,
    pub members: Option<i64>,
    pub flops: i64,
    pub tiles: i64,
    pub compute_ms: i64,
}

/// Up to `limit` listed volunteers with credit whose id follows `after`, by id: the export
/// reads the board in pages, never in one statement that holds every row.
pub async fn export_volunteers(
    pool: &Pool,
    after: &str,
    limit: i64,
) -> Result<Vec<ExportRow>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT v.worker_id AS id, w.display_name AS name, tm.name AS team, \
             CAST(NULL AS BIGINT) AS members, v.flops, v.tiles, v.compute_ms \
         FROM volunteer_credit v JOIN workers w ON w.id = v.worker_id \
             LEFT JOIN teams tm ON tm.id = w.team_id \
         WHERE v.listed = 1 AND v.flops > 0 AND v.worker_id > ? \
         ORDER BY v.worker_id LIMIT ?",
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// [`export_volunteers`] for teams.
pub async fn export_teams(
    pool: &Pool,
    after: &str,
    limit: i64,
) -> Result<Vec<ExportRow>, sqlx::Error> {
    sqlx::query_as(sql(
        "SELECT t.team_id AS id, tm.name AS name, CAST(NULL AS TEXT) AS team, \
             (SELECT COUNT(*) FROM workers w WHERE w.team_id = t.team_id) AS members, \
             t.flops, t.tiles, t.compute_ms \
         FROM team_credit t JOIN teams tm ON tm.id = t.team_id \
         WHERE t.flops > 0 AND t.team_id > ? ORDER BY t.team_id LIMIT ?",
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod transfer_tests {
    use super::*;

    #[tokio::test]
    async fn transfer_codes_are_bounded_swept_replaced_and_taken_once() {
        let dir = std::env::temp_dir().join(format!("brain-transfer-{}", uuid::Uuid::new_v4()));
        let pool = connect(&dir.join("brain.db")).await.expect("database");
        let mut ids = Vec::new();
        for i in 0..3 {
            let w = register_worker(&pool, &format!("hash{i}"), "w", 1, "")
                .await
                .expect("a worker");
            ids.push(w.id);
        }
        let store = |worker: usize, hash: &'static str, expires_at: i64, now: i64, sweep: i64| {
            let (pool, id) = (pool.clone(), ids[worker].clone());
            async move {
                let code = NewTransferCode {
                    worker_id: &id,
                    code_hash: hash,
                    sealed_token: "00",
                    expires_at,
                };
                store_transfer_code(&pool, &code, now, 2, sweep)
                    .await
                    .expect("stored or refused")
            }
        };
        let rows = || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM transfer_codes")
                .fetch_one(&pool)
                .await
                .expect("count");
            n
        };
        let redeem = |hash: &'static str| redeem_transfer_code(&pool, hash);

        // At most two live codes: a third worker's waits; a worker with one may replace it.
        assert!(store(0, "a", 1010, 1000, 10).await);
        assert!(store(1, "b", 1010, 1000, 10).await);
        assert!(!store(2, "c", 1010, 1000, 10).await, "the table is full");
        assert!(
            store(0, "a2", 1010, 1000, 10).await,
            "a new code replaces its own"
        );
        assert_eq!(rows().await, 2);
        assert!(
            redeem("a").await.expect("read").is_none(),
            "the old code is gone"
        );

        // Expired codes leave room, and are swept a bounded number at a time.
        assert!(
            store(2, "c", 2000, 1010, 1).await,
            "expired codes do not count"
        );
        assert_eq!(
            rows().await,
            2,
            "one of the two expired rows swept, one left"
        );
        assert!(store(2, "c2", 2000, 1010, 10).await);
        assert_eq!(rows().await, 1, "swept");

        // Taken once, with what the caller needs to decide.
        let taken = redeem("c2").await.expect("read").expect("the code");
        assert_eq!(taken.worker_id, ids[2]);
        assert_eq!(taken.expires_at, 2000);
        assert_eq!(taken.token_hash.as_deref(), Some("hash2"));
        assert_eq!(taken.quarantine_reason, None);
        assert!(redeem("c2").await.expect("read").is_none(), "used");
        assert_eq!(rows().await, 0);
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use crate::credit::hour_of;

    #[tokio::test]
    async fn the_24h_window_keeps_the_last_24_hours_and_withdrawals_stay_exact() {
        let dir = std::env::temp_dir().join(format!("brain-window-{}", uuid::Uuid::new_v4()));
        let pool = connect(&dir.join("brain.db")).await.expect("database");
        let a = register_worker(&pool, "hash-a", "a", 1, "")
            .await
            .expect("a worker")
            .id;
        let b = register_worker(&pool, "hash-b", "b", 1, "")
            .await
            .expect("a worker")
            .id;
        set_profile(&pool, &a, None, Some(("T", "t")))
            .await
            .expect("a team");
        let (team,): (String,) = sqlx::query_as("SELECT id FROM teams")
            .fetch_one(&pool)
            .await
            .expect("the team");
        let h = hour_of(now_ms());
        let at = |hour: i64| hour * crate::credit::MS_PER_HOUR + 30 * 60_000;
        let holder = |worker: &str, team: Option<&str>, hour: i64| Holder {
            worker_id: worker.to_owned(),
            team_id: team.map(str::to_owned),
            day: hour.div_euclid(24),
            hour,
        };
        let tiles = |n: i64| Amount {
            flops: 100 * n,
            tiles: n,
            compute_ms: 10 * n,
        };
        let (a_h, a_next, b_h) = (
            holder(&a, Some(&team), h),
            holder(&a, Some(&team), h + 1),
            holder(&b, None, h),
        );
        let moving = |grants: Vec<(Holder, Amount)>, back: bool| {
            let pool = pool.clone();
            async move {
                let mut tx = begin_write(&pool).await.expect("a transaction");
                let swept = window(&mut tx).await.expect("the window");
                for (holder, amount) in grants {
                    match back {
                        false => grant(&mut tx, &holder, amount, swept).await,
                        true => withdraw(&mut tx, &holder, amount, swept).await,
                    }
                    .expect("moved");
                }
                tx.commit().await.expect("committed");
            }
        };
        // (24h, all time) of a volunteer, as its profile shows them, and the 24h board's size.
        let figures = |id: String| {
            let pool = pool.clone();
            async move {
                let (row, _, _) = volunteer(&pool, &id, 0)
                    .await
                    .expect("read")
                    .expect("the volunteer");
                (row.flops_24h, row.flops)
            }
        };
        let boards = || async {
            let query = |board| BoardQuery {
                board,
                period: Period::Last24h,
                page: 1,
                per_page: 10,
            };
            let (vols, total) = board(&pool, &query(Board::Volunteers))
                .await
                .expect("board");
            let (teams, _) = board(&pool, &query(Board::Teams)).await.expect("board");
            let flops = |rows: Vec<BoardRow>| rows.iter().map(|r| r.flops).collect::<Vec<_>>();
            (total, flops(vols), flops(teams))
        };
        let rows = |table: &'static str| {
            let pool = pool.clone();
            async move {
                let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&pool)
                    .await
                    .expect("count");
                n
            }
        };

        // Earned in hour h (and a's in h + 1), one of a's hour-h tiles taken back at once.
        moving(
            vec![
                (a_h.clone(), tiles(3)),
                (a_next.clone(), tiles(1)),
                (b_h, tiles(1)),
            ],
            false,
        )
        .await;
        moving(vec![(a_h.clone(), tiles(1))], true).await;
        assert_eq!(figures(a.clone()).await, (300, 300));
        assert_eq!(figures(b.clone()).await, (100, 100));
        assert_eq!(boards().await, (2, vec![300, 100], vec![300]));

        // Hour h is still in the window 23 hours on; the 24th takes it out.
        assert_eq!(
            sweep_credit_window(&pool, at(h + 23)).await.expect("swept"),
            Some(h - 1)
        );
        assert_eq!(
            sweep_credit_window(&pool, at(h + 23)).await.expect("swept"),
            None
        );
        assert_eq!(boards().await, (2, vec![300, 100], vec![300]));
        assert_eq!(
            sweep_credit_window(&pool, at(h + 24)).await.expect("swept"),
            Some(h)
        );
        assert_eq!(
            figures(a.clone()).await,
            (100, 300),
            "a's hour h left, h + 1 stays"
        );
        assert_eq!(
            figures(b.clone()).await,
            (0, 100),
            "b earned in hour h only"
        );
        assert_eq!(boards().await, (1, vec![100], vec![100]));
        assert_eq!(
            rows("volunteer_credit_24h").await,
            1,
            "b's empty row is gone"
        );

        // A withdrawal of swept credit leaves the window as it is; of credit in it, takes it.
        moving(vec![(a_h, tiles(1))], true).await;
        assert_eq!(figures(a.clone()).await, (100, 200));
        moving(vec![(a_next, tiles(1))], true).await;
        assert_eq!(figures(a.clone()).await, (0, 100));
        assert_eq!(
            boards().await,
            (0, vec![], vec![]),
            "nothing left in the window"
        );
        assert_eq!(
            sweep_credit_window(&pool, at(h + 25)).await.expect("swept"),
            Some(h + 1)
        );
        for table in [
            "volunteer_credit_24h",
            "volunteer_credit_hourly",
            "team_credit_24h",
            "team_credit_hourly",
        ] {
            assert_eq!(rows(table).await, 0, "{table} is empty");
        }
        assert_eq!(
            figures(a).await,
            (0, 100),
            "all time keeps what survived the audits"
        );
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
