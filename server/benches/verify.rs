//! Verification figures for docs/benchmarks.md and docs/security.md (`make bench-verify`):
//! 1. the cost of checking a tile against the cost of computing it, measured in the same run;
//! 2. the smallest single-entry error the check refuses, against k, in f32 and f64;
//! 3. with `VERIFY_CORPUS=<file>` (written by worker-wasm/bench/verify-corpus.mjs and
//!    scripts/verify_corpus_numpy.py, see scripts/verify-corpus.sh): every honest tile of the
//!    corpus checked, false refusals counted, and the refusal rates of three lie patterns.
//!
//! Prints figures; fails only if an honest tile of the corpus is refused.
//! `cargo bench -p server --bench verify`

use std::io::{BufReader, Read};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use server::jobs::Dtype;
use server::verify::{check, check_with_margin, Verdict};

#[path = "verify_before.rs"]
mod before;

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    cost(&mut rng);
    detectable(&mut rng);
    if let Ok(path) = std::env::var("VERIFY_CORPUS") {
        corpus(&path, &mut rng);
    }
}

fn to_bytes(dtype: Dtype, v: &[f64]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
        Dtype::F64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn from_bytes(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    }
}

/// The tile's own compute: an i-p-j loop in the job's precision that the compiler
/// vectorises (the anchor the check is compared with, measured on the same core).
fn product(dtype: Dtype, a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
    match dtype {
        Dtype::F32 => {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|x| *x as f32).collect(),
                b.iter().map(|x| *x as f32).collect(),
            );
            let mut c = vec![0f32; m * n];
            for i in 0..m {
                for p in 0..k {
                    let x = a[i * k + p];
                    for (c, y) in c[i * n..(i + 1) * n].iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *c += x * y;
                    }
                }
            }
            c.into_iter().map(f64::from).collect()
        }
        Dtype::F64 => {
            let mut c = vec![0f64; m * n];
            for i in 0..m {
                for p in 0..k {
                    let x = a[i * k + p];
                    for (c, y) in c[i * n..(i + 1) * n].iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *c += x * y;
                    }
                }
            }
            c
        }
    }
}

fn symmetric(len: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..len)
        .map(|_| f64::from(rng.random_range(-1.0f32..1.0)))
        .collect()
}

fn gaussian(len: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..len)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            f64::from(((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32)
        })
        .collect()
}

/// Milliseconds per call, the median of 7 rounds.
fn time(mut f: impl FnMut()) -> f64 {
    let mut ms: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[3]
}

fn cost(rng: &mut StdRng) {
    println!(
        "Verification cost per 256×256 tile (server side, one core), before (worst-case bound) and"
    );
    println!(
        "after (this version), against the tile's own compute in the same run (an i-p-j loop the"
    );
    println!("compiler vectorises, same precision)");
    println!(
        "{:>4} {:>5} {:>5} {:>10} {:>10} {:>9} {:>12} {:>12} {:>14}",
        "type",
        "k",
        "vecs",
        "compute ms",
        "before ms",
        "after ms",
        "after/compute",
        "check MFLOP",
        "flops fraction"
    );
    let (m, n) = (256usize, 256usize);
    for dtype in [Dtype::F32, Dtype::F64] {
        for k in [1024usize, 4096] {
            let a = symmetric(m * k, rng);
            let b = symmetric(k * n, rng);
            let compute = time(|| {
                std::hint::black_box(product(dtype, &a, &b, (m, k, n)));
            });
            let c = product(dtype, &a, &b, (m, k, n));
            let (ab, bb, cb) = (
                to_bytes(dtype, &a),
                to_bytes(dtype, &b),
                to_bytes(dtype, &c),
            );
            let tile_flops = 2.0 * (m * n * k) as f64;
            for vectors in [2usize, 4, 6] {
                let old = time(|| {
                    let verdict = before::check(dtype, &ab, &bb, &cb, (m, k, n), vectors, rng);
                    assert_eq!(verdict, before::Verdict::Pass);
                });
                let ms = time(|| {
                    assert_eq!(
                        check(dtype, &ab, &bb, &cb, (m, k, n), vectors, rng),
                        Verdict::Pass
                    );
                });
                // ‖aᵢ‖², ‖B‖_F² and Σₚ|aᵢₚ|·‖bₚ‖.
                let norms = 2.0 * (2 * m * k + k * n) as f64;
                let per_vector = 2.0 * (k * n + m * k + m * n) as f64;
                let check_flops = norms + vectors as f64 * per_vector;
                println!(
                    "{:>4} {:>5} {:>5} {:>10.2} {:>10.3} {:>9.3} {:>12.2}% {:>12.1} {:>13.2}%",
                    format!("{dtype:?}").to_lowercase(),
                    k,
                    vectors,
                    compute,
                    old,
                    ms,
                    100.0 * ms / compute,
                    check_flops / 1e6,
                    100.0 * check_flops / tile_flops
                );
            }
            // A lie in one row: the row goes over τ and is recomputed before it is refused.
            let mut lie = c.clone();
            lie[7 * n + 3] += 1.0;
            let lb = to_bytes(dtype, &lie);
            let ms = time(|| {
                assert_ne!(
                    check(dtype, &ab, &bb, &lb, (m, k, n), 4, rng),
                    Verdict::Pass
                );
            });
            println!(
                "{:>4} {:>5} {:>5} {:>10.2} {:>10} {:>9.3} {:>12.2}%   (one wrong row: recomputed, then refused)",
                format!("{dtype:?}").to_lowercase(),
                k,
                4,
                compute,
                "",
                ms,
                100.0 * ms / compute
            );
        }
    }
    println!();
}

/// Smallest shift of one entry, as a fraction of its row's root-mean-square entry, that the
/// check refuses (bisection; Gaussian operands, n = 256), against the old worst-case bound.
fn detectable(rng: &mut StdRng) {
    println!("Smallest single-entry error refused, relative to a typical entry of its row (Gaussian A, B; n = 256)");
    println!(
        "{:>4} {:>6} {:>14} {:>26}",
        "type", "k", "refused above", "old bound 8(γk+u)‖a‖‖B‖F"
    );
    let (m, n) = (4usize, 256usize);
    for dtype in [Dtype::F32, Dtype::F64] {
        for k in [64usize, 256, 1024, 4096, 16384] {
            let a = gaussian(m * k, rng);
            let b = gaussian(k * n, rng);
            let c = product(dtype, &a, &b, (m, k, n));
            let (ab, bb) = (to_bytes(dtype, &a), to_bytes(dtype, &b));
            let rms = (c[..n].iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
            let (mut lo, mut hi) = (1e-18f64, 10.0f64);
            for _ in 0..30 {
                let mid = (lo * hi).sqrt();
                let mut lie = c.clone();
                lie[5] += mid * rms;
                let refused = (0..4).all(|_| {
                    check(dtype, &ab, &bb, &to_bytes(dtype, &lie), (m, k, n), 2, rng)
                        != Verdict::Pass
                });
                if refused {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            let u = match dtype {
                Dtype::F32 => f64::from(f32::EPSILON) / 2.0,
                Dtype::F64 => f64::EPSILON / 2.0,
            };
            let gamma = k as f64 * u / (1.0 - k as f64 * u);
            let a_norm = a[..k].iter().map(|x| x * x).sum::<f64>().sqrt();
            let b_norm = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            let old = 8.0 * (gamma + u) * a_norm * b_norm / rms;
            println!(
                "{:>4} {:>6} {:>13.2e} {:>26.2e}",
                format!("{dtype:?}").to_lowercase(),
                k,
                hi,
                old
            );
        }
    }
    println!();
}

const KERNELS: [&str; 5] = [
    "wasm relaxed-SIMD",
    "wasm SIMD",
    "wasm scalar",
    "naive JS",
    "NumPy",
];
const FAMILIES: [&str; 7] = [
    "uniform ±1",
    "uniform [0,1]",
    "Gaussian",
    "heavy-tailed",
    "2^-20…2^20",
    "near-cancelling",
    "constant 0.1",
];

/// Every honest tile of the corpus through the check (4 vectors, as for a new worker), and
/// the three lie patterns of issue #12 on its 256×4096×256 f32 tiles (2 vectors, as for a
/// trusted worker).
fn corpus(path: &str, rng: &mut StdRng) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut per_kernel = [[0usize; 2]; 5];
    let mut per_family = [[0usize; 2]; 7];
    let mut family_margin = [0.0f64; 7];
    let (mut tiles, mut refused, mut closest) = (0usize, 0usize, 0.0f64);
    let mut detection: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut header = [0u8; 24];
    while input.read_exact(&mut header).is_ok() {
        let word = |at: usize| {
            u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes")) as usize
        };
        assert_eq!(word(0), 0x454c_4954, "not a verification corpus");
        let dtype = if header[4] == 0 {
            Dtype::F32
        } else {
            Dtype::F64
        };
        let family = usize::from(header[5]);
        let kernels = usize::from(u16::from_le_bytes([header[6], header[7]]));
        let (m, k, n) = (word(8), word(12), word(16));
        let size = if header[4] == 0 { 4 } else { 8 };
        let mut read = |len: usize| {
            let mut v = vec![0u8; len];
            input.read_exact(&mut v).expect("truncated corpus");
            v
        };
        let a = read(m * k * size);
        let b = read(k * n * size);
        let mut first_c = None;
        for _ in 0..kernels {
            let id = u32::from_le_bytes(read(4).try_into().expect("4 bytes")) as usize;
            let c = read(m * n * size);
            let (verdict, margin) = check_with_margin(dtype, &a, &b, &c, (m, k, n), 4, rng);
            tiles += 1;
            closest = closest.max(margin);
            family_margin[family] = family_margin[family].max(margin);
            per_kernel[id][0] += 1;
            per_family[family][0] += 1;
            if verdict != Verdict::Pass {
                refused += 1;
                per_kernel[id][1] += 1;
                per_family[family][1] += 1;
                println!(
                    "FALSE REFUSAL: {} {:?} {} {m}×{k}×{n}: {verdict:?}",
                    KERNELS[id], dtype, FAMILIES[family]
                );
            }
            first_c.get_or_insert(c);
        }
        if let (Dtype::F32, (256, 4096, 256), Some(c)) = (dtype, (m, k, n), first_c) {
            detection.push(lies(&a, &b, &c, (m, k, n), FAMILIES[family], rng));
        }
    }
    println!(
        "Corpus {path}: {tiles} honest tiles checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (id, [t, r]) in per_kernel.iter().enumerate() {
        println!("  {:<18} {r} refused / {t}", KERNELS[id]);
    }
    for (f, [t, r]) in per_family.iter().enumerate() {
        println!(
            "  {:<18} {r} refused / {t}   largest honest |d|/τ {:.4}",
            FAMILIES[f], family_margin[f]
        );
    }
    println!("FALSE REFUSALS: {refused} / {tiles}; largest honest |d|/τ: {closest:.4}");
    println!("Refusal rates of lies on the 256×4096×256 f32 tiles (2 vectors, first submission):");
    for line in detection {
        println!("  {line}");
    }
    assert_eq!(refused, 0, "honest tiles refused");
}

/// Refusal rates of the three lie patterns on one honest tile: one entry moved by 5 % of its
/// row's typical (root-mean-square) entry; every entry of a row moved by 5 %; every entry of
/// the tile moved by 1 % (random signs).
fn lies(
    a: &[u8],
    b: &[u8],
    c: &[u8],
    shape: (usize, usize, usize),
    family: &str,
    rng: &mut StdRng,
) -> String {
    let (m, _, n) = shape;
    let honest = from_bytes(Dtype::F32, c);
    let rms: Vec<f64> = (0..m)
        .map(|i| {
            (honest[i * n..(i + 1) * n]
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                / n as f64)
                .sqrt()
        })
        .collect();
    let trials = [200usize, 200, 50];
    let mut caught = [0usize; 3];
    let sign = |rng: &mut StdRng| if rng.random::<bool>() { 1.0 } else { -1.0 };
    let refused = |lie: &[f64], rng: &mut StdRng| {
        usize::from(
            check(Dtype::F32, a, b, &to_bytes(Dtype::F32, lie), shape, 2, rng) != Verdict::Pass,
        )
    };
    for _ in 0..trials[0] {
        let (i, j) = (rng.random_range(0..m), rng.random_range(0..n));
        let mut lie = honest.clone();
        lie[i * n + j] += sign(rng) * 0.05 * rms[i];
        caught[0] += refused(&lie, rng);
    }
    for _ in 0..trials[1] {
        let i = rng.random_range(0..m);
        let mut lie = honest.clone();
        for x in &mut lie[i * n..(i + 1) * n] {
            *x += sign(rng) * 0.05 * rms[i];
        }
        caught[1] += refused(&lie, rng);
    }
    for _ in 0..trials[2] {
        let mut lie = honest.clone();
        for (i, row) in lie.chunks_exact_mut(n).enumerate() {
            for x in row {
                *x += sign(rng) * 0.01 * rms[i];
            }
        }
        caught[2] += refused(&lie, rng);
    }
    format!(
        "{family:<16} one entry 5 %: {}/{}   row 5 %: {}/{}   tile 1 %: {}/{}",
        caught[0], trials[0], caught[1], trials[1], caught[2], trials[2]
    )
}
