//! Configuration, read once at start-up from the environment (and an optional `.env`).
//!
//! Every value is parsed here into its final type, so an invalid setting stops the server
//! before it binds a port, with a message naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::address::TrustProxy;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// What was expected instead.
    pub reason: String,
}

/// Which origins may call the API and open Socket.io connections from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin (the default, as in the ancestor).
    Any,
    /// Exactly these origins (e.g. `https://brain.example.org`).
    List(Vec<String>),
}

/// The deployment flavour; `production` turns on JSON logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Everything the server needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind: `0.0.0.0` by default so Render and tunnels can reach it.
    pub host: IpAddr,
    /// Port to bind (`PORT`, default 3000; 0 picks a free one, as tests do).
    pub port: u16,
    /// CORS and Socket.io origin policy (`ALLOWED_ORIGINS`, comma-separated).
    pub allowed_origins: AllowedOrigins,
    /// SQLite file (`DATABASE_PATH`); its folder is created when missing.
    pub database_path: PathBuf,
    /// When set, submitting, cancelling and downloading need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Folder of the built web page (`WEB_DIR`, default `web/dist`).
    pub web_dir: PathBuf,
    /// How long a leased task may go without a heartbeat from its worker (`LEASE_MS`).
    pub lease: Duration,
    /// How often workers are asked to send a heartbeat; a fraction of the lease so that one
    /// or two lost heartbeats do not cost a lease.
    pub heartbeat_interval: Duration,
    /// Largest HTTP request body (`MAX_BODY_BYTES`), which bounds job submissions.
    pub max_body_bytes: usize,
    /// Trusted workers, at as many distinct addresses, that must fail the same task (report
    /// it failed, or let its lease expire) before its job fails (`MAX_TASK_FAILURES`). Reports
    /// from workers without a verified record never count (see `trust::task_fault`).
    pub max_task_failures: u32,
    /// `APP_ENV`: `development` (default) or `production`.
    pub app_env: AppEnv,
    /// Abuse limits (see `docs/security.md`).
    pub limits: Limits,
    /// How long after a job ends its inputs and results are kept (`RETENTION_HOURS`,
    /// fractional hours; 0 keeps them forever).
    pub retention: Option<Duration>,
}

/// Limits that keep one client from hurting the others. Past one, the client gets a clear
/// error and, for Socket.io floods, its connection is closed; nobody else is affected.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest Socket.io message or binary attachment (`MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Largest job: elements of A, B and C together (`MAX_JOB_ELEMENTS`).
    pub max_job_elements: usize,
    /// Most tiles (tasks) one job may be cut into (`MAX_TASKS_PER_JOB`, default 100,000).
    /// Every task costs a database row, a lease, a network round trip and a verification
    /// whatever its size, so past a point more tasks only add overhead: 100,000 rows are
    /// about 15 MB of SQLite and go in within a second, and every job within the default
    /// `MAX_JOB_ELEMENTS` still fits with a tile of 45 or more (C of 14142×14142 in 315²
    /// tiles), well below the 256 the server picks by itself. A tile that would make more
    /// tasks is refused with the smallest tile that would be accepted.
    pub max_tasks_per_job: usize,
    /// Largest JSON submission body (`MAX_JSON_BODY_BYTES`, default 4 MiB; never more than
    /// `MAX_BODY_BYTES`). JSON spends ten or more bytes of text per number and is parsed into
    /// memory as a whole, so it is meant for small matrices; large ones go as `.npy` files
    /// in a multipart body, which `MAX_BODY_BYTES` bounds.
    pub max_json_body_bytes: usize,
    /// Tasks a connection may hold or have requested at once (`MAX_TASKS_PER_WORKER`). A
    /// worker without verified results holds fewer (see `trust::Record::lease_allowance`).
    pub max_tasks_per_worker: usize,
    /// Leases held at once by all the connections of one address group
    /// (`MAX_LEASES_PER_ADDRESS`), so that a crowd of identities from one machine cannot
    /// hoard a job.
    pub max_leases_per_address: usize,
    /// Bytes per second the server sends one connection at most, in bursts of four seconds'
    /// worth (`MAX_SEND_BYTES_PER_SEC`): task panels and their re-sends.
    pub max_send_bytes_per_sec: u64,
    /// Sustained Socket.io events per second per connection (`MAX_EVENTS_PER_SEC`); bursts of
    /// twice as many are allowed.
    pub max_events_per_sec: u32,
    /// Socket.io connections open at once from one IP address (`MAX_CONNECTIONS_PER_IP`), an
    /// IPv6 /64 counting as one; Engine.IO sessions, connected or not, may be twice as many
    /// (see `gate`).
    pub max_connections_per_ip: usize,
    /// Reverse proxies in front of the server that append to `X-Forwarded-For`
    /// (`TRUST_PROXY`: `true` = one, as behind Render's proxy, or a count): the client address
    /// is the entry that many places from the right; without, the TCP peer.
    pub trust_proxy: TrustProxy,
}

impl Config {
    /// Reads the process environment, after loading `.env` when there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is the operator's to see in the logs.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads settings through `lookup`, so tests can configure a server without touching the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        let lease_ms: u64 = parse(&get, "LEASE_MS", 30_000, |v| *v >= 100, "at least 100")?;
        let config = Config {
            host: parse(&get, "HOST", IpAddr::from([0, 0, 0, 0]), |_| true, "")?,
            port: parse(&get, "PORT", 3000, |_| true, "")?,
            allowed_origins: match get("ALLOWED_ORIGINS") {
                None => AllowedOrigins::Any,
                Some(v) => parse_origins(&v)?,
            },
            database_path: get("DATABASE_PATH")
                .map_or_else(|| PathBuf::from("./data/brain.db"), PathBuf::from),
            api_token: get("API_TOKEN"),
            web_dir: get("WEB_DIR").map_or_else(|| PathBuf::from("web/dist"), PathBuf::from),
            lease: Duration::from_millis(lease_ms),
            heartbeat_interval: Duration::from_millis((lease_ms / 3).clamp(50, 10_000)),
            max_body_bytes: parse(
                &get,
                "MAX_BODY_BYTES",
                512 * 1024 * 1024,
                |v| *v >= 1024,
                "at least 1024",
            )?,
            max_task_failures: parse(&get, "MAX_TASK_FAILURES", 3, |v| *v >= 1, "at least 1")?,
            retention: {
                let hours: f64 = parse(
                    &get,
                    "RETENTION_HOURS",
                    168.0,
                    |h: &f64| h.is_finite() && *h >= 0.0,
                    "hours ≥ 0",
                )?;
                (hours > 0.0).then(|| Duration::from_secs_f64(hours * 3600.0))
            },
            limits: Limits {
                max_message_bytes: parse(
                    &get,
                    "MAX_MESSAGE_BYTES",
                    64 * 1024 * 1024,
                    |v| *v >= 1024,
                    "at least 1024",
                )?,
                max_job_elements: parse(
                    &get,
                    "MAX_JOB_ELEMENTS",
                    200_000_000,
                    |v| *v >= 3,
                    "at least 3",
                )?,
                max_tasks_per_job: parse(
                    &get,
                    "MAX_TASKS_PER_JOB",
                    100_000,
                    |v| *v >= 1,
                    "at least 1",
                )?,
                max_json_body_bytes: parse(
                    &get,
                    "MAX_JSON_BODY_BYTES",
                    4 * 1024 * 1024,
                    |v| *v >= 1024,
                    "at least 1024",
                )?,
                max_tasks_per_worker: parse(
                    &get,
                    "MAX_TASKS_PER_WORKER",
                    16,
                    |v| *v >= 1,
                    "at least 1",
                )?,
                max_leases_per_address: parse(
                    &get,
                    "MAX_LEASES_PER_ADDRESS",
                    64,
                    |v| *v >= 1,
                    "at least 1",
                )?,
                max_send_bytes_per_sec: parse(
                    &get,
                    "MAX_SEND_BYTES_PER_SEC",
                    64 * 1024 * 1024,
                    |v| *v >= 1024,
                    "at least 1024",
                )?,
                max_events_per_sec: parse(
                    &get,
                    "MAX_EVENTS_PER_SEC",
                    200,
                    |v| *v >= 1,
                    "at least 1",
                )?,
                max_connections_per_ip: parse(
                    &get,
                    "MAX_CONNECTIONS_PER_IP",
                    64,
                    |v| *v >= 1,
                    "at least 1",
                )?,
                trust_proxy: parse(&get, "TRUST_PROXY", TrustProxy::None, |_| true, "")?,
            },
            app_env: match get("APP_ENV").as_deref() {
                None | Some("development") | Some("dev") => AppEnv::Development,
                Some("production") | Some("prod") => AppEnv::Production,
                Some(other) => {
                    return Err(ConfigError {
                        var: "APP_ENV",
                        value: other.to_owned(),
                        reason: "expected development or production".into(),
                    })
                }
            },
        };
        if config.app_env == AppEnv::Production && config.api_token.is_none() {
            return Err(ConfigError {
                var: "API_TOKEN",
                value: String::new(),
                reason: "must be set when APP_ENV=production (anyone could submit jobs)".into(),
            });
        }
        Ok(config)
    }
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: T,
    valid: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    let error = |reason: String| ConfigError {
        var,
        value: raw.clone(),
        reason,
    };
    let value = raw.trim().parse::<T>().map_err(|e| error(e.to_string()))?;
    if valid(&value) {
        Ok(value)
    } else {
        Err(error(format!("expected {expected}")))
    }
}

fn parse_origins(raw: &str) -> Result<AllowedOrigins, ConfigError> {
    let origins: Vec<String> = raw
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.iter().any(|o| o == "*") {
        return Ok(AllowedOrigins::Any);
    }
    for origin in &origins {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(ConfigError {
                var: "ALLOWED_ORIGINS",
                value: raw.to_owned(),
                reason: format!("{origin:?} is not an origin like https://example.org"),
            });
        }
    }
    Ok(AllowedOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_ancestor() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.port, 3000);
        assert_eq!(c.allowed_origins, AllowedOrigins::Any);
        assert_eq!(c.database_path, PathBuf::from("./data/brain.db"));
        assert_eq!(c.lease, Duration::from_millis(30_000));
        assert_eq!(c.api_token, None);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let e = config(&[("PORT", "eighty")]).expect_err("PORT must be a number");
        assert_eq!(e.var, "PORT");
        let e = config(&[("LEASE_MS", "5")]).expect_err("too short a lease");
        assert_eq!(e.var, "LEASE_MS");
        assert!(e.to_string().contains("LEASE_MS"));
        let e = config(&[("ALLOWED_ORIGINS", "example.org")]).expect_err("not an origin");
        assert_eq!(e.var, "ALLOWED_ORIGINS");
        let e = config(&[("MAX_EVENTS_PER_SEC", "0")]).expect_err("no events at all");
        assert_eq!(e.var, "MAX_EVENTS_PER_SEC");
    }

    #[test]
    fn submission_limits_have_defaults_and_bounds() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.limits.max_tasks_per_job, 100_000);
        assert_eq!(c.limits.max_json_body_bytes, 4 * 1024 * 1024);
        let c = config(&[
            ("MAX_TASKS_PER_JOB", "250"),
            ("MAX_JSON_BODY_BYTES", "65536"),
        ])
        .expect("valid");
        assert_eq!(c.limits.max_tasks_per_job, 250);
        assert_eq!(c.limits.max_json_body_bytes, 65536);
        let e = config(&[("MAX_TASKS_PER_JOB", "0")]).expect_err("no tasks at all");
        assert_eq!(e.var, "MAX_TASKS_PER_JOB");
        let e = config(&[("MAX_JSON_BODY_BYTES", "12")]).expect_err("too small");
        assert_eq!(e.var, "MAX_JSON_BODY_BYTES");
    }

    #[test]
    fn production_needs_an_api_token() {
        let e = config(&[("APP_ENV", "production")]).expect_err("no token");
        assert_eq!(e.var, "API_TOKEN");
        let c = config(&[("APP_ENV", "production"), ("API_TOKEN", "x")]).expect("token set");
        assert_eq!(c.app_env, AppEnv::Production);
    }

    #[test]
    fn origins_are_split_and_trimmed() {
        let c = config(&[("ALLOWED_ORIGINS", "https://a.org, http://b.org/")]).expect("valid");
        assert_eq!(
            c.allowed_origins,
            AllowedOrigins::List(vec!["https://a.org".into(), "http://b.org".into()])
        );
    }
}
