//! Credit over HTTP (#15, docs/credit.md): `GET /api/leaderboard`, `GET /api/volunteers/{id}`,
//! a volunteer's own routes with its worker token (`GET /api/me`, its profile; `PUT /api/me`,
//! its opt-in name and team; `POST /api/me/transfer`, a one-time code that moves the identity
//! to another browser), `POST /api/transfer` (redeeming that code) and `GET /api/stats/export`
//! (the daily dump statistics sites aggregate). The decisions (units, ranking, names, codes,
//! bounds) are `crate::credit`'s; the figures are `db::credit`'s aggregates.

use std::io::Write;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ErrorBody;
use crate::credit::{self, Board, BoardQuery, Period, TransferCode};
use crate::db;
use crate::error::{Error, Result};
use crate::state::AppState;

/// `GET /api/leaderboard`'s parameters. Each is checked by `credit::BoardQuery::parse`, which
/// refuses unknown values rather than guess.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BoardParams {
    /// `volunteers` (default) or `teams`.
    #[param(value_type = Option<BoardName>)]
    board: Option<String>,
    /// `24h` (the last 24 hours, to the hour: the current hour and the 23 before it) or `all`
    /// (default).
    #[param(value_type = Option<PeriodName>)]
    period: Option<String>,
    /// From 1 (default) to 10000.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    page: Option<String>,
    /// Rows per page, 1 to 100 (default 25).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    per_page: Option<String>,
}

/// Which board.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents the parameter, which is parsed as text")]
#[schema(rename_all = "lowercase")]
pub(super) enum BoardName {
    Volunteers,
    Teams,
}

/// Over what time: `24h` is the current hour and the 23 before it, `all` all time.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documents the parameter, which is parsed as text")]
pub(super) enum PeriodName {
    #[schema(rename = "24h")]
    Last24h,
    #[schema(rename = "all")]
    All,
}

/// A page of a board.
#[derive(Serialize, ToSchema)]
pub struct Leaderboard {
    board: &'static str,
    period: &'static str,
    page: u32,
    per_page: u32,
    /// Rows on the whole board.
    total: i64,
    /// The unit of `credit`: `GFLOP` (verified floating-point operations / 1e9).
    unit: &'static str,
    entries: Vec<BoardEntry>,
}

/// One rank: a volunteer or a team. Never an address or a user agent.
#[derive(Serialize, ToSchema)]
pub struct BoardEntry {
    rank: i64,
    id: String,
    /// The display name, or `volunteer #<short id>` for a volunteer who set none.
    name: String,
    /// No display name set: `name` is the anonymous label.
    anonymous: bool,
    /// A volunteer's team's name.
    team: Option<String>,
    /// A team's members.
    members: Option<i64>,
    /// GFLOP verified.
    credit: f64,
    tiles: i64,
}

fn bad_query(e: QueryRejection) -> Error {
    Error::BadRequest(format!("query string: {}", e.body_text()))
}

/// A board, ranked by credit: volunteers or teams, over the last 24 hours (to the hour) or all
/// time, a page at a time. Quarantined volunteers are not on it.
#[utoipa::path(get, path = "/api/leaderboard", tag = "credit", params(BoardParams),
    responses((status = 200, body = Leaderboard), (status = 400, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn leaderboard(
    State(state): State<AppState>,
    params: Result<Query<BoardParams>, QueryRejection>,
) -> Result<Json<Leaderboard>> {
    let Query(p) = params.map_err(bad_query)?;
    let query = BoardQuery::parse(
        p.board.as_deref(),
        p.period.as_deref(),
        p.page.as_deref(),
        p.per_page.as_deref(),
    )
    .map_err(Error::BadRequest)?;
    let (rows, total) = db::credit::board(&state.db, &query).await?;
    let first = query.offset() + 1;
    let entries = rows
        .into_iter()
        .zip(first..)
        .map(|(row, rank)| BoardEntry {
            rank,
            anonymous: row.name.is_none(),
            name: row.name.unwrap_or_else(|| credit::anonymous_label(&row.id)),
            id: row.id,
            team: row.team,
            members: row.members,
            credit: credit::gflop(row.flops),
            tiles: row.tiles,
        })
        .collect();
    Ok(Json(Leaderboard {
        board: match query.board {
            Board::Volunteers => "volunteers",
            Board::Teams => "teams",
        },
        period: match query.period {
            Period::Last24h => "24h",
            Period::All => "all",
        },
        page: query.page,
        per_page: query.per_page,
        total,
        unit: "GFLOP",
        entries,
    }))
}

/// A volunteer's public profile.
#[derive(Serialize, ToSchema)]
pub struct Profile {
    id: String,
    /// The display name, or `volunteer #<short id>`.
    name: String,
    anonymous: bool,
    team: Option<String>,
    /// GFLOP verified today (UTC), in the last 7 UTC days, and ever.
    credit_today: f64,
    credit_week: f64,
    /// GFLOP verified in the last 24 hours, to the hour: the figure of the `24h` board.
    credit_24h: f64,
    credit_all_time: f64,
    tiles: i64,
    /// Compute time the volunteer's pages reported for their verified tiles, in seconds.
    compute_s: f64,
    /// Rank on the all-time board; absent before any credit.
    rank: Option<i64>,
    /// The last 30 UTC days, oldest first, every day present.
    history: Vec<HistoryDay>,
}

/// One UTC day of a profile's history.
#[derive(Serialize, ToSchema)]
pub struct HistoryDay {
    /// `YYYY-MM-DD`.
    date: String,
    credit: f64,
    tiles: i64,
}

async fn profile(state: &AppState, id: &str) -> Result<Profile> {
    let today = credit::day_of(db::now_ms());
    let first = today - (credit::HISTORY_DAYS - 1);
    let found = db::credit::volunteer(&state.db, id, first).await?;
    // A quarantined volunteer vanishes: no board, no profile.
    let Some((row, days, rank)) = found.filter(|(row, _, _)| row.quarantine_reason.is_none())
    else {
        return Err(Error::NotFound(format!("no volunteer with id {id}")));
    };
    let on = |day: i64| days.iter().find(|d| d.day == day);
    let week: i64 = days
        .iter()
        .filter(|d| d.day > today - credit::WEEK_DAYS)
        .map(|d| d.flops)
        .sum();
    let history = (first..=today)
        .map(|day| HistoryDay {
            date: credit::date_of(day),
            credit: credit::gflop(on(day).map_or(0, |d| d.flops)),
            tiles: on(day).map_or(0, |d| d.tiles),
        })
        .collect();
    Ok(Profile {
        anonymous: row.name.is_none(),
        name: row.name.unwrap_or_else(|| credit::anonymous_label(&row.id)),
        id: row.id,
        team: row.team,
        credit_today: credit::gflop(on(today).map_or(0, |d| d.flops)),
        credit_week: credit::gflop(week),
        credit_24h: credit::gflop(row.flops_24h),
        credit_all_time: credit::gflop(row.flops),
        tiles: row.tiles,
        compute_s: row.compute_ms as f64 / 1000.0,
        rank,
        history,
    })
}

/// A volunteer's public profile: credit today, in the last 24 hours, this week and ever, tiles,
/// compute time, rank, team and the last 30 days. 404 for an unknown or quarantined volunteer.
#[utoipa::path(get, path = "/api/volunteers/{id}", tag = "credit",
    params(("id" = String, Path, description = "The worker id (`registration_ack`'s `worker_id`)")),
    responses((status = 200, body = Profile), (status = 404, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn volunteer(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Profile>> {
    profile(&state, &id).await.map(Json)
}

/// The worker token a volunteer's own request carries (`Authorization: Bearer <token>`, the
/// token its page was given in `registration_ack`), checked for the length a token can have
/// before it is hashed.
fn worker_token(headers: &HeaderMap) -> Result<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| (32..=128).contains(&t.len()))
        .ok_or(Error::UnknownWorker)
}

/// The volunteer making a request of its own: its worker id and its token.
struct Caller<'h> {
    id: String,
    token: &'h str,
}

/// Who is asking, by its worker token: 401 for a token the server never issued, 403 (with
/// the reason) for a quarantined worker, which has no profile, no name and no code to give.
async fn caller<'h>(state: &AppState, headers: &'h HeaderMap) -> Result<Caller<'h>> {
    let token = worker_token(headers)?;
    let hash = crate::grid::workers::hash_token(token);
    match db::credit::worker_by_token(&state.db, &hash).await? {
        None => Err(Error::UnknownWorker),
        Some((_, Some(reason))) => Err(Error::Quarantined(reason)),
        Some((id, None)) => Ok(Caller { id, token }),
    }
}

/// A JSON body refused: 413 past the server's body limit (axum's 2 MB, which bounds what a
/// body can make the server buffer), 400 otherwise, with the reason.
fn bad_json(e: JsonRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge(format!("request body too large: {}", e.body_text()))
    } else {
        Error::BadRequest(e.body_text())
    }
}

/// The caller's own profile, the same as its public one, from its first visit (no rank and
/// zeros before any credit).
#[utoipa::path(get, path = "/api/me", tag = "credit", security(("bearer" = [])),
    responses((status = 200, body = Profile),
        (status = 401, body = ErrorBody, description = "No worker token, or one never issued"),
        (status = 403, body = ErrorBody, description = "The worker is quarantined (the reason is given)"),
        (status = 500, body = ErrorBody)))]
pub(super) async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Profile>> {
    let me = caller(&state, &headers).await?;
    profile(&state, &me.id).await.map(Json)
}

/// `PUT /api/me`: both fields are set as given; `null` (or absent) clears one.
#[derive(Deserialize, ToSchema)]
pub struct ProfileUpdate {
    /// 1–32 letters, digits, spaces, `-`, `_`, `.` after trimming.
    #[schema(max_length = 32)]
    name: Option<String>,
    /// A team to join by name, created if no team has it yet (case does not matter).
    #[schema(max_length = 32)]
    team: Option<String>,
}

/// Sets the caller's display name and team. The caller is the worker whose token (from
/// `registration_ack`) is sent as `Authorization: Bearer <token>`: no account, no password.
#[utoipa::path(put, path = "/api/me", tag = "credit", request_body = ProfileUpdate,
    security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn set_me(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ProfileUpdate>, JsonRejection>,
) -> Result<Json<Profile>> {
    let me = caller(&state, &headers).await?;
    let Json(update) = body.map_err(bad_json)?;
    let parse = |what: &str, value: Option<String>| {
        value
            .map(|v| credit::parse_name(&v))
            .transpose()
            .map_err(|e| Error::BadRequest(format!("{what}: {e}")))
    };
    let name = parse("name", update.name)?;
    let team = parse("team", update.team)?;
    let team = team.as_deref().map(|t| (t, credit::team_key(t)));
    let team_ref = team.as_ref().map(|(t, k)| (*t, k.as_str()));
    db::credit::set_profile(&state.db, &me.id, name.as_deref(), team_ref).await?;
    profile(&state, &me.id).await.map(Json)
}

/// A transfer code, issued.
#[derive(Serialize, ToSchema)]
pub struct TransferIssued {
    /// Ten characters of Crockford's base32 in two groups of five. Typed into the other
    /// browser; case, dashes and spaces do not matter.
    #[schema(
        example = "7KQ2M-XW9DP",
        pattern = "^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$"
    )]
    code: String,
    /// When it stops working, in ms since the Unix epoch.
    expires_at: i64,
    /// Its lifetime in seconds (600).
    expires_in_s: i64,
}

/// Marks an answer that carries a secret (a code or a token) as not to be stored by any cache.
const NO_STORE: [(header::HeaderName, &str); 1] = [(header::CACHE_CONTROL, "no-store")];

/// A one-time code that moves the caller's identity to another browser: redeemed there with
/// `POST /api/transfer` within 10 minutes, it gives that browser this worker's token, so both
/// hold one identity and its credit. A new code replaces the caller's previous one.
#[utoipa::path(post, path = "/api/me/transfer", tag = "credit", security(("bearer" = [])),
    responses((status = 201, body = TransferIssued),
        (status = 401, body = ErrorBody, description = "No worker token, or one never issued"),
        (status = 403, body = ErrorBody, description = "The worker is quarantined (the reason is given)"),
        (status = 500, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Too many codes are waiting to be redeemed")))]
pub(super) async fn issue_transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response> {
    let me = caller(&state, &headers).await?;
    let code = TransferCode::generate(&mut rand::rng());
    let now = db::now_ms();
    let expires_at = now + credit::TRANSFER_CODE_TTL_MS;
    let (code_hash, sealed_token) = (code.find_hash(), code.seal(me.token));
    let row = db::credit::NewTransferCode {
        worker_id: &me.id,
        code_hash: &code_hash,
        sealed_token: &sealed_token,
        expires_at,
    };
    let kept = db::credit::store_transfer_code(
        &state.db,
        &row,
        now,
        credit::MAX_LIVE_TRANSFER_CODES,
        credit::TRANSFER_SWEEP,
    )
    .await?;
    if !kept {
        return Err(Error::Unavailable(format!(
            "{} transfer codes are waiting to be redeemed, the most the server keeps; \
             try again when some have expired (codes last {} minutes)",
            credit::MAX_LIVE_TRANSFER_CODES,
            credit::TRANSFER_CODE_TTL_MS / 60_000
        )));
    }
    let issued = TransferIssued {
        code: code.to_string(),
        expires_at,
        expires_in_s: credit::TRANSFER_CODE_TTL_MS / 1000,
    };
    Ok((StatusCode::CREATED, NO_STORE, Json(issued)).into_response())
}

/// `POST /api/transfer`'s body.
#[derive(Deserialize, ToSchema)]
pub struct TransferRedeem {
    /// The code from `POST /api/me/transfer`, as typed: case, dashes and spaces do not
    /// matter, and O, I and L read as 0, 1 and 1.
    #[schema(example = "7KQ2M-XW9DP", max_length = 64)]
    code: String,
}

/// A redeemed code: the identity, now this browser's too.
#[derive(Serialize, ToSchema)]
pub struct TransferRedeemed {
    /// The worker token, to keep and present at `register_worker` (and to `/api/me`).
    token: String,
    worker_id: String,
}

/// Why a code is not redeemed, the same whether it never existed, expired or was used: the
/// answer does not tell a guesser which codes were ever issued.
fn no_such_code() -> Error {
    Error::NotFound(format!(
        "no such code: it may have expired (codes last {} minutes) or been used",
        credit::TRANSFER_CODE_TTL_MS / 60_000
    ))
}

/// Redeems a transfer code, once: answers the identity's worker token, which this browser
/// then presents at `register_worker` as the one that issued the code does. No token is
/// needed; the code is the proof.
#[utoipa::path(post, path = "/api/transfer", tag = "credit", request_body = TransferRedeem,
    responses((status = 200, body = TransferRedeemed),
        (status = 400, body = ErrorBody, description = "Not a code (the reason is given)"),
        (status = 403, body = ErrorBody, description = "The worker is quarantined"),
        (status = 404, body = ErrorBody, description = "Unknown, expired or already used"),
        (status = 413, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn redeem_transfer(
    State(state): State<AppState>,
    body: Result<Json<TransferRedeem>, JsonRejection>,
) -> Result<Response> {
    let Json(request) = body.map_err(bad_json)?;
    let code = TransferCode::parse(&request.code).map_err(|e| Error::BadRequest(e.to_string()))?;
    let taken = db::credit::redeem_transfer_code(&state.db, &code.find_hash())
        .await?
        .filter(|row| row.expires_at > db::now_ms())
        .ok_or_else(no_such_code)?;
    if let Some(reason) = taken.quarantine_reason {
        return Err(Error::Quarantined(reason));
    }
    // The row was found by this code's hash, so it opens with this code; the check that it
    // opens to the worker's token guards the invariant, not against a guess.
    let token = code
        .unseal(&taken.sealed_token)
        .filter(|t| taken.token_hash.as_deref() == Some(&crate::grid::workers::hash_token(t)))
        .ok_or_else(|| {
            Error::Internal(format!(
                "transfer code of worker {} did not open to its token",
                taken.worker_id
            ))
        })?;
    let redeemed = TransferRedeemed {
        token,
        worker_id: taken.worker_id,
    };
    Ok((NO_STORE, Json(redeemed)).into_response())
}

/// Rows read per statement while the export is built.
const EXPORT_PAGE: i64 = 1000;

/// `GET /api/stats/export`, documented; the body is written row by row.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the gzipped JSON, which is written piece by piece"
)]
pub struct StatsDump {
    /// `YYYY-MM-DD` (UTC) the dump was made on.
    day: String,
    /// `GFLOP`.
    unit: String,
    /// 432: 1 cobblestone = 1/200 day at 1 GFLOPS.
    gflop_per_cobblestone: f64,
    volunteers: Vec<DumpEntry>,
    teams: Vec<DumpEntry>,
}

/// A volunteer or team in the dump.
#[derive(Serialize, ToSchema)]
pub struct DumpEntry {
    id: String,
    name: Option<String>,
    /// A volunteer's team.
    #[serde(skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    /// A team's members.
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<i64>,
    credit: f64,
    tiles: i64,
    compute_s: f64,
}

/// Writes `"key":[...]` from pages of rows, by id, without one statement holding them all.
async fn dump_list<F, Fut>(out: &mut Vec<u8>, key: &str, mut page: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<db::credit::ExportRow>, sqlx::Error>>,
{
    write!(out, "\"{key}\":[").map_err(|e| Error::Internal(e.to_string()))?;
    let (mut after, mut first) = (String::new(), true);
    loop {
        let rows = page(after.clone()).await?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        let full = rows.len() as i64 == EXPORT_PAGE;
        for row in rows {
            if !first {
                out.push(b',');
            }
            first = false;
            let entry = DumpEntry {
                id: row.id,
                name: row.name,
                team: row.team,
                members: row.members,
                credit: credit::gflop(row.flops),
                tiles: row.tiles,
                compute_s: row.compute_ms as f64 / 1000.0,
            };
            serde_json::to_writer(&mut *out, &entry).map_err(|e| Error::Internal(e.to_string()))?;
        }
        if !full {
            break;
        }
    }
    out.push(b']');
    Ok(())
}

async fn build_export(state: &AppState, day: i64) -> Result<Bytes> {
    let mut json = Vec::new();
    write!(
        json,
        "{{\"day\":\"{}\",\"unit\":\"GFLOP\",\"gflop_per_cobblestone\":{},",
        credit::date_of(day),
        credit::GFLOP_PER_COBBLESTONE
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    let pool = &state.db;
    dump_list(&mut json, "volunteers", |after| async move {
        db::credit::export_volunteers(pool, &after, EXPORT_PAGE).await
    })
    .await?;
    json.push(b',');
    dump_list(&mut json, "teams", |after| async move {
        db::credit::export_teams(pool, &after, EXPORT_PAGE).await
    })
    .await?;
    json.push(b'}');
    let gzipped = tokio::task::spawn_blocking(move || {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json)?;
        gz.finish()
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Bytes::from(gzipped))
}

const EXPORT_DESCRIPTION: &str = "Every listed volunteer and every team with its totals, as \
    gzipped JSON (`{day, unit, gflop_per_cobblestone, volunteers: [{id, name, team, credit, \
    tiles, compute_s}], teams: [{id, name, members, credit, tiles, compute_s}]}`), made once \
    per UTC day: every request that day gets the same bytes.";

/// The daily statistics dump, as BOINC projects publish theirs for statistics sites.
#[utoipa::path(get, path = "/api/stats/export", tag = "credit", description = EXPORT_DESCRIPTION,
    responses((status = 200, description = "gzipped JSON", content_type = "application/gzip",
            body = StatsDump),
        (status = 500, body = ErrorBody)))]
pub(super) async fn export(State(state): State<AppState>) -> Result<Response> {
    let now = db::now_ms();
    let day = credit::day_of(now);
    let bytes = state
        .stats_export
        .get_or_build(day, build_export(&state, day))
        .await?;
    let until_midnight = ((day + 1) * credit::MS_PER_DAY - now) / 1000;
    let headers = [
        (header::CONTENT_TYPE, "application/gzip".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"brain-stats-{}.json.gz\"",
                credit::date_of(day)
            ),
        ),
        (
            header::CACHE_CONTROL,
            format!("public, max-age={}", until_midnight.max(1)),
        ),
    ];
    Ok((headers, bytes).into_response())
}
