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
}
