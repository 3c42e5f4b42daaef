//! The shaping decisions, apart from sockets and clocks: when a chunk of bytes read from one
//! peer may be written to the other (a token bucket for the link's rate, then the one-way delay
//! and jitter, never overtaking the chunk before it), when a connection is reset, and how many
//! bytes a direction may hold. Time is a `Moment`, a `Duration` since an origin the caller
//! picks, so the tests drive a fake clock and never sleep.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Time since an origin chosen by the caller (the proxy: the connection's start).
pub type Moment = Duration;

/// A link's rate in bytes per second; always finite and positive (an unlimited link has none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(f64);

impl Rate {
    /// `None` for 0 (unlimited) and for anything not a positive finite number.
    pub fn from_mbit_per_s(mbps: f64) -> Option<Rate> {
        (mbps.is_finite() && mbps > 0.0).then(|| Rate(mbps * 1e6 / 8.0))
    }

    pub fn bytes_per_s(self) -> f64 {
        self.0
    }

    /// Seconds this link takes to carry `bytes`.
    fn seconds_for(self, bytes: f64) -> f64 {
        bytes / self.0
    }
}

/// The smallest burst a bucket allows: one read's worth, so a chunk never waits for tokens it
/// could never hold.
pub const MIN_BURST: usize = 16 * 1024;

/// A burst of a few milliseconds of the rate (and at least `MIN_BURST`): enough that timer
/// granularity does not cost throughput, small enough that a transfer's time is set by the
/// rate rather than by the burst (the bound a test of 1 MiB at 10 Mbit/s relies on).
pub fn burst_for(rate: Rate) -> usize {
    let few_ms = rate.bytes_per_s() * 0.004;
    (few_ms as usize).max(MIN_BURST)
}

/// A token bucket in virtual time: a chunk takes its bytes' tokens at once, going into debt
/// if it must, and is told when the last of its bytes has passed the link. Over any interval
/// of length T the link passes at most `burst + rate·T` bytes.
#[derive(Debug)]
pub struct TokenBucket {
    /// Refill rate.
    rate: Rate,
    /// Most tokens (bytes) the bucket holds: what may pass at once after an idle spell.
    burst: f64,
    /// Tokens (bytes) at `at`; negative while chunks already accepted are still passing.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Moment,
}

impl TokenBucket {
    /// A full bucket at time zero.
    pub fn new(rate: Rate, burst: usize) -> TokenBucket {
        TokenBucket {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            at: Moment::ZERO,
        }
    }

    /// Takes `bytes` tokens at `now` and returns when the chunk has passed the link: `now`
    /// if the bucket held enough, else when the refill pays the debt.
    pub fn pass(&mut self, now: Moment, bytes: usize) -> Moment {
        if now > self.at {
            let refill = (now - self.at).as_secs_f64() * self.rate.bytes_per_s();
            self.tokens = (self.tokens + refill).min(self.burst);
            self.at = now;
        }
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            self.at
        } else {
            self.at + Duration::from_secs_f64(self.rate.seconds_for(-self.tokens))
        }
    }
}

/// The propagation delay of one direction: a chunk is released `one_way` plus its jitter after
/// it has passed the link, but never before the chunk ahead of it (TCP delivers in order, so a
/// late chunk holds back the ones behind it, as on a real path).
#[derive(Debug)]
pub struct DelayLine {
    /// Added to every chunk.
    one_way: Duration,
    /// The release time of the chunk before, the earliest the next may go.
    last: Moment,
}

impl DelayLine {
    pub fn new(one_way: Duration) -> DelayLine {
        DelayLine {
            one_way,
            last: Moment::ZERO,
        }
    }

    /// When a chunk that passed the link at `passed`, delayed by `jitter` more, is released.
    pub fn release(&mut self, passed: Moment, jitter: Duration) -> Moment {
        let at = (passed + self.one_way + jitter).max(self.last);
        self.last = at;
        at
    }
}

/// What one direction of a connection does to its bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkShape {
    /// `None`: unlimited.
    pub rate: Option<Rate>,
    /// Half the profile's round trip.
    pub one_way: Duration,
    /// The most extra delay a chunk gets, drawn uniformly from [0, jitter).
    pub jitter: Duration,
}

impl LinkShape {
    /// How many bytes this direction may hold (read, not yet written) before it stops reading:
    /// twice the bytes in flight at full rate over the delay, plus a burst, between 64 KiB and
    /// 4 MiB. Enough not to cost throughput on the profiles' links, small enough that a slow
    /// link's queue stays a fraction of a second (as a modem's buffer), and memory bounded (at
    /// most 4 MiB + one read per direction) whatever a peer sends. An unlimited link gets
    /// 256 KiB (batches large enough that the proxy is not what limits it), or the upper
    /// bound with a delay.
    pub fn queue_bound(&self) -> usize {
        const FLOOR: usize = 64 * 1024;
        const UNLIMITED: usize = 256 * 1024;
        const CEILING: usize = 4 * 1024 * 1024;
        let delay = (self.one_way + self.jitter).as_secs_f64();
        match self.rate {
            Some(rate) => {
                let in_flight = 2.0 * rate.bytes_per_s() * delay + burst_for(rate) as f64;
                (in_flight as usize).clamp(FLOOR, CEILING)
            }
            None if delay > 0.0 => CEILING,
            None => UNLIMITED,
        }
    }
}

/// One direction's decisions: rate, then delay and jitter, with its own seeded generator so a
/// run is repeatable.
#[derive(Debug)]
pub struct Link {
    /// The rate, if the link has one.
    bucket: Option<TokenBucket>,
    /// Delay and order.
    line: DelayLine,
    /// Most extra delay a chunk draws.
    jitter: Duration,
    /// The jitter draws, seeded per connection and direction.
    rng: StdRng,
}

impl Link {
    pub fn new(shape: LinkShape, seed: u64) -> Link {
        Link {
            bucket: shape
                .rate
                .map(|rate| TokenBucket::new(rate, burst_for(rate))),
            line: DelayLine::new(shape.one_way),
            jitter: shape.jitter,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// When a chunk of `bytes` read at `now` may be written to the other peer.
    pub fn schedule(&mut self, now: Moment, bytes: usize) -> Moment {
        let passed = match &mut self.bucket {
            Some(bucket) => bucket.pass(now, bytes),
            None => now,
        };
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.random::<f64>())
        };
        self.line.release(passed, jitter)
    }
}

/// How long a connection lives before it is reset, for a mean interval: exponential (resets
/// arrive as a Poisson process, memoryless like real radio drop-outs), from `u` uniform in
/// [0, 1).
pub fn reset_after(mean: Duration, u: f64) -> Duration {
    // 1 - u lies in (0, 1], so the logarithm is finite and the delay never negative.
    mean.mul_f64(-(1.0 - u).ln())
}

/// Draws a connection's reset time from `rng`, if its profile resets connections at all.
pub fn draw_reset(mean: Option<Duration>, rng: &mut impl Rng) -> Option<Duration> {
    mean.map(|mean| reset_after(mean, rng.random::<f64>()))
}

/// A seed for stream `stream` (a direction, the reset draw) of connection `connection`, from
/// the run's seed: SplitMix64's finaliser, so neighbouring connections get unrelated streams.
pub fn stream_seed(seed: u64, connection: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(connection.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn mbit(mbps: f64) -> Rate {
        Rate::from_mbit_per_s(mbps).expect("a positive rate")
    }

    /// Within a microsecond: the bucket's arithmetic is in f64 seconds.
    fn close(got: Moment, want: Moment) -> bool {
        got.abs_diff(want) < Duration::from_micros(1)
    }

    #[test]
    fn zero_and_nonsense_rates_mean_unlimited() {
        assert_eq!(Rate::from_mbit_per_s(0.0), None);
        assert_eq!(Rate::from_mbit_per_s(-1.0), None);
        assert_eq!(Rate::from_mbit_per_s(f64::NAN), None);
        assert_eq!(mbit(8.0).bytes_per_s(), 1e6);
    }

    #[test]
    fn burst_is_a_few_ms_of_the_rate_and_at_least_one_read() {
        assert_eq!(burst_for(mbit(10.0)), MIN_BURST); // 5 kB in 4 ms
        assert_eq!(burst_for(mbit(1000.0)), 500_000);
    }

    #[test]
    fn a_bucket_passes_its_burst_at_once() {
        let mut bucket = TokenBucket::new(mbit(8.0), 20_000);
        assert_eq!(bucket.pass(Moment::ZERO, 10_000), Moment::ZERO);
        assert_eq!(bucket.pass(Moment::ZERO, 10_000), Moment::ZERO);
    }

    #[test]
    fn a_bucket_in_debt_releases_at_the_rate() {
        // 1 MB/s: each 10 kB beyond the burst takes 10 ms.
        let mut bucket = TokenBucket::new(mbit(8.0), 10_000);
        assert_eq!(bucket.pass(Moment::ZERO, 10_000), Moment::ZERO);
        assert!(close(bucket.pass(Moment::ZERO, 10_000), 10 * MS));
        assert!(close(bucket.pass(Moment::ZERO, 10_000), 20 * MS));
        // Read 5 ms later, the next still queues behind the debt.
        assert!(close(bucket.pass(5 * MS, 10_000), 30 * MS));
    }

    #[test]
    fn a_bucket_never_passes_more_than_burst_plus_rate_times_time() {
        let rate = mbit(10.0);
        let burst = burst_for(rate);
        let mut bucket = TokenBucket::new(rate, burst);
        // 1 MiB in 16 KiB reads, as fast as they come: the last byte passes no sooner than
        // (1 MiB - burst) / rate, the lower bound the integration test asserts.
        let total = 1024 * 1024;
        let mut last = Moment::ZERO;
        for _ in 0..total / MIN_BURST {
            last = bucket.pass(Moment::ZERO, MIN_BURST);
        }
        let floor = (total - burst) as f64 / rate.bytes_per_s();
        assert!(last.as_secs_f64() >= floor - 1e-9, "{last:?} < {floor} s");
        assert!(last.as_secs_f64() >= 0.8);
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let mut bucket = TokenBucket::new(mbit(8.0), 10_000);
        bucket.pass(Moment::ZERO, 10_000);
        // An hour idle still allows one burst, then the rate.
        let later = Duration::from_secs(3600);
        assert_eq!(bucket.pass(later, 10_000), later);
        assert!(close(bucket.pass(later, 10_000), later + 10 * MS));
    }

    #[test]
    fn a_delay_line_adds_the_one_way_delay() {
        let mut line = DelayLine::new(40 * MS);
        assert_eq!(line.release(Moment::ZERO, Duration::ZERO), 40 * MS);
        assert_eq!(line.release(100 * MS, Duration::ZERO), 140 * MS);
    }

    #[test]
    fn jitter_delays_but_never_reorders() {
        let mut line = DelayLine::new(40 * MS);
        // The first chunk draws 9 ms, the second 1 ms: the second may not overtake.
        assert_eq!(line.release(Moment::ZERO, 9 * MS), 49 * MS);
        assert_eq!(line.release(2 * MS, MS), 49 * MS);
        assert_eq!(line.release(20 * MS, MS), 61 * MS);
    }

    #[test]
    fn a_link_releases_in_order_within_its_jitter() {
        let shape = LinkShape {
            rate: None,
            one_way: 40 * MS,
            jitter: 10 * MS,
        };
        let mut link = Link::new(shape, 7);
        let mut last = Moment::ZERO;
        for i in 0..1000u32 {
            let now = MS * i / 4;
            let at = link.schedule(now, 100);
            assert!(at >= last, "chunk {i} released at {at:?}, before {last:?}");
            assert!(at >= now + 40 * MS);
            // Never later than the latest jitter allows behind the chunk before.
            assert!(at < now + 50 * MS || at == last);
            last = at;
        }
    }

    #[test]
    fn a_link_is_repeatable_from_its_seed() {
        let shape = LinkShape {
            rate: Some(mbit(2.0)),
            one_way: 40 * MS,
            jitter: 10 * MS,
        };
        let times = |seed| {
            let mut link = Link::new(shape, seed);
            (0..50u32)
                .map(|i| link.schedule(MS * i, 1500))
                .collect::<Vec<_>>()
        };
        assert_eq!(times(3), times(3));
        assert_ne!(times(3), times(4));
    }

    #[test]
    fn a_link_applies_the_rate_before_the_delay() {
        let shape = LinkShape {
            rate: Some(mbit(8.0)),
            one_way: 10 * MS,
            jitter: Duration::ZERO,
        };
        let mut link = Link::new(shape, 1);
        let burst = burst_for(mbit(8.0));
        assert_eq!(link.schedule(Moment::ZERO, burst), 10 * MS);
        // 1 MB/s: 10 kB more passes 10 ms later, then travels 10 ms.
        assert!(close(link.schedule(Moment::ZERO, 10_000), 20 * MS));
    }

    #[test]
    fn queue_bounds_cover_the_bytes_in_flight_within_limits() {
        let shape = |mbps, one_way_ms| LinkShape {
            rate: Rate::from_mbit_per_s(mbps),
            one_way: one_way_ms * MS,
            jitter: Duration::ZERO,
        };
        // Mobile uplink: 250 kB/s × 40 ms is small; the floor applies.
        assert_eq!(shape(2.0, 40).queue_bound(), 64 * 1024);
        // 1 Gbit/s over 100 ms would want 25 MB: the ceiling applies.
        assert_eq!(shape(1000.0, 100).queue_bound(), 4 * 1024 * 1024);
        // 100 Mbit/s over 10 ms: 2 × 125 kB + the burst.
        assert_eq!(shape(100.0, 10).queue_bound(), 250_000 + 50_000);
        assert_eq!(shape(0.0, 0).queue_bound(), 256 * 1024);
        assert_eq!(shape(0.0, 1).queue_bound(), 4 * 1024 * 1024);
    }

    #[test]
    fn resets_are_exponential_with_the_mean() {
        let mean = Duration::from_secs(180);
        assert_eq!(reset_after(mean, 0.0), Duration::ZERO);
        // The median of an exponential is mean·ln 2.
        let median = reset_after(mean, 0.5).as_secs_f64();
        assert!((median - 180.0 * std::f64::consts::LN_2).abs() < 1e-6);
        assert!(reset_after(mean, 0.999_999).as_secs_f64().is_finite());
        // The sample mean of many draws is near the mean.
        let mut rng = StdRng::seed_from_u64(5);
        let n = 20_000;
        let sum: f64 = (0..n)
            .map(|_| draw_reset(Some(mean), &mut rng).map_or(0.0, |d| d.as_secs_f64()))
            .sum();
        let sample_mean = sum / n as f64;
        assert!((sample_mean - 180.0).abs() < 180.0 * 0.05, "{sample_mean}");
    }

    #[test]
    fn no_reset_interval_means_no_reset() {
        let mut rng = StdRng::seed_from_u64(5);
        assert_eq!(draw_reset(None, &mut rng), None);
    }

    #[test]
    fn stream_seeds_differ_between_connections_and_streams() {
        let seeds = [
            stream_seed(1, 0, 0),
            stream_seed(1, 1, 0),
            stream_seed(1, 0, 1),
            stream_seed(2, 0, 0),
        ];
        for (i, a) in seeds.iter().enumerate() {
            for b in &seeds[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(stream_seed(1, 2, 3), stream_seed(1, 2, 3));
    }
}
