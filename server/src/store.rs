//! Where jobs' matrices live: one folder per job under `DATA_DIR`, holding `a.npy`, `b.npy`
//! and `c.npy`, each a `.npy` file with a header of [`DATA_OFFSET`] bytes followed by the
//! matrix row-major and little-endian. The database holds the index (jobs, tasks and their
//! states) and never the bytes. docs/storage.md gives the reasons; in short:
//!
//! - each byte is written once: a blob in SQLite is written to the WAL and again by the
//!   checkpoint (a 476 MiB job took 634 MB of database plus a 503 MB WAL);
//! - an upload streams to its file, and a panel or a tile is a positioned read or write, so
//!   memory does not grow with the job;
//! - the result is its own download: `c.npy` is served as it lies, with `Range`.
//!
//! On PostgreSQL the database holds the bytes too (`db::chunks`), and this store holds each
//! instance's copy of running jobs' inputs ([`Store::replica`]); [`layout`] says where the
//! bytes of the files fall in the database's pieces.
//!
//! Every function here blocks: callers run them with `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::jobs::{Dtype, Plan, Tile};

/// Bytes before the data in every file: a version 1.0 `.npy` header padded to 128, enough for
/// any shape (the longest header with two 20-digit dimensions is 91 bytes).
pub const DATA_OFFSET: u64 = 128;

/// Prefix of a folder being written: an upload that did not finish leaves one, and it is
/// removed at the next start.
const PARTIAL: &str = ".partial-";

/// A file whose presence says the server that last used the root stopped cleanly, with every
/// result it had written on disk (see [`Store::take_clean_mark`]).
const CLEAN: &str = ".clean";

/// Bytes of partials read at a time when a split job's are summed into C (a constant in
/// tests, so that they can make a row too long for it).
#[cfg(not(test))]
const SUM_BAND_BYTES: usize = 16 << 20;
#[cfg(test)]
const SUM_BAND_BYTES: usize = 64;

/// Appends to `sum` the element-wise sum of `partials` (each as long as the others, of
/// little-endian `dtype` values), added in the order given: a split job's partials are
/// always added in slice order, so its result has the same bits however they arrived.
pub fn add_in_order<'a>(dtype: Dtype, partials: impl Iterator<Item = &'a [u8]>, sum: &mut Vec<u8>) {
    match dtype {
        Dtype::F32 => sum_slices::<4>(partials, sum, |a, b| {
            (f32::from_le_bytes(a) + f32::from_le_bytes(b)).to_le_bytes()
        }),
        Dtype::F64 => sum_slices::<8>(partials, sum, |a, b| {
            (f64::from_le_bytes(a) + f64::from_le_bytes(b)).to_le_bytes()
        }),
    }
}

fn sum_slices<'a, const N: usize>(
    mut slices: impl Iterator<Item = &'a [u8]>,
    sum: &mut Vec<u8>,
    add: impl Fn([u8; N], [u8; N]) -> [u8; N],
) {
    let start = sum.len();
    sum.extend_from_slice(slices.next().unwrap_or_default());
    for slice in slices {
        for (acc, x) in sum[start..].chunks_exact_mut(N).zip(slice.chunks_exact(N)) {
            let total = add(
                acc.try_into().unwrap_or([0; N]),
                x.try_into().unwrap_or([0; N]),
            );
            acc.copy_from_slice(&total);
        }
    }
}

/// The parts of a job: its two inputs and its result, and the partial products of a job
/// whose k is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    A,
    B,
    C,
    /// A split job's partial products side by side, m × (split·n): slice s of a tile lies
    /// at columns `s·n + col0`. Summed into C, in slice order, as the job's last results are
    /// committed ([`Store::finish_result`]), and removed with the inputs.
    Partials,
}

impl Part {
    fn file(self) -> &'static str {
        match self {
            Part::A => "a.npy",
            Part::B => "b.npy",
            Part::C => "c.npy",
            Part::Partials => "partials.npy",
        }
    }
}

/// Where a task's result is written: its file, that file's row length in elements, and the
/// tile's first column there.
fn result_place(plan: &Plan, tile: &Tile) -> (Part, usize, usize) {
    if plan.split == 1 {
        (Part::C, plan.n, tile.col0)
    } else {
        (
            Part::Partials,
            plan.split * plan.n,
            tile.slice * plan.n + tile.col0,
        )
    }
}

/// The job folders under one root.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the root, and removes what interrupted uploads left.
    pub fn open(root: &Path) -> io::Result<Store> {
        fs::create_dir_all(root)?;
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(Store {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A job's folder. Job ids are UUIDs the server made; anything else is refused so that
    /// no id can name a path outside the root.
    fn dir(&self, job_id: &str) -> io::Result<PathBuf> {
        let safe = !job_id.is_empty()
            && job_id.len() <= 64
            && job_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !safe {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a job id: {job_id:?}"),
            ));
        }
        Ok(self.root.join(job_id))
    }

    /// The path of one of a job's files.
    pub fn path(&self, job_id: &str, matrix: Part) -> io::Result<PathBuf> {
        Ok(self.dir(job_id)?.join(matrix.file()))
    }

    /// Starts writing a job's inputs; nothing is visible until [`Upload::finish`], and an
    /// upload dropped before then leaves nothing behind.
    pub fn begin(&self, job_id: &str) -> io::Result<Upload> {
        let dir = self.dir(job_id)?;
        let partial = self.root.join(format!("{PARTIAL}{job_id}"));
        fs::create_dir(&partial)?;
        Ok(Upload {
            partial,
            dir,
            finished: false,
        })
    }

    /// Rows `row0..row0+rows` of a `cols`-wide matrix: one read.
    pub fn read_rows(
        &self,
        job_id: &str,
        matrix: Part,
        dtype: Dtype,
        cols: usize,
        row0: usize,
        rows: usize,
    ) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(job_id, matrix)?)?;
        let row_bytes = cols * dtype.size();
        let mut out = vec![0; rows * row_bytes];
        file.read_exact_at(&mut out, DATA_OFFSET + (row0 * row_bytes) as u64)?;
        Ok(out)
    }

    /// The block of an `n`-wide matrix at rows `row0..row0+rows`, columns `col0..col0+cols`,
    /// row-major: one read per row.
    #[allow(clippy::too_many_arguments)]
    pub fn read_block(
        &self,
        job_id: &str,
        matrix: Part,
        dtype: Dtype,
        n: usize,
        (row0, rows): (usize, usize),
        (col0, cols): (usize, usize),
    ) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(job_id, matrix)?)?;
        let e = dtype.size();
        if cols < n {
            // The rows' pieces are spread over the whole span: have the kernel read the span
            // ahead in one sequential pass, rather than one small read from the disk per row
            // (inputs are written past the page cache, so a job's first panels come from disk).
            let span = (DATA_OFFSET + (row0 * n * e) as u64, (rows * n * e) as u64);
            will_need(&file, span);
        }
        let mut out = vec![0; rows * cols * e];
        for (r, row) in out.chunks_exact_mut(cols * e).enumerate() {
            let at = ((row0 + r) * n + col0) * e;
            file.read_exact_at(row, DATA_OFFSET + at as u64)?;
        }
        Ok(out)
    }

    /// A task's panel of A (its tile's rows over its slice of k: one read when that is all
    /// of k) or of B (its tile's columns over its slice of k).
    pub fn panel(
        &self,
        job_id: &str,
        plan: &Plan,
        tile: &Tile,
        operand: crate::panels::Operand,
    ) -> io::Result<Vec<u8>> {
        use crate::panels::Operand;
        let (rows, slice) = ((tile.row0, tile.rows), (tile.k0, tile.kn));
        match operand {
            Operand::A if plan.split == 1 => {
                self.read_rows(job_id, Part::A, plan.dtype, plan.k, tile.row0, tile.rows)
            }
            Operand::A => self.read_block(job_id, Part::A, plan.dtype, plan.k, rows, slice),
            Operand::B => {
                let cols = (tile.col0, tile.cols);
                self.read_block(job_id, Part::B, plan.dtype, plan.n, slice, cols)
            }
        }
    }

    /// A task's panels of A and B.
    pub fn panels(&self, job_id: &str, plan: &Plan, tile: &Tile) -> io::Result<(Vec<u8>, Vec<u8>)> {
        use crate::panels::Operand;
        let a = self.panel(job_id, plan, tile, Operand::A)?;
        Ok((a, self.panel(job_id, plan, tile, Operand::B)?))
    }

    /// A task's stored result: a tile of C, or of a split job's partials.
    pub fn read_tile(&self, job_id: &str, plan: &Plan, tile: &Tile) -> io::Result<Vec<u8>> {
        let (part, width, col0) = result_place(plan, tile);
        let rows = (tile.row0, tile.rows);
        self.read_block(job_id, part, plan.dtype, width, rows, (col0, tile.cols))
    }

    /// Writes tiles into their jobs' `c.npy`. They are not made durable here: a batch is
    /// committed once written, and its checksums find a tile lost with the page cache after
    /// an unclean stop (see `recovery`). [`Store::sync_result`] makes them durable.
    pub fn write_tiles<'a>(
        &self,
        tiles: impl IntoIterator<Item = (&'a str, &'a Plan, &'a Tile, &'a [u8])>,
    ) -> io::Result<()> {
        let mut open: Vec<(&str, File)> = Vec::new();
        for (job_id, plan, tile, bytes) in tiles {
            let (part, width, col0) = result_place(plan, tile);
            let e = plan.dtype.size();
            if bytes.len() != tile.rows * tile.cols * e {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a tile's bytes do not match its shape",
                ));
            }
            let file = match open.iter().position(|(j, _)| *j == job_id) {
                Some(i) => &open[i].1,
                None => {
                    let path = self.path(job_id, part)?;
                    open.push((job_id, OpenOptions::new().write(true).open(path)?));
                    &open[open.len() - 1].1
                }
            };
            for (r, row) in bytes.chunks_exact(tile.cols * e).enumerate() {
                let at = ((tile.row0 + r) * width + col0) * e;
                file.write_all_at(row, DATA_OFFSET + at as u64)?;
            }
        }
        Ok(())
    }

    /// Completes a job's result once every task's is written, before the job is marked
    /// done: a split job's partials are summed into C first, then C is made durable.
    pub fn finish_result(&self, job_id: &str, plan: &Plan) -> io::Result<()> {
        if plan.split > 1 {
            self.sum_partials(job_id, plan)?;
        }
        // The partials are removed with the inputs: nothing to sync of them.
        self.sync_part(job_id, Part::C)
    }

    /// Sums a split job's partials into C, a band of rows at a time (at most a tile's
    /// height and [`SUM_BAND_BYTES`] of partials), each element's partials added in slice
    /// order: the same bits whatever order the partials arrived in.
    fn sum_partials(&self, job_id: &str, plan: &Plan) -> io::Result<()> {
        let partials = File::open(self.path(job_id, Part::Partials)?)?;
        let c = OpenOptions::new()
            .write(true)
            .open(self.path(job_id, Part::C)?)?;
        let (e, n, s) = (plan.dtype.size(), plan.n, plan.split);
        // Columns summed at a time: a whole row of every slice's partials when that fits the
        // budget (then whole bands of rows, one read each), else a piece of a row.
        let width = (SUM_BAND_BYTES / (s * e)).clamp(1, n);
        let band = match width {
            w if w == n => (SUM_BAND_BYTES / (s * n * e)).clamp(1, plan.tile),
            _ => 1,
        };
        let mut read = Vec::new();
        let mut sum = Vec::new();
        for row0 in (0..plan.m).step_by(band) {
            let rows = band.min(plan.m - row0);
            for col0 in (0..n).step_by(width) {
                let cols = width.min(n - col0);
                sum.clear();
                if cols == n {
                    read.resize(rows * s * n * e, 0);
                    partials.read_exact_at(&mut read, DATA_OFFSET + (row0 * s * n * e) as u64)?;
                    for row in read.chunks_exact(s * n * e) {
                        add_in_order(plan.dtype, row.chunks_exact(n * e), &mut sum);
                    }
                } else {
                    // One row (`band` is 1 here): each slice's piece of it, read apart.
                    read.resize(s * cols * e, 0);
                    for (slice, piece) in read.chunks_exact_mut(cols * e).enumerate() {
                        let at = (row0 * s * n + slice * n + col0) * e;
                        partials.read_exact_at(piece, DATA_OFFSET + at as u64)?;
                    }
                    add_in_order(plan.dtype, read.chunks_exact(cols * e), &mut sum);
                }
                c.write_all_at(&sum, DATA_OFFSET + ((row0 * n + col0) * e) as u64)?;
            }
        }
        Ok(())
    }

    /// Makes a job's result durable: before the job is marked done (its inputs are removed
    /// then, so a lost tile could not be computed again), and at a clean stop.
    pub fn sync_result(&self, job_id: &str) -> io::Result<()> {
        self.sync_part(job_id, Part::C)?;
        self.sync_part(job_id, Part::Partials)
    }

    fn sync_part(&self, job_id: &str, part: Part) -> io::Result<()> {
        match File::open(self.path(job_id, part)?) {
            Ok(file) => file.sync_data(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Has the kernel start writing a job's result out, without waiting (see
    /// `commit::writeback_due`), so that the sync that ends the job has little left.
    pub fn start_result_writeback(&self, job_id: &str) -> io::Result<()> {
        for part in [Part::C, Part::Partials] {
            match File::open(self.path(job_id, part)?) {
                Ok(file) => start_writeback(&file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the last server to use this root stopped cleanly; removes the mark, so that
    /// a server that dies from now on leaves none.
    pub fn take_clean_mark(&self) -> io::Result<bool> {
        match fs::remove_file(self.root.join(CLEAN)) {
            Ok(()) => {
                File::open(&self.root)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// At a clean stop, once nothing can write any more: makes every result durable, then
    /// leaves the mark [`Store::take_clean_mark`] finds.
    pub fn mark_clean(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type()?.is_dir() && !name.starts_with('.') {
                self.sync_result(&name)?;
            }
        }
        File::create(self.root.join(CLEAN))?.sync_all()?;
        File::open(&self.root)?.sync_all()
    }

    /// Removes a job's inputs (once it is done its result no longer needs them).
    pub fn remove_inputs(&self, job_id: &str) -> io::Result<()> {
        for matrix in [Part::A, Part::B, Part::Partials] {
            match fs::remove_file(self.path(job_id, matrix)?) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes a job's folder and everything in it.
    pub fn remove(&self, job_id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(job_id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Bytes a job's files take on disk (allocated blocks: a result not yet computed takes
    /// none).
    pub fn disk_bytes(&self, job_id: &str) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        for matrix in [Part::A, Part::B, Part::C, Part::Partials] {
            match fs::metadata(self.path(job_id, matrix)?) {
                Ok(meta) => total += meta.blocks() * 512,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Copies every job's folder into `dest` (a new folder), for a backup taken after the
    /// database's: a tile the database copy calls done was written before it was marked so,
    /// and is in the copy. Inputs never change once written, so they are hard-linked where
    /// the file system allows. Returns the jobs copied.
    pub fn copy_to(&self, dest: &Path) -> io::Result<usize> {
        fs::create_dir(dest)?;
        let mut jobs = 0;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(PARTIAL) || !entry.file_type()?.is_dir() {
                continue;
            }
            let to = dest.join(&name);
            fs::create_dir(&to)?;
            for part in [Part::A, Part::B, Part::C, Part::Partials] {
                let from = entry.path().join(part.file());
                if !from.exists() {
                    continue; // a done job's inputs are gone, and a whole-k job has no partials
                }
                let target = to.join(part.file());
                // The inputs never change: linked. Results are written as tasks finish: copied.
                let inputs = matches!(part, Part::A | Part::B);
                let linked = inputs && fs::hard_link(&from, &target).is_ok();
                if !linked {
                    fs::copy(&from, &target)?;
                }
            }
            jobs += 1;
        }
        File::open(dest)?.sync_all()?;
        Ok(jobs)
    }

    /// Whether this store holds a job's input `part`.
    pub fn has(&self, job_id: &str, part: Part) -> io::Result<bool> {
        match fs::metadata(self.path(job_id, part)?) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts a copy of a job's input `part` fetched from elsewhere (on PostgreSQL, from the
    /// database: see `grid::inputs`). It is written aside and takes the input's name only
    /// once complete, so a reader finds the whole file or none. The caller makes sure only
    /// one copy of a part is written at a time.
    pub fn replica(&self, job_id: &str, part: Part) -> io::Result<Replica> {
        let dir = self.dir(job_id)?;
        fs::create_dir_all(&dir)?;
        let path = dir.join(part.file());
        let aside = dir.join(format!(".{}.fetching", part.file()));
        let file = File::create(&aside)?;
        Ok(Replica {
            file,
            aside,
            path,
            written: 0,
        })
    }

    /// The jobs that have a folder here (inputs being written aside: not yet).
    pub fn jobs(&self) -> io::Result<Vec<String>> {
        let mut jobs = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type()?.is_dir() {
                jobs.push(name);
            }
        }
        Ok(jobs)
    }

    /// Bytes free for the server on the root's file system.
    pub fn available_bytes(&self) -> io::Result<u64> {
        fs4::available_space(&self.root)
    }
}

/// A job's inputs being written (see [`Store::begin`]).
#[derive(Debug)]
pub struct Upload {
    partial: PathBuf,
    dir: PathBuf,
    finished: bool,
}

impl Upload {
    /// Starts one input's file; its data follows through [`MatrixWriter::write`].
    pub fn matrix(
        &self,
        matrix: Part,
        dtype: Dtype,
        rows: usize,
        cols: usize,
        big_endian: bool,
    ) -> io::Result<MatrixWriter> {
        let path = self.partial.join(matrix.file());
        let (file, direct) = open_direct(&path)?;
        // The whole file's blocks up front: the disk's space is taken (or refused) at once,
        // and the file system allocates once instead of with every write (on ext4 the
        // buffered writes of an upload ran several times faster so).
        let expected = (rows * cols * dtype.size()) as u64;
        fs4::fs_std::FileExt::allocate(&file, DATA_OFFSET + expected)?;
        let mut block = Block::new();
        block.put(&header(dtype, rows, cols));
        Ok(MatrixWriter {
            file,
            direct,
            block,
            at: 0,
            dtype,
            expected,
            written: 0,
            swap: big_endian,
            carry: Vec::new(),
            copy: None,
        })
    }

    /// Writes one input held whole in memory (little-endian), checked as a streamed one is.
    pub fn write_matrix(
        &self,
        part: Part,
        dtype: Dtype,
        (rows, cols): (usize, usize),
        data: &[u8],
    ) -> Result<(), WriteError> {
        let mut w = self.matrix(part, dtype, rows, cols, false)?;
        w.write(data)?;
        w.finish()
    }

    /// Makes the inputs durable, and the job's folder visible with them and an empty result
    /// of `plan`'s shape (sparse: it takes no space until tiles arrive).
    pub fn finish(mut self, plan: &Plan) -> io::Result<()> {
        for part in [Part::A, Part::B] {
            File::open(self.partial.join(part.file()))?.sync_data()?;
        }
        let mut c = File::create(self.partial.join(Part::C.file()))?;
        c.write_all(&header(plan.dtype, plan.m, plan.n))?;
        c.set_len(DATA_OFFSET + (plan.m * plan.n * plan.dtype.size()) as u64)?;
        c.sync_all()?;
        if plan.split > 1 {
            let width = plan.split * plan.n;
            let mut p = File::create(self.partial.join(Part::Partials.file()))?;
            p.write_all(&header(plan.dtype, plan.m, width))?;
            p.set_len(DATA_OFFSET + (plan.m * width * plan.dtype.size()) as u64)?;
            p.sync_all()?;
        }
        fs::rename(&self.partial, &self.dir)?;
        if let Some(root) = self.dir.parent() {
            File::open(root)?.sync_all()?;
        }
        self.finished = true;
        Ok(())
    }
}

impl Upload {
    /// [`Upload::finish`] without the empty result: on PostgreSQL, where results live in the
    /// database and the folder is this instance's copy of the inputs (see `db::chunks`).
    pub fn finish_inputs(mut self) -> io::Result<()> {
        for part in [Part::A, Part::B] {
            File::open(self.partial.join(part.file()))?.sync_data()?;
        }
        fs::rename(&self.partial, &self.dir)?;
        if let Some(root) = self.dir.parent() {
            File::open(root)?.sync_all()?;
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

/// A job's input being copied in (see [`Store::replica`]); dropped unfinished, it leaves a
/// file aside that the next copy overwrites and the job's end removes.
#[derive(Debug)]
pub struct Replica {
    file: File,
    aside: PathBuf,
    path: PathBuf,
    written: u64,
}

impl Replica {
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Checks that `len` bytes came, makes them durable (a machine crash must not leave a
    /// torn file under the input's name), and gives the file its name.
    pub fn finish(self, len: u64) -> io::Result<()> {
        if self.written != len {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} of {len} bytes of the input came", self.written),
            ));
        }
        self.file.sync_data()?;
        fs::rename(&self.aside, &self.path)
    }
}

/// Where the bytes of a job's files fall, for the stores that keep them elsewhere than in
/// one file (on PostgreSQL: the inputs cut into chunks, the result in tiles; see
/// `db::chunks`). Pure arithmetic, tested below.
pub mod layout {
    use super::{Part, DATA_OFFSET};
    use crate::jobs::Plan;

    /// Bytes of a job's `.npy` file for `part`, header included.
    pub fn file_len(plan: &Plan, part: Part) -> u64 {
        let (rows, cols) = match part {
            Part::A => (plan.m, plan.k),
            Part::B => (plan.k, plan.n),
            Part::C => (plan.m, plan.n),
            Part::Partials => (plan.m, plan.split * plan.n),
        };
        DATA_OFFSET + (rows * cols * plan.dtype.size()) as u64
    }

    /// Chunks of `chunk` bytes that a file of `len` bytes is cut into (the last may be short).
    pub fn chunk_count(len: u64, chunk: usize) -> u64 {
        len.div_ceil(chunk as u64)
    }

    /// A stretch of the result's `.npy` file that one read produces.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Segment {
        /// The header, bytes `0..DATA_OFFSET`.
        Header,
        /// Rows `row0..row0+rows` of tile row `tile_row` (counted within its band), every
        /// tile of that row contributing its slice.
        Rows {
            tile_row: usize,
            row0: usize,
            rows: usize,
        },
    }

    /// The result cut into pieces of at most about `piece_bytes` (a whole row at least), each
    /// within one band of tiles, so that a piece is one read of one slice of each tile in a
    /// tile row.
    #[derive(Debug, Clone, Copy)]
    pub struct Rows {
        plan: Plan,
        /// Rows per piece: at most a band's.
        rows: usize,
    }

    impl Rows {
        pub fn new(plan: &Plan, piece_bytes: usize) -> Rows {
            let row_bytes = (plan.n * plan.dtype.size()).max(1);
            Rows {
                plan: *plan,
                rows: (piece_bytes / row_bytes).clamp(1, plan.tile.max(1)),
            }
        }

        /// The piece holding byte `at` of the file, with where it starts and ends.
        pub fn locate(&self, at: u64) -> (Segment, u64, u64) {
            if at < DATA_OFFSET {
                return (Segment::Header, 0, DATA_OFFSET);
            }
            let p = &self.plan;
            let row_bytes = (p.n * p.dtype.size()) as u64;
            let row = ((at - DATA_OFFSET) / row_bytes) as usize;
            let tile_row = row / p.tile;
            let band_rows = p.tile.min(p.m - tile_row * p.tile);
            let row0 = (row % p.tile) / self.rows * self.rows;
            let rows = self.rows.min(band_rows - row0);
            let start = DATA_OFFSET + ((tile_row * p.tile + row0) as u64) * row_bytes;
            let segment = Segment::Rows {
                tile_row,
                row0,
                rows,
            };
            (segment, start, start + rows as u64 * row_bytes)
        }

        /// The widths in bytes of the tiles of a tile row, in column order.
        pub fn widths(&self) -> Vec<usize> {
            let p = &self.plan;
            (0..p.n.div_ceil(p.tile))
                .map(|col| p.tile.min(p.n - col * p.tile) * p.dtype.size())
                .collect()
        }
    }

    /// `rows` rows, row-major, from each tile's slice of those rows (in column order, `widths`
    /// bytes to a row); `None` if a slice is missing or of the wrong length.
    pub fn assemble(rows: usize, widths: &[usize], slices: &[&[u8]]) -> Option<Vec<u8>> {
        if slices.len() != widths.len()
            || slices.iter().zip(widths).any(|(s, w)| s.len() != rows * w)
        {
            return None;
        }
        let mut out = Vec::with_capacity(rows * widths.iter().sum::<usize>());
        for r in 0..rows {
            for (slice, w) in slices.iter().zip(widths) {
                out.extend_from_slice(&slice[r * w..(r + 1) * w]);
            }
        }
        Some(out)
    }
}

/// One input's data as it arrives, in chunks of any size. It is gathered into blocks of
/// [`BLOCK_BYTES`] (checked, and swapped if big-endian, as it is copied in), and each full
/// block is written with direct I/O where the file system allows it: the page cache is
/// skipped, and with it the kernel's copy into fresh pages, which took most of the server's
/// time in an upload (docs/benchmarks.md), and gigabytes of inputs no longer push everything
/// else out of the cache.
#[derive(Debug)]
pub struct MatrixWriter {
    file: File,
    /// Whether `file` takes direct I/O (`O_DIRECT`).
    direct: bool,
    /// The block being filled; it starts with the header.
    block: Block,
    /// Where in the file the block goes.
    at: u64,
    dtype: Dtype,
    expected: u64,
    written: u64,
    /// Big-endian data is swapped as it is written.
    swap: bool,
    /// The start of an element cut by the end of the last chunk.
    carry: Vec<u8>,
    /// The data as written (checked, little-endian), when asked for (see
    /// [`MatrixWriter::keep_copy`]).
    copy: Option<Vec<u8>>,
}

/// Why data could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("has more data than its shape holds ({0} bytes)")]
    TooLong(u64),
    #[error("has {got} data bytes, its shape needs {expected}")]
    TooShort { got: u64, expected: u64 },
    #[error("holds a value that is not finite (NaN or infinity) at element {0}")]
    NotFinite(u64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl MatrixWriter {
    /// Keeps a copy of the data's first `limit` bytes (all of it, when it is no longer) in
    /// memory as well, for the caller to take at the end ([`MatrixWriter::take_copy`]);
    /// allocated here, so the caller decides on its size before any data comes.
    pub fn keep_copy(&mut self, limit: usize) {
        let copy = Vec::with_capacity(limit.min(self.expected as usize));
        populate_ahead(&copy);
        self.copy = Some(copy);
    }

    /// The copy [`MatrixWriter::keep_copy`] asked for, once all the data came.
    pub fn take_copy(&mut self) -> Option<Vec<u8>> {
        let whole = self.written == self.expected && self.carry.is_empty();
        self.copy.take().filter(|_| whole)
    }

    /// Appends data, checking that it fits the shape and that every value is finite.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        let e = self.dtype.size();
        if self.written + (self.carry.len() + chunk.len()) as u64 > self.expected {
            return Err(WriteError::TooLong(self.expected));
        }
        let mut chunk = chunk;
        if !self.carry.is_empty() {
            let need = e - self.carry.len();
            let take = need.min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.carry.len() < e {
                return Ok(());
            }
            let element = std::mem::take(&mut self.carry);
            self.put(&element)?;
        }
        let whole = chunk.len() - chunk.len() % e;
        self.put(&chunk[..whole])?;
        self.carry.extend_from_slice(&chunk[whole..]);
        Ok(())
    }

    /// Copies whole elements into the block, checking each; writes every block it fills.
    /// Elements never straddle two blocks: the header and a block are multiples of 8 bytes.
    fn put(&mut self, mut data: &[u8]) -> Result<(), WriteError> {
        let e = self.dtype.size();
        while !data.is_empty() {
            let take = self.block.room().min(data.len());
            let first = self.written / e as u64;
            let copied = self.block.put(&data[..take]);
            if self.swap {
                for element in copied.chunks_exact_mut(e) {
                    element.reverse();
                }
            }
            if let Some(i) = first_not_finite(self.dtype, copied) {
                return Err(WriteError::NotFinite(first + i as u64));
            }
            if let Some(copy) = self.copy.as_mut() {
                let room = copy.capacity() - copy.len();
                copy.extend_from_slice(&copied[..room.min(copied.len())]);
            }
            self.written += take as u64;
            data = &data[take..];
            if self.block.room() == 0 {
                self.write_block()?;
            }
        }
        Ok(())
    }

    /// Writes the block where it goes, and starts the next one.
    fn write_block(&mut self) -> io::Result<()> {
        let filled = self.block.filled();
        if self.direct {
            match self.file.write_all_at(filled, self.at) {
                // A file system that took the flag at open but not the write.
                Err(e) if e.raw_os_error() == Some(EINVAL) => {
                    buffered(&self.file)?;
                    self.direct = false;
                }
                other => other?,
            }
        }
        if !self.direct {
            self.file.write_all_at(filled, self.at)?;
            if self.at / WRITEBACK_EVERY != (self.at + filled.len() as u64) / WRITEBACK_EVERY {
                start_writeback(&self.file);
            }
        }
        self.at += filled.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Checks that all the data came, and writes what is left. The last block is rarely a
    /// whole number of sectors, so it goes through the page cache; [`Upload::finish`] syncs.
    pub fn finish(mut self) -> Result<(), WriteError> {
        if self.written != self.expected || !self.carry.is_empty() {
            return Err(WriteError::TooShort {
                got: self.written + self.carry.len() as u64,
                expected: self.expected,
            });
        }
        if self.direct {
            buffered(&self.file)?;
            self.direct = false;
        }
        self.write_block()?;
        start_writeback(&self.file);
        Ok(())
    }
}

/// The index of the first element that is not finite.
fn first_not_finite(dtype: Dtype, data: &[u8]) -> Option<usize> {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .position(|x| !f32::from_le_bytes([x[0], x[1], x[2], x[3]]).is_finite()),
        Dtype::F64 => data
            .chunks_exact(8)
            .position(|x| !f64::from_le_bytes(x.try_into().unwrap_or([0; 8])).is_finite()),
    }
}

/// Bytes an upload gathers before it writes them: one write per block.
const BLOCK_BYTES: usize = 1 << 20;

/// What direct I/O needs buffers, lengths and offsets aligned to (the largest logical sector
/// size in use, and the page size).
const DIRECT_ALIGN: usize = 4096;

/// A buffer of [`BLOCK_BYTES`] aligned for direct I/O, carved out of a slightly larger
/// vector so that no unsafe allocation is needed.
#[derive(Debug)]
struct Block {
    memory: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        let memory = vec![0; BLOCK_BYTES + DIRECT_ALIGN];
        let start = memory.as_ptr().align_offset(DIRECT_ALIGN);
        Block {
            memory,
            start,
            len: 0,
        }
    }

    fn room(&self) -> usize {
        BLOCK_BYTES - self.len
    }

    /// Appends `data` (at most [`Block::room`] bytes), and returns it as copied.
    fn put(&mut self, data: &[u8]) -> &mut [u8] {
        let from = self.start + self.len;
        self.len += data.len();
        let copied = &mut self.memory[from..self.start + self.len];
        copied.copy_from_slice(data);
        copied
    }

    fn filled(&self) -> &[u8] {
        &self.memory[self.start..self.start + self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = 22;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = -1;

/// Creates a file for direct I/O, or for buffered I/O where the file system refuses it
/// (tmpfs); says which.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn open_direct(path: &Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    match options.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((options.open(path)?, false)),
        Err(e) => Err(e),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn open_direct(path: &Path) -> io::Result<(File, bool)> {
    Ok((File::create(path)?, false))
}

/// Asks the kernel to read `(offset, len)` of a file into the page cache, without waiting.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn will_need(file: &File, (offset, len): (u64, u64)) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the whole call; the advice only starts reading.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn will_need(_: &File, _: (u64, u64)) {}

/// Has the kernel fault a fresh buffer's pages in on another thread, ahead of the writer
/// that fills it: filling 16 MiB of fresh memory took 13–17 ms, most of it page faults, and
/// 9 ms with the pages populated alongside (a test program writing 1 MiB every 0.3 ms, as an
/// upload does). The advice never changes the memory's contents, so it may run while the
/// buffer is written, or after it is freed (it then fails, or populates whatever is there).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn populate_ahead(buffer: &Vec<u8>) {
    const PAGE: usize = 4096;
    let start = buffer.as_ptr() as usize;
    let aligned = start.next_multiple_of(PAGE);
    let end = (start + buffer.capacity()) & !(PAGE - 1);
    if end <= aligned + PAGE {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("populate".into())
        .spawn(move || {
            // SAFETY: a range of page-aligned addresses; MADV_POPULATE_WRITE only faults
            // pages in (or fails, on a range no longer mapped) and leaves contents alone.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_POPULATE_WRITE,
                );
            }
        });
    // Without the thread the writer faults the pages in itself, as before.
    drop(spawned);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn populate_ahead(_: &Vec<u8>) {}

/// Turns direct I/O off for the rest of a file's writes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn buffered(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: the descriptor is open for both calls; only the status flags change.
    let done = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) == 0
    };
    if done {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn buffered(_: &File) -> io::Result<()> {
    Ok(())
}

/// Bytes of an input written between two calls to [`start_writeback`].
const WRITEBACK_EVERY: u64 = 64 << 20;

/// Asks the kernel to start writing a file's dirty pages out, without waiting: an input
/// written while the next one arrives is mostly on disk by the time the upload syncs it
/// (with 24 GiB of RAM the kernel's own writeback would start only past gigabytes).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the whole call; the flags only start writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_writeback(_: &File) {}

/// A version 1.0 `.npy` header of exactly [`DATA_OFFSET`] bytes.
pub fn header(dtype: Dtype, rows: usize, cols: usize) -> Vec<u8> {
    let descr = match dtype {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
    };
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let fixed = 6 + 2 + 2; // magic, version, header length
    dict.push_str(&" ".repeat(DATA_OFFSET as usize - fixed - dict.len() - 1));
    dict.push('\n');
    let mut out = Vec::with_capacity(DATA_OFFSET as usize);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (Store, PathBuf) {
        let root = std::env::temp_dir().join(format!("brain-store-{}", uuid::Uuid::new_v4()));
        (Store::open(&root).expect("a store"), root)
    }

    fn f32s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values.into_iter().flat_map(f32::to_le_bytes).collect()
    }

    fn plan(m: usize, k: usize, n: usize, tile: usize) -> Plan {
        Plan {
            dtype: Dtype::F32,
            m,
            k,
            n,
            tile,
            split: 1,
        }
    }

    /// Stores a 3×2·2×3 job, A = 0..6 and B = 10..16, in chunks of `chunk` bytes.
    fn stored(store: &Store, chunk: usize) -> Plan {
        let plan = plan(3, 2, 3, 2);
        let upload = store.begin("job").expect("begun");
        for (matrix, rows, cols, first) in [(Part::A, 3, 2, 0), (Part::B, 2, 3, 10)] {
            let mut w = upload
                .matrix(matrix, Dtype::F32, rows, cols, false)
                .expect("file");
            let data = f32s((first..first + 6).map(|v| v as f32));
            for piece in data.chunks(chunk) {
                w.write(piece).expect("fits");
            }
            w.finish().expect("whole");
        }
        upload.finish(&plan).expect("finished");
        plan
    }

    /// The result of `plan` as the database store sends it: every byte located in its piece,
    /// each piece assembled from the tiles' slices, equals the file the folder store writes.
    #[test]
    fn a_split_jobs_partials_are_summed_into_c_in_slice_order_whatever_their_arrival() {
        // 3×3·3×n in tiles of 2 and 3 slices of k = 3. With n = 3 a row of the three slices'
        // partials fits the sum's budget (64 bytes in tests) and is read in bands of rows;
        // with n = 8 it does not, and each row is summed in pieces.
        for n in [3, 8] {
            let (store, root) = temp();
            let plan = Plan {
                split: 3,
                ..plan(3, 3, n, 2)
            };
            let upload = store.begin("job").expect("begun");
            for (part, cols) in [(Part::A, 3), (Part::B, n)] {
                let data = f32s((0..3 * cols).map(|v| v as f32));
                upload
                    .write_matrix(part, Dtype::F32, (3, cols), &data)
                    .expect("written");
            }
            upload.finish(&plan).expect("finished");
            // Slice 0 gives 1e8, slice 1 gives 1 and slice 2 −1e8 to every element: in slice
            // order (1e8 + 1) − 1e8 = 0 in f32; in the order written below it would be 1.
            let value = [1e8f32, 1.0, -1e8];
            let mut tasks: Vec<Tile> = plan.tiles().collect();
            tasks.sort_by_key(|t| std::cmp::Reverse(t.slice));
            let bytes: Vec<Vec<u8>> = tasks
                .iter()
                .map(|t| f32s(std::iter::repeat_n(value[t.slice], t.rows * t.cols)))
                .collect();
            let tiles = tasks.iter().zip(&bytes);
            store
                .write_tiles(tiles.clone().map(|(t, b)| ("job", &plan, t, &b[..])))
                .expect("written");
            for (t, b) in tiles {
                assert_eq!(&store.read_tile("job", &plan, t).expect("read"), b, "{t:?}");
            }
            store.finish_result("job", &plan).expect("summed");
            let c = fs::read(store.path("job", Part::C).expect("path")).expect("c");
            assert_eq!(&c[..DATA_OFFSET as usize], &header(Dtype::F32, 3, n)[..]);
            let zeros = f32s(std::iter::repeat_n(0.0, 3 * n));
            assert_eq!(&c[DATA_OFFSET as usize..], &zeros[..], "n = {n}");
            // The partials go with the inputs.
            store.remove_inputs("job").expect("removed");
            assert!(!store.path("job", Part::Partials).expect("path").exists());
            fs::remove_dir_all(root).expect("cleanup");
        }
    }

    #[test]
    fn pieces_of_rows_assembled_from_tiles_make_the_result_file() {
        use layout::{assemble, Rows, Segment};
        for (m, n, tile, piece) in [
            (5, 7, 2, 1),
            (37, 29, 8, 100),
            (37, 29, 8, 4096),
            (4, 4, 4, 1 << 20),
            (9, 1, 3, 8),
        ] {
            let plan = plan(m, 3, n, tile);
            let c: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
            let mut file = header(Dtype::F32, m, n);
            file.extend(f32s(c.iter().copied()));
            assert_eq!(file.len() as u64, layout::file_len(&plan, Part::C));
            // Each tile's bytes, as a worker returns them.
            let tile_bytes =
                |tr: usize, tc: usize| {
                    let t = plan.tile(tr, tc);
                    f32s((t.row0..t.row0 + t.rows).flat_map(|r| {
                        (t.col0..t.col0 + t.cols).map(move |col| (r * n + col) as f32)
                    }))
                };
            let rows = Rows::new(&plan, piece);
            let mut at = 0u64;
            let mut rebuilt = Vec::new();
            while at < file.len() as u64 {
                let (segment, start, end) = rows.locate(at);
                assert_eq!(start, at, "pieces follow each other");
                let bytes = match segment {
                    Segment::Header => header(Dtype::F32, m, n),
                    Segment::Rows {
                        tile_row,
                        row0,
                        rows: count,
                    } => {
                        let widths = rows.widths();
                        let tiles: Vec<Vec<u8>> = (0..widths.len())
                            .map(|tc| tile_bytes(tile_row, tc))
                            .collect();
                        let slices: Vec<&[u8]> = tiles
                            .iter()
                            .zip(&widths)
                            .map(|(t, w)| &t[row0 * w..(row0 + count) * w])
                            .collect();
                        assert!(
                            count * n * 4 <= piece.max(n * 4),
                            "a piece keeps to its size"
                        );
                        assemble(count, &widths, &slices).expect("whole")
                    }
                };
                assert_eq!(bytes.len() as u64, end - start);
                // A byte in the middle of the piece locates the same piece.
                assert_eq!(rows.locate(start + (end - start) / 2).1, start);
                rebuilt.extend(bytes);
                at = end;
            }
            assert_eq!(
                rebuilt, file,
                "{m}×{n} in tiles of {tile}, pieces of {piece} bytes"
            );
        }
        assert_eq!(
            layout::assemble(1, &[4, 4], &[&[0; 4]]),
            None,
            "a tile missing"
        );
        assert_eq!(layout::assemble(1, &[4], &[&[0; 3]]), None, "a tile short");
    }

    #[test]
    fn inputs_are_cut_into_whole_chunks_with_a_short_last_one() {
        let plan = plan(3, 2, 5, 2);
        assert_eq!(layout::file_len(&plan, Part::A), DATA_OFFSET + 24);
        assert_eq!(layout::file_len(&plan, Part::B), DATA_OFFSET + 40);
        assert_eq!(layout::chunk_count(152, 152), 1);
        assert_eq!(layout::chunk_count(153, 152), 2);
        assert_eq!(layout::chunk_count(1, 1 << 20), 1);
        assert_eq!(layout::chunk_count(3 << 20, 1 << 20), 3);
    }

    #[test]
    fn a_replica_takes_its_name_only_when_whole() {
        let (store, root) = temp();
        let mut copy = store.replica("job", Part::A).expect("begun");
        copy.write(b"abc").expect("written");
        assert!(
            !store.has("job", Part::A).expect("looked"),
            "not before it is whole"
        );
        let short = copy.finish(4).expect_err("a byte is missing");
        assert_eq!(short.kind(), io::ErrorKind::NotFound);
        assert!(!store.has("job", Part::A).expect("looked"));
        let mut copy = store.replica("job", Part::A).expect("again");
        copy.write(b"abcd").expect("written");
        copy.finish(4).expect("whole");
        assert!(store.has("job", Part::A).expect("looked"));
        assert_eq!(
            std::fs::read(store.path("job", Part::A).expect("path")).expect("read"),
            b"abcd"
        );
        assert_eq!(store.jobs().expect("listed"), vec!["job".to_owned()]);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn headers_are_valid_npy_of_fixed_length() {
        let longest = header(Dtype::F64, usize::MAX, usize::MAX);
        assert_eq!(longest.len() as u64, DATA_OFFSET);
        let mut file = header(Dtype::F32, 1, 1);
        file.extend_from_slice(&1f32.to_le_bytes());
        let parsed = crate::npy::parse("c", &bytes::Bytes::from(file), 1);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn panels_and_tiles_read_back_what_was_written_whatever_the_chunks() {
        for chunk in [1, 3, 5, 24] {
            let (store, root) = temp();
            let plan = stored(&store, chunk);
            let tile = plan.tile(1, 1); // row 2, column 2
            let (a, b) = store.panels("job", &plan, &tile).expect("panels");
            assert_eq!(a, f32s([4.0, 5.0]), "chunks of {chunk}");
            assert_eq!(b, f32s([12.0, 15.0]));
            let tile = plan.tile(0, 0);
            store
                .write_tiles([("job", &plan, &tile, &f32s([1.0, 2.0, 3.0, 4.0])[..])])
                .expect("written");
            assert_eq!(
                store.read_tile("job", &plan, &tile).expect("read"),
                f32s([1.0, 2.0, 3.0, 4.0])
            );
            let c = std::fs::read(store.path("job", Part::C).expect("path")).expect("c");
            let c = crate::npy::parse("c", &bytes::Bytes::from(c), 9).expect("a valid .npy");
            assert_eq!(
                &c.data[..],
                &f32s([1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])[..]
            );
            let _ = std::fs::remove_dir_all(root);
        }
    }

    #[test]
    fn an_upload_that_does_not_finish_leaves_nothing() {
        let (store, root) = temp();
        {
            let upload = store.begin("job").expect("begun");
            let mut w = upload
                .matrix(Part::A, Dtype::F32, 1, 2, false)
                .expect("file");
            w.write(&f32s([1.0])).expect("fits");
            assert_eq!(std::fs::read_dir(&root).expect("root").count(), 1);
        }
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
        // A crash leaves a partial folder; the next start removes it.
        std::fs::create_dir(root.join(".partial-x")).expect("made");
        let store = Store::open(&root).expect("reopened");
        assert_eq!(std::fs::read_dir(store.root()).expect("root").count(), 0);
        let _ = std::fs::remove_dir_all(root);
    }

    /// Several blocks, in chunks that fall anywhere, both byte orders, whether the file
    /// system takes direct I/O (ext4, where the checkout is) or not (tmpfs, /dev/shm).
    #[test]
    fn inputs_larger_than_a_block_read_back_whole_with_direct_io_or_without() {
        let rows = 3 * BLOCK_BYTES / 8 / 100 + 1; // f64, 100 wide: a little over 3 blocks
        let values: Vec<f64> = (0..rows * 100).map(|i| i as f64 * 0.5 - 7.0).collect();
        let little: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let big: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let shm =
            std::path::Path::new("/dev/shm").join(format!("brain-store-{}", uuid::Uuid::new_v4()));
        // Beside the build, on the checkout's file system (the temporary folder may be tmpfs).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("brain-store-{}", uuid::Uuid::new_v4()));
        let on_disk = Store::open(&root).expect("a store");
        for (store, direct) in [(on_disk, true), (Store::open(&shm).expect("tmpfs"), false)] {
            let upload = store.begin("job").expect("begun");
            for (part, data, swap) in [(Part::A, &little, false), (Part::B, &big, true)] {
                let mut w = upload
                    .matrix(part, Dtype::F64, rows, 100, swap)
                    .expect("file");
                assert!(!direct || w.direct, "ext4 takes direct I/O");
                for chunk in data.chunks(333_333) {
                    w.write(chunk).expect("fits");
                }
                w.finish().expect("whole");
            }
            upload.finish(&plan(rows, 100, 100, 100)).expect("finished");
            for part in [Part::A, Part::B] {
                let back = store
                    .read_rows("job", part, Dtype::F64, 100, 0, rows)
                    .expect("read");
                assert!(back == little, "{part:?} reads back as written");
            }
            let header = std::fs::read(store.path("job", Part::A).expect("path")).expect("a");
            assert_eq!(
                header[..DATA_OFFSET as usize],
                self::header(Dtype::F64, rows, 100)
            );
        }
        let _ = std::fs::remove_dir_all(root);
        let _ = std::fs::remove_dir_all(shm);
    }

    #[test]
    fn data_must_fit_its_shape_be_finite_and_big_endian_is_swapped() {
        let (store, root) = temp();
        let upload = store.begin("job").expect("begun");
        let mut w = upload
            .matrix(Part::A, Dtype::F32, 1, 2, false)
            .expect("file");
        assert!(matches!(w.write(&[0; 12]), Err(WriteError::TooLong(8))));
        w.write(&f32s([1.0])).expect("fits");
        assert!(matches!(
            w.finish(),
            Err(WriteError::TooShort {
                got: 4,
                expected: 8
            })
        ));
        let mut w = upload
            .matrix(Part::A, Dtype::F32, 1, 2, false)
            .expect("file");
        assert!(matches!(
            w.write(&f32s([1.0, f32::NAN])),
            Err(WriteError::NotFinite(1))
        ));
        let mut w = upload
            .matrix(Part::B, Dtype::F32, 1, 2, true)
            .expect("file");
        let big: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        w.write(&big[..3]).expect("a piece");
        w.write(&big[3..]).expect("the rest");
        w.finish().expect("whole");
        upload.finish(&plan(1, 1, 2, 2)).expect("finished");
        let b = store
            .read_rows("job", Part::B, Dtype::F32, 2, 0, 1)
            .expect("read");
        assert_eq!(b, f32s([1.5, -2.0]));
        assert!(store.dir("../etc").is_err(), "ids cannot name other paths");
        store.remove_inputs("job").expect("removed");
        assert!(
            store.disk_bytes("job").expect("measured") < 8192,
            "only the empty result"
        );
        store.remove("job").expect("removed");
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
        let _ = std::fs::remove_dir_all(root);
    }
}
