//! Credit for verified work (#15, docs/credit.md): the unit, what a result earns, how grants
//! and withdrawals are grouped for the aggregate tables, which names are acceptable, the
//! boards' parameters, and the one-time codes that move an identity to another browser. Pure
//! decisions, no SQL and no HTTP: `db::credit` stores, `http::credit` answers.
//!
//! The unit is the floating-point operation of a verified tile, 2·rows·k·cols, kept as an
//! exact integer and shown in GFLOP: a withdrawal takes back exactly what was granted, and no
//! rounding drifts a total over millions of tiles.

use std::collections::BTreeMap;

/// Flops in the GFLOP the API shows.
pub const FLOPS_PER_GFLOP: f64 = 1e9;

/// BOINC's cobblestone is 1/200 of a day of a machine doing 1 GFLOPS: 86 400 s × 1e9 / 200 =
/// 4.32e11 flops, so 432 GFLOP (docs/credit.md).
pub const GFLOP_PER_COBBLESTONE: f64 = 86_400.0 / 200.0;

/// Milliseconds in a UTC day: days are numbered from 1970-01-01 (day 0).
pub const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds in an hour: the rolling window's resolution. Hours are numbered from the epoch
/// (hour 0 is 1970-01-01 00:00 UTC).
pub const MS_PER_HOUR: i64 = 3_600_000;

/// Hourly buckets in the rolling "24h" window: the current hour and the 23 before it, so the
/// window spans between 23 and 24 hours of credit (docs/credit.md).
pub const WINDOW_HOURS: i64 = 24;

/// Days in a profile's history.
pub const HISTORY_DAYS: i64 = 30;

/// "This week" on a profile: the last seven UTC days, today included.
pub const WEEK_DAYS: i64 = 7;

/// Largest page a board answers with.
pub const MAX_PER_PAGE: u32 = 100;
/// Page size when none is asked for.
pub const DEFAULT_PER_PAGE: u32 = 25;
/// Last page number a board answers: with [`MAX_PER_PAGE`] a million ranks, which bounds the
/// rows an `OFFSET` may skip (a board deeper than that is read through the export).
pub const MAX_PAGE: u32 = 10_000;

/// Longest display or team name, in characters after trimming.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest name looked at, in bytes, before anything else is checked: a 10 KB "name" is
/// refused without being walked.
const MAX_NAME_INPUT_BYTES: usize = 256;

/// A tile's flops: what its verified result earns.
pub fn tile_flops(rows: usize, k: usize, cols: usize) -> i64 {
    let flops = [rows, k, cols]
        .iter()
        .try_fold(2u128, |acc, &x| acc.checked_mul(x as u128));
    flops
        .and_then(|f| i64::try_from(f).ok())
        .unwrap_or(i64::MAX)
}

/// Flops as GFLOP, for the API.
pub fn gflop(flops: i64) -> f64 {
    flops as f64 / FLOPS_PER_GFLOP
}

/// The UTC day (days since 1970-01-01) of a time in ms since the epoch.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// The hour (hours since the epoch) of a time in ms since the epoch.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_HOUR)
}

/// The last hour a sweep at `now_ms` takes out of the rolling window: every hour up to it has
/// left, and the window holds the [`WINDOW_HOURS`] hours after it, the current one included.
pub fn window_swept_through(now_ms: i64) -> i64 {
    hour_of(now_ms) - WINDOW_HOURS
}

/// Whether credit of `hour` is (still) counted in the rolling window, the window having been
/// swept through `swept_through`. A withdrawal takes credit out of the window only then: once
/// its hour is swept, the sweep already took it out, and taking it again would count it twice.
/// A grant whose hour is already swept (an instance whose clock is a day behind the sweeper's)
/// stays out of the window for the same reason.
pub fn in_window(hour: i64, swept_through: i64) -> bool {
    hour > swept_through
}

/// A day number as `YYYY-MM-DD` (proleptic Gregorian; Howard Hinnant's `civil_from_days`).
pub fn date_of(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Compute time a result adds to its volunteer's total: what the page reported, when it is a
/// sane figure, in whole milliseconds.
pub fn credited_ms(compute_ms: Option<f64>) -> i64 {
    compute_ms
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map_or(0, |ms| ms.min(i64::MAX as f64 / 2.0).round() as i64)
}

/// Who a grant or withdrawal goes to: a volunteer, its team at the time, and the UTC day and
/// hour of the grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub worker_id: String,
    pub team_id: Option<String>,
    pub day: i64,
    /// Hours since the epoch ([`hour_of`]); 0 for a grant made before hours were kept, which is
    /// never in the window.
    pub hour: i64,
}

/// What a batch adds to (or takes from) one [`Holder`]'s aggregates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub flops: i64,
    pub tiles: i64,
    pub compute_ms: i64,
}

/// One result's credit as stored with its task: `flops` is `None` when nothing was granted
/// (the worker was quarantined when the result was committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultCredit {
    pub holder: Holder,
    pub flops: Option<i64>,
    pub compute_ms: i64,
}

/// Groups results' credit by holder, so the aggregates take one statement per volunteer, team
/// and day rather than one per result. Results that earned nothing count for nothing: a
/// tile counts only with its credit.
pub fn tally<'a>(results: impl IntoIterator<Item = &'a ResultCredit>) -> BTreeMap<Holder, Amount> {
    let mut out: BTreeMap<Holder, Amount> = BTreeMap::new();
    for r in results {
        let Some(flops) = r.flops else { continue };
        let a = out.entry(r.holder.clone()).or_default();
        a.flops = a.flops.saturating_add(flops);
        a.tiles += 1;
        a.compute_ms = a.compute_ms.saturating_add(r.compute_ms);
    }
    out
}

/// How a volunteer without a display name is shown: never its address or user agent.
pub fn anonymous_label(worker_id: &str) -> String {
    let short: String = worker_id.chars().filter(|c| *c != '-').take(8).collect();
    format!("volunteer #{short}")
}

/// Why a name was refused, told to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("the name contains a control character")]
    Control,
    #[error("the name contains a bidirectional formatting character")]
    Bidi,
    #[error("the name contains {0:?}: only letters, digits, spaces and - _ . are allowed")]
    Disallowed(char),
}

/// Bidirectional formatting characters: they can make a name read as something else (or
/// reverse what follows it on a page that shows it).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A display or team name as kept: trimmed, 1 to [`MAX_NAME_CHARS`] characters of Unicode
/// letters and digits, spaces, `-`, `_` and `.`, with no run of spaces. Nothing that could be
/// markup, a control or a direction override gets in, so a page shows names as they are; they
/// are still data, rendered as text.
pub fn parse_name(raw: &str) -> Result<String, NameError> {
    if raw.len() > MAX_NAME_INPUT_BYTES {
        return Err(NameError::TooLong);
    }
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    for c in name.chars() {
        if c.is_control() {
            return Err(NameError::Control);
        }
        if is_bidi_control(c) {
            return Err(NameError::Bidi);
        }
        if !(c.is_alphabetic() || c.is_numeric() || matches!(c, ' ' | '-' | '_' | '.')) {
            return Err(NameError::Disallowed(c));
        }
    }
    Ok(name
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" "))
}

/// The key two team names are the same team by.
pub fn team_key(name: &str) -> String {
    name.to_lowercase()
}

/// Whose board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    Volunteers,
    Teams,
}

/// Over what time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The rolling window (`24h`): the current hour and the 23 before it ([`WINDOW_HOURS`]),
    /// kept as its own aggregate so that the board reads a rank index, never sums hours.
    Last24h,
    All,
}

/// A board request, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardQuery {
    pub board: Board,
    pub period: Period,
    /// From 1.
    pub page: u32,
    pub per_page: u32,
}

impl BoardQuery {
    /// Rows skipped before the page.
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }

    /// Checks the query parameters: unknown values and out-of-range numbers are refused with
    /// the reason, never clamped in silence.
    pub fn parse(
        board: Option<&str>,
        period: Option<&str>,
        page: Option<&str>,
        per_page: Option<&str>,
    ) -> Result<Self, String> {
        let board = match board.unwrap_or("volunteers") {
            "volunteers" => Board::Volunteers,
            "teams" => Board::Teams,
            other => return Err(format!("board must be volunteers or teams, not {other:?}")),
        };
        let period = match period.unwrap_or("all") {
            "24h" => Period::Last24h,
            "all" => Period::All,
            other => return Err(format!("period must be 24h or all, not {other:?}")),
        };
        let number = |name: &str, value: Option<&str>, default: u32, max: u32| match value {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("{name} must be a whole number from 1 to {max}")),
            },
        };
        Ok(BoardQuery {
            board,
            period,
            page: number("page", page, 1, MAX_PAGE)?,
            per_page: number("per_page", per_page, DEFAULT_PER_PAGE, MAX_PER_PAGE)?,
        })
    }
}

/// How long a transfer code can be redeemed after it is issued.
pub const TRANSFER_CODE_TTL_MS: i64 = 10 * 60 * 1000;
/// Live transfer codes the server keeps at most: a client that registers many workers and asks
/// a code for each cannot grow the table without bound; past it, issuing waits for codes to
/// be redeemed or to expire.
pub const MAX_LIVE_TRANSFER_CODES: i64 = 10_000;
/// Expired codes deleted each time one is issued, oldest first: the sweep is bounded, and
/// issuing faster than codes expire keeps the table swept.
pub const TRANSFER_SWEEP: i64 = 100;
/// Characters of a transfer code: 10 of Crockford's base32, 50 bits.
pub const TRANSFER_CODE_CHARS: usize = 10;
/// Crockford's base32: digits and letters without I, L, O and U, which are misread (I, L and O
/// as 1, 1 and 0, and are accepted as such) or spell words.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Longest code input looked at, in bytes, before anything else is checked.
const MAX_CODE_INPUT_BYTES: usize = 64;
/// Domains of the two hashes of a code, so that the hash a row is found by says nothing of
/// the key its token is sealed with.
const FIND_DOMAIN: &[u8] = b"brain transfer find:";
const SEAL_DOMAIN: &[u8] = b"brain transfer seal:";

/// Why a transfer code was refused, told to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("a transfer code has {TRANSFER_CODE_CHARS} characters, such as ABCDE-FGHJK; this is far longer")]
    TooLong,
    #[error(
        "a transfer code has {TRANSFER_CODE_CHARS} characters (dashes and spaces aside), not {0}"
    )]
    WrongLength(usize),
    #[error("{0:?} is not in a transfer code: codes are digits and letters other than U")]
    Disallowed(char),
}

/// A one-time code that moves a volunteer's identity (its worker token) to another browser:
/// 10 characters of Crockford's base32, kept normalised (upper case, aliases resolved) and
/// shown as two groups of five. It is a secret while it lives: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TransferCode([u8; TRANSFER_CODE_CHARS]);

impl std::fmt::Debug for TransferCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferCode(..)")
    }
}

impl std::fmt::Display for TransferCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The characters are all ASCII from CROCKFORD.
        let text = String::from_utf8_lossy(&self.0);
        write!(f, "{}-{}", &text[..5], &text[5..])
    }
}

impl TransferCode {
    /// A new code from `rng`: 50 bits, each character uniform over the alphabet.
    pub fn generate(rng: &mut impl rand::Rng) -> Self {
        TransferCode(std::array::from_fn(|_| {
            CROCKFORD[rng.random_range(0..CROCKFORD.len())]
        }))
    }

    /// A code as a person typed it: case does not matter, dashes and spaces are ignored, and
    /// Crockford's aliases read as the characters they look like (O as 0, I and L as 1).
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        if input.len() > MAX_CODE_INPUT_BYTES {
            return Err(CodeError::TooLong);
        }
        let mut out = Vec::with_capacity(TRANSFER_CODE_CHARS);
        for typed in input.chars().filter(|c| !matches!(c, '-' | ' ')) {
            let c = match typed.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            match u8::try_from(c).ok().filter(|b| CROCKFORD.contains(b)) {
                Some(b) => out.push(b),
                None => return Err(CodeError::Disallowed(typed)),
            }
        }
        let n = out.len();
        out.try_into()
            .map(TransferCode)
            .map_err(|_| CodeError::WrongLength(n))
    }

    /// What the code's row is found by: the hex SHA-256 of the code in its own domain. The
    /// code itself is never stored.
    pub fn find_hash(&self) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::new()
            .chain_update(FIND_DOMAIN)
            .chain_update(self.0)
            .finalize())
    }

    /// `len` bytes of key: SHA-256 blocks of the code in the sealing domain and a counter.
    fn key_stream(&self, len: usize) -> Vec<u8> {
        use sha2::Digest;
        (0u32..)
            .flat_map(|block| {
                sha2::Sha256::new()
                    .chain_update(SEAL_DOMAIN)
                    .chain_update(self.0)
                    .chain_update(block.to_be_bytes())
                    .finalize()
            })
            .take(len)
            .collect()
    }

    /// The worker token as the code's row keeps it: XORed with the code's key stream, in hex.
    /// Only someone with the code can open it, and the database holds neither.
    pub fn seal(&self, token: &str) -> String {
        let key = self.key_stream(token.len());
        let sealed: Vec<u8> = token.bytes().zip(key).map(|(t, k)| t ^ k).collect();
        hex(&sealed)
    }

    /// The token [`seal`](Self::seal) sealed with this code; `None` when `sealed` is not hex
    /// or does not open to text.
    pub fn unseal(&self, sealed: &str) -> Option<String> {
        if !sealed.len().is_multiple_of(2) {
            return None;
        }
        let bytes = (0..sealed.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(sealed.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let key = self.key_stream(bytes.len());
        String::from_utf8(bytes.iter().zip(key).map(|(s, k)| s ^ k).collect()).ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The statistics export made today, shared by every request of the day, so that the export
/// cannot be used to load the server: at most one build per UTC day.
#[derive(Default)]
pub struct DailyExport {
    /// (UTC day, the export). A `tokio` mutex, held while the export is built, so that a burst
    /// of requests at midnight builds it once.
    cached: tokio::sync::Mutex<Option<(i64, bytes::Bytes)>>,
}

impl DailyExport {
    /// Today's export: the one built earlier today, or `build`'s (kept only if it succeeds).
    pub async fn get_or_build<E>(
        &self,
        day: i64,
        build: impl std::future::Future<Output = Result<bytes::Bytes, E>>,
    ) -> Result<bytes::Bytes, E> {
        let mut cached = self.cached.lock().await;
        if let Some((built, bytes)) = &*cached {
            if *built == day {
                return Ok(bytes.clone());
            }
        }
        let bytes = build.await?;
        *cached = Some((day, bytes.clone()));
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_earns_its_flops_exactly() {
        assert_eq!(tile_flops(256, 256, 256), 2 * 256 * 256 * 256);
        assert_eq!(gflop(tile_flops(1000, 1000, 500)), 1.0);
        assert_eq!(
            tile_flops(usize::MAX, usize::MAX, 2),
            i64::MAX,
            "never wraps"
        );
    }

    #[test]
    fn a_cobblestone_is_432_gflop() {
        // 1/200 of a day at 1 GFLOPS.
        assert_eq!(GFLOP_PER_COBBLESTONE, 432.0);
        assert_eq!(
            GFLOP_PER_COBBLESTONE * FLOPS_PER_GFLOP * 200.0,
            86_400.0 * 1e9
        );
    }

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(day_of(951_782_400_000)), "2000-02-29");
        assert_eq!(day_of(MS_PER_DAY - 1), 0);
        assert_eq!(day_of(-1), -1);
        assert_eq!(date_of(-1), "1969-12-31");
        assert_eq!(date_of(20_797), "2026-12-10");
    }

    #[test]
    fn the_window_is_the_current_hour_and_the_23_before_it() {
        let h = 493_000; // 2026-03-29 16:00 UTC
        let at = |hour: i64, minute: i64| hour * MS_PER_HOUR + minute * 60_000;
        assert_eq!(hour_of(at(h, 0)), h);
        assert_eq!(hour_of(at(h, 59) + 59_999), h);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(
            hour_of(at(h, 30)).div_euclid(24),
            day_of(at(h, 30)),
            "hours nest in days"
        );
        // Credit of hour h counts until the sweep in hour h + 24 takes it out.
        for (now, counted) in [(h, true), (h + 23, true), (h + 24, false), (h + 25, false)] {
            let swept = window_swept_through(at(now, 59));
            assert_eq!(in_window(h, swept), counted, "at hour h + {}", now - h);
            assert_eq!(
                window_swept_through(at(now, 0)),
                swept,
                "the same all the hour"
            );
        }
        // A withdrawal before the sweep takes from the window; after it, the sweep already did.
        assert!(in_window(h, h - 1));
        assert!(!in_window(h, h));
        assert!(
            !in_window(0, window_swept_through(at(h, 0))),
            "grants older than hours"
        );
    }

    #[test]
    fn only_sane_compute_times_count() {
        assert_eq!(credited_ms(Some(12.6)), 13);
        assert_eq!(credited_ms(None), 0);
        assert_eq!(credited_ms(Some(f64::NAN)), 0);
        assert_eq!(credited_ms(Some(-5.0)), 0);
        assert!(credited_ms(Some(f64::MAX)) > 0);
    }

    fn credit(worker: &str, team: Option<&str>, day: i64, flops: Option<i64>) -> ResultCredit {
        ResultCredit {
            holder: Holder {
                worker_id: worker.into(),
                team_id: team.map(Into::into),
                day,
                hour: day * 24,
            },
            flops,
            compute_ms: 10,
        }
    }

    #[test]
    fn results_that_earned_nothing_count_for_nothing() {
        let batch = [
            credit("a", None, 1, Some(100)),
            credit("a", None, 1, Some(50)),
            credit("a", None, 2, Some(7)),
            credit("b", Some("t"), 1, Some(3)),
            credit("q", None, 1, None), // quarantined when committed
        ];
        let t = tally(&batch);
        assert_eq!(t.len(), 3, "{t:?}");
        let a1 = Holder {
            worker_id: "a".into(),
            team_id: None,
            day: 1,
            hour: 24,
        };
        assert_eq!(
            t[&a1],
            Amount {
                flops: 150,
                tiles: 2,
                compute_ms: 20
            }
        );
        assert!(t.keys().all(|h| h.worker_id != "q"));
        assert_eq!(t.values().map(|a| a.tiles).sum::<i64>(), 4);
    }

    #[test]
    fn anonymous_volunteers_show_a_short_id_only() {
        assert_eq!(
            anonymous_label("0f3a9c12-7d2e-4b1a-9e0f-123456789abc"),
            "volunteer #0f3a9c12"
        );
    }

    #[test]
    fn names_are_trimmed_letters_digits_and_a_few_marks() {
        assert_eq!(parse_name("  Ada Lovelace "), Ok("Ada Lovelace".into()));
        assert_eq!(parse_name("Zoë_Ω-9.x"), Ok("Zoë_Ω-9.x".into()));
        assert_eq!(parse_name("東京 チーム"), Ok("東京 チーム".into()));
        assert_eq!(
            parse_name("a    b"),
            Ok("a b".into()),
            "runs of spaces collapse"
        );
        assert_eq!(parse_name(&"x".repeat(32)).map(|n| n.len()), Ok(32));
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        assert_eq!(parse_name("   "), Err(NameError::Empty));
        assert_eq!(parse_name(""), Err(NameError::Empty));
        assert_eq!(parse_name(&"x".repeat(33)), Err(NameError::TooLong));
        assert_eq!(parse_name(&"x".repeat(10_240)), Err(NameError::TooLong));
        assert_eq!(parse_name("<b>hi</b>"), Err(NameError::Disallowed('<')));
        assert_eq!(parse_name("a\u{202E}gnp.exe"), Err(NameError::Bidi));
        assert_eq!(parse_name("a\u{2067}b"), Err(NameError::Bidi));
        assert_eq!(parse_name("a\u{0007}b"), Err(NameError::Control));
        assert_eq!(parse_name("a\nb"), Err(NameError::Control));
        assert_eq!(parse_name("rocket 🚀"), Err(NameError::Disallowed('🚀')));
        assert_eq!(
            parse_name("a\u{200B}b"),
            Err(NameError::Disallowed('\u{200B}'))
        );
        assert_eq!(parse_name("x\"onload=1"), Err(NameError::Disallowed('"')));
        let reason = parse_name("<script>").expect_err("refused").to_string();
        assert!(reason.contains("only letters, digits"), "{reason}");
    }

    #[test]
    fn team_names_match_whatever_their_case() {
        assert_eq!(team_key("Brain Trust"), team_key("brain TRUST"));
    }

    #[test]
    fn board_queries_are_bounded_and_unknown_values_refused() {
        let q = BoardQuery::parse(None, None, None, None).expect("defaults");
        assert_eq!(
            (q.board, q.period, q.page, q.per_page),
            (Board::Volunteers, Period::All, 1, DEFAULT_PER_PAGE)
        );
        let q =
            BoardQuery::parse(Some("teams"), Some("24h"), Some("3"), Some("100")).expect("valid");
        assert_eq!(
            (q.board, q.period, q.offset()),
            (Board::Teams, Period::Last24h, 200)
        );
        let refused = |b, p, page, per| BoardQuery::parse(b, p, page, per).expect_err("refused");
        assert!(refused(Some("bots"), None, None, None).contains("board must be"));
        assert!(refused(None, Some("week"), None, None).contains("period must be"));
        assert!(refused(None, None, Some("0"), None).contains("page must be"));
        assert!(refused(None, None, Some("10001"), None).contains("from 1 to 10000"));
        assert!(refused(None, None, Some("-1"), None).contains("page"));
        assert!(refused(None, None, None, Some("101")).contains("per_page must be"));
        assert!(refused(None, None, None, Some("1e3")).contains("per_page"));
        let deepest =
            BoardQuery::parse(None, None, Some("10000"), Some("100")).expect("the last page");
        assert_eq!(deepest.offset(), 999_900, "i64: no overflow");
    }

    fn code(text: &str) -> TransferCode {
        TransferCode::parse(text).expect("a valid code")
    }

    #[test]
    fn transfer_codes_are_ten_crockford_characters_in_two_groups() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let codes: Vec<TransferCode> = (0..200).map(|_| TransferCode::generate(&mut rng)).collect();
        for c in &codes {
            let shown = c.to_string();
            assert_eq!(shown.len(), 11, "{shown}");
            assert_eq!(&shown[5..6], "-");
            assert!(
                shown
                    .chars()
                    .all(|ch| ch == '-' || CROCKFORD.contains(&(ch as u8))),
                "{shown}"
            );
            assert_eq!(&TransferCode::parse(&shown).expect("its own form"), c);
        }
        let distinct: std::collections::BTreeSet<String> =
            codes.iter().map(ToString::to_string).collect();
        assert_eq!(distinct.len(), codes.len());
        // Every character of the alphabet turns up: none is left out of the 50 bits.
        let seen: std::collections::BTreeSet<char> =
            distinct.iter().flat_map(|s| s.chars()).collect();
        assert_eq!(seen.len(), 33, "32 characters and the dash");
        assert_eq!(format!("{:?}", codes[0]), "TransferCode(..)", "a secret");
    }

    #[test]
    fn transfer_codes_read_as_people_type_them() {
        let want = code("ABCDE-FGHJK");
        assert_eq!(code("abcde fghjk"), want);
        assert_eq!(code("  ab-cd-efg hjk "), want);
        assert_eq!(code("ABCDEFGHJK"), want);
        // O reads as 0, I and L as 1, in either case.
        assert_eq!(code("OoIiL-lABCD"), code("00111-1ABCD"));
        assert_eq!(code("00111-1abcd").to_string(), "00111-1ABCD");
    }

    #[test]
    fn malformed_codes_are_refused_with_the_reason() {
        let refused = |text: &str| TransferCode::parse(text).expect_err("refused");
        assert_eq!(refused(""), CodeError::WrongLength(0));
        assert_eq!(refused("ABCDE-FGHJ"), CodeError::WrongLength(9));
        assert_eq!(refused("ABCDE-FGHJKM"), CodeError::WrongLength(11));
        assert_eq!(refused("ABCDE-FGHJU"), CodeError::Disallowed('U'));
        assert_eq!(refused("abcde-fghju"), CodeError::Disallowed('u'));
        assert_eq!(refused("ABCDE_FGHJK"), CodeError::Disallowed('_'));
        assert_eq!(
            refused("ABCDE-FGHJ\u{00C9}"),
            CodeError::Disallowed('\u{00C9}')
        );
        assert_eq!(refused("ABCDE\tFGHJK"), CodeError::Disallowed('\t'));
        assert_eq!(refused(&"A".repeat(65)), CodeError::TooLong);
        assert_eq!(refused(&"-".repeat(10_000)), CodeError::TooLong);
        let reason = refused("ABCDE-FGHJ").to_string();
        assert!(reason.contains("10 characters"), "{reason}");
    }

    #[test]
    fn a_sealed_token_opens_with_its_code_only() {
        let token = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c";
        let c = code("ABCDE-FGHJK");
        let sealed = c.seal(token);
        assert_eq!(sealed.len(), 2 * token.len());
        assert!(!sealed.contains(token), "hidden");
        assert_eq!(c.unseal(&sealed).as_deref(), Some(token), "round trip");
        // A code one character away opens it to something else, or to nothing.
        let other = code("ABCDE-FGHJM");
        assert_ne!(other.unseal(&sealed).as_deref(), Some(token));
        assert_ne!(other.seal(token), sealed, "different codes, different keys");
        // Long tokens take several key blocks; non-ASCII tokens survive.
        let long = "é".repeat(64);
        assert_eq!(c.unseal(&c.seal(&long)).as_deref(), Some(long.as_str()));
        assert_eq!(c.unseal("zz"), None);
        assert_eq!(c.unseal("abc"), None);
    }

    #[test]
    fn the_find_hash_and_the_seal_key_are_apart() {
        let c = code("ABCDE-FGHJK");
        assert_eq!(c.find_hash().len(), 64);
        assert_eq!(c.find_hash(), code("abcde fghjk").find_hash());
        assert_ne!(c.find_hash(), code("ABCDE-FGHJM").find_hash());
        // The stored hash is not the first block of the key (nor the plain hash of the code).
        let zeros = "\0".repeat(32);
        assert_ne!(c.seal(&zeros), c.find_hash());
        assert_ne!(
            c.find_hash(),
            crate::grid::workers::hash_token("ABCDEFGHJK")
        );
    }

    #[tokio::test]
    async fn the_export_is_built_once_per_day() {
        let export = DailyExport::default();
        let built = std::sync::atomic::AtomicUsize::new(0);
        let build = |text: &'static str| {
            built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, ()>(bytes::Bytes::from(text)))
        };
        assert_eq!(export.get_or_build(5, build("a")).await, Ok("a".into()));
        assert_eq!(export.get_or_build(5, build("b")).await, Ok("a".into()));
        assert_eq!(export.get_or_build(6, build("c")).await, Ok("c".into()));
        let failed = export
            .get_or_build(7, std::future::ready(Err::<bytes::Bytes, _>("db down")))
            .await;
        assert_eq!(failed, Err("db down"));
        assert_eq!(
            export.get_or_build(6, build("d")).await,
            Ok("c".into()),
            "kept"
        );
    }
}
