//! The shaper's configuration: command-line flags (`brain-shaper --help`) read once into a
//! typed `Config`. A profile names a link; each of its fields can be overridden.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::error::Error;
use crate::policy::{LinkShape, Rate};

/// Named links, after issue #14's survey of where volunteers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 1 Gbit/s both ways, 1 ms round trip, no jitter.
    Campus,
    /// 50 Mbit/s down, 10 Mbit/s up, 20 ms round trip, 2 ms jitter.
    Home,
    /// 10 Mbit/s down, 2 Mbit/s up, 80 ms round trip, 10 ms jitter, a reset every 180 s on
    /// average.
    Mobile,
    /// No shaping at all: a plain forwarder (overrides still apply).
    None,
}

impl Profile {
    /// The profile's link before any override.
    pub fn shape(self) -> Shape {
        let (down, up, rtt_ms, jitter_ms, reset_s) = match self {
            Profile::Campus => (1000.0, 1000.0, 1, 0, None),
            Profile::Home => (50.0, 10.0, 20, 2, None),
            Profile::Mobile => (10.0, 2.0, 80, 10, Some(180)),
            Profile::None => (0.0, 0.0, 0, 0, None),
        };
        Shape {
            down: Rate::from_mbit_per_s(down),
            up: Rate::from_mbit_per_s(up),
            rtt: Duration::from_millis(rtt_ms),
            jitter: Duration::from_millis(jitter_ms),
            reset_every: reset_s.map(Duration::from_secs),
        }
    }
}

/// A link in both directions, as a profile gives it and the flags amend it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Upstream → client (what a volunteer downloads); `None`: unlimited.
    pub down: Option<Rate>,
    /// Client → upstream (what a volunteer uploads); `None`: unlimited.
    pub up: Option<Rate>,
    /// Round trip added; each direction gets half.
    pub rtt: Duration,
    /// Most extra delay per chunk, each direction.
    pub jitter: Duration,
    /// Mean time between resets of a connection; `None`: never.
    pub reset_every: Option<Duration>,
}

impl Shape {
    /// The upstream → client direction.
    pub fn down_link(&self) -> LinkShape {
        LinkShape {
            rate: self.down,
            one_way: self.rtt / 2,
            jitter: self.jitter,
        }
    }

    /// The client → upstream direction.
    pub fn up_link(&self) -> LinkShape {
        LinkShape {
            rate: self.up,
            one_way: self.rtt / 2,
            jitter: self.jitter,
        }
    }
}

/// As the log states it: `down 10 Mbit/s, up 2 Mbit/s, rtt 80 ms, jitter 10 ms, reset every 180 s`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |r: Option<Rate>| match r {
            Some(r) => format!("{} Mbit/s", r.bytes_per_s() * 8.0 / 1e6),
            None => "unlimited".to_owned(),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "down {}, up {}, rtt {} ms, jitter {} ms",
            rate(self.down),
            rate(self.up),
            ms(self.rtt),
            ms(self.jitter)
        )?;
        match self.reset_every {
            Some(mean) => write!(f, ", reset every {} s on average", mean.as_secs_f64()),
            None => write!(f, ", no resets"),
        }
    }
}

/// A TCP proxy that shapes each connection like a real-world link, for tests and benchmarks.
///
/// Prints `listening ADDR` on stdout once it listens; logs (RUST_LOG, default info) and a
/// one-line JSON summary at exit go to stderr. It stops when its stdin reaches EOF (so it dies
/// with the process that started it), after --max-seconds, or on SIGINT/SIGTERM.
#[derive(Parser, Debug)]
// A flag given twice takes its last value, so a wrapper can pass defaults and then overrides.
#[command(
    name = "brain-shaper",
    version,
    about,
    long_about,
    args_override_self = true
)]
pub struct Args {
    /// Where each accepted connection is forwarded: host:port.
    #[arg(long, value_parser = parse_upstream)]
    pub upstream: String,

    /// Address to listen on; port 0 lets the OS pick (the line on stdout names it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// The link to imitate; the flags below override its fields.
    #[arg(long, value_enum, default_value_t = Profile::None)]
    pub profile: Profile,

    /// Bandwidth upstream → client in Mbit/s (0: unlimited) [default: the profile's].
    #[arg(long, value_parser = non_negative)]
    pub down_mbps: Option<f64>,

    /// Bandwidth client → upstream in Mbit/s (0: unlimited) [default: the profile's].
    #[arg(long, value_parser = non_negative)]
    pub up_mbps: Option<f64>,

    /// Round-trip delay added in ms, half each way [default: the profile's].
    #[arg(long, value_parser = non_negative)]
    pub rtt_ms: Option<f64>,

    /// Most extra delay per chunk in ms, uniform, each way; bytes are never reordered
    /// [default: the profile's].
    #[arg(long, value_parser = non_negative)]
    pub jitter_ms: Option<f64>,

    /// Mean seconds between resets of each connection, exponentially distributed (0: never)
    /// [default: the profile's].
    #[arg(long, value_parser = non_negative)]
    pub reset_every_s: Option<f64>,

    /// Seed of the jitter and reset draws: the same seed gives the same draws per connection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Stop after this many seconds whatever happens, so that nothing outlives a test.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_seconds: u64,

    /// Connections held at once; more are refused with a reset.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Keep running when stdin reaches EOF (for a shell that starts it in the background with
    /// stdin from /dev/null); --max-seconds and signals still stop it.
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// What the shaper runs with, read once from `Args`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The listening address asked for (port 0: any).
    pub listen: SocketAddr,
    /// host:port each connection is forwarded to, resolved at each connection.
    pub upstream: String,
    /// The profile named, for the summary.
    pub profile: Profile,
    /// The link after overrides.
    pub shape: Shape,
    /// Seed of every random draw.
    pub seed: u64,
    /// The longest the shaper runs.
    pub max_run: Duration,
    /// Connections held at once.
    pub max_connections: usize,
    /// Whether stdin's EOF stops the shaper.
    pub watch_stdin: bool,
}

impl From<Args> for Config {
    fn from(args: Args) -> Config {
        let mut shape = args.profile.shape();
        let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
        if let Some(v) = args.down_mbps {
            shape.down = Rate::from_mbit_per_s(v);
        }
        if let Some(v) = args.up_mbps {
            shape.up = Rate::from_mbit_per_s(v);
        }
        if let Some(v) = args.rtt_ms {
            shape.rtt = ms(v);
        }
        if let Some(v) = args.jitter_ms {
            shape.jitter = ms(v);
        }
        if let Some(v) = args.reset_every_s {
            shape.reset_every = (v > 0.0).then(|| Duration::from_secs_f64(v));
        }
        Config {
            listen: args.listen,
            upstream: args.upstream,
            profile: args.profile,
            shape,
            seed: args.seed,
            max_run: Duration::from_secs(args.max_seconds),
            max_connections: args.max_connections as usize,
            watch_stdin: !args.ignore_stdin,
        }
    }
}

/// `host:port` with a port number; the host is resolved when a connection needs it.
fn parse_upstream(s: &str) -> Result<String, Error> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_owned())
        }
        _ => Err(Error::Upstream(s.to_owned())),
    }
}

/// A number of the flag's unit: finite and not negative. The largest values are capped where
/// they become durations, so that no flag can overflow one.
fn non_negative(s: &str) -> Result<f64, Error> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1e9).contains(&v) => Ok(v),
        _ => Err(Error::NotNonNegative(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, clap::Error> {
        let argv = ["brain-shaper", "--upstream", "127.0.0.1:3000"]
            .iter()
            .chain(args);
        Args::try_parse_from(argv).map(Config::from)
    }

    #[test]
    fn profiles_are_the_issues_links() {
        let home = Profile::Home.shape();
        assert_eq!(home.down.map(|r| r.bytes_per_s()), Some(50e6 / 8.0));
        assert_eq!(home.up.map(|r| r.bytes_per_s()), Some(10e6 / 8.0));
        assert_eq!(home.rtt, Duration::from_millis(20));
        let mobile = Profile::Mobile.shape();
        assert_eq!(mobile.reset_every, Some(Duration::from_secs(180)));
        assert_eq!(mobile.down_link().one_way, Duration::from_millis(40));
        assert_eq!(Profile::Campus.shape().rtt, Duration::from_millis(1));
        let none = Profile::None.shape();
        assert_eq!(
            (none.down, none.up, none.rtt, none.reset_every),
            (None, None, Duration::ZERO, None)
        );
    }

    #[test]
    fn flags_override_the_profiles_fields() -> Result<(), clap::Error> {
        let c = config(&[
            "--profile",
            "mobile",
            "--reset-every-s",
            "1",
            "--up-mbps",
            "0",
            "--rtt-ms",
            "30",
        ])?;
        assert_eq!(c.shape.reset_every, Some(Duration::from_secs(1)));
        assert_eq!(c.shape.up, None, "0 is unlimited");
        assert_eq!(
            c.shape.down,
            Rate::from_mbit_per_s(10.0),
            "kept from the profile"
        );
        assert_eq!(c.shape.up_link().one_way, Duration::from_millis(15));
        let never = config(&["--profile", "mobile", "--reset-every-s", "0"])?;
        assert_eq!(never.shape.reset_every, None);
        assert_eq!(
            c.shape.to_string(),
            "down 10 Mbit/s, up unlimited, rtt 30 ms, jitter 10 ms, reset every 1 s on average"
        );
        Ok(())
    }

    #[test]
    fn defaults_are_bounded_and_local() -> Result<(), clap::Error> {
        let c = config(&[])?;
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.profile, Profile::None);
        assert_eq!(c.max_run, Duration::from_secs(600));
        assert_eq!(c.max_connections, 256);
        assert!(c.watch_stdin);
        Ok(())
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() -> Result<(), clap::Error> {
        let c = config(&["--max-seconds", "60", "--rtt-ms", "5", "--max-seconds", "1"])?;
        assert_eq!(c.max_run, Duration::from_secs(1));
        Ok(())
    }

    #[test]
    fn bad_values_are_refused_at_the_edge() {
        for args in [
            &["--rtt-ms", "-1"][..],
            &["--down-mbps", "fast"],
            &["--jitter-ms", "inf"],
            &["--max-connections", "0"],
            &["--max-seconds", "0"],
            &["--profile", "satellite"],
        ] {
            assert!(config(args).is_err(), "{args:?} was accepted");
        }
        for upstream in ["localhost", ":3000", "host:0", "host:99999", "host:"] {
            let argv = ["brain-shaper", "--upstream", upstream];
            assert!(
                Args::try_parse_from(argv).is_err(),
                "{upstream} was accepted"
            );
        }
    }
}
