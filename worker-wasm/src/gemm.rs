//! Cache-blocked, packed GEMM with a register-tiled micro-kernel (the GotoBLAS/BLIS layout).
//!
//! For each k-block of depth `KC`, B is packed into column micro-panels of `NR` columns,
//! interleaved along k and zero-padded at the right edge, so the micro-kernel streams it
//! contiguously. A is read in place, `MR` rows at a time (see [`Rows`]). A packed B
//! micro-panel (KC×NR) stays in L1 while the micro-kernel walks down a block of `MC` rows of A
//! (MC×KC, in L2). The micro-kernel keeps an `MR`×`NR` block of C in registers across the
//! k-block and adds it straight into C; tiles at the bottom and right edges go through a small
//! buffer instead.
//!
//! The register tile is chosen per build by measurement in V8, which has 15 usable 128-bit
//! registers: a tile whose accumulators, B vectors and broadcast A value do not fit spills and
//! runs far slower. With `simd128` the micro-kernels use `f32x4`/`f64x2` explicitly, A's values
//! broadcast straight from memory (`v128.load32_splat`); with `relaxed-simd` they use fused
//! multiply-add, which frees the register a separate product needs. Without SIMD a plain Rust
//! micro-kernel over fixed-size arrays serves both types.

/// Depth of a k-block.
const KC: usize = 256;
/// Rows of A per block: an MC×KC block of A stays in L2 while B's micro-panels pass by.
const MC: usize = 120;

/// Register tiles (rows × columns of C) per build, picked by measurement (docs/benchmarks.md).
#[cfg(all(target_feature = "simd128", target_feature = "relaxed-simd"))]
mod tile {
    pub const F32: (usize, usize) = (3, 12);
    pub const F64: (usize, usize) = (3, 6);
}
#[cfg(all(target_feature = "simd128", not(target_feature = "relaxed-simd")))]
mod tile {
    pub const F32: (usize, usize) = (4, 8);
    pub const F64: (usize, usize) = (4, 4);
}
#[cfg(not(target_feature = "simd128"))]
mod tile {
    pub const F32: (usize, usize) = (4, 8);
    pub const F64: (usize, usize) = (4, 4);
}

/// Rows of C per f32 micro-kernel call in this build.
pub const MR: usize = tile::F32.0;
/// Columns of C per f32 micro-kernel call in this build.
pub const NR: usize = tile::F32.1;
const MR64: usize = tile::F64.0;
const NR64: usize = tile::F64.1;

/// `c = a·b` in f32; lengths are checked by the caller.
pub fn gemm_f32(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    gemm::<f32, MR, NR>(a, b, c, m, k, n, micro::f32_tile::<MR, NR>);
}

/// `c = a·b` in f64; lengths are checked by the caller.
pub fn gemm_f64(a: &[f64], b: &[f64], c: &mut [f64], m: usize, k: usize, n: usize) {
    gemm::<f64, MR64, NR64>(a, b, c, m, k, n, micro::f64_tile::<MR64, NR64>);
}

/// A micro-kernel: C[0..MR, 0..NR] (rows `ldc` apart in `c`) = Σₚ A[.., p]·pb[p] over `kc`
/// steps of A's rows and packed B (NR per step), plus C's old values if `load`.
/// Full tiles go straight to C, so no pass zeroes C first or adds partial sums afterwards.
type Micro<T> = for<'a> fn(usize, Rows<'a, T>, &[T], &mut [T], usize, bool);

#[allow(clippy::too_many_arguments, reason = "a GEMM's operands, kept flat")]
fn gemm<T, const MR: usize, const NR: usize>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    m: usize,
    k: usize,
    n: usize,
    micro: Micro<T>,
) where
    T: Copy + Default + std::ops::Add<Output = T>,
{
    let zero = T::default();
    let kc_max = KC.min(k);
    let panels = n.div_ceil(NR);
    let mut pb: Vec<T> = vec![zero; kc_max * panels * NR];
    // Edge tiles are computed here, then copied into the part of C that exists.
    let mut edge: Vec<T> = vec![zero; MR * NR];
    let mut p0 = 0;
    while p0 < k {
        let kc = KC.min(k - p0);
        pack_b(b, n, p0, kc, panels, NR, &mut pb);
        let mut i0 = 0;
        while i0 < m {
            let mc = MC.min(m - i0);
            let strips = mc.div_ceil(MR);
            for panel in 0..panels {
                let j0 = panel * NR;
                let w = NR.min(n - j0);
                let bp = &pb[panel * kc * NR..][..kc * NR];
                for strip in 0..strips {
                    let r0 = i0 + strip * MR;
                    let h = MR.min(m - r0);
                    let rows = Rows {
                        a: &a[r0 * k + p0..],
                        lda: k,
                        h,
                    };
                    if h == MR && w == NR {
                        micro(kc, rows, bp, &mut c[r0 * n + j0..], n, p0 > 0);
                        continue;
                    }
                    micro(kc, rows, bp, &mut edge, NR, false);
                    for r in 0..h {
                        let out = &mut c[(r0 + r) * n + j0..][..w];
                        for (o, v) in out.iter_mut().zip(&edge[r * NR..][..w]) {
                            *o = if p0 > 0 { *o + *v } else { *v };
                        }
                    }
                }
            }
            i0 += mc;
        }
        p0 += kc;
    }
}

/// Packs B[p0..p0+kc, :] into micro-panels of `nr` columns: panel-major, then k, then column;
/// columns past n are zero.
fn pack_b<T: Copy + Default>(
    b: &[T],
    n: usize,
    p0: usize,
    kc: usize,
    panels: usize,
    nr: usize,
    dst: &mut [T],
) {
    for panel in 0..panels {
        let j0 = panel * nr;
        let w = nr.min(n - j0);
        let out = &mut dst[panel * kc * nr..][..kc * nr];
        for (p, o) in out.chunks_exact_mut(nr).enumerate() {
            o[..w].copy_from_slice(&b[(p0 + p) * n + j0..][..w]);
            o[w..].fill(T::default());
        }
    }
}

/// The rows of A a micro-kernel reads in place: `h` ≤ MR rows `lda` apart, starting at the
/// k-block's first column. A is not packed: the micro-kernel broadcasts one value per row and
/// step straight from memory, which costs the same as from a packed copy, and packing (a
/// strided transpose) would cost a sizeable fraction of a tile with small n.
#[derive(Clone, Copy)]
struct Rows<'a, T> {
    a: &'a [T],
    lda: usize,
    h: usize,
}

impl<T> Rows<'_, T> {
    /// Pointers to MR rows, the last real row standing in for the missing ones (their sums
    /// land in the edge buffer and are dropped), after checking that `kc` steps stay inside.
    #[cfg_attr(not(target_feature = "simd128"), allow(dead_code))]
    #[inline(always)]
    fn ptrs<const MR: usize>(&self, kc: usize) -> [*const T; MR] {
        assert!(self.h >= 1 && self.a.len() >= (self.h - 1) * self.lda + kc);
        std::array::from_fn(|r| self.a[r.min(self.h - 1) * self.lda..].as_ptr())
    }
}

/// The micro-kernels. Each reads MR rows of A in place ([`Rows`], `kc` steps along them) and
/// packed B (`kc`×NR).
mod micro {
    /// Plain Rust: LLVM vectorises what the target allows. Used for every type without simd128.
    #[cfg_attr(target_feature = "simd128", allow(dead_code))]
    #[inline(always)]
    pub fn generic<T, const MR: usize, const NR: usize>(
        kc: usize,
        a: super::Rows<'_, T>,
        pb: &[T],
        c: &mut [T],
        ldc: usize,
        load: bool,
    ) where
        T: Copy + Default + std::ops::Mul<Output = T> + std::ops::AddAssign,
    {
        let rows: [&[T]; MR] = std::array::from_fn(|r| &a.a[r.min(a.h - 1) * a.lda..][..kc]);
        let mut acc = [[T::default(); NR]; MR];
        if load {
            for (r, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(&c[r * ldc..][..NR]);
            }
        }
        for (p, bv) in pb.chunks_exact(NR).take(kc).enumerate() {
            for r in 0..MR {
                let x = rows[r][p];
                for j in 0..NR {
                    acc[r][j] += x * bv[j];
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            c[r * ldc..][..NR].copy_from_slice(row);
        }
    }

    /// Without simd128, `f32_tile` and `f64_tile` are the generic kernel for their type (with
    /// the simd kernels' signature, so the callers need no cfg of their own).
    macro_rules! generic_tile {
        ($name:ident, $t:ty) => {
            #[cfg(not(target_feature = "simd128"))]
            pub fn $name<const MR: usize, const NR: usize>(
                kc: usize,
                a: super::Rows<'_, $t>,
                pb: &[$t],
                c: &mut [$t],
                ldc: usize,
                load: bool,
            ) {
                generic::<$t, MR, NR>(kc, a, pb, c, ldc, load);
            }
        };
    }
    generic_tile!(f32_tile, f32);
    generic_tile!(f64_tile, f64);

    #[cfg(target_feature = "simd128")]
    pub use simd::{f32_tile, f64_tile};

    #[cfg(target_feature = "simd128")]
    mod simd {
        use core::arch::wasm32::*;

        /// `c + x·y`: fused (one rounding, lane order as the engine chooses) with relaxed-simd,
        /// a separate multiply and add otherwise.
        #[inline(always)]
        fn madd32(x: v128, y: v128, c: v128) -> v128 {
            #[cfg(target_feature = "relaxed-simd")]
            return f32x4_relaxed_madd(x, y, c);
            #[cfg(not(target_feature = "relaxed-simd"))]
            return f32x4_add(c, f32x4_mul(x, y));
        }

        #[inline(always)]
        fn madd64(x: v128, y: v128, c: v128) -> v128 {
            #[cfg(target_feature = "relaxed-simd")]
            return f64x2_relaxed_madd(x, y, c);
            #[cfg(not(target_feature = "relaxed-simd"))]
            return f64x2_add(c, f64x2_mul(x, y));
        }

        /// Generates a micro-kernel for one lane type: `$lanes` values per v128, A broadcast
        /// from memory with `$splat`.
        macro_rules! tile_kernel {
            ($name:ident, $t:ty, $lanes:expr, $splat:ident, $st:ty, $madd:ident) => {
                #[inline(always)]
                pub fn $name<const MR: usize, const NR: usize>(
                    kc: usize,
                    rows: super::super::Rows<'_, $t>,
                    pb: &[$t],
                    c: &mut [$t],
                    ldc: usize,
                    load: bool,
                ) {
                    const { assert!(NR % $lanes == 0) };
                    assert!(pb.len() >= kc * NR && c.len() >= (MR - 1) * ldc + NR);
                    let a = rows.ptrs::<MR>(kc);
                    let nv = NR / $lanes;
                    let mut acc = [[f32x4_splat(0.0); NR]; MR];
                    let out = c.as_mut_ptr();
                    if load {
                        for r in 0..MR {
                            for v in 0..nv {
                                // Safety: r·ldc + v·lanes + lanes ≤ (MR-1)·ldc + NR ≤ c.len().
                                acc[r][v] = unsafe {
                                    v128_load(out.add(r * ldc + v * $lanes) as *const v128)
                                };
                            }
                        }
                    }
                    let mut b = pb.as_ptr();
                    for p in 0..kc {
                        // Safety: the assert above and `ptrs` keep every load of the kc steps
                        // inside A's rows and `pb`; v128 loads have no alignment requirement.
                        unsafe {
                            let mut bv = [f32x4_splat(0.0); NR];
                            for v in 0..nv {
                                bv[v] = v128_load(b.add(v * $lanes) as *const v128);
                            }
                            for r in 0..MR {
                                let x = $splat(a[r].add(p) as *const $st);
                                for v in 0..nv {
                                    acc[r][v] = $madd(x, bv[v], acc[r][v]);
                                }
                            }
                            b = b.add(NR);
                        }
                    }
                    for r in 0..MR {
                        for v in 0..nv {
                            // Safety: as for the loads above.
                            unsafe {
                                v128_store(out.add(r * ldc + v * $lanes) as *mut v128, acc[r][v])
                            };
                        }
                    }
                }
            };
        }
        tile_kernel!(f32_tile, f32, 4, v128_load32_splat, u32, madd32);
        tile_kernel!(f64_tile, f64, 2, v128_load64_splat, u64, madd64);
    }
}
