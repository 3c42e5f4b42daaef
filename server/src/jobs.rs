//! Jobs as matrices: parsing submitted operands, cutting C into tiles, slicing each tile's
//! inputs, and assembling the product from finished tiles.
//!
//! Matrices are kept as row-major little-endian bytes from the moment they are parsed: that is
//! the layout stored in SQLite, sent to workers and returned as `.npy`, so no stage converts.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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
        if data.len() != rows * cols * dtype.size() {
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

    /// Builds a matrix from the JSON form `[[1, 2], [3, 4]]`, saying exactly what is wrong
    /// (ragged rows, a non-number, a value out of the dtype's range).
    pub fn from_json(name: &str, value: &serde_json::Value, dtype: Dtype) -> Result<Self, String> {
        let rows = value
            .as_array()
            .ok_or_else(|| format!("{name} must be an array of rows (e.g. [[1, 2], [3, 4]])"))?;
        let first = rows.first().ok_or_else(|| format!("{name} is empty"))?;
        let cols = first
            .as_array()
            .ok_or_else(|| format!("{name}[0] must be an array of numbers"))?
            .len();
        let mut data = Vec::with_capacity(rows.len() * cols * dtype.size());
        for (i, row) in rows.iter().enumerate() {
            let row = row
                .as_array()
                .ok_or_else(|| format!("{name}[{i}] must be an array of numbers"))?;
            if row.len() != cols {
                return Err(format!(
                    "{name} is ragged: row {i} has {} columns, row 0 has {cols}",
                    row.len()
                ));
            }
            for (j, v) in row.iter().enumerate() {
                let x = v
                    .as_f64()
                    .ok_or_else(|| format!("{name}[{i}][{j}] is not a number: {v}"))?;
                match dtype {
                    Dtype::F32 => data.extend_from_slice(&(x as f32).to_le_bytes()),
                    Dtype::F64 => data.extend_from_slice(&x.to_le_bytes()),
                }
            }
        }
        Matrix::new(name, dtype, rows.len(), cols, Bytes::from(data))
    }

    /// Values widened to f64 (for tests and the JSON result format).
    pub fn to_f64(&self) -> Vec<f64> {
        to_f64(self.dtype, &self.data)
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

/// How C = A·B is cut into tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub dtype: Dtype,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub tile: usize,
}

/// One tile of C: rows `row0..row0+rows`, columns `col0..col0+cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub tile_row: usize,
    pub tile_col: usize,
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Plan {
    /// Checks shapes and the requested tile; picks a tile when none is given.
    pub fn new(a: &Matrix, b: &Matrix, tile: Option<usize>) -> Result<Self, String> {
        if a.dtype != b.dtype {
            return Err(format!(
                "a is {} but b is {}: both must have the same dtype",
                a.dtype.name(),
                b.dtype.name()
            ));
        }
        if a.cols != b.rows {
            return Err(format!(
                "inner dimensions differ: a is {}×{} and b is {}×{} (a's columns must equal b's rows)",
                a.rows, a.cols, b.rows, b.cols
            ));
        }
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let tile = match tile {
            Some(t) if (1..=MAX_TILE).contains(&t) => t,
            Some(t) => return Err(format!("tile must be between 1 and {MAX_TILE}, not {t}")),
            None => default_tile(k, a.dtype),
        };
        Ok(Plan {
            dtype: a.dtype,
            m,
            k,
            n,
            tile,
        })
    }

    pub fn tile_rows(&self) -> usize {
        self.m.div_ceil(self.tile)
    }

    pub fn tile_cols(&self) -> usize {
        self.n.div_ceil(self.tile)
    }

    pub fn tasks_total(&self) -> usize {
        self.tile_rows() * self.tile_cols()
    }

    pub fn tile(&self, tile_row: usize, tile_col: usize) -> Tile {
        let row0 = tile_row * self.tile;
        let col0 = tile_col * self.tile;
        Tile {
            tile_row,
            tile_col,
            row0,
            col0,
            rows: self.tile.min(self.m - row0),
            cols: self.tile.min(self.n - col0),
        }
    }

    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.tile_rows()).flat_map(move |r| (0..self.tile_cols()).map(move |c| self.tile(r, c)))
    }

    /// Bytes of a tile's A row panel (rows×k): one contiguous slice of A.
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

    /// Copies one finished tile into the full product `c` (m×n row-major bytes).
    pub fn place(&self, c: &mut [u8], t: &Tile, tile_bytes: &[u8]) {
        let e = self.dtype.size();
        for r in 0..t.rows {
            let dst = ((t.row0 + r) * self.n + t.col0) * e;
            c[dst..dst + t.cols * e].copy_from_slice(&tile_bytes[r * t.cols * e..][..t.cols * e]);
        }
    }

    /// Bytes a tile's result must have.
    pub fn result_len(&self, t: &Tile) -> usize {
        t.rows * t.cols * self.dtype.size()
    }
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
            let plan = Plan::new(&a, &b, Some(tile)).expect("valid plan");
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

    #[test]
    fn json_input_errors_say_what_is_wrong() {
        let parse = |v: serde_json::Value| {
            Matrix::from_json("a", &v, Dtype::F32).expect_err("invalid input")
        };
        assert!(parse(serde_json::json!([[1, 2], [3]])).contains("ragged"));
        assert!(parse(serde_json::json!([[1, "x"]])).contains("a[0][1] is not a number"));
        assert!(parse(serde_json::json!([])).contains("empty"));
        assert!(parse(serde_json::json!([[]])).contains("empty"));
        assert!(parse(serde_json::json!(3)).contains("array of rows"));
        assert!(parse(serde_json::json!([[1e300]])).contains("not finite"));
    }

    #[test]
    fn default_tile_keeps_panels_small() {
        assert_eq!(default_tile(1024, Dtype::F32), 256);
        assert_eq!(default_tile(65536, Dtype::F32), 64);
        assert_eq!(default_tile(1 << 24, Dtype::F64), 16);
    }
}
