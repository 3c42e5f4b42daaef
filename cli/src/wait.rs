//! `--wait`: polls a job until it ends, drawing tiles verified over total on stderr.
//!
//! indicatif draws nothing when stderr is not a terminal, so scripts and CI logs get only the
//! summary line the caller prints afterwards.

use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::client::{Client, Job};
use crate::error::Result;

/// Often enough that the bar moves smoothly, rarely enough to be no load on the server.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long the server may stay unreachable before waiting gives up. It keeps jobs across a
/// restart, so a short outage should not cost the researcher their wait.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Polls until the job is done, failed or cancelled; returns it with the time waited.
pub fn until_final(client: &Client, id: &str, tasks_total: u64) -> Result<(Job, Duration)> {
    let started = Instant::now();
    let bar = ProgressBar::new(tasks_total).with_style(style());
    bar.set_message("queued");
    let mut outage_since: Option<Instant> = None;
    loop {
        match client.job(id) {
            Ok(job) => {
                outage_since = None;
                bar.set_length(job.tasks_total);
                bar.set_position(job.tasks_done);
                bar.set_message(job.status.clone());
                if job.is_final() {
                    bar.finish_and_clear();
                    return Ok((job, started.elapsed()));
                }
            }
            Err(e) if e.is_transient() => {
                let since = *outage_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_AFTER {
                    bar.abandon();
                    return Err(e);
                }
                bar.set_message(format!("retrying ({e})"));
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
        thread::sleep(POLL_EVERY);
    }
}

fn style() -> ProgressStyle {
    // The template is a constant, so this cannot fail at run time; fall back rather than panic.
    ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} tiles verified  {rate}  ETA {eta}  {msg}",
    )
    .map(|s| {
        s.progress_chars("=> ")
            // indicatif's own {per_sec} prints four decimals; tiles arrive a few per second.
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1} tiles/s", state.per_sec());
            })
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}
