//! The check as it was before issue #12 (commit aa919ca, worst-case bound 8·(γₖ+u)·‖aᵢ‖·‖B‖_F),
//! kept so that `make bench-verify` measures the cost before and after in the same run.
//! Not used by the server.
//!
//! Checking a worker's tile before it is accepted (Freivalds' algorithm).
//!
//! For a random vector r, an honest tile C = A·B satisfies C·r = A·(B·r). Both sides cost
//! O(tile·k) to compute instead of the O(tile²·k) of the product, so checking is a small
//! fraction of the work. Everything here is computed in f64.
//!
//! # The acceptance bound
//!
//! An honest worker computes each entry ĉᵢⱼ in the job's precision (unit roundoff u: 2⁻²⁴ for
//! f32, 2⁻⁵³ for f64), summing k products in any order, with or without fused multiply-add,
//! and rounds the result once more when it stores it. The standard error analysis (Higham,
//! *Accuracy and Stability of Numerical Algorithms*, §3.1) bounds this for every summation
//! order:
//!
//! ```text
//! |ĉᵢⱼ − cᵢⱼ| ≤ Eᵢⱼ = (γₖ + u)·Σₚ |aᵢₚ|·|bₚⱼ| ≤ (γₖ + u)·‖aᵢ‖₂·‖bⱼ‖₂,   γₖ = k·u / (1 − k·u)
//! ```
//!
//! (the last step is Cauchy–Schwarz, which lets the bound be computed from row and column
//! norms in O(tile·k)). With r made of independent random signs (±1) drawn after the result
//! arrived, the honest discrepancy of row i, dᵢ = Σⱼ (ĉᵢⱼ − cᵢⱼ)·rⱼ, is a sum of independent
//! zero-mean terms bounded by Eᵢⱼ, so Hoeffding's inequality gives
//!
//! ```text
//! P(|dᵢ| ≥ t) ≤ 2·exp(−t² / (2·Σⱼ Eᵢⱼ²)),    Σⱼ Eᵢⱼ² ≤ (γₖ + u)²·‖aᵢ‖₂²·‖B‖_F²
//! ```
//!
//! We accept row i when |dᵢ| ≤ 8·(γₖ + u)·‖aᵢ‖₂·‖B‖_F + (the f64 rounding of the check itself).
//! The factor 8 puts the chance of refusing an honest row below 2·e⁻³² ≈ 3·10⁻¹⁴ per row and
//! vector, whatever kernel or browser computed it. A single wrong entry of size e at (i, j)
//! moves dᵢ by exactly |e| (|rⱼ| = 1), so it is caught with certainty once |e| exceeds twice
//! the bound; several wrong entries in a row can cancel for one r with probability at most
//! 1/2, so v vectors miss them with probability at most 2⁻ᵛ.

use rand::Rng;

use server::jobs::Dtype;

/// Hoeffding factor: √(2·ln(2/δ)) for δ ≈ 3·10⁻¹⁴, rounded up.
const CONFIDENCE: f64 = 8.0;

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// Row `row` of the tile differs by `diff`, more than the bound `bound`.
    Fail {
        row: usize,
        diff: f64,
        bound: f64,
    },
}

/// Checks `c` (m×n) against `a` (m×k) and `b` (k×n), all row-major little-endian `dtype`,
/// with `vectors` random sign vectors (rounded up to 1, 2, 4 or 6).
///
/// All vectors go through together, in one pass over each operand read straight from its
/// bytes: B·R and ‖B‖_F in one pass over B, then per row of the tile A·(B·R) with the row's
/// norm and C·R. No f64 copy of an operand is made, and the v independent sums per element keep
/// the CPU busy where one dot product at a time would wait on its own additions.
pub fn check(
    dtype: Dtype,
    a: &[u8],
    b: &[u8],
    c: &[u8],
    shape: (usize, usize, usize),
    vectors: usize,
    rng: &mut impl Rng,
) -> Verdict {
    let tile = Tile { a, b, c, shape };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `check_avx2` is compiled for.
        return unsafe { check_avx2(dtype, tile, vectors, rng) };
    }
    check_any(dtype, tile, vectors, rng)
}

/// A result with its operands, as [`check`] takes them.
#[derive(Clone, Copy)]
struct Tile<'a> {
    a: &'a [u8],
    b: &'a [u8],
    c: &'a [u8],
    shape: (usize, usize, usize),
}

/// [`check_any`] compiled for AVX2 and FMA: four f64 lanes per instruction instead of SSE2's
/// two, which halves the check on the servers that have them (nearly all x86-64 since 2015).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn check_avx2(dtype: Dtype, tile: Tile<'_>, vectors: usize, rng: &mut impl Rng) -> Verdict {
    check_any(dtype, tile, vectors, rng)
}

#[inline(always)]
fn check_any(dtype: Dtype, t: Tile<'_>, vectors: usize, rng: &mut impl Rng) -> Verdict {
    match (dtype, vectors) {
        (Dtype::F32, 0..=1) => check_with::<f32, 1>(t, rng),
        (Dtype::F32, 2) => check_with::<f32, 2>(t, rng),
        (Dtype::F32, 3..=4) => check_with::<f32, 4>(t, rng),
        (Dtype::F32, _) => check_with::<f32, 6>(t, rng),
        (Dtype::F64, 0..=1) => check_with::<f64, 1>(t, rng),
        (Dtype::F64, 2) => check_with::<f64, 2>(t, rng),
        (Dtype::F64, 3..=4) => check_with::<f64, 4>(t, rng),
        (Dtype::F64, _) => check_with::<f64, 6>(t, rng),
    }
}

/// An element type of the operands, read from little-endian bytes.
trait Element: 'static {
    const SIZE: usize;
    /// Unit roundoff of the type the worker computed in.
    const UNIT_ROUNDOFF: f64;
    fn read(bytes: &[u8]) -> f64;
}

impl Element for f32 {
    const SIZE: usize = 4;
    const UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;
    fn read(b: &[u8]) -> f64 {
        f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl Element for f64 {
    const SIZE: usize = 8;
    const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;
    fn read(b: &[u8]) -> f64 {
        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

fn values<E: Element>(bytes: &[u8]) -> impl Iterator<Item = f64> + '_ {
    bytes.chunks_exact(E::SIZE).map(E::read)
}

/// One row's products with every vector, Σⱼ xⱼ·wⱼ[s], and its sum of squares Σⱼ xⱼ². Each sum
/// is kept in four partial sums over interleaved elements: a single running sum makes every
/// addition wait for the one before (four cycles each), which bounded the whole check.
#[inline(always)]
fn row_dot<E: Element, const V: usize>(row: &[u8], w: &[[f64; V]]) -> ([f64; V], f64) {
    const LANES: usize = 4;
    let mut acc = [[0.0; V]; LANES];
    let mut squares = [0.0; LANES];
    let chunks = row.chunks_exact(E::SIZE * LANES);
    let rest = chunks.remainder();
    let mut ws = w.chunks_exact(LANES);
    for (xs, wj) in chunks.zip(&mut ws) {
        for l in 0..LANES {
            let x = E::read(&xs[l * E::SIZE..]);
            squares[l] += x * x;
            for s in 0..V {
                acc[l][s] += x * wj[l][s];
            }
        }
    }
    for (x, wj) in values::<E>(rest).zip(ws.remainder()) {
        squares[0] += x * x;
        for s in 0..V {
            acc[0][s] += x * wj[s];
        }
    }
    let sum = std::array::from_fn(|s| (acc[0][s] + acc[1][s]) + (acc[2][s] + acc[3][s]));
    (sum, (squares[0] + squares[1]) + (squares[2] + squares[3]))
}

#[inline(always)]
fn check_with<E: Element, const V: usize>(
    Tile {
        a,
        b,
        c,
        shape: (m, k, n),
    }: Tile<'_>,
    rng: &mut impl Rng,
) -> Verdict {
    debug_assert_eq!(
        (a.len(), b.len(), c.len()),
        (m * k * E::SIZE, k * n * E::SIZE, m * n * E::SIZE)
    );
    let u = E::UNIT_ROUNDOFF;
    let ku = k as f64 * u;
    let gamma = if ku < 0.5 { ku / (1.0 - ku) } else { 2.0 * ku };
    // The check's own f64 rounding: y and z each sum k + n terms bounded by the same norms.
    let check_error = 2.0 * (k + n + 2) as f64 * f64::EPSILON;
    let n_sqrt = (n as f64).sqrt();

    // V sign vectors, interleaved: r[j] holds the j-th sign of every vector.
    let r: Vec<[f64; V]> = (0..n)
        .map(|_| std::array::from_fn(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }))
        .collect();
    // B·R, and ‖B‖_F, in one pass over B.
    let mut b_squares = 0.0;
    let br: Vec<[f64; V]> = b
        .chunks_exact(n * E::SIZE)
        .map(|row| {
            let (acc, squares) = row_dot::<E, V>(row, &r);
            b_squares += squares;
            acc
        })
        .collect();
    let b_frobenius = f64::sqrt(b_squares);
    for (i, (a_row, c_row)) in a
        .chunks_exact(k * E::SIZE)
        .zip(c.chunks_exact(n * E::SIZE))
        .enumerate()
    {
        let (y, a_squares) = row_dot::<E, V>(a_row, &br);
        let (z, _) = row_dot::<E, V>(c_row, &r);
        let scale = a_squares.sqrt() * b_frobenius;
        let bound = CONFIDENCE * (gamma + u) * scale + check_error * scale * n_sqrt;
        for s in 0..V {
            // A NaN or infinity anywhere in C's row makes z non-finite (the signs are ±1 and
            // A and B are finite, checked at submission): such a row fails outright.
            if !z[s].is_finite() {
                return Verdict::Fail {
                    row: i,
                    diff: f64::INFINITY,
                    bound: 0.0,
                };
            }
            let diff = (y[s] - z[s]).abs();
            if diff > bound {
                return Verdict::Fail {
                    row: i,
                    diff,
                    bound,
                };
            }
        }
    }
    Verdict::Pass
}

/// How many vectors a worker's result is checked with: more for a new or recently wrong
/// worker, never fewer than two. One would save little (0.85 against 0.91 ms a 256² tile at
/// k = 4096, where reading the operands is most of the cost) and let errors that cancel in
/// pairs within a row through half the time; two let them through a quarter of the time.
#[allow(dead_code, reason = "kept whole, as it was")]
pub fn vectors_for(consecutive_verified: i64, refused: i64) -> usize {
    match (consecutive_verified, refused) {
        (c, r) if r > 0 && c < 50 => 6,
        (c, _) if c < 20 => 4,
        _ => 2,
    }
}
