//! The grid's trust policy, as pure decisions over a worker's record: when a worker is
//! trusted, how many leases it may hold, when it is quarantined, and when a task's failures
//! are the task's fault rather than its reporters'.
//!
//! Volunteers are anonymous, so nothing a single client says may cost a researcher a job.
//! Trust is earned only by delivering results that pass verification, and lost by lying,
//! by reporting failures, and by letting leases expire.

use std::collections::BTreeSet;

/// Verified results a worker must have delivered before its failure reports count against a
/// task. A fresh identity costs nothing to make; five verified tiles cost real compute.
pub const TRUSTED_AFTER: i64 = 5;

/// Leases a worker with no verified result in a row may hold: enough for a page to compute
/// one task while the next downloads, too few for a crowd of fresh identities to hoard a job.
pub const FIRST_LEASES: usize = 2;

/// Times one lease may be sent again in full after `panel_missing`. An honest page misses a
/// panel only when its cache and the server's model of it disagree, which one re-send mends.
pub const MAX_REDELIVERIES: u8 = 2;

/// Random vectors for checking a caught worker's earlier results again (see `grid::results`,
/// in runs of [`AUDIT_VECTORS_PER_CHECK`]): a wrong tile slips through with probability at
/// most 2⁻²⁴.
pub const AUDIT_VECTORS: usize = 24;

/// Vectors per check in an audit: [`AUDIT_VECTORS`] in checks of this many, so that a failing
/// result is caught by its first checks without paying for all of them.
pub const AUDIT_VECTORS_PER_CHECK: usize = 6;

/// Overlap between audits of one worker, in milliseconds: a result stored in a transaction
/// that began before the last audit but committed after it read is checked again.
pub const AUDIT_OVERLAP_MS: i64 = 10_000;

/// From when (ms since the epoch) an audit re-checks a worker's accepted results, given when
/// the last one ran (`None`: never, so everything). A worker refused again and again cannot
/// make the server re-check its whole history each time.
pub fn audit_since(last_audit_ms: Option<i64>) -> i64 {
    last_audit_ms.map_or(0, |last| last - AUDIT_OVERLAP_MS)
}

/// Failure reports and expired leases that quarantine a worker once they outnumber its
/// verified results: an honest page that runs out of memory on a few huge tiles keeps
/// working, a client that takes tasks only to drop them does not.
const QUARANTINE_AFTER_FAILURES: i64 = 8;

/// How a worker stands, shared by all its connections (a browser may open several).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Results verified and stored, ever.
    pub verified: i64,
    /// Results verified since the last refusal or failure report: sets how hard the next
    /// result is checked and how many leases the worker may hold.
    pub consecutive_verified: i64,
    /// Results refused by verification.
    pub refused: i64,
    /// Tasks it reported failed, and leases it let expire.
    pub failed: i64,
    /// Set when quarantined: the worker gets no more tasks.
    pub quarantined: Option<String>,
}

impl Record {
    /// Whether the worker's word counts: its failure reports may fail a task. It needs a
    /// record of verified work, few refusals and fewer failures than deliveries.
    pub fn is_trusted(&self) -> bool {
        self.quarantined.is_none()
            && self.verified >= TRUSTED_AFTER
            && self.refused * 10 <= self.verified
            && self.failed * 2 <= self.verified
    }

    /// How many random vectors the worker's next result is checked with (see `verify`): more
    /// for a new or recently wrong worker, never fewer than two, never more than four. Two
    /// already meet the detection targets (a lie spread over a row escapes both with
    /// probability ≤ 0.05² at n = 256); four keep the check below 5 % of the tile's flops at
    /// k ≥ 1024 (six cost 6 %).
    pub fn check_vectors(&self) -> usize {
        match (self.consecutive_verified, self.refused) {
            (c, r) if c < 20 || (r > 0 && c < 50) => 4,
            _ => 2,
        }
    }

    /// Leases the worker may hold at once: [`FIRST_LEASES`], one more per result verified in
    /// a row, up to `max` (`MAX_TASKS_PER_WORKER`). A refusal or a failure report starts the
    /// count again, so standing lost is felt at once.
    pub fn lease_allowance(&self, max: usize) -> usize {
        if self.quarantined.is_some() {
            return 0;
        }
        let earned = usize::try_from(self.consecutive_verified).unwrap_or(0);
        FIRST_LEASES.saturating_add(earned).min(max)
    }

    /// A result was verified and stored.
    pub fn count_verified(&mut self) {
        self.verified += 1;
        self.consecutive_verified += 1;
    }

    /// A result was refused, or an accepted one taken back.
    pub fn count_refused(&mut self, count: i64) {
        self.refused += count;
        self.verified = (self.verified - count).max(0);
        self.consecutive_verified = 0;
    }

    /// The worker reported a task failed, or let a lease expire.
    pub fn count_failed(&mut self) {
        self.failed += 1;
        self.consecutive_verified = 0;
    }

    /// Why the worker must be quarantined now, if it must (and is not already). `last` is
    /// the reason of the latest refusal or failure.
    pub fn quarantine_reason(&self, last: &str) -> Option<String> {
        if self.quarantined.is_some() {
            return None;
        }
        let (refused, failed, verified) = (self.refused, self.failed, self.verified);
        if refused >= 3 && refused * 10 > verified {
            return Some(format!(
                "{refused} results failed verification (last: {last}); this worker gets no more tasks"
            ));
        }
        if failed >= QUARANTINE_AFTER_FAILURES && failed > verified {
            return Some(format!(
                "{failed} tasks reported failed or abandoned against {verified} delivered (last: {last}); this worker gets no more tasks"
            ));
        }
        None
    }
}

/// Whether a failure came from the worker (`task_failed`) or from its lease running out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Reported,
    Expired,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Reported => "reported",
            FailureKind::Expired => "expired",
        }
    }
}

/// One worker's failure of one task, with its record as it stands now.
#[derive(Debug, Clone)]
pub struct FailureReport {
    pub worker_id: String,
    /// The reporter's address group (IPv6: its /64).
    pub address: String,
    pub reason: String,
    pub trusted: bool,
}

/// Longest reason quoted in a job's error.
const MAX_QUOTED_REASON: usize = 120;

/// Whether a task is at fault: trusted workers at `needed` distinct addresses have failed it
/// (each worker is reported once per task, so no reporter counts twice). Returns the reason
/// the job fails, naming the reasons given. Reports from untrusted workers never count: a
/// crowd of fresh identities can make a task go round, never fail a job.
pub fn task_fault(reports: &[FailureReport], needed: usize) -> Option<String> {
    let trusted: Vec<&FailureReport> = reports.iter().filter(|r| r.trusted).collect();
    let addresses: BTreeSet<&str> = trusted.iter().map(|r| r.address.as_str()).collect();
    if addresses.len() < needed.max(1) {
        return None;
    }
    let reasons: BTreeSet<String> = trusted
        .iter()
        .map(|r| r.reason.chars().take(MAX_QUOTED_REASON).collect())
        .collect();
    let reasons: Vec<String> = reasons.into_iter().take(5).collect();
    Some(format!(
        "failed on {} trusted workers at {} addresses: {}",
        trusted.len(),
        addresses.len(),
        reasons.join("; ")
    ))
}

/// Counts counted against a task, for the API: trusted reporters' distinct addresses.
pub fn counted_failures(reports: &[FailureReport]) -> usize {
    reports
        .iter()
        .filter(|r| r.trusted)
        .map(|r| r.address.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verified: i64, refused: i64, failed: i64) -> Record {
        Record {
            verified,
            consecutive_verified: verified,
            refused,
            failed,
            quarantined: None,
        }
    }

    fn report(worker: &str, address: &str, trusted: bool, reason: &str) -> FailureReport {
        FailureReport {
            worker_id: worker.into(),
            address: address.into(),
            reason: reason.into(),
            trusted,
        }
    }

    #[test]
    fn trust_is_earned_by_verified_work_and_lost_by_failures() {
        assert!(!record(0, 0, 0).is_trusted(), "a fresh identity");
        assert!(!record(TRUSTED_AFTER - 1, 0, 0).is_trusted());
        assert!(record(TRUSTED_AFTER, 0, 0).is_trusted());
        assert!(
            !record(20, 3, 0).is_trusted(),
            "refused more than one in ten"
        );
        assert!(
            !record(20, 0, 11).is_trusted(),
            "fails more than half as often as it delivers"
        );
        let mut caught = record(50, 0, 0);
        caught.quarantined = Some("lied".into());
        assert!(!caught.is_trusted());
    }

    #[test]
    fn fewer_vectors_for_a_long_honest_run_never_none() {
        let vectors = |consecutive_verified, refused| {
            Record {
                consecutive_verified,
                refused,
                ..Record::default()
            }
            .check_vectors()
        };
        assert!(vectors(0, 0) > vectors(500, 0));
        assert!(vectors(30, 2) > vectors(30, 0));
        assert_eq!(vectors(i64::MAX, 0), 2);
        assert!((0..100).all(|c| (0..3).all(|r| (2..=4).contains(&vectors(c, r)))));
    }

    #[test]
    fn new_workers_hold_few_leases_until_they_deliver() {
        let mut w = Record::default();
        assert_eq!(w.lease_allowance(16), FIRST_LEASES);
        for _ in 0..3 {
            w.count_verified();
        }
        assert_eq!(w.lease_allowance(16), FIRST_LEASES + 3);
        for _ in 0..100 {
            w.count_verified();
        }
        assert_eq!(w.lease_allowance(16), 16, "never past MAX_TASKS_PER_WORKER");
        assert_eq!(w.lease_allowance(1), 1);
        w.count_failed();
        assert_eq!(
            w.lease_allowance(16),
            FIRST_LEASES,
            "a failure report costs standing"
        );
        w.count_verified();
        w.count_refused(1);
        assert_eq!(w.lease_allowance(16), FIRST_LEASES, "so does a refusal");
        w.quarantined = Some("x".into());
        assert_eq!(w.lease_allowance(16), 0);
    }

    #[test]
    fn quarantine_for_lying_or_for_dropping_tasks() {
        assert!(record(0, 2, 0).quarantine_reason("x").is_none());
        assert!(record(0, 3, 0).quarantine_reason("x").is_some());
        assert!(record(30, 3, 0).quarantine_reason("x").is_none(), "1 in 10");
        assert!(record(0, 0, 7).quarantine_reason("x").is_none());
        let why = record(0, 0, 8)
            .quarantine_reason("oom")
            .expect("8 failures, 0 delivered");
        assert!(why.contains("8 tasks reported failed"), "{why}");
        assert!(
            record(100, 0, 20).quarantine_reason("x").is_none(),
            "delivers far more"
        );
        let mut already = record(0, 9, 0);
        already.quarantined = Some("before".into());
        assert!(already.quarantine_reason("x").is_none(), "told once");
    }

    #[test]
    fn untrusted_reports_never_fail_a_task() {
        let crowd: Vec<_> = (0..50)
            .map(|i| report(&format!("w{i}"), &format!("10.0.0.{i}"), false, "nope"))
            .collect();
        assert_eq!(task_fault(&crowd, 3), None);
        assert_eq!(counted_failures(&crowd), 0);
    }

    #[test]
    fn trusted_reports_count_once_per_address() {
        let same_address = [
            report("a", "10.0.0.1", true, "out of memory"),
            report("b", "10.0.0.1", true, "out of memory"),
            report("c", "10.0.0.1", true, "out of memory"),
        ];
        assert_eq!(
            task_fault(&same_address, 2),
            None,
            "one address, three workers"
        );
        assert_eq!(counted_failures(&same_address), 1);

        let spread = [
            report("a", "10.0.0.1", true, "out of memory"),
            report("b", "10.0.0.2", false, "liar"),
            report("c", "10.0.0.3", true, "lease expired"),
            report("d", "10.0.0.4", true, "out of memory"),
        ];
        let why = task_fault(&spread, 3).expect("three trusted addresses");
        assert!(why.contains("3 trusted workers at 3 addresses"), "{why}");
        assert!(
            why.contains("out of memory") && why.contains("lease expired"),
            "{why}"
        );
        assert!(
            !why.contains("liar"),
            "untrusted reasons are not quoted: {why}"
        );
        assert_eq!(task_fault(&spread, 4), None);
    }

    #[test]
    fn quoted_reasons_are_bounded() {
        let long = "x".repeat(10_000);
        let reports: Vec<_> = (0..20)
            .map(|i| {
                report(
                    &format!("w{i}"),
                    &format!("a{i}"),
                    true,
                    &format!("{i}{long}"),
                )
            })
            .collect();
        let why = task_fault(&reports, 1).expect("trusted");
        assert!(why.len() < 1000, "{} bytes", why.len());
    }

    #[test]
    fn an_audit_checks_what_the_last_one_did_not_with_some_overlap() {
        assert_eq!(audit_since(None), 0, "the first audit checks everything");
        assert_eq!(audit_since(Some(50_000)), 40_000);
        assert_eq!(
            AUDIT_VECTORS % AUDIT_VECTORS_PER_CHECK,
            0,
            "whole checks only"
        );
        assert!(AUDIT_VECTORS > Record::default().check_vectors());
    }
}
