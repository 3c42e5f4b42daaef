//! Configuration, read once at start-up from the environment (and an optional `.env`) through
//! clap, which also lists every variable with its default and meaning in `--help`.
//!
//! Every value is parsed here into its final type, so an invalid setting stops the server
//! before it binds a port, with a message naming the variable.

use std::ffi::OsStr;
use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, FromArgMatches};

pub use crate::address::TrustProxy;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: String,
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
    /// Port to bind (`PORT`; 0 picks a free one, as tests do).
    pub port: u16,
    /// CORS and Socket.io origin policy (`ALLOWED_ORIGINS`, comma-separated).
    pub allowed_origins: AllowedOrigins,
    /// SQLite file (`DATABASE_PATH`); its folder is created when missing.
    pub database_path: PathBuf,
    /// PostgreSQL's URL (`DATABASE_URL`); when set, the database instead of the SQLite file.
    pub database_url: Option<String>,
    /// Connections to PostgreSQL per instance (`DATABASE_MAX_CONNECTIONS`): Render's small
    /// plans allow 100 in all.
    pub database_max_connections: u32,
    /// How long an instance sharing PostgreSQL may be silent before others take back its
    /// leases (`INSTANCE_TIMEOUT_MS`); instances say they are alive every second.
    pub instance_timeout: Duration,
    /// This instance's name (`INSTANCE_ID`), recorded with its leases.
    pub instance_id: Option<String>,
    /// Redis or Valkey (`REDIS_URL`) carrying broadcasts between instances (see `bus`).
    pub redis_url: Option<String>,
    /// When set, submitting, cancelling and downloading need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Folder of the built web page (`WEB_DIR`).
    pub web_dir: PathBuf,
    /// Folder of the jobs' matrices (`DATA_DIR`; by default `jobs` beside the database): see
    /// `store`.
    pub data_dir: PathBuf,
    /// Memory for the panels of running jobs read from `DATA_DIR` (`PANEL_CACHE_BYTES`):
    /// dispatch and verification read through it, up to half of it may hold jobs' B whole
    /// and A's first rows from their uploads, and beyond it nothing of a job's inputs is held
    /// in memory.
    pub panel_cache_bytes: usize,
    /// How long a leased task may go without a heartbeat from its worker (`LEASE_MS`).
    pub lease: Duration,
    /// How often workers are asked to send a heartbeat; a fraction of the lease so that one
    /// or two lost heartbeats do not cost a lease.
    pub heartbeat_interval: Duration,
    /// Bytes of disk a job may not eat into (`DISK_RESERVE_BYTES`): a job whose A, B and C
    /// would leave less than this free on `DATA_DIR`'s file system is refused with 507 as
    /// soon as its shapes are known, before its data is written. The database, its WAL and
    /// the logs share the disk and must keep room to work.
    pub disk_reserve_bytes: u64,
    /// How long a submission's body may send nothing (`UPLOAD_IDLE_SECS`): a stalled upload
    /// holds a connection and the disk its files were given.
    pub upload_idle: Duration,
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
    /// Warnings for settings given that are no longer read, logged at start-up: an operator's
    /// old `.env` should be told, not silently ignored.
    pub retired: Vec<String>,
}

/// Limits that keep one client from hurting the others. Past one, the client gets a clear
/// error and, for Socket.io floods, its connection is closed; nobody else is affected.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest Socket.io message or binary attachment (`MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Largest job: elements of A, B and C together (`MAX_JOB_ELEMENTS`). Jobs live on disk,
    /// so this bounds the work one job asks for, not memory; the default, 2³², takes square
    /// f32 jobs up to 37837² (16384², the 2 GiB of input, holds 805,306,368).
    pub max_job_elements: usize,
    /// Largest job in bytes: A, B and C together (`MAX_JOB_BYTES`), for an operator who wants
    /// one job to take no more than this much of the disk whatever the disk holds free.
    pub max_job_bytes: u64,
    /// Most tiles (tasks) one job may be cut into (`MAX_TASKS_PER_JOB`).
    /// Every task costs a database row, a lease, a network round trip and a verification
    /// whatever its size, so past a point more tasks only add overhead: 100,000 rows are
    /// about 15 MB of SQLite and go in within a second (hence the default of 100,000), and
    /// every job within the default `MAX_JOB_ELEMENTS` still fits with a tile of 208 or more
    /// (C of 65535×65535 in 316² tiles), below the 256 the server picks by itself. A tile that would make more
    /// tasks is refused with the smallest tile that would be accepted.
    pub max_tasks_per_job: usize,
    /// Largest JSON submission body (`MAX_JSON_BODY_BYTES`). JSON spends ten or more bytes of
    /// text per number and is parsed into memory as a whole, so it is meant for small
    /// matrices; large ones go as `.npy` files in a multipart body, which is streamed to disk
    /// and bounded only by `MAX_JOB_BYTES` and the disk.
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

/// The settings as the operator gives them, one environment variable each (named after its
/// field, or given as its `--flag`), with the default and the meaning that `--help` lists.
/// Each is kept as text, so that [`Config::from_settings`] parses them all in one place and
/// names the variable at fault.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Settings (environment variables, also read from .env)")]
pub struct Settings {
    /// Port to listen on (0 = any free port)
    #[arg(long, env, default_value = "3000")]
    port: Setting,
    /// Address to bind
    #[arg(long, env, default_value = "0.0.0.0")]
    host: Setting,
    /// Comma-separated origins for CORS and for Socket.io from browsers (* = any); programs
    /// that send no Origin are always let in
    #[arg(long, env, default_value = "*")]
    allowed_origins: Setting,
    /// SQLite file; its folder and the file are created when missing
    #[arg(long, env, default_value = "./data/brain.db")]
    database_path: Setting,
    /// PostgreSQL server (postgres://…): used instead of DATABASE_PATH when set, so that
    /// several instances can share one grid
    #[arg(long, env, hide_env_values = true)]
    database_url: Option<Setting>,
    /// Connections each instance keeps to PostgreSQL at most
    #[arg(long, env, default_value = "10")]
    database_max_connections: Setting,
    /// Milliseconds an instance sharing PostgreSQL may stay silent before the others put its
    /// leases back in the queue (at least 1000)
    #[arg(long, env, default_value = "15000")]
    instance_timeout_ms: Setting,
    /// This instance's name among those sharing a database (letters, digits, . _ -; at most
    /// 64): a restart under the same name takes back the leases it left (default: a new
    /// random name at each start)
    #[arg(long, env)]
    instance_id: Option<Setting>,
    /// Redis ≥ 7 or Valkey (redis://…) through which instances sharing DATABASE_URL reach one
    /// another's sockets (dashboards); unset, each instance's broadcasts stay its own
    #[arg(long, env, hide_env_values = true)]
    redis_url: Option<Setting>,
    /// Bearer token for submitting, cancelling and downloading (unset = open; required when
    /// APP_ENV=production)
    #[arg(long, env, hide_env_values = true)]
    api_token: Option<Setting>,
    /// Folder of the built web page
    #[arg(long, env, default_value = "web/dist")]
    web_dir: Setting,
    /// Folder of the jobs' matrices (default: `jobs` beside the database)
    #[arg(long, env)]
    data_dir: Option<Setting>,
    /// Memory for the panels of running jobs, read from DATA_DIR as needed; up to half holds jobs' B whole and A's first 4 MiB from their uploads (at least 1 MiB)
    #[arg(long, env, default_value = "268435456")]
    panel_cache_bytes: Setting,
    /// Milliseconds without a heartbeat after which a leased task is re-queued (at least 100)
    #[arg(long, env, default_value = "30000")]
    lease_ms: Setting,
    /// Bytes of disk a job may not eat into: a job that would leave less free on DATA_DIR's
    /// file system is refused with 507
    #[arg(long, env, default_value = "1073741824")]
    disk_reserve_bytes: Setting,
    /// Largest job: bytes of A, B and C together (at least 1024)
    #[arg(long, env, default_value = "68719476736")]
    max_job_bytes: Setting,
    /// No longer read: uploads are streamed to disk, bounded by MAX_JOB_BYTES and
    /// DISK_RESERVE_BYTES
    #[arg(long, env, hide = true)]
    max_body_bytes: Option<Setting>,
    /// Largest JSON submission body; larger matrices go as .npy (at least 1024)
    #[arg(long, env, default_value = "4194304")]
    max_json_body_bytes: Setting,
    /// Seconds a submission's body may send nothing before it is cut with 408 and what it
    /// wrote removed (at least 1)
    #[arg(long, env, default_value = "60")]
    upload_idle_secs: Setting,
    /// Most tiles one job may be cut into; a smaller tile is refused with the smallest accepted
    #[arg(long, env, default_value = "100000")]
    max_tasks_per_job: Setting,
    /// Trusted workers, at as many distinct addresses, that must fail the same task before
    /// its job fails (anonymous reports never count)
    #[arg(long, env, default_value = "3")]
    max_task_failures: Setting,
    /// Hours a finished job's inputs and results are kept (fractional; 0 = forever)
    #[arg(long, env, default_value = "168")]
    retention_hours: Setting,
    /// Reverse proxies in front of the server that append to X-Forwarded-For: false, true
    /// (one, as Render) or their number, up to 8
    #[arg(long, env, default_value = "false")]
    trust_proxy: Setting,
    /// Largest Socket.io message or binary attachment (at least 1024)
    #[arg(long, env, default_value = "67108864")]
    max_message_bytes: Setting,
    /// Largest job: elements of A, B and C together
    #[arg(long, env, default_value = "4294967296")]
    max_job_elements: Setting,
    /// Tasks one connection may hold or have requested at once
    #[arg(long, env, default_value = "16")]
    max_tasks_per_worker: Setting,
    /// Leases held at once by all the connections of one address group
    #[arg(long, env, default_value = "64")]
    max_leases_per_address: Setting,
    /// Bytes per second sent to one connection at most, in bursts of four seconds' worth
    #[arg(long, env, default_value = "67108864")]
    max_send_bytes_per_sec: Setting,
    /// Sustained Socket.io events per second per connection (bursts of twice as many)
    #[arg(long, env, default_value = "200")]
    max_events_per_sec: Setting,
    /// Socket.io connections open at once from one IP address (an IPv6 /64 counts as one)
    #[arg(long, env, default_value = "64")]
    max_connections_per_ip: Setting,
    /// development, or production: JSON logs, and API_TOKEN required
    #[arg(long, env, default_value = "development")]
    app_env: Setting,
}

/// One setting as given: its text, and the variable it came from for error messages.
#[derive(Debug, Clone)]
pub struct Setting {
    var: String,
    text: String,
}

impl Setting {
    /// The trimmed text parsed as a `T` that passes `valid`, which `expected` describes.
    fn parse_if<T: FromStr>(
        &self,
        valid: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        let value = self
            .text
            .trim()
            .parse::<T>()
            .map_err(|e| self.error(e.to_string()))?;
        if valid(&value) {
            Ok(value)
        } else {
            Err(self.error(format!("expected {expected}")))
        }
    }

    fn parse<T: FromStr>(&self) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        self.parse_if(|_| true, "")
    }

    fn at_least<T: FromStr + PartialOrd + Display>(&self, min: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        self.parse_if(|v| *v >= min, &format!("at least {min}"))
    }

    fn error(&self, reason: String) -> ConfigError {
        ConfigError {
            var: self.var.clone(),
            value: self.text.clone(),
            reason,
        }
    }
}

impl clap::builder::ValueParserFactory for Setting {
    type Parser = SettingParser;

    fn value_parser() -> SettingParser {
        SettingParser
    }
}

/// Reads a [`Setting`]: a blank value stands for the default, as if the variable were unset,
/// so that `PORT=` in a `.env` file means the default port rather than an error.
#[derive(Debug, Clone, Copy)]
pub struct SettingParser;

impl clap::builder::TypedValueParser for SettingParser {
    type Value = Setting;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Setting, clap::Error> {
        let default = arg.and_then(|a| a.get_default_values().first());
        let text = match default {
            Some(default) if value.to_string_lossy().trim().is_empty() => default,
            _ => value,
        };
        Ok(Setting {
            // Every variable is named after its field, as clap's bare `env` names it.
            var: arg.map_or_else(String::new, |a| a.get_id().as_str().to_uppercase()),
            text: text.to_string_lossy().into_owned(),
        })
    }
}

impl Config {
    /// Parses and checks every setting into its final type.
    pub fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        let lease_ms: u64 = s.lease_ms.at_least(100)?;
        let retention_hours: f64 = s
            .retention_hours
            .parse_if(|h: &f64| h.is_finite() && *h >= 0.0, "hours ≥ 0")?;
        let shared = s
            .database_url
            .as_ref()
            .is_some_and(|u| !u.text.trim().is_empty());
        let config = Config {
            host: s.host.parse()?,
            port: s.port.parse()?,
            allowed_origins: parse_origins(&s.allowed_origins)?,
            database_path: PathBuf::from(&s.database_path.text),
            database_url: match s.database_url {
                Some(url)
                    if url.text.starts_with("postgres://")
                        || url.text.starts_with("postgresql://") =>
                {
                    Some(url.text)
                }
                Some(url) if url.text.trim().is_empty() => None,
                Some(url) => {
                    return Err(ConfigError {
                        var: url.var,
                        value: "(not shown: it may hold a password)".into(),
                        reason: "a postgres:// URL".into(),
                    })
                }
                None => None,
            },
            database_max_connections: s.database_max_connections.at_least(1)?,
            instance_timeout: Duration::from_millis(s.instance_timeout_ms.at_least(1000)?),
            instance_id: match s.instance_id {
                Some(id) if id.text.trim().is_empty() => None,
                Some(id) => Some(id.parse_if(
                    |v: &String| {
                        v.len() <= 64
                            && v.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    },
                    "letters, digits, '.', '_' or '-', at most 64",
                )?),
                None => None,
            },
            redis_url: match s.redis_url {
                Some(url) if url.text.trim().is_empty() => None,
                Some(url) if !url.text.starts_with("redis://") => {
                    return Err(ConfigError {
                        var: url.var,
                        value: "(not shown: it may hold a password)".into(),
                        reason: "a redis:// URL (TLS is not built in: use the private network's \
                                 address)"
                            .into(),
                    })
                }
                Some(url) if !shared => {
                    return Err(ConfigError {
                        var: url.var,
                        value: "(not shown: it may hold a password)".into(),
                        reason: "DATABASE_URL as well: instances share a grid only through \
                                 PostgreSQL"
                            .into(),
                    })
                }
                Some(url) => Some(url.text),
                None => None,
            },
            api_token: s.api_token.map(|t| t.text).filter(|t| !t.trim().is_empty()),
            web_dir: PathBuf::from(s.web_dir.text),
            data_dir: match s.data_dir {
                Some(dir) => PathBuf::from(dir.text),
                None => Path::new(&s.database_path.text)
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("jobs"),
            },
            panel_cache_bytes: s.panel_cache_bytes.at_least(1 << 20)?,
            lease: Duration::from_millis(lease_ms),
            heartbeat_interval: Duration::from_millis((lease_ms / 3).clamp(50, 10_000)),
            disk_reserve_bytes: s.disk_reserve_bytes.parse()?,
            upload_idle: Duration::from_secs(s.upload_idle_secs.at_least(1)?),
            max_task_failures: s.max_task_failures.at_least(1)?,
            retired: s
                .max_body_bytes
                .map(|_| {
                    "MAX_BODY_BYTES is no longer read: .npy uploads are streamed to disk, and a \
                     job is bounded by MAX_JOB_BYTES and DISK_RESERVE_BYTES"
                        .to_owned()
                })
                .into_iter()
                .collect(),
            retention: (retention_hours > 0.0)
                .then(|| Duration::from_secs_f64(retention_hours * 3600.0)),
            limits: Limits {
                max_message_bytes: s.max_message_bytes.at_least(1024)?,
                max_job_elements: s.max_job_elements.at_least(3)?,
                max_job_bytes: s.max_job_bytes.at_least(1024)?,
                max_tasks_per_job: s.max_tasks_per_job.at_least(1)?,
                max_json_body_bytes: s.max_json_body_bytes.at_least(1024)?,
                max_tasks_per_worker: s.max_tasks_per_worker.at_least(1)?,
                max_leases_per_address: s.max_leases_per_address.at_least(1)?,
                max_send_bytes_per_sec: s.max_send_bytes_per_sec.at_least(1024)?,
                max_events_per_sec: s.max_events_per_sec.at_least(1)?,
                max_connections_per_ip: s.max_connections_per_ip.at_least(1)?,
                trust_proxy: s.trust_proxy.parse()?,
            },
            app_env: match s.app_env.text.as_str() {
                "development" | "dev" => AppEnv::Development,
                "production" | "prod" => AppEnv::Production,
                _ => return Err(s.app_env.error("expected development or production".into())),
            },
        };
        if config.app_env == AppEnv::Production && config.api_token.is_none() {
            return Err(ConfigError {
                var: "API_TOKEN".into(),
                value: String::new(),
                reason: "must be set when APP_ENV=production (anyone could submit jobs)".into(),
            });
        }
        Ok(config)
    }

    /// Reads settings through `lookup` instead of the environment, so tests can configure a
    /// server without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // clap reads the environment as the command is built: forgetting the variables there
        // leaves `lookup`'s values, given as flags, the only source besides the defaults.
        let command = Settings::augment_args(clap::Command::new("brain-server"))
            .mut_args(|a| a.env(None::<&'static str>));
        let mut args = vec!["brain-server".to_owned()];
        for arg in command.get_arguments() {
            let var = arg.get_id().as_str().to_uppercase();
            if let (Some(long), Some(value)) = (arg.get_long(), lookup(&var)) {
                args.push(format!("--{long}={value}"));
            }
        }
        let settings = command
            .try_get_matches_from(args)
            .and_then(|matches| Settings::from_arg_matches(&matches))
            .map_err(|e| ConfigError {
                var: String::new(),
                value: String::new(),
                reason: e.to_string(),
            })?;
        Self::from_settings(settings)
    }
}

fn parse_origins(raw: &Setting) -> Result<AllowedOrigins, ConfigError> {
    let origins: Vec<String> = raw
        .text
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.iter().any(|o| o == "*") {
        return Ok(AllowedOrigins::Any);
    }
    for origin in &origins {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(raw.error(format!(
                "{origin:?} is not an origin like https://example.org"
            )));
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
        assert_eq!(c.limits.max_job_bytes, 64 << 30);
        assert_eq!(c.disk_reserve_bytes, 1 << 30);
        assert!(c.retired.is_empty());
        // An old `.env` still setting MAX_BODY_BYTES starts, with a warning.
        let c = config(&[("MAX_BODY_BYTES", "536870912")]).expect("still starts");
        assert!(c.retired[0].contains("MAX_JOB_BYTES"), "{:?}", c.retired);
        // The 16384² f32 job, 2 GiB of input, is within the default.
        assert!(3 * 16384 * 16384 <= c.limits.max_job_elements);
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

    #[test]
    fn database_url_selects_postgres_and_anything_else_is_refused_without_echoing_it() {
        let c = config(&[]).expect("defaults");
        assert_eq!((c.database_url, c.database_max_connections), (None, 10));
        let url = "postgres://brain:secret@db.internal:5432/brain";
        let c = config(&[("DATABASE_URL", url)]).expect("postgres");
        assert_eq!(c.database_url.as_deref(), Some(url));
        let e = config(&[("DATABASE_URL", "mysql://root:secret@db/x")]).expect_err("not postgres");
        assert_eq!(e.var, "DATABASE_URL");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = config(&[("DATABASE_MAX_CONNECTIONS", "0")]).expect_err("at least one");
        assert_eq!(e.var, "DATABASE_MAX_CONNECTIONS");
    }

    #[test]
    fn redis_joins_instances_sharing_postgres_and_its_url_is_never_echoed() {
        assert_eq!(config(&[]).expect("defaults").redis_url, None);
        let pg = ("DATABASE_URL", "postgres://db/brain");
        let url = "redis://:secret@kv.internal:6379";
        let c = config(&[pg, ("REDIS_URL", url)]).expect("redis");
        assert_eq!(c.redis_url.as_deref(), Some(url));
        for (env, why) in [
            (vec![("REDIS_URL", url)], "without PostgreSQL"),
            (vec![pg, ("REDIS_URL", "rediss://:secret@kv:6379")], "TLS"),
            (vec![pg, ("REDIS_URL", "http://:secret@kv")], "not redis"),
        ] {
            let e = config(&env).expect_err(why);
            assert_eq!(e.var, "REDIS_URL", "{why}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn an_instance_id_is_a_short_plain_name() {
        assert_eq!(config(&[]).expect("defaults").instance_id, None);
        let c = config(&[("INSTANCE_ID", "srv-1.eu_west")]).expect("plain");
        assert_eq!(c.instance_id.as_deref(), Some("srv-1.eu_west"));
        for bad in ["a b", "x/../y", "é", &"n".repeat(65)] {
            let e = config(&[("INSTANCE_ID", bad)]).expect_err(bad);
            assert_eq!(e.var, "INSTANCE_ID");
        }
        let c = config(&[]).expect("defaults");
        assert_eq!(c.instance_timeout, Duration::from_secs(15));
        let e = config(&[("INSTANCE_TIMEOUT_MS", "999")]).expect_err("under a second");
        assert_eq!(e.var, "INSTANCE_TIMEOUT_MS");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let c = config(&[("PORT", ""), ("LEASE_MS", "  "), ("API_TOKEN", " ")]).expect("defaults");
        assert_eq!(c.port, 3000);
        assert_eq!(c.lease, Duration::from_millis(30_000));
        assert_eq!(c.api_token, None);
    }

    #[test]
    fn every_variable_is_named_after_its_field_and_has_a_meaning() {
        let command = Settings::augment_args(clap::Command::new("brain-server"));
        for arg in command.get_arguments() {
            let var = arg.get_env().map(|v| v.to_string_lossy().into_owned());
            assert_eq!(var, Some(arg.get_id().as_str().to_uppercase()));
            assert!(arg.get_help().is_some(), "{var:?} says what it is for");
        }
    }

    #[test]
    fn the_heartbeat_is_a_fraction_of_the_lease() {
        let c = config(&[("LEASE_MS", "900")]).expect("valid");
        assert_eq!(c.heartbeat_interval, Duration::from_millis(300));
        let c = config(&[("RETENTION_HOURS", "0")]).expect("valid");
        assert_eq!(c.retention, None);
    }
}
