//! Text for people: the jobs table, one job's details, sizes and durations. Kept free of I/O
//! so the layout can be tested without a server.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::Job;

/// `brain jobs`: one row per job, name last because it is the only free-width column.
pub fn jobs_table(jobs: &[Job]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let header = ["ID", "STATUS", "TILES", "SHAPE", "DTYPE", "CREATED", "NAME"];
    let rows: Vec<[String; 7]> = jobs
        .iter()
        .map(|job| {
            [
                job.id.clone(),
                job.status.clone(),
                format!("{}/{}", job.tasks_done, job.tasks_total),
                shape(job),
                job.dtype.clone(),
                timestamp(&job.created_at),
                job.name.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// `brain status`: one field per line, optional ones only when set.
pub fn job_details(job: &Job) -> String {
    let mut out = String::new();
    let mut field = |key: &str, value: &str| {
        let _ = writeln!(out, "{key:<9} {value}");
    };
    field("id", &job.id);
    if !job.name.is_empty() {
        field("name", &job.name);
    }
    field("status", &job.status);
    field(
        "shape",
        &format!(
            "{} {} (A {}×{}, B {}×{})",
            shape(job),
            job.dtype,
            job.m,
            job.k,
            job.k,
            job.n
        ),
    );
    match job.k_split {
        1 => field("tile", &job.tile.to_string()),
        s => field("tile", &format!("{}, k in {s} slices", job.tile)),
    }
    field("tiles", &tiles(job));
    field("created", &timestamp(&job.created_at));
    if let Some(at) = &job.finished_at {
        field("finished", &timestamp(at));
    }
    if let Some(error) = &job.error {
        field("error", error);
    }
    out
}

/// `done/total (pct%)`, the progress a researcher looks for first.
pub fn tiles(job: &Job) -> String {
    let pct = (job.tasks_done * 100)
        .checked_div(job.tasks_total)
        .unwrap_or(100);
    format!("{}/{} verified ({pct}%)", job.tasks_done, job.tasks_total)
}

/// `m×k×n`: the product's three dimensions in the order they are multiplied.
pub fn shape(job: &Job) -> String {
    format!("{}×{}×{}", job.m, job.k, job.n)
}

/// The server's `2025-01-02T03:04:05.678Z` without the milliseconds, as `2025-01-02 03:04:05Z`.
pub fn timestamp(rfc3339: &str) -> String {
    match rfc3339.split_once('.') {
        Some((seconds, _)) => format!("{}Z", seconds.replacen('T', " ", 1)),
        None => rfc3339.replacen('T', " ", 1),
    }
}

/// Binary units, one decimal: `3.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `0.8 s`, `42.0 s`, `3 min 05 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, name: &str, status: &str, done: u64) -> Job {
        Job {
            id: id.into(),
            name: name.into(),
            status: status.into(),
            m: 37,
            k: 19,
            n: 23,
            dtype: "f32".into(),
            tile: 8,
            k_split: 1,
            tasks_total: 15,
            tasks_done: done,
            created_at: "2025-01-02T03:04:05.678Z".into(),
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn table_columns_line_up_and_name_is_last() {
        let table = jobs_table(&[job("aaaa", "first", "running", 7), job("b", "", "done", 15)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID    STATUS   TILES  SHAPE"));
        assert!(lines[1].starts_with("aaaa  running  7/15   37×19×23  f32"));
        assert!(lines[1].ends_with("2025-01-02 03:04:05Z  first"));
        assert!(
            lines[2].ends_with("2025-01-02 03:04:05Z"),
            "no trailing spaces"
        );
    }

    #[test]
    fn empty_table_says_so() {
        assert_eq!(jobs_table(&[]), "no jobs\n");
    }

    #[test]
    fn details_show_error_only_when_set() {
        let mut failed = job("x", "n", "failed", 3);
        assert!(!job_details(&failed).contains("error"));
        failed.error = Some("a worker kept lying".into());
        let text = job_details(&failed);
        assert!(text.contains("tiles     3/15 verified (20%)"), "{text}");
        assert!(text.contains("error     a worker kept lying"), "{text}");
    }

    #[test]
    fn a_job_without_tiles_counts_as_complete() {
        let mut empty = job("x", "", "done", 0);
        empty.tasks_total = 0;
        assert_eq!(tiles(&empty), "0/0 verified (100%)");
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(100), "100 B");
        assert_eq!(bytes(3584), "3.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(duration(Duration::from_millis(840)), "0.8 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
    }
}
