//! Every statistic the server keeps, and their Prometheus text format (version 0.0.4). The
//! counters and histograms count since the process started, as Prometheus expects; the gauges
//! of jobs and tasks by state are read from the database at scrape time and handed in as a
//! [`Snapshot`]. Serving them (`GET /metrics`) and timing HTTP requests are the transport's
//! part, in `http::metrics`: this module knows no axum type and no application state.
//!
//! Written by hand rather than with `prometheus-client`, which was weighed for issue #13 and
//! would not be smaller or clearer here. That crate writes OpenMetrics 1.0, not this format: a
//! counter's `# TYPE` line names it without `_total` while its sample keeps the suffix, `# HELP`
//! gains a full stop, bucket bounds read `1.0`, and the answer's content type changes. The
//! scrapers that read `/metrics` today (the end-to-end tests' strict parser, the load harness)
//! would see a different document, which issue #13 rules out. It would also save little: it
//! replaces the small `Histogram` below and the `family` helper, but the gauges read at scrape
//! time would need a custom `Collector`, the HTTP labels a derived label set, every metric a
//! registration at start-up, and the throughput window and the figures `/api/status` reads
//! stay hand-written anyway. Its registry could not bound the label sets either: that is
//! `http::metrics`'s work whichever encoder writes them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::status::{JobStatus, TaskState};
use crate::sync::LockExt;

/// Upper bounds (seconds) of the HTTP request duration buckets.
const HTTP_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
/// Upper bounds (seconds) of the job duration buckets.
const JOB_BUCKETS: &[f64] = &[1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, bound) in bounds.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in bounds.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What the server counts as it runs: the one place for every statistic, whether
/// `/metrics`, `/api/status` or the dashboards' `grid_stats` show it.
#[derive(Default)]
pub struct Metrics {
    pub results_refused: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    tasks_completed: AtomicU64,
    /// Copies of slow leases handed out.
    duplicates: AtomicU64,
    verifications: AtomicU64,
    verification_nanos: AtomicU64,
    /// Completions of the last [`THROUGHPUT_WINDOW`], with their flops, for the grid's
    /// current speed.
    recent: Mutex<VecDeque<(Instant, f64)>>,
    job_durations: Mutex<Histogram>,
    http: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

/// The window the grid's current throughput is averaged over.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(10);

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A result of `flops` was verified and stored.
    pub fn completed(&self, flops: f64) {
        Self::add(&self.tasks_completed, 1);
        let now = Instant::now();
        let mut recent = self.recent.lock_or_recover();
        recent.push_back((now, flops));
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > THROUGHPUT_WINDOW)
        {
            recent.pop_front();
        }
    }

    /// `(tasks per second, GFLOP/s)` over the last window.
    pub fn throughput(&self) -> (f64, f64) {
        let now = Instant::now();
        let recent = self.recent.lock_or_recover();
        let (count, flops) = recent
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= THROUGHPUT_WINDOW)
            .fold((0usize, 0.0), |(c, f), (_, x)| (c + 1, f + x));
        let secs = THROUGHPUT_WINDOW.as_secs_f64();
        (count as f64 / secs, flops / secs / 1e9)
    }

    pub fn duplicated(&self) {
        Self::add(&self.duplicates, 1);
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    pub fn verification(&self, took: Duration) {
        Self::add(&self.verifications, 1);
        self.verification_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// `(results verified, total time)` since start-up.
    pub fn verifications(&self) -> (u64, Duration) {
        (
            self.verifications.load(Ordering::Relaxed),
            Duration::from_nanos(self.verification_nanos.load(Ordering::Relaxed)),
        )
    }

    pub fn job_finished(&self, seconds: f64) {
        self.job_durations
            .lock_or_recover()
            .observe(JOB_BUCKETS, seconds);
    }

    /// One HTTP request took `seconds`. Each new `(method, route, status)` is a series kept for
    /// the life of the process, so the caller keeps every label to a fixed set of values.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http
            .lock_or_recover()
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default()
            .observe(HTTP_BUCKETS, seconds);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The content type of [`Metrics::encode`]'s text.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` shows beside the counters kept here: read at scrape time from the database
/// and the worker registry, which this module does not know.
pub struct Snapshot<'a> {
    pub workers_online: usize,
    pub jobs: &'a [(JobStatus, i64)],
    pub tasks: &'a [(TaskState, i64)],
    /// Leases handed out for a tile beyond its first, all time (kept in the database).
    pub re_leases: i64,
}

impl Metrics {
    /// Every statistic in the Prometheus text format ([`TEXT_FORMAT`]).
    pub fn encode(&self, now: &Snapshot) -> String {
        let m = self;
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "brain_workers_online",
            "gauge",
            "Registered worker connections.",
        );
        let _ = writeln!(out, "brain_workers_online {}", now.workers_online);
        family(&mut out, "brain_tasks", "gauge", "Tasks by state.");
        for s in TaskState::ALL {
            let n = now
                .tasks
                .iter()
                .find(|(k, _)| *k == s)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "brain_tasks{{state=\"{s}\"}} {n}");
        }
        family(&mut out, "brain_jobs", "gauge", "Jobs by state.");
        for s in JobStatus::ALL {
            let n = now
                .jobs
                .iter()
                .find(|(k, _)| *k == s)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "brain_jobs{{state=\"{s}\"}} {n}");
        }
        let counters = [
            (
                "brain_tasks_completed_total",
                "Results verified and stored.",
                m.tasks_completed.load(Ordering::Relaxed),
            ),
            (
                "brain_results_refused_total",
                "Results refused (failed verification or wrong size).",
                m.results_refused.load(Ordering::Relaxed),
            ),
            (
                "brain_bytes_sent_total",
                "Task input bytes sent to workers.",
                m.bytes_sent.load(Ordering::Relaxed),
            ),
            (
                "brain_bytes_received_total",
                "Result bytes received from workers.",
                m.bytes_received.load(Ordering::Relaxed),
            ),
            (
                "brain_duplicates_total",
                "Copies of slow leases handed to faster workers.",
                m.duplicates(),
            ),
        ];
        for (name, help, value) in counters {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            &mut out,
            "brain_re_leases_total",
            "counter",
            "Leases handed out for a tile beyond its first (all time).",
        );
        let _ = writeln!(out, "brain_re_leases_total {}", now.re_leases);
        family(
            &mut out,
            "brain_verification_seconds_total",
            "counter",
            "Time spent verifying results.",
        );
        let nanos = m.verification_nanos.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "brain_verification_seconds_total {}",
            nanos as f64 / 1e9
        );
        family(
            &mut out,
            "brain_job_duration_seconds",
            "histogram",
            "Submission to completion of finished jobs.",
        );
        m.job_durations.lock_or_recover().render(
            &mut out,
            "brain_job_duration_seconds",
            "",
            JOB_BUCKETS,
        );
        family(
            &mut out,
            "brain_http_request_duration_seconds",
            "histogram",
            "HTTP request durations by route.",
        );
        for ((method, route, status), h) in m.http.lock_or_recover().iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            h.render(
                &mut out,
                "brain_http_request_duration_seconds",
                &labels,
                HTTP_BUCKETS,
            );
        }
        out
    }
}
