//! Byte ranges of a download (RFC 9110 §14): which part of a file a request asks for, and
//! whether its `If-Range` lets it have that part. Pure header logic, so every rule has a unit
//! test; `results` opens the file and sends the bytes.
//!
//! A resumed download is only safe if the bytes it appends come from the same file as the
//! bytes it already has, so a `Range` is honoured only when `If-Range` (if sent) names the
//! file's current validator; otherwise the whole file is sent, as the RFC requires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to send of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// 200 with the whole file: no `Range`, one that is not a byte range we serve (several
    /// ranges, another unit, bad syntax: all of which the RFC lets a server ignore), or an
    /// `If-Range` that no longer matches.
    Whole,
    /// 206 with bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416: a well-formed range that starts past the end.
    Unsatisfiable,
}

/// The validators of one file: they change whenever the file could have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// A strong entity tag, quotes included.
    pub etag: String,
    /// The modification time, whole seconds (what an HTTP date holds).
    pub modified: SystemTime,
}

impl Validators {
    /// From a file's length, modification time and inode. A result file is written in full
    /// before its job is done and never again, and a file put in its place (a restored
    /// backup, say) has another inode or time, so the tag is strong. (On PostgreSQL, where a
    /// result is no file, its job's end and a hash of its id stand for the time and inode.)
    pub fn of(len: u64, modified: SystemTime, inode: u64) -> Validators {
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Validators {
            etag: format!("\"{inode:x}-{len:x}-{:x}\"", since.as_nanos()),
            modified: UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        }
    }

    /// The `Last-Modified` value.
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }

    /// Does an `If-Range` value name this file? An entity tag must match strongly (a weak one
    /// never does); a date must equal the modification time.
    fn matched_by(&self, if_range: &str) -> bool {
        let if_range = if_range.trim();
        if if_range.starts_with('"') || if_range.starts_with("W/") {
            return if_range == self.etag;
        }
        httpdate::parse_http_date(if_range).is_ok_and(|date| date == self.modified)
    }
}

/// What to send of a file of `len` bytes for a GET with these `Range` and `If-Range` values.
pub fn choose(range: Option<&str>, if_range: Option<&str>, file: &Validators, len: u64) -> Slice {
    let Some(range) = range else {
        return Slice::Whole;
    };
    if if_range.is_some_and(|v| !file.matched_by(v)) {
        return Slice::Whole;
    }
    match parse(range) {
        Some(Spec::From(start)) if start < len => Slice::Part {
            start,
            end: len - 1,
        },
        Some(Spec::Between(start, last)) if start < len => Slice::Part {
            start,
            end: last.min(len - 1),
        },
        Some(Spec::Last(count)) if count > 0 && len > 0 => Slice::Part {
            start: len - count.min(len),
            end: len - 1,
        },
        Some(_) => Slice::Unsatisfiable,
        None => Slice::Whole,
    }
}

/// One byte range as written.
#[derive(Debug, PartialEq, Eq)]
enum Spec {
    /// `start-`
    From(u64),
    /// `start-last`, last included
    Between(u64, u64),
    /// `-count`: the last `count` bytes
    Last(u64),
}

/// `bytes=<one range>`; `None` for anything else (which is then ignored).
fn parse(value: &str) -> Option<Spec> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        // `u64::from_str` takes a leading `+`, which the grammar (1*DIGIT) does not.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim(), last.trim()) {
        ("", count) => number(count).map(Spec::Last),
        (start, "") => number(start).map(Spec::From),
        (start, last) => {
            let (start, last) = (number(start)?, number(last)?);
            (start <= last).then_some(Spec::Between(start, last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Validators {
        Validators::of(
            1000,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            42,
        )
    }

    fn part(start: u64, end: u64) -> Slice {
        Slice::Part { start, end }
    }

    #[test]
    fn single_byte_ranges_are_served_clipped_to_the_file() {
        let f = file();
        for (range, want) in [
            ("bytes=0-99", part(0, 99)),
            ("bytes=500-", part(500, 999)),
            ("bytes=999-999", part(999, 999)),
            ("bytes=900-5000", part(900, 999)),
            ("bytes=-100", part(900, 999)),
            ("bytes=-5000", part(0, 999)),
            ("Bytes = 10 - 19 ", part(10, 19)),
        ] {
            assert_eq!(choose(Some(range), None, &f, 1000), want, "{range}");
        }
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        let f = file();
        for range in ["bytes=1000-", "bytes=1000-2000", "bytes=-0"] {
            assert_eq!(
                choose(Some(range), None, &f, 1000),
                Slice::Unsatisfiable,
                "{range}"
            );
        }
    }

    #[test]
    fn what_is_not_one_byte_range_is_ignored() {
        let f = file();
        for range in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-4",
            "bytes=-",
            "bytes=a-",
            "bytes=+5-",
            "bytes=0--1",
            "bytes 0-1",
            "",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(choose(Some(range), None, &f, 1000), Slice::Whole, "{range}");
        }
        assert_eq!(choose(None, Some(&f.etag), &f, 1000), Slice::Whole);
    }

    #[test]
    fn if_range_gives_the_part_only_for_the_same_file() {
        let f = file();
        let range = Some("bytes=100-");
        assert_eq!(choose(range, Some(&f.etag), &f, 1000), part(100, 999));
        let date = f.last_modified();
        assert_eq!(date, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(choose(range, Some(&date), &f, 1000), part(100, 999));

        let other = Validators::of(1000, UNIX_EPOCH + Duration::new(1_700_000_000, 5), 42);
        assert_ne!(
            other.etag, f.etag,
            "a rewrite within the second changes the tag"
        );
        let moved = Validators::of(
            1000,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            43,
        );
        assert_ne!(moved.etag, f.etag, "another file changes the tag");
        for stale in [
            other.etag.as_str(),
            &format!("W/{}", f.etag),
            "Tue, 14 Nov 2023 22:13:19 GMT",
            "not a validator",
        ] {
            assert_eq!(
                choose(range, Some(stale), &f, 1000),
                Slice::Whole,
                "{stale}"
            );
        }
    }
}
