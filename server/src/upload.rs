//! A job's inputs on their way into the store: what a job may take of the disk
//! (`MAX_JOB_BYTES`, `DISK_RESERVE_BYTES`), and the writer that puts the data of A and B in
//! the job's files as it arrives, off the async workers.
//!
//! An upload is judged on its shapes, which its `.npy` headers give before any data: the
//! transport (`http::jobs`) reads a header, asks [`Room::check`] and [`Plan::for_operands`]
//! whatever they can already decide, and only then feeds the data to a [`Writer`]. Memory
//! stays within two batches whatever the job's size: the writer takes the next batch only
//! once the last is written, so a client sends no faster than the disk takes its data. The
//! one exception is a B kept in memory as well, whose size the panel budget has already
//! granted ([`crate::grid::inputs::Inputs::reserve`]) before any of its data is read.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::grid::inputs::{Hold, Kept};
use crate::jobs::{Dtype, Plan, Shape};
use crate::store::{MatrixWriter, Part, Store, Upload, WriteError};

/// What one job may take of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// `MAX_JOB_BYTES`: A, B and C together.
    pub max_job_bytes: u64,
    /// `DISK_RESERVE_BYTES`: what must stay free once the job is stored.
    pub reserve_bytes: u64,
}

/// Bytes of A (m×k), B (k×n) and C (m×n) together, saturating.
pub fn job_bytes(dtype: Dtype, m: usize, k: usize, n: usize) -> u64 {
    let (m, k, n) = (m as u128, k as u128, n as u128);
    let bytes = (m.saturating_mul(k))
        .saturating_add(k.saturating_mul(n))
        .saturating_add(m.saturating_mul(n))
        .saturating_mul(dtype.size() as u128);
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// The bytes a job will take, known from the operands whose headers have come: exact with
/// both (`true`), and with one a lower bound, as the other and C have at least one column or
/// row. The inner dimensions are checked apart (see [`Plan::for_operands`]).
pub fn bytes_at_least(a: Option<Shape>, b: Option<Shape>) -> Option<(u64, bool)> {
    match (a, b) {
        (Some(a), Some(b)) => Some((job_bytes(a.dtype, a.rows, a.cols, b.cols), true)),
        (Some(a), None) => Some((job_bytes(a.dtype, a.rows, a.cols, 1), false)),
        (None, Some(b)) => Some((job_bytes(b.dtype, 1, b.rows, b.cols), false)),
        (None, None) => None,
    }
}

impl Room {
    /// Whether a job of `needed` bytes (or, unless `exact`, at least that many) may be stored
    /// on a disk with `free` bytes available: 413 past `MAX_JOB_BYTES`, whatever the disk
    /// holds; 507 when it would leave less than the reserve free. Both messages name the
    /// bytes, so that the researcher knows how far off the job is.
    ///
    /// `free` is measured once per job, before any of its data is written, so a job's own
    /// data never counts against it; two uploads that start together may each see the same
    /// free space, and the reserve is what absorbs that.
    pub fn check(&self, needed: u64, exact: bool, free: u64) -> Result<()> {
        self.check_with_partials(needed, 0, exact, free)
    }

    /// [`Room::check`] for a job whose k is split: its partial products (`partials` bytes)
    /// take room until they are summed, and count as its matrices do.
    pub fn check_with_partials(
        &self,
        matrices: u64,
        partials: u64,
        exact: bool,
        free: u64,
    ) -> Result<()> {
        let at_least = if exact { "" } else { "at least " };
        let needed = matrices.saturating_add(partials);
        let what = match partials {
            0 => "A, B and C".to_owned(),
            p => format!(
                "A, B and C with the partial products of k's slices ({})",
                human(p)
            ),
        };
        if needed > self.max_job_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "job too large: {what} would take {at_least}{needed} bytes ({}), more than \
                 MAX_JOB_BYTES = {} ({})",
                human(needed),
                self.max_job_bytes,
                human(self.max_job_bytes)
            )));
        }
        let room = free.saturating_sub(self.reserve_bytes);
        if needed > room {
            return Err(Error::InsufficientStorage(format!(
                "not enough disk space for this job: {what} need {at_least}{needed} bytes \
                 ({}), and the server has {free} bytes ({}) free, of which it keeps {} ({}) in \
                 reserve (DISK_RESERVE_BYTES); {room} bytes ({}) are available for jobs",
                human(needed),
                human(free),
                self.reserve_bytes,
                human(self.reserve_bytes),
                human(room)
            )));
        }
        Ok(())
    }
}

/// `bytes` for people: "1.5 GiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Data is handed to the disk in batches of about this many bytes: few enough blocking tasks
/// for speed, and what an upload holds in memory stays small (a batch being written and one
/// being gathered).
const BATCH_BYTES: usize = 1 << 20;

/// What the writer is given, in order: for each input its start, its data and its end; then
/// the plan, which makes the job's folder visible.
enum Piece {
    Start {
        part: Part,
        shape: Shape,
        big_endian: bool,
        /// Set: the input is also kept in memory, within this share of the panel budget.
        hold: Option<Hold>,
    },
    Data(Vec<Bytes>),
    End,
    Finish(Plan),
}

/// Why the writer stopped.
#[derive(Debug)]
enum Failure {
    /// An input's data was refused (too long or short, or not finite).
    Matrix {
        part: Part,
        cols: usize,
        error: WriteError,
    },
    Io(io::Error),
    /// The pieces came out of order: a bug on the sending side.
    Order,
}

/// The files being written: the upload, the input under way with its width (and its
/// share of memory, if kept there too), and the inputs kept in memory so far.
struct Files {
    upload: Upload,
    current: Option<(Part, usize, MatrixWriter, Option<Hold>)>,
    kept: Kept,
}

/// Where the writer stands after a piece.
enum Written {
    Open(Box<Files>),
    /// The job's folder is visible; what was kept in memory is handed over.
    Finished(Kept),
}

/// Writes one job's inputs, each piece in a short blocking task, one at a time and one
/// ahead of the caller: the client's next batch is read while the last one is written, and
/// an upload that stalls holds no thread. Dropping the writer before [`Writer::finish`]
/// removes everything written (the store's `Upload` does, wherever the files are then).
pub struct Writer {
    store: Arc<Store>,
    job_id: String,
    /// The files, when no piece is being written.
    files: Option<Files>,
    /// The piece being written; it gives the files back.
    pending: Option<JoinHandle<Result<Written, Failure>>>,
    /// What the last piece handed over.
    kept: Kept,
    batch: Vec<Bytes>,
    batched: usize,
}

impl Writer {
    /// A writer for the job's upload; its folder is made with the first piece.
    pub fn start(store: Arc<Store>, job_id: String) -> Writer {
        Writer {
            store,
            job_id,
            files: None,
            pending: None,
            kept: Kept::default(),
            batch: Vec::new(),
            batched: 0,
        }
    }

    /// Starts one input; its data follows through [`Writer::write`]. With a `hold` the data
    /// is kept in memory too, and [`Writer::finish`] hands it over.
    pub async fn begin(
        &mut self,
        part: Part,
        shape: Shape,
        big_endian: bool,
        hold: Option<Hold>,
    ) -> Result<()> {
        self.send(Piece::Start {
            part,
            shape,
            big_endian,
            hold,
        })
        .await
    }

    /// Adds data to the current input.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Ends the current input; the writer checks that it is whole.
    pub async fn end(&mut self) -> Result<()> {
        self.flush().await?;
        self.send(Piece::End).await
    }

    /// Makes the job's folder visible, once every input has been written and made durable;
    /// returns the inputs kept in memory as well.
    pub async fn finish(mut self, plan: Plan) -> Result<Kept> {
        self.flush().await?;
        self.send(Piece::Finish(plan)).await?;
        self.settle().await?;
        Ok(std::mem::take(&mut self.kept))
    }

    /// Gives up: returns once whatever was written is removed.
    pub async fn abort(mut self) {
        let files = self.settle().await.ok().flatten();
        if let Some(files) = files {
            let _ = tokio::task::spawn_blocking(move || drop(files)).await;
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        self.send(Piece::Data(batch)).await
    }

    /// Waits for the piece being written, then starts writing `piece`.
    async fn send(&mut self, piece: Piece) -> Result<()> {
        let files = self.settle().await?;
        let store = self.store.clone();
        let job_id = self.job_id.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let files = match files {
                Some(files) => files,
                None => Files {
                    upload: store.begin(&job_id).map_err(Failure::Io)?,
                    current: None,
                    kept: Kept::default(),
                },
            };
            apply(files, piece)
        }));
        Ok(())
    }

    /// Waits for the piece being written; the files, unless none were made yet.
    async fn settle(&mut self) -> Result<Option<Files>> {
        if let Some(pending) = self.pending.take() {
            let written = pending.await.map_err(|e| Error::Internal(e.to_string()))?;
            match written.map_err(Failure::into_error)? {
                Written::Open(files) => self.files = Some(*files),
                Written::Finished(kept) => self.kept = kept,
            }
        }
        Ok(self.files.take())
    }
}

impl Drop for Writer {
    /// A writer dropped with its files (a refusal, or a client gone) removes them off the
    /// async workers: removing a large file takes a while.
    fn drop(&mut self) {
        if let Some(files) = self.files.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(files))),
                Err(_) => drop(files),
            }
        }
    }
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Matrix {
                part,
                cols,
                error: WriteError::NotFinite(at),
            } => Error::BadRequest(format!(
                "{}[{}][{}] is not finite (NaN or infinity)",
                name(part),
                at / cols as u64,
                at % cols as u64
            )),
            Failure::Matrix {
                error: WriteError::Io(e),
                ..
            }
            | Failure::Io(e) => io_error(e),
            Failure::Matrix { part, error, .. } => {
                Error::BadRequest(format!("{}: not a valid .npy file: {error}", name(part)))
            }
            Failure::Order => Error::Internal("an upload's pieces came out of order".into()),
        }
    }
}

/// On PostgreSQL: inserts a job whose inputs the store holds (as [`Writer::finish`] left
/// them), with its inputs copied into the database in chunks, in one transaction (see
/// `db::chunks::NewJob`): once this returns, every instance can serve the job's panels, and
/// none could before. The files are read a batch of chunks at a time, the next batch while
/// the last is sent, so memory holds two batches whatever the job's size.
pub async fn insert_with_inputs(
    db: &crate::db::Pool,
    store: &Arc<Store>,
    id: &str,
    name: &str,
    plan: &Plan,
) -> Result<()> {
    use crate::db::chunks::{NewJob, CHUNKS_PER_INSERT, CHUNK_BYTES};
    use crate::store::layout;
    use std::os::unix::fs::FileExt;
    let mut job = NewJob::begin(db, id, name, plan).await?;
    for (part, label) in [(Part::A, "a"), (Part::B, "b")] {
        let path = store.path(id, part).map_err(io_error)?;
        let file = Arc::new(std::fs::File::open(path).map_err(io_error)?);
        let len = layout::file_len(plan, part);
        let count = layout::chunk_count(len, CHUNK_BYTES);
        let read = |first: u64| {
            let file = file.clone();
            tokio::task::spawn_blocking(move || -> io::Result<Vec<Bytes>> {
                let last = (first + CHUNKS_PER_INSERT as u64).min(count);
                (first..last)
                    .map(|seq| {
                        let at = seq * CHUNK_BYTES as u64;
                        let mut chunk = vec![0; (len - at).min(CHUNK_BYTES as u64) as usize];
                        file.read_exact_at(&mut chunk, at)?;
                        Ok(Bytes::from(chunk))
                    })
                    .collect()
            })
        };
        let mut next = Some(read(0));
        let mut seq = 0;
        while let Some(reading) = next.take() {
            let batch = reading
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(io_error)?;
            let after = seq + batch.len() as u64;
            if after < count {
                next = Some(read(after));
            }
            job.chunks(label, seq as i64, &batch).await?;
            seq = after;
        }
    }
    job.commit().await?;
    Ok(())
}

fn io_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::StorageFull {
        Error::InsufficientStorage(
            "the disk filled up while the job was being stored (other uploads took the space \
             its check had found); nothing was kept: submit it again later"
                .into(),
        )
    } else {
        Error::Internal(format!("storing the inputs: {e}"))
    }
}

fn name(part: Part) -> &'static str {
    match part {
        Part::A => "a",
        Part::B => "b",
        Part::C => "c",
        Part::Partials => "partials",
    }
}

/// Writes one piece, on a blocking thread; returns the files, until the last piece consumes
/// them. An error drops the files, and with them the upload's folder.
fn apply(mut files: Files, piece: Piece) -> Result<Written, Failure> {
    match piece {
        Piece::Start {
            part,
            shape,
            big_endian,
            hold,
        } => {
            let mut writer = files
                .upload
                .matrix(part, shape.dtype, shape.rows, shape.cols, big_endian)
                .map_err(Failure::Io)?;
            if let Some(hold) = &hold {
                writer.keep_copy(hold.bytes());
            }
            files.current = Some((part, shape.cols, writer, hold));
        }
        Piece::Data(chunks) => {
            let Some((part, cols, writer, _)) = files.current.as_mut() else {
                return Err(Failure::Order);
            };
            for chunk in chunks {
                writer.write(&chunk).map_err(|error| Failure::Matrix {
                    part: *part,
                    cols: *cols,
                    error,
                })?;
            }
        }
        Piece::End => {
            let Some((part, cols, mut writer, hold)) = files.current.take() else {
                return Err(Failure::Order);
            };
            let copy = writer.take_copy();
            writer
                .finish()
                .map_err(|error| Failure::Matrix { part, cols, error })?;
            if let Some(kept) = copy.zip(hold) {
                match part {
                    Part::A => files.kept.a = Some(kept),
                    Part::B => files.kept.b = Some(kept),
                    Part::C | Part::Partials => {}
                }
            }
        }
        Piece::Finish(plan) => {
            if files.current.is_some() {
                return Err(Failure::Order);
            }
            let finished = match crate::db::engine() {
                crate::db::Engine::Sqlite => files.upload.finish(&plan),
                // The results live in the database (see `db::chunks`).
                crate::db::Engine::Postgres => files.upload.finish_inputs(),
            };
            finished.map_err(Failure::Io)?;
            return Ok(Written::Finished(files.kept));
        }
    }
    Ok(Written::Open(Box::new(files)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: Room = Room {
        max_job_bytes: 1000,
        reserve_bytes: 100,
    };

    fn shape(rows: usize, cols: usize) -> Shape {
        Shape {
            dtype: Dtype::F32,
            rows,
            cols,
        }
    }

    #[test]
    fn a_job_takes_its_three_matrices_and_one_header_bounds_it_from_below() {
        // The 16384² f32 job: 2 GiB of input and 1 GiB of result.
        assert_eq!(job_bytes(Dtype::F32, 16384, 16384, 16384), 3 << 30);
        assert_eq!(job_bytes(Dtype::F64, usize::MAX, usize::MAX, 2), u64::MAX);
        assert_eq!(bytes_at_least(None, None), None);
        // A 3×2: at least A, a 2×1 B and a 3×1 C.
        assert_eq!(bytes_at_least(Some(shape(3, 2)), None), Some((44, false)));
        assert_eq!(
            bytes_at_least(None, Some(shape(2, 5))),
            Some((4 * 17, false))
        );
        assert_eq!(
            bytes_at_least(Some(shape(3, 2)), Some(shape(2, 5))),
            Some((4 * 31, true))
        );
    }

    #[test]
    fn the_disk_keeps_its_reserve_and_operators_their_limit() {
        assert!(
            ROOM.check(900, true, 1000).is_ok(),
            "exactly the reserve left"
        );
        let e = ROOM
            .check(901, true, 1000)
            .expect_err("eats into the reserve");
        assert!(matches!(e, Error::InsufficientStorage(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("need 901 bytes"), "{text}");
        assert!(text.contains("1000 bytes (1000 bytes) free"), "{text}");
        assert!(text.contains("DISK_RESERVE_BYTES"), "{text}");
        // A split job's partials count, and the refusal says so.
        let e = ROOM
            .check_with_partials(600, 301, true, 1000)
            .expect_err("with its partials");
        let text = e.to_string();
        assert!(
            text.contains("with the partial products of k's slices (301 bytes)"),
            "{text}"
        );
        assert!(text.contains("need 901 bytes"), "{text}");
        assert!(ROOM.check_with_partials(600, 300, true, 1000).is_ok());
        // Less free than the reserve: nothing fits.
        assert!(ROOM.check(1, false, 50).is_err());
        let e = ROOM
            .check(1001, false, u64::MAX)
            .expect_err("over MAX_JOB_BYTES");
        assert!(matches!(e, Error::PayloadTooLarge(_)), "{e:?}");
        assert!(e.to_string().contains("at least 1001 bytes"), "{e}");
        assert!(e.to_string().contains("MAX_JOB_BYTES = 1000"), "{e}");
        // The limit is judged first: a larger disk would not help.
        let e = ROOM.check(2000, true, 0).expect_err("both");
        assert!(matches!(e, Error::PayloadTooLarge(_)), "{e:?}");
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    fn temp() -> (Arc<Store>, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("brain-upload-{}", uuid::Uuid::new_v4()));
        (Arc::new(Store::open(&root).expect("a store")), root)
    }

    fn f32s(values: &[f32]) -> Bytes {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[tokio::test]
    async fn a_writer_stores_a_job_or_leaves_nothing() {
        let (store, root) = temp();
        let plan = Plan {
            dtype: Dtype::F32,
            m: 1,
            k: 2,
            n: 1,
            tile: 1,
            split: 1,
        };
        let mut w = Writer::start(store.clone(), "job".into());
        w.begin(Part::A, shape(1, 2), false, None).await.expect("a");
        w.write(f32s(&[1.0])).await.expect("data");
        w.write(f32s(&[2.0])).await.expect("data");
        w.end().await.expect("whole");
        w.begin(Part::B, shape(2, 1), false, None).await.expect("b");
        w.write(f32s(&[3.0, 4.0])).await.expect("data");
        w.end().await.expect("whole");
        w.finish(plan).await.expect("stored");
        let a = store
            .read_rows("job", Part::A, Dtype::F32, 2, 0, 1)
            .expect("a");
        assert_eq!(a, f32s(&[1.0, 2.0]).to_vec());

        // A NaN is named by its place; nothing of that job is left.
        let mut w = Writer::start(store.clone(), "bad".into());
        w.begin(Part::B, shape(2, 2), false, None).await.expect("b");
        w.write(f32s(&[1.0, 2.0, f32::NAN, 0.0]))
            .await
            .expect("queued");
        // The batch is written while the caller goes on: the next piece learns why it failed.
        let e = w.end().await.expect_err("not finite");
        assert!(e.to_string().contains("b[1][0] is not finite"), "{e}");
        // An upload given up halfway leaves nothing either, nor holds memory it set aside.
        let inputs = crate::grid::inputs::Inputs::new(store.clone(), 1 << 20);
        let mut w = Writer::start(store.clone(), "gone".into());
        w.begin(Part::B, shape(1, 2), false, inputs.reserve(Part::B, 8))
            .await
            .expect("a");
        w.write(f32s(&[1.0])).await.expect("data");
        assert_eq!(inputs.resident_bytes(), 8);
        w.abort().await;
        assert_eq!(inputs.resident_bytes(), 0);
        let left: Vec<_> = std::fs::read_dir(&root)
            .expect("root")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("job")]);
        let _ = std::fs::remove_dir_all(root);
    }
}
