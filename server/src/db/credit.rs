//! Credit: the aggregate tables the commit and the audit keep (`grant`, `withdraw`, `unlist`,
//! called inside their transactions), the boards and profiles read from them, and the opt-in
//! names and teams. No query here sums results: every figure is a row of an aggregate.

// The parent holds the imports every table group shares.
use super::*;

use crate::credit::{Amount, Board, BoardQuery, Holder, Period};

/// Adds a batch's credit to a volunteer's totals and day, and to its team's.
pub(super) async fn grant(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql(
        "INSERT INTO volunteer_credit (worker_id, flops, tiles, compute_ms) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (worker_id) DO UPDATE SET flops = volunteer_credit.flops + excluded.flops, \
             tiles = volunteer_credit.tiles + excluded.tiles, \
             compute_ms = volunteer_credit.compute_ms + excluded.compute_ms",
    ))
    .bind(&holder.worker_id)
    .bind(amount.flops)
    .bind(amount.tiles)
    .bind(amount.compute_ms)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sql(
        "INSERT INTO volunteer_credit_daily (worker_id, day, flops, tiles, compute_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (worker_id, day) DO UPDATE SET \
             flops = volunteer_credit_daily.flops + excluded.flops, \
             tiles = volunteer_credit_daily.tiles + excluded.tiles, \
             compute_ms = volunteer_credit_daily.compute_ms + excluded.compute_ms",
    ))
    .bind(&holder.worker_id)
    .bind(holder.day)
    .bind(amount.flops)
    .bind(amount.tiles)
    .bind(amount.compute_ms)
    .execute(&mut *conn)
    .await?;
    let Some(team) = &holder.team_id else {
        return Ok(());
    };
    sqlx::query(sql(
        "INSERT INTO team_credit (team_id, flops, tiles, compute_ms) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (team_id) DO UPDATE SET flops = team_credit.flops + excluded.flops, \
             tiles = team_credit.tiles + excluded.tiles, \
             compute_ms = team_credit.compute_ms + excluded.compute_ms",
    ))
    .bind(team)
    .bind(amount.flops)
    .bind(amount.tiles)
    .bind(amount.compute_ms)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sql(
        "INSERT INTO team_credit_daily (team_id, day, flops, tiles, compute_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (team_id, day) DO UPDATE SET \
             flops = team_credit_daily.flops + excluded.flops, \
             tiles = team_credit_daily.tiles + excluded.tiles, \
             compute_ms = team_credit_daily.compute_ms + excluded.compute_ms",
    ))
    .bind(team)
    .bind(holder.day)
    .bind(amount.flops)
    .bind(amount.tiles)
    .bind(amount.compute_ms)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Takes back what [`grant`] gave for results an audit took back: from the day and the team
/// they were granted to.
pub(super) async fn withdraw(
    conn: &mut sqlx::AnyConnection,
    holder: &Holder,
    amount: Amount,
) -> Result<(), sqlx::Error> {
    let (flops, tiles, ms) = (amount.flops, amount.tiles, amount.compute_ms);
    sqlx::query(sql(
        "UPDATE volunteer_credit SET flops = flops - ?1, tiles = tiles - ?2, \
             compute_ms = compute_ms - ?3 WHERE worker_id = ?4",
    ))
    .bind(flops)
    .bind(tiles)
    .bind(ms)
    .bind(&holder.worker_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sql(
        "UPDATE volunteer_credit_daily SET flops = flops - ?1, tiles = tiles - ?2, \
             compute_ms = compute_ms - ?3 WHERE worker_id = ?4 AND day = ?5",
    ))
    .bind(flops)
    .bind(tiles)
    .bind(ms)
    .bind(&holder.worker_id)
    .bind(holder.day)
    .execute(&mut *conn)
    .await?;
    let Some(team) = &holder.team_id else {
        return Ok(());
    };
    sqlx::query(sql(
        "UPDATE team_credit SET flops = flops - ?1, tiles = tiles - ?2, \
             compute_ms = compute_ms - ?3 WHERE team_id = ?4",
    ))
    .bind(flops)
    .bind(tiles)
    .bind(ms)
    .bind(team)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sql(
        "UPDATE team_credit_daily SET flops = flops - ?1, tiles = tiles - ?2, \
             compute_ms = compute_ms - ?3 WHERE team_id = ?4 AND day = ?5",
    ))
    .bind(flops)
    .bind(tiles)
    .bind(ms)
    .bind(team)
    .bind(holder.day)
    .execute(&mut *conn)
    .await
    .map(|_| ())
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
/// size, whatever the number of volunteers.
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
                 FROM volunteer_credit v JOIN workers w ON w.id = v.worker_id \
                     LEFT JOIN teams tm ON tm.id = w.team_id \
                 WHERE v.listed = 1 AND v.flops > 0 \
                 ORDER BY v.flops DESC, v.worker_id LIMIT ?1 OFFSET ?2",
            ),
            sql("SELECT COUNT(*) FROM volunteer_credit WHERE listed = 1 AND flops > 0"),
        ),
        (Board::Volunteers, Period::Today) => (
            sql(
                "SELECT d.worker_id AS id, w.display_name AS name, tm.name AS team, \
                     CAST(NULL AS BIGINT) AS members, d.flops, d.tiles \
                 FROM volunteer_credit_daily d JOIN workers w ON w.id = d.worker_id \
                     LEFT JOIN teams tm ON tm.id = w.team_id \
                 WHERE d.day = ?3 AND d.listed = 1 AND d.flops > 0 \
                 ORDER BY d.flops DESC, d.worker_id LIMIT ?1 OFFSET ?2",
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
