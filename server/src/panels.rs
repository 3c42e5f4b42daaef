//! Panel reuse: the server's exact model of what a worker's panel cache holds.
//!
//! A worker that announces a cache (`register_worker` `{"panel_cache": {"budget_bytes"}}`)
//! keeps the A row panels and B column panels it receives, addressed by job and panel index.
//! The server decides what the cache holds: each `task_assigned` names its panels (`a_key`,
//! `b_key`), omits a panel the worker already has, and lists keys to drop (`evict`). The worker
//! first resolves this task's panels, then stores the new ones, then drops the evicted keys,
//! so its cache and this model stay equal. A worker that finds a panel missing anyway answers
//! `panel_missing` and gets the task again in full.

use std::collections::VecDeque;

/// Which operand a panel belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operand {
    A,
    B,
}

/// The key a panel is cached under: `<job>:a:<tile row>` or `<job>:b:<tile col>`.
pub fn key(job_id: &str, operand: Operand, index: usize) -> String {
    let letter = match operand {
        Operand::A => 'a',
        Operand::B => 'b',
    };
    format!("{job_id}:{letter}:{index}")
}

/// Least-recently-used set of panels within a byte budget.
#[derive(Debug, Clone)]
pub struct CacheModel {
    budget: u64,
    used: u64,
    /// Least recently used first.
    entries: VecDeque<(String, u64)>,
}

impl CacheModel {
    pub fn new(budget: u64) -> Self {
        CacheModel {
            budget,
            used: 0,
            entries: VecDeque::new(),
        }
    }

    /// The cache's size in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Whether the worker holds `key`; a hit becomes the most recently used.
    pub fn hit(&mut self, key: &str) -> bool {
        let Some(at) = self.entries.iter().position(|(k, _)| k == key) else {
            return false;
        };
        if let Some(entry) = self.entries.remove(at) {
            self.entries.push_back(entry);
        }
        true
    }

    /// Records that the worker now stores `key`, returning the keys it must drop to stay
    /// within budget. A panel larger than the whole budget is not cached at all.
    pub fn insert(&mut self, key: String, size: u64) -> Vec<String> {
        if size > self.budget {
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.used + size > self.budget {
            let Some((old, old_size)) = self.entries.pop_front() else {
                break;
            };
            self.used -= old_size;
            evicted.push(old);
        }
        self.used += size;
        self.entries.push_back((key, size));
        evicted
    }

    /// Indices of the panels of `operand` for `job_id` the worker holds.
    pub fn indices(&self, job_id: &str, operand: Operand) -> Vec<i64> {
        let prefix = key(job_id, operand, 0);
        let prefix = &prefix[..prefix.len() - 1];
        self.entries
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(prefix)?.parse().ok())
            .collect()
    }

    /// The job whose panels fill most of the cache, if any.
    pub fn main_job(&self) -> Option<String> {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for (k, _) in &self.entries {
            let job = k.split(':').next().unwrap_or("");
            match counts.iter_mut().find(|(j, _)| *j == job) {
                Some((_, c)) => *c += 1,
                None => counts.push((job, 1)),
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, c)| *c)
            .map(|(j, _)| j.to_owned())
    }

    /// Forgets everything (after the worker reported a missing panel).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }
}

/// Held panels a reconnecting worker may name (`register_worker`'s `panel_cache.holds`): more
/// than a 1 GiB cache holds of the smallest panels any plan cuts is never needed, and anything
/// past the bound is ignored rather than parsed.
pub const MAX_HELD_PANELS: usize = 4096;

/// Jobs whose panels a reconnecting worker may name: each costs the server a look-up.
pub const MAX_HELD_JOBS: usize = 8;

/// The longest key there is: a job id (a UUID, 36 characters), an operand and an index.
const MAX_KEY_LEN: usize = 64;

/// A key's parts, if it is one: `<job>:a:<row>` or `<job>:b:<col>`.
pub fn parse_key(key: &str) -> Option<(&str, Operand, usize)> {
    if key.len() > MAX_KEY_LEN {
        return None;
    }
    let mut parts = key.split(':');
    let (job, operand, index) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || job.is_empty() {
        return None;
    }
    let operand = match operand {
        "a" => Operand::A,
        "b" => Operand::B,
        _ => return None,
    };
    // Digits only: `parse` would also take a sign.
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((job, operand, index.parse().ok()?))
}

/// The jobs a reconnecting worker's held keys name, at most [`MAX_HELD_JOBS`], in order of
/// first mention: the server looks each up before [`resume`].
pub fn held_jobs(holds: &[String]) -> Vec<&str> {
    let mut jobs: Vec<&str> = Vec::new();
    for (job, _, _) in holds
        .iter()
        .take(MAX_HELD_PANELS)
        .filter_map(|k| parse_key(k))
    {
        if !jobs.contains(&job) {
            if jobs.len() == MAX_HELD_JOBS {
                break;
            }
            jobs.push(job);
        }
    }
    jobs
}

/// The cache model of a worker that comes back after losing its connection and says which
/// panels it still holds, least recently used first. A key counts only if `size` knows its
/// panel (a running job's, an index inside its plan); duplicates count once; the budget
/// applies as if the panels arrived in that order. The worker keeps exactly the model's keys
/// (`registration_ack`'s `panels_kept`) and drops the rest, so the two agree again.
pub fn resume(
    budget: u64,
    holds: &[String],
    size: impl Fn(&str, Operand, usize) -> Option<u64>,
) -> CacheModel {
    let mut model = CacheModel::new(budget);
    for key in holds.iter().take(MAX_HELD_PANELS) {
        let Some(bytes) = parse_key(key).and_then(|(job, op, index)| size(job, op, index)) else {
            continue;
        };
        if !model.hit(key) {
            model.insert(key.clone(), bytes);
        }
    }
    model
}

impl CacheModel {
    /// The keys held, least recently used first.
    pub fn keys(&self) -> Vec<String> {
        self.entries.iter().map(|(k, _)| k.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let mut c = CacheModel::new(100);
        assert!(c.insert(key("j", Operand::A, 0), 40).is_empty());
        assert!(c.insert(key("j", Operand::B, 0), 40).is_empty());
        assert!(c.hit("j:a:0"), "a hit refreshes a:0");
        assert_eq!(
            c.insert(key("j", Operand::B, 1), 40),
            vec!["j:b:0".to_owned()]
        );
        assert!(c.hit("j:a:0") && c.hit("j:b:1") && !c.hit("j:b:0"));
        assert!(
            c.insert(key("j", Operand::A, 9), 1000).is_empty(),
            "too big: not cached"
        );
        assert!(!c.hit("j:a:9"));
        assert_eq!(c.indices("j", Operand::A), vec![0]);
        assert_eq!(c.indices("j", Operand::B), vec![1]);
        assert_eq!(c.main_job().as_deref(), Some("j"));
        c.clear();
        assert!(!c.hit("j:a:0"));
    }

    #[test]
    fn keys_are_parsed_strictly() {
        assert_eq!(parse_key("j1:a:0"), Some(("j1", Operand::A, 0)));
        assert_eq!(parse_key("j1:b:12"), Some(("j1", Operand::B, 12)));
        for bad in [
            "",
            "j1",
            "j1:a",
            "j1:c:0",
            "j1:a:",
            "j1:a:-1",
            "j1:a:+1",
            "j1:a:1:2",
            ":a:0",
            "j1:a:99999999999999999999999",
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_key(&format!("{}:a:0", "j".repeat(80))),
            None,
            "too long"
        );
    }

    /// Job "j": A panels 0..4 of 30 bytes and B panels 0..4 of 20; nothing else exists.
    fn size(job: &str, op: Operand, index: usize) -> Option<u64> {
        (job == "j" && index < 4).then_some(match op {
            Operand::A => 30,
            Operand::B => 20,
        })
    }

    fn strings(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn a_returning_worker_keeps_only_panels_the_server_knows_within_its_budget() {
        let holds = strings(&[
            "j:a:0",
            "other:a:0",
            "j:a:9",
            "garbage",
            "j:b:1",
            "j:a:0",
            "j:b:2",
            "j:a:3",
        ]);
        // 100 bytes: a:0 (30) + b:1 (20) + b:2 (20) + a:3 (30); the duplicate a:0 counts once
        // (and becomes the most recent, as a hit does).
        let model = resume(100, &holds, size);
        assert_eq!(model.keys(), strings(&["j:b:1", "j:a:0", "j:b:2", "j:a:3"]));
        // A smaller budget keeps the most recent, as if they had arrived in that order.
        assert_eq!(
            resume(50, &holds, size).keys(),
            strings(&["j:b:2", "j:a:3"])
        );
        assert!(resume(0, &holds, size).keys().is_empty());
        assert!(resume(1000, &[], size).keys().is_empty());
    }

    #[test]
    fn a_flood_of_held_keys_is_cut_at_the_bound() {
        let mut holds: Vec<String> = (0..MAX_HELD_PANELS).map(|i| format!("x{i}:a:0")).collect();
        holds.push("j:a:0".to_owned()); // past the bound: not looked at
        assert!(resume(u64::MAX, &holds, size).keys().is_empty());
        assert_eq!(held_jobs(&holds).len(), MAX_HELD_JOBS);
        assert_eq!(
            held_jobs(&strings(&["j:a:0", "k:b:1", "j:b:0", "bad"])),
            vec!["j", "k"]
        );
    }
}
