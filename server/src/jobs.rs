//! Jobs as matrices: parsing submitted operands, cutting C into tiles, slicing each tile's
//! inputs, and assembling the product from finished tiles.
//!
//! Matrices are kept as row-major little-endian bytes from the moment they are parsed: that is
//! the layout stored in SQLite, sent to workers and returned as `.npy`, so no stage converts.

use std::cell::Cell;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Element type of a job's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Dtype::F32),
            "f64" | "float64" => Ok(Dtype::F64),
            other => Err(format!("dtype must be \"f32\" or \"f64\", not {other:?}")),
        }
    }
}

/// A matrix's element type and shape: all a plan needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
}

/// A validated dense matrix: finite values, row-major little-endian bytes.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

impl Matrix {
    /// Checks the shape against the data and that every value is finite (a NaN or infinity in
    /// an input would only come back as a product nobody can use).
    pub fn new(
        name: &str,
        dtype: Dtype,
        rows: usize,
        cols: usize,
        data: Bytes,
    ) -> Result<Self, String> {
        if rows == 0 || cols == 0 {
            return Err(format!("{name} is empty ({rows}×{cols})"));
        }
        let expected = rows
            .checked_mul(cols)
            .and_then(|e| e.checked_mul(dtype.size()));
        if expected != Some(data.len()) {
            return Err(format!("{name}: data does not match shape {rows}×{cols}"));
        }
        let bad = match dtype {
            Dtype::F32 => data
                .chunks_exact(4)
                .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
            Dtype::F64 => data
                .chunks_exact(8)
                .position(|c| !f64::from_le_bytes(c.try_into().expect("chunks of 8")).is_finite()),
        };
        if let Some(at) = bad {
            return Err(format!(
                "{name}[{}][{}] is not finite (NaN or infinity)",
                at / cols,
                at % cols
            ));
        }
        Ok(Matrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    pub fn shape(&self) -> Shape {
        Shape {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Values widened to f64 (for tests and the JSON result format).
    pub fn to_f64(&self) -> Vec<f64> {
        to_f64(self.dtype, &self.data)
    }
}

/// A JSON submission, `{"a": [[…]], "b": [[…]], "dtype"?, "tile"?, "k_split"?, "name"?}`,
/// parsed.
#[derive(Debug)]
pub struct JsonJob {
    pub a: Matrix,
    pub b: Matrix,
    pub cut: Cut,
    pub name: String,
}

/// Longest job name kept (characters).
pub const MAX_NAME_CHARS: usize = 200;

impl JsonJob {
    /// Parses a JSON body straight into matrix bytes, refusing it at the first number past a
    /// limit or row that breaks the shape.
    ///
    /// No `serde_json::Value` tree is built (about sixteen times the body), and nothing is
    /// reserved from a size the client states: rows are appended as they are read, a ragged row
    /// is refused as soon as it differs from the first, and A and B together may hold at most
    /// `max_elements` numbers, counted as they are read. Numbers are kept as f64 until the
    /// `dtype` (which may come last) is known, so memory stays below 8 bytes per number read:
    /// four times the body at most, as every number takes at least two bytes of text.
    pub fn parse(body: &[u8], max_elements: usize) -> Result<Self, Error> {
        let ctx = Ctx {
            problem: Cell::new(None),
            budget: Cell::new(max_elements),
            max_elements,
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = JobSeed(&ctx)
            .deserialize(&mut de)
            .and_then(|job| de.end().map(|()| job));
        let raw = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                return Err(ctx
                    .problem
                    .take()
                    .unwrap_or_else(|| Error::BadRequest(format!("invalid JSON body: {e}"))))
            }
        };
        let dtype = match raw.dtype.as_deref() {
            None => Dtype::F32,
            Some(d) => Dtype::parse(d).map_err(Error::BadRequest)?,
        };
        let missing = |name: &str| {
            Error::BadRequest(format!(
                "missing {name}: the JSON body needs \"a\" and \"b\", each an array of rows \
                 (e.g. [[1, 2], [3, 4]])"
            ))
        };
        let a = raw.a.ok_or_else(|| missing("a"))?;
        let b = raw.b.ok_or_else(|| missing("b"))?;
        Ok(JsonJob {
            a: a.into_matrix("a", dtype).map_err(Error::BadRequest)?,
            b: b.into_matrix("b", dtype).map_err(Error::BadRequest)?,
            cut: Cut {
                tile: raw.tile,
                split: raw.k_split,
            },
            name: raw
                .name
                .unwrap_or_default()
                .chars()
                .take(MAX_NAME_CHARS)
                .collect(),
        })
    }
}

/// What the JSON visitors share: the first problem found (serde's own error only stops the
/// parse; this one is what the client is told) and the numbers still allowed.
struct Ctx {
    problem: Cell<Option<Error>>,
    budget: Cell<usize>,
    max_elements: usize,
}

impl Ctx {
    /// Records `problem` (the first one wins) and returns an error that stops the parse.
    fn fail<E: de::Error>(&self, problem: Error) -> E {
        let first = self.problem.take().unwrap_or(problem);
        let message = first.to_string();
        self.problem.set(Some(first));
        E::custom(message)
    }
}

/// The JSON body's fields before they are checked against each other.
#[derive(Default)]
struct RawJob {
    a: Option<RawMatrix>,
    b: Option<RawMatrix>,
    dtype: Option<String>,
    tile: Option<usize>,
    k_split: Option<usize>,
    name: Option<String>,
}

/// A matrix as read: `rows` rows of `cols` numbers, as f64 little-endian bytes.
struct RawMatrix {
    rows: usize,
    cols: usize,
    values: Vec<u8>,
}

impl RawMatrix {
    fn into_matrix(self, name: &str, dtype: Dtype) -> Result<Matrix, String> {
        let data = match dtype {
            Dtype::F64 => self.values,
            Dtype::F32 => {
                let mut out = Vec::with_capacity(self.values.len() / 2);
                for c in self.values.chunks_exact(8) {
                    let x = f64::from_le_bytes(c.try_into().expect("chunks of 8"));
                    out.extend_from_slice(&(x as f32).to_le_bytes());
                }
                out
            }
        };
        Matrix::new(name, dtype, self.rows, self.cols, Bytes::from(data))
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    A,
    B,
    Dtype,
    Tile,
    KSplit,
    Name,
    #[serde(other)]
    Other,
}

struct JobSeed<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for JobSeed<'_> {
    type Value = RawJob;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawJob, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Answers every JSON type but the expected one with `$what`.
macro_rules! refuse_scalars {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Err(self.refuse())
        })*
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.refuse())
        }
    };
}

impl JobSeed<'_> {
    fn refuse<E: de::Error>(&self) -> E {
        self.0.fail(Error::BadRequest(
            "the JSON body must be an object {\"a\": [[…]], \"b\": [[…]], \"dtype\"?, \"tile\"?, \
             \"k_split\"?, \"name\"?}"
                .into(),
        ))
    }
}

impl<'de> Visitor<'de> for JobSeed<'_> {
    type Value = RawJob;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with fields a, b, dtype, tile, k_split and name")
    }

    refuse_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawJob, A::Error> {
        Err(self.refuse())
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawJob, M::Error> {
        let ctx = self.0;
        let mut job = RawJob::default();
        let bad = |what: &str| Error::BadRequest(what.to_owned());
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::A | Field::B => {
                    let (name, slot) = match field {
                        Field::A => ("a", &mut job.a),
                        _ => ("b", &mut job.b),
                    };
                    if slot.is_some() {
                        return Err(ctx.fail(bad(&format!("{name} is given twice"))));
                    }
                    *slot = Some(map.next_value_seed(MatrixSeed { ctx, name })?);
                }
                Field::Dtype => {
                    job.dtype = map.next_value::<Option<String>>().map_err(|_| {
                        ctx.fail::<M::Error>(bad("dtype must be \"f32\" or \"f64\""))
                    })?;
                }
                Field::Tile => {
                    job.tile = map.next_value::<Option<usize>>().map_err(|_| {
                        ctx.fail::<M::Error>(bad("tile must be a positive integer"))
                    })?;
                }
                Field::KSplit => {
                    job.k_split = map.next_value::<Option<usize>>().map_err(|_| {
                        ctx.fail::<M::Error>(bad("k_split must be a positive integer"))
                    })?;
                }
                Field::Name => {
                    job.name = map
                        .next_value::<Option<String>>()
                        .map_err(|_| ctx.fail::<M::Error>(bad("name must be a string")))?;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(job)
    }
}

/// One matrix: an array of rows.
struct MatrixSeed<'c> {
    ctx: &'c Ctx,
    name: &'static str,
}

impl MatrixSeed<'_> {
    fn refuse<E: de::Error>(&self) -> E {
        self.ctx.fail(Error::BadRequest(format!(
            "{} must be an array of rows (e.g. [[1, 2], [3, 4]])",
            self.name
        )))
    }
}

impl<'de> DeserializeSeed<'de> for MatrixSeed<'_> {
    type Value = RawMatrix;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawMatrix, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MatrixSeed<'_> {
    type Value = RawMatrix;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of rows")
    }

    refuse_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<RawMatrix, M::Error> {
        Err(self.refuse())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawMatrix, A::Error> {
        let mut matrix = RawMatrix {
            rows: 0,
            cols: 0,
            values: Vec::new(),
        };
        loop {
            let row = RowSeed {
                ctx: self.ctx,
                name: self.name,
                row: matrix.rows,
                matrix: &mut matrix,
            };
            if seq.next_element_seed(row)?.is_none() {
                break;
            }
            matrix.rows += 1;
        }
        if matrix.rows == 0 {
            return Err(self
                .ctx
                .fail(Error::BadRequest(format!("{} is empty", self.name))));
        }
        Ok(matrix)
    }
}

/// One row, appended to its matrix number by number.
struct RowSeed<'c, 'm> {
    ctx: &'c Ctx,
    name: &'static str,
    row: usize,
    matrix: &'m mut RawMatrix,
}

impl RowSeed<'_, '_> {
    fn refuse<E: de::Error>(&self) -> E {
        self.ctx.fail(Error::BadRequest(format!(
            "{}[{}] must be an array of numbers",
            self.name, self.row
        )))
    }

    fn ragged<E: de::Error>(&self, columns: &str) -> E {
        self.ctx.fail(Error::BadRequest(format!(
            "{} is ragged: row {} has {columns} columns, row 0 has {}",
            self.name, self.row, self.matrix.cols
        )))
    }
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers")
    }

    refuse_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<(), M::Error> {
        Err(self.refuse())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let first = self.row == 0;
        let mut col = 0;
        loop {
            let number = NumberSeed {
                ctx: self.ctx,
                name: self.name,
                row: self.row,
                col,
            };
            let Some(x) = seq.next_element_seed(number)? else {
                break;
            };
            if !first && col == self.matrix.cols {
                return Err(self.ragged(&format!("more than {col}")));
            }
            let left = self.ctx.budget.get();
            if left == 0 {
                let max = self.ctx.max_elements;
                return Err(self.ctx.fail(Error::PayloadTooLarge(format!(
                    "job too large: A and B hold more than {max} elements, the limit is {max} \
                     (MAX_JOB_ELEMENTS); send large matrices as .npy files"
                ))));
            }
            self.ctx.budget.set(left - 1);
            self.matrix.values.extend_from_slice(&x.to_le_bytes());
            col += 1;
        }
        if first {
            if col == 0 {
                return Err(self.ctx.fail(Error::BadRequest(format!(
                    "{} is empty: its first row has no numbers",
                    self.name
                ))));
            }
            self.matrix.cols = col;
        } else if col != self.matrix.cols {
            return Err(self.ragged(&col.to_string()));
        }
        Ok(())
    }
}

/// One number of a row, as f64 (the JSON text is decimal; f32 jobs round once at the end).
struct NumberSeed<'c> {
    ctx: &'c Ctx,
    name: &'static str,
    row: usize,
    col: usize,
}

impl NumberSeed<'_> {
    fn not_a_number<E: de::Error>(&self, what: &str) -> E {
        self.ctx.fail(Error::BadRequest(format!(
            "{}[{}][{}] is not a number: {what}",
            self.name, self.row, self.col
        )))
    }
}

impl<'de> DeserializeSeed<'de> for NumberSeed<'_> {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed<'_> {
    type Value = f64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        let shown: String = v.chars().take(40).collect();
        Err(self.not_a_number(&format!("{shown:?}")))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f64, E> {
        Err(self.not_a_number(&v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Err(self.not_a_number("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.not_a_number("an array"))
    }

    fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<f64, M::Error> {
        Err(self.not_a_number("an object"))
    }
}

/// Little-endian bytes of `dtype` widened to f64.
pub fn to_f64(dtype: Dtype, data: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect(),
    }
}

/// Largest tile edge a job may ask for: a 4096² f64 tile is 128 MiB, already past what a
/// browser should hold per task.
pub const MAX_TILE: usize = 4096;

/// Target size of one operand panel when the tile is chosen for the client: big enough that a
/// task is worth a network round trip, small enough for a phone's memory.
const PANEL_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// What a plan must respect, taken from [`crate::config::Limits`] so that the policy can be
/// tested without a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Elements of A, B and C together (`MAX_JOB_ELEMENTS`).
    pub max_job_elements: usize,
    /// Tiles one job may be cut into (`MAX_TASKS_PER_JOB`).
    pub max_tasks: usize,
    /// Largest Socket.io message (`MAX_MESSAGE_BYTES`). Each panel of a task and each result
    /// must fit one, or the task can never be delivered or returned.
    pub max_message_bytes: usize,
}

impl From<&crate::config::Limits> for PlanLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        PlanLimits {
            max_job_elements: limits.max_job_elements,
            max_tasks: limits.max_tasks_per_job,
            max_message_bytes: limits.max_message_bytes,
        }
    }
}

impl PlanLimits {
    /// Bytes of matrix data one message may carry. Over websockets each binary attachment (a
    /// panel, a result) travels as its own message, but a sixteenth of the limit is left for
    /// the packet around it (event name, ids, keys, placeholders) so that a transport or
    /// client that counts them together still takes the data.
    pub fn message_data_bytes(&self) -> usize {
        self.max_message_bytes - self.max_message_bytes / 16
    }
}

/// What a client may ask of a job's cut; each `None` leaves it to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// The tile's edge.
    pub tile: Option<usize>,
    /// Slices of k (`k_split`).
    pub split: Option<usize>,
}

impl From<Option<usize>> for Cut {
    /// A tile, or none, with the slices of k left to the server.
    fn from(tile: Option<usize>) -> Cut {
        Cut { tile, split: None }
    }
}

/// How C = A·B is cut into tasks: tiles of C and, when k is split, slices of k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub dtype: Dtype,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub tile: usize,
    /// Slices of k (1: whole). A task of slice s computes its tile's partial product over
    /// k's `s`-th slice; the server sums a tile's partials in slice order (see
    /// [`Plan::tile`]). A volunteer's cache holds panels of one slice, so a long k no longer
    /// means few, huge panels that each carry few flops per byte (docs/benchmarks.md, #14).
    pub split: usize,
}

/// One task's tile of C: rows `row0..row0+rows`, columns `col0..col0+cols`, over k's
/// `k0..k0+kn` (all of k unless the plan splits it). `tile_col` is the task's column,
/// `slice × tile_cols + col` (see [`Plan::tile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub tile_row: usize,
    pub tile_col: usize,
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
    pub slice: usize,
    pub k0: usize,
    pub kn: usize,
}

/// Most slices a job's k may be cut into: each slice sends C up once more, and a tile's
/// partials are summed from that many places.
pub const MAX_SPLIT: usize = 64;

/// The longest slice of k the server picks when a job names no split: at 256-wide f32 tiles
/// its panels are 4 MiB, sixteen to a 64 MiB cache. The model in docs/benchmarks.md (#14)
/// puts home links' best at whole k for k = 4096 and at four slices for k = 16384.
pub const AUTO_SLICE_K: usize = 4096;

impl Plan {
    /// Checks the operands against each other and the limits, and the requested tile; picks a
    /// tile when none is given.
    pub fn new(
        a: &Matrix,
        b: &Matrix,
        cut: impl Into<Cut>,
        limits: &PlanLimits,
    ) -> Result<Self, Error> {
        Plan::for_operands(a.shape(), b.shape(), cut, limits)
    }

    /// [`Plan::new`] on the operands' shapes alone, as an upload knows them from its `.npy`
    /// headers before their data comes.
    pub fn for_operands(
        a: Shape,
        b: Shape,
        cut: impl Into<Cut>,
        limits: &PlanLimits,
    ) -> Result<Self, Error> {
        if a.dtype != b.dtype {
            return Err(Error::BadRequest(format!(
                "a is {} but b is {}: both must have the same dtype",
                a.dtype.name(),
                b.dtype.name()
            )));
        }
        if a.cols != b.rows {
            return Err(Error::BadRequest(format!(
                "inner dimensions differ: a is {}×{} and b is {}×{} (a's columns must equal b's rows)",
                a.rows, a.cols, b.rows, b.cols
            )));
        }
        Plan::for_shape(a.dtype, a.rows, a.cols, b.cols, cut, limits)
    }

    /// The policy behind [`Plan::new`], on the shape alone (so it can be tested on shapes far
    /// too large to allocate).
    ///
    /// A tile the client names is taken as it is or refused, never changed behind its back:
    /// the 400 says which tiles this job would accept. Too small a tile makes more tasks than
    /// `MAX_TASKS_PER_JOB` (a 3000×1·1×3000 product at tile 1 would be 9 million rows); too
    /// large a one makes a panel or result that no Socket.io message can carry, so the task
    /// would circulate for ever. Without a tile the server picks one inside those bounds.
    ///
    /// k is cut into the slices the client names (`cut.split`, 1 to [`MAX_SPLIT`] and at
    /// most k), or else into slices of at most [`AUTO_SLICE_K`]; the tile is then chosen
    /// for panels of one slice.
    pub fn for_shape(
        dtype: Dtype,
        m: usize,
        k: usize,
        n: usize,
        cut: impl Into<Cut>,
        limits: &PlanLimits,
    ) -> Result<Self, Error> {
        let Cut { tile, split } = cut.into();
        let max = limits.max_job_elements;
        let elements = m
            .checked_mul(k)
            .zip(k.checked_mul(n))
            .zip(m.checked_mul(n))
            .and_then(|((a, b), c)| a.checked_add(b)?.checked_add(c));
        match elements {
            Some(e) if e <= max => {}
            Some(e) => {
                return Err(Error::PayloadTooLarge(format!(
                    "job too large: A, B and C hold {e} elements, the limit is {max} (MAX_JOB_ELEMENTS)"
                )))
            }
            None => {
                return Err(Error::PayloadTooLarge(format!(
                    "job too large: A, B and C hold more elements than the limit of {max} (MAX_JOB_ELEMENTS)"
                )))
            }
        }
        let split = match split {
            Some(s) if !(1..=MAX_SPLIT.min(k)).contains(&s) => {
                return Err(Error::BadRequest(format!(
                    "k_split must be between 1 and {} (k = {k}, at most {MAX_SPLIT}), not {s}",
                    MAX_SPLIT.min(k)
                )))
            }
            Some(s) => s,
            None => k.div_ceil(AUTO_SLICE_K).clamp(1, MAX_SPLIT),
        };
        let with = |tile| Plan {
            dtype,
            m,
            k,
            n,
            tile,
            split,
        };
        let data_bytes = limits.message_data_bytes();
        let fits = |t| with(t).largest_message().is_some_and(|b| b <= data_bytes);
        if !fits(1) {
            let slice_k = with(1).slice_k();
            let slices = if split == 1 {
                "whole".to_owned()
            } else {
                format!("in {split} slices (k_split) of {slice_k}")
            };
            return Err(Error::PayloadTooLarge(format!(
                "k = {k} is too long: one row of a's panels, k {slices} ({} bytes of {}), does \
                 not fit in a Socket.io message ({data_bytes} bytes of data, MAX_MESSAGE_BYTES = \
                 {}), so no tile of this job could ever be sent to a worker; a larger k_split \
                 (at most {}) makes shorter rows",
                slice_k.saturating_mul(dtype.size()),
                dtype.name(),
                limits.max_message_bytes,
                MAX_SPLIT.min(k)
            )));
        }
        // `fits` only fails more often and the task count only falls as the tile grows, so
        // each bound is a binary search.
        let largest = last_true(1, MAX_TILE, fits);
        let few_enough = |t| with(t).tasks_total() <= limits.max_tasks;
        // Each slice of k multiplies the tasks.
        let sliced = match split {
            1 => String::new(),
            s => format!(" with k in {s} slices"),
        };
        if !few_enough(MAX_TILE) {
            return Err(Error::PayloadTooLarge(format!(
                "job too large: even tile {MAX_TILE} cuts this {m}×{n} product{sliced} into {} tasks, \
                 more than MAX_TASKS_PER_JOB = {}",
                with(MAX_TILE).tasks_total(),
                limits.max_tasks
            )));
        }
        let smallest = first_true(1, MAX_TILE, few_enough);
        if smallest > largest {
            return Err(Error::PayloadTooLarge(format!(
                "no tile fits this {m}×{k}·{k}×{n} {} job: at least {smallest} keeps it within \
                 MAX_TASKS_PER_JOB = {} tasks, at most {largest} keeps each panel and result \
                 within one Socket.io message (MAX_MESSAGE_BYTES = {}); submit it in parts",
                dtype.name(),
                limits.max_tasks,
                limits.max_message_bytes
            )));
        }
        let accepted = if smallest == largest {
            format!("this job accepts tile {smallest} only")
        } else {
            format!("this job accepts tiles {smallest} to {largest}")
        };
        let tile = match tile {
            Some(t) if !(1..=MAX_TILE).contains(&t) => {
                return Err(Error::BadRequest(format!(
                    "tile must be between 1 and {MAX_TILE}, not {t}"
                )))
            }
            Some(t) if t < smallest => {
                return Err(Error::BadRequest(format!(
                    "tile {t} cuts this {m}×{n} product{sliced} into {} tasks, more than \
                     MAX_TASKS_PER_JOB = {}: use tile {smallest} or more ({accepted}), or \
                     leave tile out and the server picks one",
                    with(t).tasks_total(),
                    limits.max_tasks
                )))
            }
            Some(t) if t > largest => {
                return Err(Error::BadRequest(format!(
                    "tile {t} makes panels or results of {} bytes, more than one Socket.io \
                     message carries ({data_bytes} bytes of data, MAX_MESSAGE_BYTES = {}): \
                     use tile {largest} or less ({accepted}), or leave tile out and the server \
                     picks one",
                    with(t)
                        .largest_message()
                        .map_or_else(|| "too many".to_owned(), |b| b.to_string()),
                    limits.max_message_bytes
                )))
            }
            Some(t) => t,
            None => default_tile(with(1).slice_k(), dtype).clamp(smallest, largest),
        };
        Ok(with(tile))
    }

    /// Bytes of the largest message a task of this plan needs: its A panel (rows×k), its B
    /// panel (k×cols) or its result (rows×cols), whichever is largest; `None` past `usize`.
    pub fn largest_message(&self) -> Option<usize> {
        let rows = self.tile.min(self.m);
        let cols = self.tile.min(self.n);
        let e = self.dtype.size();
        let k = self.slice_k();
        let a = rows.checked_mul(k)?.checked_mul(e)?;
        let b = cols.checked_mul(k)?.checked_mul(e)?;
        let c = rows.checked_mul(cols)?.checked_mul(e)?;
        Some(a.max(b).max(c))
    }

    pub fn tile_rows(&self) -> usize {
        self.m.div_ceil(self.tile)
    }

    pub fn tile_cols(&self) -> usize {
        self.n.div_ceil(self.tile)
    }

    /// Columns of tasks: each slice of k has a column of tasks per tile column of C.
    pub fn task_cols(&self) -> usize {
        self.tile_cols().saturating_mul(self.split)
    }

    /// Tasks: tiles of C times slices of k; saturates rather than wraps for a shape no plan
    /// would accept.
    pub fn tasks_total(&self) -> usize {
        self.tile_rows().saturating_mul(self.task_cols())
    }

    /// Where slice `s` of k starts; slices differ in length by one at most.
    fn k_start(&self, s: usize) -> usize {
        // Never past k·MAX_SPLIT, far inside usize for any plan's k.
        s * self.k / self.split
    }

    /// Elements of k in its longest slice: what a panel holds.
    pub fn slice_k(&self) -> usize {
        self.k.div_ceil(self.split)
    }

    /// The task in tile row `tile_row` and task column `tile_col`, which is
    /// `slice × tile_cols + col`: the slice in the tile column, so that a job's tasks keep
    /// two coordinates wherever they are stored, claimed and cut into blocks.
    pub fn tile(&self, tile_row: usize, tile_col: usize) -> Tile {
        let (slice, col) = (tile_col / self.tile_cols(), tile_col % self.tile_cols());
        let row0 = tile_row * self.tile;
        let col0 = col * self.tile;
        let k0 = self.k_start(slice);
        Tile {
            tile_row,
            tile_col,
            row0,
            col0,
            rows: self.tile.min(self.m - row0),
            cols: self.tile.min(self.n - col0),
            slice,
            k0,
            kn: self.k_start(slice + 1) - k0,
        }
    }

    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.tile_rows()).flat_map(move |r| (0..self.task_cols()).map(move |c| self.tile(r, c)))
    }

    /// The key of a task's A panel among the job's: its tile row and slice of k.
    pub fn a_key(&self, t: &Tile) -> usize {
        t.slice * self.tile_rows() + t.tile_row
    }

    /// The tile row and slice of k of A's panel `key` (see [`Plan::a_key`]).
    pub fn a_panel_of(&self, key: usize) -> (usize, usize) {
        (key % self.tile_rows(), key / self.tile_rows())
    }

    /// Bytes of a tile's A row panel (rows×k): one contiguous slice of A. Whole k only, as
    /// the helpers below: a split job's panels are cut by `Store::panel`.
    pub fn a_panel(&self, a: &Bytes, t: &Tile) -> Bytes {
        let row_bytes = self.k * self.dtype.size();
        a.slice(t.row0 * row_bytes..(t.row0 + t.rows) * row_bytes)
    }

    /// Bytes of a tile's B column panel (k×cols) inside `b_panels` (see [`Plan::panelize_b`]).
    pub fn b_panel(&self, b_panels: &Bytes, t: &Tile) -> Bytes {
        let start = self.k * t.col0 * self.dtype.size();
        b_panels.slice(start..start + self.k * t.cols * self.dtype.size())
    }

    /// Re-lays B (k×n row-major) as its column panels, each k×width row-major, end to end,
    /// so each task's B input is a zero-copy slice.
    pub fn panelize_b(&self, b: &[u8]) -> Vec<u8> {
        let e = self.dtype.size();
        let mut out = Vec::with_capacity(b.len());
        for col in 0..self.tile_cols() {
            let t = self.tile(0, col);
            for p in 0..self.k {
                let start = (p * self.n + t.col0) * e;
                out.extend_from_slice(&b[start..start + t.cols * e]);
            }
        }
        out
    }

    /// B (k×n row-major) back from its column panels (see [`Plan::panelize_b`]).
    pub fn unpanelize_b(&self, b_panels: &[u8]) -> Vec<u8> {
        let e = self.dtype.size();
        let mut out = vec![0; self.k * self.n * e];
        let mut at = 0;
        for col in 0..self.tile_cols() {
            let t = self.tile(0, col);
            for p in 0..self.k {
                let start = (p * self.n + t.col0) * e;
                let row = b_panels.get(at..at + t.cols * e).unwrap_or_default();
                out[start..start + row.len()].copy_from_slice(row);
                at += t.cols * e;
            }
        }
        out
    }

    /// Copies one finished tile into the full product `c` (m×n row-major bytes).
    pub fn place(&self, c: &mut [u8], t: &Tile, tile_bytes: &[u8]) {
        let e = self.dtype.size();
        for r in 0..t.rows {
            let dst = ((t.row0 + r) * self.n + t.col0) * e;
            c[dst..dst + t.cols * e].copy_from_slice(&tile_bytes[r * t.cols * e..][..t.cols * e]);
        }
    }

    /// Bytes of a tile's two panels, as a delivery without a cache sends them.
    pub fn panel_bytes(&self, t: &Tile) -> usize {
        (t.rows * t.kn + t.kn * t.cols) * self.dtype.size()
    }

    /// Bytes of a split job's partial products as the server keeps them until they are
    /// summed (split × C; none for a whole-k job).
    pub fn partials_bytes(&self) -> u64 {
        if self.split == 1 {
            return 0;
        }
        let bytes = (self.m as u128) * (self.n as u128) * (self.split * self.dtype.size()) as u128;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    /// Multiply-adds times two: the flops a task's product takes.
    pub fn flops(&self, t: &Tile) -> f64 {
        2.0 * (t.rows * t.kn * t.cols) as f64
    }

    /// Bytes a tile's result must have.
    pub fn result_len(&self, t: &Tile) -> usize {
        t.rows * t.cols * self.dtype.size()
    }
}

/// The largest `x` in `lo..=hi` for which `pred` holds, when `pred` holds at `lo` and, once
/// false, stays false.
fn last_true(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if pred(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The smallest `x` in `lo..=hi` for which `pred` holds, when `pred` holds at `hi` and, once
/// true, stays true.
fn first_true(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

fn default_tile(k: usize, dtype: Dtype) -> usize {
    let by_budget = PANEL_BUDGET_BYTES / (k * dtype.size()).max(1);
    // Multiples of 16 suit every kernel's register tile; never below 16 unless k is enormous.
    (by_budget.min(256) / 16 * 16).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Matrix {
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|i| (f(i / cols, i % cols) as f32).to_le_bytes())
            .collect();
        Matrix::new("m", Dtype::F32, rows, cols, Bytes::from(data)).expect("valid")
    }

    /// Cuts A·B into tiles, multiplies each tile from its panels alone, and assembles: the
    /// result must equal the direct product for every awkward shape.
    #[test]
    fn tiles_cover_the_product_exactly() {
        for &(m, k, n, tile) in &[
            (1, 1, 1, 1),
            (1, 1, 1, 256),
            (7, 3, 5, 2),
            (65, 1, 33, 16),
            (100, 7, 1, 32),
            (1, 9, 100, 8),
            (130, 20, 70, 64),
        ] {
            let a = matrix(m, k, |i, j| (i * 3 + j) as f64 % 7.0 - 3.0);
            let b = matrix(k, n, |i, j| (i + 2 * j) as f64 % 5.0 - 2.0);
            let plan = Plan::new(&a, &b, Some(tile), &LIMITS).expect("valid plan");
            let panels = Bytes::from(plan.panelize_b(&b.data));
            let mut c = vec![0u8; m * n * 4];
            let mut seen = 0;
            for t in plan.tiles() {
                let ap = to_f64(Dtype::F32, &plan.a_panel(&a.data, &t));
                let bp = to_f64(Dtype::F32, &plan.b_panel(&panels, &t));
                assert_eq!(ap.len(), t.rows * k);
                assert_eq!(bp.len(), k * t.cols);
                let tile: Vec<u8> = (0..t.rows * t.cols)
                    .flat_map(|idx| {
                        let (r, s) = (idx / t.cols, idx % t.cols);
                        let v: f64 = (0..k).map(|p| ap[r * k + p] * bp[p * t.cols + s]).sum();
                        (v as f32).to_le_bytes()
                    })
                    .collect();
                assert_eq!(tile.len(), plan.result_len(&t));
                plan.place(&mut c, &t, &tile);
                seen += 1;
            }
            assert_eq!(seen, plan.tasks_total());
            let (av, bv, cv) = (a.to_f64(), b.to_f64(), to_f64(Dtype::F32, &c));
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
                    assert_eq!(
                        cv[i * n + j],
                        want,
                        "C[{i}][{j}] for {m}×{k}·{k}×{n} tile {tile}"
                    );
                }
            }
        }
    }

    /// The defaults of `MAX_TASKS_PER_JOB` and `MAX_MESSAGE_BYTES`, and `MAX_JOB_ELEMENTS`'s
    /// before jobs moved to disk (the shapes below are cut to it).
    const LIMITS: PlanLimits = PlanLimits {
        max_job_elements: 200_000_000,
        max_tasks: 100_000,
        max_message_bytes: 64 * 1024 * 1024,
    };

    fn json(body: &str) -> Result<JsonJob, Error> {
        JsonJob::parse(body.as_bytes(), 1000)
    }

    fn json_error(body: &str) -> String {
        json(body).expect_err(body).to_string()
    }

    #[test]
    fn json_is_read_into_matrix_bytes() {
        let job = json(r#"{"name": "x", "a": [[1, 2.5], [-3, 4e2]], "b": [[1], [2]], "tile": 4, "extra": [{"deep": [1]}]}"#)
            .expect("valid");
        assert_eq!((job.a.rows, job.a.cols, job.a.dtype), (2, 2, Dtype::F32));
        assert_eq!(job.a.to_f64(), vec![1.0, 2.5, -3.0, 400.0]);
        assert_eq!((job.b.rows, job.b.cols), (2, 1));
        assert_eq!((job.cut.tile, job.name.as_str()), (Some(4), "x"));
        // The dtype may come after the matrices; f64 keeps every digit.
        let job = json(r#"{"a": [[0.1]], "b": [[1]], "dtype": "f64"}"#).expect("valid");
        assert_eq!((job.a.dtype, job.a.to_f64()), (Dtype::F64, vec![0.1]));
    }

    #[test]
    fn json_input_errors_say_what_is_wrong() {
        let cases = [
            (
                r#"{"a": [[1, 2], [3]], "b": [[1]]}"#,
                "a is ragged: row 1 has 1 columns, row 0 has 2",
            ),
            (
                r#"{"a": [[1], [3, 4]], "b": [[1]]}"#,
                "a is ragged: row 1 has more than 1 columns",
            ),
            (
                r#"{"a": [[1, "x"]], "b": [[1]]}"#,
                "a[0][1] is not a number: \"x\"",
            ),
            (
                r#"{"a": [[1, [2]]], "b": [[1]]}"#,
                "a[0][1] is not a number",
            ),
            (
                r#"{"a": [[1], null], "b": [[1]]}"#,
                "a[1] must be an array of numbers",
            ),
            (r#"{"a": [], "b": [[1]]}"#, "a is empty"),
            (r#"{"a": [[]], "b": [[1]]}"#, "a is empty"),
            (r#"{"a": 3, "b": [[1]]}"#, "a must be an array of rows"),
            (r#"{"a": [[1e300]], "b": [[1]]}"#, "not finite"),
            (r#"{"a": [[1]]}"#, "missing b"),
            (
                r#"{"a": [[1]], "a": [[1]], "b": [[1]]}"#,
                "a is given twice",
            ),
            (r#"{"a": [[1]], "b": [[1]], "dtype": "int8"}"#, "dtype"),
            (
                r#"{"a": [[1]], "b": [[1]], "tile": "big"}"#,
                "tile must be a positive integer",
            ),
            (
                r#"{"a": [[1]], "b": [[1]], "tile": -1}"#,
                "tile must be a positive integer",
            ),
            (r#"[1, 2]"#, "must be an object"),
            (r#"{"a": [[1]], "b": "#, "invalid JSON body"),
            (r#"{"a": [[1]], "b": [[1]]} trailing"#, "invalid JSON body"),
        ];
        for (body, expected) in cases {
            let error = json_error(body);
            assert!(
                error.contains(expected),
                "{body}: {error:?} should say {expected:?}"
            );
        }
    }

    /// The attack of issue #12, item 3: one long first row and 200,000 empty rows in about a
    /// megabyte. Reserving rows × first row's length aborted the process; now the second row
    /// stops the parse and memory never exceeds the first row.
    #[test]
    fn a_ragged_body_is_refused_at_its_first_short_row() {
        let mut body = String::from(r#"{"a": [["#);
        body.push_str(&vec!["0"; 300_000].join(","));
        body.push(']');
        body.push_str(&",[]".repeat(200_000));
        body.push_str(r#"], "b": [[1]]}"#);
        assert!(body.len() > 1_000_000);
        let error = JsonJob::parse(body.as_bytes(), 200_000_000).expect_err("ragged");
        assert!(matches!(error, Error::BadRequest(_)));
        assert!(error
            .to_string()
            .contains("a is ragged: row 1 has 0 columns, row 0 has 300000"));
    }

    #[test]
    fn json_numbers_are_counted_against_the_element_limit_as_they_are_read() {
        // 1001 numbers in A and B against a limit of 1000: refused at the 1001st, as 413.
        let row = vec!["1"; 1001].join(",");
        let error = json(&format!(r#"{{"a": [[{row}]], "b": [[1]]}}"#)).expect_err("too many");
        assert!(matches!(error, Error::PayloadTooLarge(_)), "{error:?}");
        assert!(error.to_string().contains("more than 1000 elements"));
        let a = vec!["1"; 999].join(",");
        let b = vec!["[1]"; 999].join(",");
        let error = json(&format!(r#"{{"a": [[{a}]], "b": [{b}]}}"#)).expect_err("A + B");
        assert!(matches!(error, Error::PayloadTooLarge(_)), "{error:?}");
        json(&format!(r#"{{"a": [[{a}]], "b": [[1]]}}"#)).expect("exactly at the limit");
    }

    #[test]
    fn a_tile_too_small_for_the_shape_is_refused_with_the_smallest_accepted() {
        // Issue #12, item 2: 3000×1 · 1×3000 at tile 1 would be 9 million tasks.
        let error = Plan::for_shape(Dtype::F32, 3000, 1, 3000, Some(1), &LIMITS)
            .expect_err("9 million tasks");
        assert!(matches!(error, Error::BadRequest(_)));
        let text = error.to_string();
        assert!(text.contains("9000000 tasks"), "{text}");
        assert!(text.contains("use tile 10 or more"), "{text}");
        // 10 is accepted (300² = 90,000 tasks), 9 is not (334² = 111,556).
        let plan = Plan::for_shape(Dtype::F32, 3000, 1, 3000, Some(10), &LIMITS).expect("10");
        assert_eq!(plan.tasks_total(), 90_000);
        assert!(Plan::for_shape(Dtype::F32, 3000, 1, 3000, Some(9), &LIMITS).is_err());
        // The 2·10⁸-task variant, just within MAX_JOB_ELEMENTS.
        let text = Plan::for_shape(Dtype::F32, 14141, 1, 14141, Some(1), &LIMITS)
            .expect_err("2·10⁸ tasks")
            .to_string();
        assert!(text.contains("use tile 45 or more"), "{text}");
        // Without a tile the server picks one within the cap.
        let plan = Plan::for_shape(Dtype::F32, 14141, 1, 14141, None, &LIMITS).expect("default");
        assert!(plan.tasks_total() <= LIMITS.max_tasks);
    }

    #[test]
    fn the_task_cap_is_enforced_for_every_tile() {
        let limits = PlanLimits {
            max_tasks: 7,
            ..LIMITS
        };
        for (m, n) in [(1, 1), (10, 10), (100, 3), (4096, 4096), (5000, 20)] {
            for tile in [None, Some(1), Some(2), Some(3), Some(16), Some(4096)] {
                if let Ok(plan) = Plan::for_shape(Dtype::F32, m, 1, n, tile, &limits) {
                    assert!(plan.tasks_total() <= 7, "{m}×{n} tile {tile:?}");
                }
            }
            // Whenever some tile is accepted, leaving the tile out is accepted too.
            let any = (1..=MAX_TILE)
                .any(|t| Plan::for_shape(Dtype::F32, m, 1, n, Some(t), &limits).is_ok());
            assert_eq!(
                any,
                Plan::for_shape(Dtype::F32, m, 1, n, None, &limits).is_ok(),
                "{m}×{n}"
            );
        }
        // Even the largest tile makes too many tasks: 413, not a tile hint.
        let limits = PlanLimits {
            max_tasks: 3,
            ..LIMITS
        };
        let error =
            Plan::for_shape(Dtype::F32, 10_000, 1, 10_000, None, &limits).expect_err("9 tiles");
        assert!(matches!(error, Error::PayloadTooLarge(_)), "{error:?}");
    }

    #[test]
    fn every_panel_and_result_fits_one_message() {
        // Issue #12, item 8: at 64 MiB an f64 result of 2897² is over the limit.
        let error = Plan::for_shape(Dtype::F64, 4000, 1, 4000, Some(2897), &LIMITS)
            .expect_err("result too large");
        assert!(matches!(error, Error::BadRequest(_)));
        assert!(
            error.to_string().contains("use tile 2804 or less"),
            "{error}"
        );
        let plan = Plan::for_shape(Dtype::F64, 4000, 1, 4000, Some(2804), &LIMITS).expect("fits");
        assert!(plan.largest_message().expect("small") <= LIMITS.message_data_bytes());
        // Panels: k = 100,000 f32 rows are 400 kB each, so at most 157 of them per message
        // of 64 MiB less a sixteenth.
        let whole = Cut {
            tile: Some(256),
            split: Some(1),
        };
        let error = Plan::for_shape(Dtype::F32, 300, 100_000, 300, whole, &LIMITS)
            .expect_err("panel too large");
        assert!(
            error.to_string().contains("use tile 157 or less"),
            "{error}"
        );
        // Unless k is split, as it is by default: 25 slices of 4,000.
        let plan =
            Plan::for_shape(Dtype::F32, 300, 100_000, 300, Some(256), &LIMITS).expect("split");
        assert_eq!((plan.split, plan.slice_k()), (25, 4000));
        assert!(plan.largest_message().expect("small") <= LIMITS.message_data_bytes());
        // The default tile respects the limit as well, here a small one.
        let small = PlanLimits {
            max_message_bytes: 64 * 1024,
            ..LIMITS
        };
        for (m, k, n, dtype) in [
            (1000, 1, 1000, Dtype::F64),
            (500, 3000, 500, Dtype::F32),
            (1, 7000, 1, Dtype::F64),
        ] {
            let plan = Plan::for_shape(dtype, m, k, n, None, &small).expect("some tile fits");
            assert!(
                plan.largest_message().expect("small") <= small.message_data_bytes(),
                "{m}×{k}×{n}: tile {}",
                plan.tile
            );
        }
        // A row of A longer than a message can never be sent: 413.
        let whole = Cut {
            tile: None,
            split: Some(1),
        };
        let error = Plan::for_shape(Dtype::F64, 2, 8000, 2, whole, &small).expect_err("k too long");
        assert!(matches!(error, Error::PayloadTooLarge(_)), "{error:?}");
        assert!(
            error.to_string().contains("k = 8000 is too long"),
            "{error}"
        );
        assert!(error.to_string().contains("k_split"), "{error}");
        // One task at most, but one tile of 100² f64 does not fit: no tile works, 413.
        let tight = PlanLimits {
            max_tasks: 1,
            ..small
        };
        let error = Plan::for_shape(Dtype::F64, 100, 1, 100, None, &tight).expect_err("no tile");
        assert!(matches!(error, Error::PayloadTooLarge(_)), "{error:?}");
        assert!(error.to_string().contains("at least 100"), "{error}");
        assert!(error.to_string().contains("at most 87"), "{error}");
    }

    #[test]
    fn k_is_split_on_request_or_past_4096_and_every_task_covers_one_slice() {
        let plan = |m, k, n, cut: Cut| Plan::for_shape(Dtype::F32, m, k, n, cut, &LIMITS);
        let auto = |k| plan(64, k, 64, Some(64).into()).expect("plan").split;
        assert_eq!((auto(1), auto(4096), auto(4097), auto(16384)), (1, 1, 2, 4));
        assert_eq!(auto(1 << 20), MAX_SPLIT, "never past MAX_SPLIT");
        // Asked for: 1 to min(k, MAX_SPLIT), else 400 naming the range.
        let asked = |k, split| {
            plan(
                8,
                k,
                8,
                Cut {
                    tile: Some(4),
                    split: Some(split),
                },
            )
        };
        assert_eq!(asked(10, 3).expect("3 of 10").split, 3);
        for (k, split) in [(10, 0), (10, 11), (1000, MAX_SPLIT + 1)] {
            let e = asked(k, split).expect_err("out of range");
            assert!(matches!(e, Error::BadRequest(_)), "{e:?}");
            assert!(
                e.to_string().contains("k_split must be between 1 and"),
                "{e}"
            );
        }
        // 10 in 3 slices: 3, 3, 4, each task a (tile, slice) once, slices after each other.
        let p = asked(10, 3).expect("plan");
        assert_eq!((p.tile_cols(), p.task_cols(), p.tasks_total()), (2, 6, 12));
        let mut seen = std::collections::HashSet::new();
        for t in p.tiles() {
            assert!(seen.insert((t.row0, t.col0, t.slice)), "{t:?} twice");
            assert_eq!(t.slice, t.tile_col / p.tile_cols());
            assert_eq!(t.col0, (t.tile_col % p.tile_cols()) * p.tile);
            assert_eq!(p.flops(&t), 2.0 * (t.rows * t.kn * t.cols) as f64);
        }
        let slices: Vec<(usize, usize)> = (0..3)
            .map(|s| (p.tile(0, s * 2).k0, p.tile(0, s * 2).kn))
            .collect();
        assert_eq!(slices, [(0, 3), (3, 3), (6, 4)]);
        // A panel keys: one per tile row and slice, and back.
        let t = p.tile(1, 5);
        assert_eq!((t.slice, p.a_key(&t)), (2, 5));
        assert_eq!(p.a_panel_of(5), (1, 2));
        // The partials a split job keeps until they are summed: split × C.
        assert_eq!(p.partials_bytes(), 3 * 8 * 8 * 4);
        assert_eq!(asked(10, 1).expect("whole").partials_bytes(), 0);
        // The tile the server picks is for the panels of one slice: 16384 in 4 slices gives
        // the 4096-long panels tile 256, as 4096 whole does.
        assert_eq!(
            plan(4096, 16384, 4096, None.into()).expect("plan").tile,
            256
        );
    }

    #[test]
    fn sizes_are_checked_without_overflow() {
        let huge = usize::MAX / 2;
        for (m, k, n) in [(huge, huge, huge), (huge, 1, 3), (1, huge, 1), (3, 1, huge)] {
            let error = Plan::for_shape(Dtype::F64, m, k, n, None, &LIMITS).expect_err("too large");
            assert!(
                matches!(error, Error::PayloadTooLarge(_)),
                "{m}×{k}×{n}: {error:?}"
            );
        }
        let plan = Plan {
            dtype: Dtype::F64,
            m: huge,
            k: huge,
            n: huge,
            tile: 1,
            split: 1,
        };
        assert_eq!(plan.tasks_total(), usize::MAX);
        assert_eq!(plan.largest_message(), None);
    }

    #[test]
    fn default_tile_keeps_panels_small() {
        assert_eq!(default_tile(1024, Dtype::F32), 256);
        assert_eq!(default_tile(65536, Dtype::F32), 64);
        assert_eq!(default_tile(1 << 24, Dtype::F64), 16);
    }
}
