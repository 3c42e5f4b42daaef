//! Cache-blocked, packed GEMM with a register-tiled micro-kernel.
//!
//! B is packed, one k-block at a time, into column panels of `NR` columns (zero-padded at the
//! right edge) so the micro-kernel streams it contiguously; A is read in place, `MR` rows at a
//! time. The micro-kernel keeps an `MR`×`NR` block of C in registers across the k-block. With
//! `simd128` the f32 micro-kernel uses `f32x4` explicitly; otherwise (and for f64) it is plain
//! Rust over fixed-size arrays, which LLVM vectorises for the target.

/// Rows of C per micro-kernel call.
pub const MR: usize = 4;
/// Columns of C per micro-kernel call (two 128-bit vectors of f32).
pub const NR: usize = 8;
/// Depth of a k-block: a packed B block of KC×NR f32 stays in L1.
const KC: usize = 256;

macro_rules! gemm_impl {
    ($name:ident, $t:ty, $micro:ident) => {
        /// `c = a·b`; lengths are checked by the caller.
        pub fn $name(a: &[$t], b: &[$t], c: &mut [$t], m: usize, k: usize, n: usize) {
            c.fill(0.0);
            let panels = n.div_ceil(NR);
            let mut packed: Vec<$t> = vec![0.0; KC.min(k) * panels * NR];
            let mut p0 = 0;
            while p0 < k {
                let kc = KC.min(k - p0);
                // Pack B[p0..p0+kc, :] into panels of NR columns, zero-padded.
                for panel in 0..panels {
                    let j0 = panel * NR;
                    let w = NR.min(n - j0);
                    let dst = &mut packed[panel * KC.min(k) * NR..][..kc * NR];
                    for p in 0..kc {
                        let row = &b[(p0 + p) * n + j0..][..w];
                        let out = &mut dst[p * NR..][..NR];
                        out[..w].copy_from_slice(row);
                        out[w..].fill(0.0);
                    }
                }
                let mut i0 = 0;
                while i0 < m {
                    let h = MR.min(m - i0);
                    for panel in 0..panels {
                        let j0 = panel * NR;
                        let w = NR.min(n - j0);
                        let bp = &packed[panel * KC.min(k) * NR..][..kc * NR];
                        let mut acc = [[0.0 as $t; NR]; MR];
                        $micro(a, k, i0, h, p0, kc, bp, &mut acc);
                        for r in 0..h {
                            let out = &mut c[(i0 + r) * n + j0..][..w];
                            for (o, v) in out.iter_mut().zip(&acc[r][..w]) {
                                *o += *v;
                            }
                        }
                    }
                    i0 += MR;
                }
                p0 += kc;
            }
        }
    };
}

gemm_impl!(gemm_f32, f32, micro_f32);
gemm_impl!(gemm_f64, f64, micro_generic);

/// Rows of A for a micro-kernel: the `h` real rows, the last repeated to fill `MR` (their
/// results are discarded), so the kernel never branches on the edge.
#[inline(always)]
fn rows<T>(a: &[T], k: usize, i0: usize, h: usize, p0: usize, kc: usize) -> [&[T]; MR] {
    std::array::from_fn(|r| &a[(i0 + r.min(h - 1)) * k + p0..][..kc])
}

#[allow(
    clippy::too_many_arguments,
    reason = "a micro-kernel's operands, kept flat for speed"
)]
#[inline(always)]
fn micro_generic<T: Copy + std::ops::Mul<Output = T> + std::ops::AddAssign>(
    a: &[T],
    k: usize,
    i0: usize,
    h: usize,
    p0: usize,
    kc: usize,
    bp: &[T],
    acc: &mut [[T; NR]; MR],
) {
    let rows = rows(a, k, i0, h, p0, kc);
    for p in 0..kc {
        let bv: &[T; NR] = bp[p * NR..][..NR].try_into().expect("NR wide");
        for r in 0..MR {
            let x = rows[r][p];
            for j in 0..NR {
                acc[r][j] += x * bv[j];
            }
        }
    }
}

/// Without simd128 the f32 micro-kernel is the generic one (LLVM vectorises what it can).
#[cfg(not(target_feature = "simd128"))]
use micro_generic as micro_f32;

#[cfg(target_feature = "simd128")]
#[allow(
    clippy::too_many_arguments,
    reason = "a micro-kernel's operands, kept flat for speed"
)]
#[inline(always)]
fn micro_f32(
    a: &[f32],
    k: usize,
    i0: usize,
    h: usize,
    p0: usize,
    kc: usize,
    bp: &[f32],
    acc: &mut [[f32; NR]; MR],
) {
    use core::arch::wasm32::*;
    let rows = rows(a, k, i0, h, p0, kc);
    let mut c = [[f32x4_splat(0.0); 2]; MR];
    #[allow(
        clippy::needless_range_loop,
        reason = "p steps through A's rows and packed B together"
    )]
    for p in 0..kc {
        // Safety: `bp` holds kc×NR packed values (NR = 8), so both 16-byte loads at p·NR are in
        // bounds; v128_load has no alignment requirement.
        let (b0, b1) = unsafe {
            let ptr = bp.as_ptr().add(p * NR) as *const v128;
            (v128_load(ptr), v128_load(ptr.add(1)))
        };
        for r in 0..MR {
            let x = f32x4_splat(rows[r][p]);
            #[cfg(target_feature = "relaxed-simd")]
            {
                c[r][0] = f32x4_relaxed_madd(x, b0, c[r][0]);
                c[r][1] = f32x4_relaxed_madd(x, b1, c[r][1]);
            }
            #[cfg(not(target_feature = "relaxed-simd"))]
            {
                c[r][0] = f32x4_add(c[r][0], f32x4_mul(x, b0));
                c[r][1] = f32x4_add(c[r][1], f32x4_mul(x, b1));
            }
        }
    }
    for r in 0..MR {
        for (half, v) in c[r].iter().enumerate() {
            for l in 0..4 {
                acc[r][half * 4 + l] = match l {
                    0 => f32x4_extract_lane::<0>(*v),
                    1 => f32x4_extract_lane::<1>(*v),
                    2 => f32x4_extract_lane::<2>(*v),
                    _ => f32x4_extract_lane::<3>(*v),
                };
            }
        }
    }
}
