//! Blocks: a job's tiles cut into rectangles, each computed by one caching worker.
//!
//! A worker that computes the tiles of `r` tile rows × `c` tile columns receives `r` row
//! panels of A and `c` column panels of B, each once if its cache holds them all. So bytes
//! per flop fall as a worker's tiles form a square-ish block, and rise when workers' tiles are
//! interleaved: the greedy choice alone (the task sharing most panels with what a worker
//! holds, `db::ClaimRound::claim_preferred`) started every worker on the oldest tiles, row 0,
//! and their growing blocks ran into one another. On the 4096² job over 8 home links the
//! workers received 4.40 B per kflop, against 2.93 for a 4 × 8 block each (docs/benchmarks.md,
//! figure 5). Here the job is cut once into blocks that fit a worker's cache, at least as
//! many as there are caching workers; a worker keeps to its block, takes a free one when its
//! block runs dry (the one overlapping its held panels most, else the one with most tiles
//! left), and when none is free helps another's block from its far end, but only one whose
//! owner is far from done ([`may_help`]): each tile taken from another block brings one or
//! two panels its owner already has, so helping at the very end of a job cost more bytes than
//! the time it saved (4.03 B per kflop with 4 tasks in flight against 3.11 with 2).
//!
//! Owners are kept in memory per instance: with several instances on one PostgreSQL, two
//! workers on different instances may pick the same block. They then share it, as under the
//! greedy choice, and nothing is lost but bytes.

use std::collections::HashMap;

/// How a job's tile grid is cut: blocks of `rows` × `cols` tiles (smaller at the far edges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub tile_rows: usize,
    pub tile_cols: usize,
    pub rows: usize,
    pub cols: usize,
}

/// One block's tiles: rows `row0..row1`, columns `col0..col1` (tile indices, ends excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub row0: usize,
    pub row1: usize,
    pub col0: usize,
    pub col1: usize,
}

impl Partition {
    /// The cut that sends the fewest panels in all, if each block's panels go once to one
    /// worker: among cuts into at least `workers` blocks whose panels fit in `budget` bytes
    /// (`a_panel`, `b_panel`: one row panel of A, one column panel of B, in bytes), the one
    /// whose blocks need the fewest panel bytes together; ties go to the cut whose largest block
    /// is smallest (blocks of even size finish together: 8 × 4 rather than 12 × 4 on 16 × 16
    /// tiles), then to fewer blocks, then to taller ones. When no block fits the budget (a cache smaller than two panels), one tile
    /// a block: nothing can be reused anyway.
    pub fn choose(
        tile_rows: usize,
        tile_cols: usize,
        workers: usize,
        a_panel: u64,
        b_panel: u64,
        budget: u64,
    ) -> Partition {
        let (tile_rows, tile_cols) = (tile_rows.max(1), tile_cols.max(1));
        let workers = workers.clamp(1, tile_rows * tile_cols);
        let mut best: Option<((u64, usize, usize, usize), Partition)> = None;
        for rows in 1..=tile_rows {
            for cols in 1..=tile_cols {
                let p = Partition {
                    tile_rows,
                    tile_cols,
                    rows,
                    cols,
                };
                let fits = rows as u64 * a_panel + cols as u64 * b_panel <= budget;
                if !fits || p.count() < workers {
                    continue;
                }
                // Each block column receives every row panel once, each block row every
                // column panel once.
                let bytes = p.block_cols() as u64 * tile_rows as u64 * a_panel
                    + p.block_rows() as u64 * tile_cols as u64 * b_panel;
                let key = (bytes, rows * cols, p.count(), tile_rows - rows);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, p));
                }
            }
        }
        best.map_or(
            Partition {
                tile_rows,
                tile_cols,
                rows: 1,
                cols: 1,
            },
            |(_, p)| p,
        )
    }

    fn block_rows(&self) -> usize {
        self.tile_rows.div_ceil(self.rows)
    }

    fn block_cols(&self) -> usize {
        self.tile_cols.div_ceil(self.cols)
    }

    /// Blocks in the cut.
    pub fn count(&self) -> usize {
        self.block_rows() * self.block_cols()
    }

    /// The block holding tile (`tile_row`, `tile_col`), numbered row by row.
    pub fn block_of(&self, tile_row: usize, tile_col: usize) -> usize {
        (tile_row / self.rows) * self.block_cols() + tile_col / self.cols
    }

    /// The tiles of block `index` (< [`Partition::count`]).
    pub fn block(&self, index: usize) -> Block {
        let (r, c) = (index / self.block_cols(), index % self.block_cols());
        Block {
            row0: r * self.rows,
            row1: ((r + 1) * self.rows).min(self.tile_rows),
            col0: c * self.cols,
            col1: ((c + 1) * self.cols).min(self.tile_cols),
        }
    }
}

impl Block {
    /// How many of a worker's held rows of A and columns of B fall in this block.
    pub fn overlap(&self, rows: &[i64], cols: &[i64]) -> usize {
        let within =
            |v: &i64, lo: usize, hi: usize| usize::try_from(*v).is_ok_and(|v| v >= lo && v < hi);
        rows.iter()
            .filter(|r| within(r, self.row0, self.row1))
            .count()
            + cols
                .iter()
                .filter(|c| within(c, self.col0, self.col1))
                .count()
    }
}

/// A job's cut and who works each block.
#[derive(Debug, Clone)]
pub struct JobBlocks<O> {
    pub partition: Partition,
    owners: Vec<Option<O>>,
}

impl<O: Copy + Eq> JobBlocks<O> {
    pub fn new(partition: Partition) -> Self {
        JobBlocks {
            owners: vec![None; partition.count()],
            partition,
        }
    }

    /// The block `owner` works, if any.
    pub fn owned_by(&self, owner: O) -> Option<usize> {
        self.owners.iter().position(|o| *o == Some(owner))
    }

    /// Who works block `index`.
    pub fn owner(&self, index: usize) -> Option<O> {
        self.owners.get(index).copied().flatten()
    }

    /// `owner` stops working its block (it ran dry for it).
    pub fn release(&mut self, owner: O) {
        for o in self.owners.iter_mut().filter(|o| **o == Some(owner)) {
            *o = None;
        }
    }

    /// Gives `owner` the best block nobody `alive` works (see [`pick`]), given the tiles each
    /// has left (`queued`: block → queued tiles; a block missing from it has none) and the
    /// panels the owner holds. Owners no longer alive lose their blocks here. Returns the
    /// block taken.
    pub fn take(
        &mut self,
        owner: O,
        queued: &HashMap<usize, usize>,
        held: (&[i64], &[i64]),
        alive: impl Fn(O) -> bool,
    ) -> Option<usize> {
        self.release(owner);
        for o in self.owners.iter_mut() {
            if o.is_some_and(|o| !alive(o)) {
                *o = None;
            }
        }
        let candidates: Vec<(usize, usize, usize)> = (0..self.owners.len())
            .filter(|&i| self.owners[i].is_none())
            .filter_map(|i| {
                let left = *queued.get(&i)?;
                Some((i, self.partition.block(i).overlap(held.0, held.1), left))
            })
            .collect();
        let chosen = pick(&candidates)?;
        self.owners[chosen] = Some(owner);
        Some(chosen)
    }

    /// The block `helper` may help (see [`may_help`]): of the blocks others work with tiles
    /// left (`queued`), the one overlapping the helper's held panels most, then with most left.
    /// `owner` tells what each owner holds and its speed; `helper_gflops` is the helper's.
    pub fn to_help(
        &self,
        helper: O,
        queued: &HashMap<usize, usize>,
        held: (&[i64], &[i64]),
        owner: impl Fn(O) -> (usize, f64),
        helper_gflops: f64,
    ) -> Option<usize> {
        let candidates: Vec<(usize, usize, usize)> = (0..self.owners.len())
            .filter_map(|i| {
                let o = self.owners[i].filter(|o| *o != helper)?;
                let left = queued.get(&i).copied().unwrap_or(0);
                let (holds, gflops) = owner(o);
                may_help(left, holds, gflops, helper_gflops)
                    .then(|| (i, self.partition.block(i).overlap(held.0, held.1), left))
            })
            .collect();
        pick(&candidates)
    }
}

/// Which end of a block a claim starts from: its owner works from the front (row by row,
/// growing a square of tiles), a worker helping it from the back, away from the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Front,
    Back,
}

/// How many times the tasks an owner holds a block must have left for another worker to
/// take one of them.
pub const HELP_MARGIN: usize = 2;

/// Whether a worker whose own block ran dry may take a tile of a block with `left` queued
/// tiles, whose owner holds `owner_holds` tasks at `owner_gflops` against the helper's
/// `helper_gflops` (0: not measured). The owner claims its next tiles as its tasks end, so
/// the last HELP_MARGIN × its tasks in hand are its own at equal speeds: a helper would get
/// one of those no sooner, and pay a panel or two for it. An owner slower than the helper
/// keeps proportionally fewer (a phone's block is helped to the end).
pub fn may_help(left: usize, owner_holds: usize, owner_gflops: f64, helper_gflops: f64) -> bool {
    let ratio = if owner_gflops > 0.0 && helper_gflops > 0.0 {
        (owner_gflops / helper_gflops).min(1.0)
    } else {
        1.0
    };
    let kept = (HELP_MARGIN as f64 * owner_holds.max(1) as f64 * ratio).floor() as usize;
    left > kept
}

/// Among free blocks (index, held panels inside it, tiles left), the one overlapping the
/// worker's held panels most (a worker back after a reset finds its own), else the one with
/// most tiles left, else the first. `None` when none has tiles left.
pub fn pick(free: &[(usize, usize, usize)]) -> Option<usize> {
    free.iter()
        .filter(|(_, _, left)| *left > 0)
        .min_by_key(|(i, overlap, left)| (std::cmp::Reverse((*overlap, *left)), *i))
        .map(|(i, _, _)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn eight_workers_on_16_by_16_tiles_get_a_4_by_8_block_each() {
        // 4096² at tile 256, k = 4096: 4 MiB panels, 64 MiB caches (figure 5).
        let p = Partition::choose(16, 16, 8, 4 * MIB, 4 * MIB, 64 * MIB);
        assert_eq!(p.count(), 8);
        assert_eq!((p.rows, p.cols), (8, 4));
        // 12 panels a worker, 96 in all: 2.93 B per kflop, against 144 for the greedy choice.
        let panels: usize = (0..p.count())
            .map(|i| {
                let b = p.block(i);
                (b.row1 - b.row0) + (b.col1 - b.col0)
            })
            .sum();
        assert_eq!(panels, 96);
    }

    #[test]
    fn blocks_fit_the_cache_even_with_one_worker() {
        // One worker cannot hold 32 panels in 16: four 8 × 8 blocks, done one after another.
        let p = Partition::choose(16, 16, 1, 4 * MIB, 4 * MIB, 64 * MIB);
        assert_eq!((p.rows, p.cols, p.count()), (8, 8, 4));
        // A cache that holds every panel: the whole job is one block.
        let p = Partition::choose(8, 8, 1, 2 * MIB, 2 * MIB, 256 * MIB);
        assert_eq!((p.rows, p.cols, p.count()), (8, 8, 1));
    }

    #[test]
    fn a_cache_too_small_for_two_panels_gets_one_tile_blocks() {
        let p = Partition::choose(4, 4, 2, 4 * MIB, 4 * MIB, 6 * MIB);
        assert_eq!((p.rows, p.cols, p.count()), (1, 1, 16));
    }

    #[test]
    fn more_workers_than_tiles_give_one_tile_each() {
        let p = Partition::choose(2, 2, 100, MIB, MIB, 64 * MIB);
        assert_eq!(p.count(), 4);
    }

    #[test]
    fn edge_blocks_are_cut_short_and_every_tile_is_in_exactly_one_block() {
        let p = Partition {
            tile_rows: 7,
            tile_cols: 5,
            rows: 3,
            cols: 2,
        };
        assert_eq!(p.count(), 9);
        assert_eq!(
            p.block(8),
            Block {
                row0: 6,
                row1: 7,
                col0: 4,
                col1: 5
            }
        );
        for r in 0..7 {
            for c in 0..5 {
                let b = p.block(p.block_of(r, c));
                assert!((b.row0..b.row1).contains(&r) && (b.col0..b.col1).contains(&c));
            }
        }
    }

    #[test]
    fn a_worker_takes_the_free_block_with_most_left_then_keeps_it_until_released() {
        let p = Partition::choose(16, 16, 8, 4 * MIB, 4 * MIB, 64 * MIB);
        let mut blocks: JobBlocks<u32> = JobBlocks::new(p);
        let queued: HashMap<usize, usize> =
            (0..8).map(|i| (i, if i == 5 { 32 } else { 20 })).collect();
        assert_eq!(blocks.take(1, &queued, (&[], &[]), |_| true), Some(5));
        assert_eq!(blocks.owned_by(1), Some(5));
        // The next worker is not given the same block.
        assert_eq!(blocks.take(2, &queued, (&[], &[]), |_| true), Some(0));
        // A worker gone frees its block for the others.
        assert_eq!(blocks.take(3, &queued, (&[], &[]), |o| o != 1), Some(5));
        assert_eq!(blocks.owned_by(1), None);
        // Every block worked: nothing left to take.
        for w in 4..10 {
            assert!(blocks.take(w, &queued, (&[], &[]), |_| true).is_some());
        }
        assert_eq!(blocks.take(10, &queued, (&[], &[]), |_| true), None);
        // A block its owner let go of is offered again while it has tiles left.
        blocks.release(4);
        assert!(blocks.take(10, &queued, (&[], &[]), |_| true).is_some());
    }

    #[test]
    fn a_worker_back_with_its_panels_takes_the_block_they_belong_to() {
        let p = Partition::choose(16, 16, 8, 4 * MIB, 4 * MIB, 64 * MIB);
        let mut blocks: JobBlocks<u32> = JobBlocks::new(p);
        let queued: HashMap<usize, usize> = (0..8).map(|i| (i, 10)).collect();
        // It holds rows 8 and 9 and column 13: block (1, 3) of the 8 × 4 cut.
        let b = blocks.take(7, &queued, (&[8, 9], &[13]), |_| true);
        assert_eq!(b, Some(p.block_of(8, 13)));
    }

    #[test]
    fn no_block_is_taken_when_none_has_tiles_left() {
        let p = Partition::choose(4, 4, 2, MIB, MIB, 64 * MIB);
        let mut blocks: JobBlocks<u32> = JobBlocks::new(p);
        let none: HashMap<usize, usize> = HashMap::new();
        assert_eq!(blocks.take(1, &none, (&[], &[]), |_| true), None);
        let emptied: HashMap<usize, usize> = (0..p.count()).map(|i| (i, 0)).collect();
        assert_eq!(blocks.take(1, &emptied, (&[], &[]), |_| true), None);
    }

    #[test]
    fn a_block_is_helped_only_while_its_owner_is_far_from_done() {
        // An owner holding 4 tasks keeps its last 8 tiles at equal speeds.
        assert!(!may_help(8, 4, 10.0, 10.0));
        assert!(may_help(9, 4, 10.0, 10.0));
        assert!(!may_help(8, 4, 0.0, 0.0), "speeds unknown: as if equal");
        // A slow owner (a phone against a desktop) is helped to the end.
        assert!(may_help(1, 4, 1.0, 10.0));
        // A faster owner is not helped sooner than an equal one.
        assert!(!may_help(8, 4, 50.0, 10.0));
        // An owner holding nothing still keeps a couple.
        assert!(!may_help(2, 0, 10.0, 10.0) && may_help(3, 0, 10.0, 10.0));
    }

    #[test]
    fn a_helper_takes_the_block_furthest_from_done_and_never_its_own() {
        let p = Partition::choose(16, 16, 8, 4 * MIB, 4 * MIB, 64 * MIB);
        let mut blocks: JobBlocks<u32> = JobBlocks::new(p);
        let all: HashMap<usize, usize> = (0..8).map(|i| (i, 32)).collect();
        for w in 0..8 {
            assert_eq!(blocks.take(w, &all, (&[], &[]), |_| true), Some(w as usize));
        }
        let mut queued: HashMap<usize, usize> = (0..8).map(|i| (i, 4)).collect();
        queued.insert(0, 0);
        queued.insert(3, 20);
        let owner = |_| (2, 10.0);
        assert_eq!(blocks.to_help(0, &queued, (&[], &[]), owner, 10.0), Some(3));
        queued.insert(3, 4);
        assert_eq!(
            blocks.to_help(0, &queued, (&[], &[]), owner, 10.0),
            None,
            "all near done"
        );
        queued.insert(0, 30);
        assert_eq!(
            blocks.to_help(0, &queued, (&[], &[]), owner, 10.0),
            None,
            "its own block is not help"
        );
    }
}
