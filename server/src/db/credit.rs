//! Credit: the aggregate tables the commit and the audit keep (`grant`, `withdraw`, `unlist`,
//! called inside their transactions), the boards and profiles read from them, and the opt-in
//! names and teams. No query here sums results: every figure is a row of an aggregate.

// The parent holds the imports every table group shares.
use super::*;

use crate::credit::{Amount, Board, BoardQuery, Holder, Period};

/// An aggregate a grant or a withdrawal moves: a volunteer's or its team's credit, all time
/// or per day.
struct Aggregate {
    table: &'static str,
    /// The column the row is kept under: the volunteer's or the team's id.
    key: &'static str,
    daily: bool,
}

const AGGREGATES: [Aggregate; 4] = [
    Aggregate {
        table: "volunteer_credit",
        key: "worker_id",
        daily: false,
    },
    Aggregate {
        table: "volunteer_credit_daily",
        key: "worker_id",
        daily: true,
    },
    Aggregate {
        table: "team_credit",
        key: "team_id",
        daily: false,
    },
    Aggregate {
        table: "team_credit_daily",
        key: "team_id",
        daily: true,
    },
];

/// Adds a batch's credit to a volunteer's totals and day, and to its team's.
pub(super) async fn grant(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
) -> Result<(), sqlx::Error> {
    move_credit(conn, holder, amount, Direction::Grant).await
}

/// Takes back what [`grant`] gave for results an audit took back: from the day and the team
/// they were granted to.
pub(super) async fn withdraw(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
) -> Result<(), sqlx::Error> {
    move_credit(conn, holder, amount, Direction::Withdraw).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Grant,
    Withdraw,
}

/// One statement per aggregate of `holder` (its team's only when it has one). Every
/// statement binds the same way: the key as ?1, the day as ?2 where there is one, then flops,
/// tiles and compute time. A grant creates the row it adds to; a withdrawal only ever follows
/// its grant, so its rows exist.
async fn move_credit(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
    direction: Direction,
) -> Result<(), sqlx::Error> {
    for Aggregate { table, key, daily } in AGGREGATES {
        let id = match key {
            "worker_id" => holder.worker_id.as_str(),
            _ => match &holder.team_id {
                Some(team) => team.as_str(),
                None => continue,
            },
        };
        let (keys, first) = if daily {
            (format!("{key}, day"), 3)
        } else {
            (key.to_owned(), 2)
        };
        let [f, t, c] = [first, first + 1, first + 2];
        let text = match direction {
            Direction::Grant => format!(
                "INSERT INTO {table} ({keys}, flops, tiles, compute_ms) \
                 VALUES (?1, {}?{f}, ?{t}, ?{c}) \
                 ON CONFLICT ({keys}) DO UPDATE SET flops = {table}.flops + excluded.flops, \
                     tiles = {table}.tiles + excluded.tiles, \
                     compute_ms = {table}.compute_ms + excluded.compute_ms",
                if daily { "?2, " } else { "" }
            ),
            Direction::Withdraw => format!(
                "UPDATE {table} SET flops = flops - ?{f}, tiles = tiles - ?{t}, \
                     compute_ms = compute_ms - ?{c} WHERE {key} = ?1{}",
                if daily { " AND day = ?2" } else { "" }
            ),
        };
        let text = dialect(text);
        let mut query = sqlx::query(&text).bind(id);
        if daily {
            query = query.bind(holder.day);
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

/// Takes a quarantined volunteer off every board (its rows stay, unlisted).
pub(super) async fn unlist(
    conn: &mut sqlx::AnyConnection,
    worker_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "UPDATE volunteer_credit SET listed = 0 WHERE worker_id = ?",
    ))
    .bind(worker_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sql(
        "UPDATE volunteer_credit_daily SET listed = 0 WHERE worker_id = ?",
    ))
    .bind(worker_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
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
/// (`*_rank` in the credit migration) from the top: its cost is the page's offset plus its
/// size, whatever the number of volunteers. The page is cut before the names are joined, so
/// the rows skipped cost an index step each, not a join (the last page of 100,000 volunteers
/// took 204 ms with the joins first, tests/e2e/bench-credit.mjs).
pub async fn board(
    pool: &Pool,
    query: &BoardQuery,
    today: i64,
) -> Result<(Vec<BoardRow>, i64), sqlx::Error> {
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
        (Board::Volunteers, Period::Today) => (
            sql(
                "SELECT d.worker_id AS id, w.display_name AS name, tm.name AS team, \
                     CAST(NULL AS BIGINT) AS members, d.flops, d.tiles \
                 FROM (SELECT worker_id, flops, tiles FROM volunteer_credit_daily \
                       WHERE day = ?3 AND listed = 1 AND flops > 0 \
                       ORDER BY flops DESC, worker_id LIMIT ?1 OFFSET ?2) d \
                     JOIN workers w ON w.id = d.worker_id \
                     LEFT JOIN teams tm ON tm.id = w.team_id \
                 ORDER BY d.flops DESC, d.worker_id",
            ),
            sql("SELECT COUNT(*) FROM volunteer_credit_daily \
                 WHERE day = ?1 AND listed = 1 AND flops > 0"),
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
        (Board::Teams, Period::Today) => (
            sql(
                "SELECT t.team_id AS id, tm.name AS name, CAST(NULL AS TEXT) AS team, \
                     (SELECT COUNT(*) FROM workers w WHERE w.team_id = t.team_id) AS members, \
                     t.flops, t.tiles \
                 FROM team_credit_daily t JOIN teams tm ON tm.id = t.team_id \
                 WHERE t.day = ?3 AND t.flops > 0 \
                 ORDER BY t.flops DESC, t.team_id LIMIT ?1 OFFSET ?2",
            ),
            sql("SELECT COUNT(*) FROM team_credit_daily WHERE day = ?1 AND flops > 0"),
        ),
    };
    let rows = sqlx::query_as(rows)
        .bind(i64::from(query.per_page))
        .bind(query.offset());
    let total = sqlx::query_as(total);
    let (rows, total) = match query.period {
        Period::Today => (rows.bind(today), total.bind(today)),
        Period::All => (rows, total),
    };
    let rows = rows.fetch_all(pool).await?;
    let (total,): (i64,) = total.fetch_one(pool).await?;
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
             CAST(COALESCE(v.listed, 1) AS BIGINT) AS listed \
         FROM workers w LEFT JOIN teams tm ON tm.id = w.team_id \
             LEFT JOIN volunteer_credit v ON v.worker_id = w.id \
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

/// Sets the display name and team of the worker holding `token_hash`, creating the team when
/// no team has its key yet (`name` and `team` already checked by `credit::parse_name`; `None`
/// clears). Returns the worker's id, or `None` for a token never issued.
pub async fn set_profile(
    pool: &Pool,
    token_hash: &str,
    name: Option<&str>,
    team: Option<(&str, &str)>,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    let worker: Option<(String,)> =
        sqlx::query_as(sql("SELECT id FROM workers WHERE token_hash = ?"))
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((worker_id,)) = worker else {
        return Ok(None);
    };
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
    .bind(&worker_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(worker_id))
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
