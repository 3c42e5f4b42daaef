//! Cost of checking a tile (Freivalds) against the cost of computing it, for the tile sizes
//! the scheduler sends. Prints figures; asserts nothing. `cargo bench -p server --bench verify`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use server::jobs::Dtype;
use server::verify::{check, Verdict};

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    println!("Freivalds verification cost (f32 tiles, server side, f64 arithmetic, one core)");
    println!(
        "{:>5} {:>5} {:>5} {:>8} {:>12} {:>12} {:>14}",
        "tile", "k", "vecs", "ms", "check MFLOP", "tile MFLOP", "flops fraction"
    );
    for &k in &[1024usize, 4096] {
        let (m, n) = (256usize, 256usize);
        let f32s = |len: usize, rng: &mut rand::rngs::StdRng| -> Vec<u8> {
            (0..len)
                .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
                .collect()
        };
        let a = f32s(m * k, &mut rng);
        let b = f32s(k * n, &mut rng);
        // An honest product in f32 (the check must pass).
        let af: Vec<f32> = a
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bf: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for p in 0..k {
                let x = af[i * k + p];
                for j in 0..n {
                    c[i * n + j] += x * bf[p * n + j];
                }
            }
        }
        let c: Vec<u8> = c.iter().flat_map(|v| v.to_le_bytes()).collect();
        for vectors in [1usize, 2, 4, 6] {
            let runs = 5;
            let start = Instant::now();
            for _ in 0..runs {
                assert_eq!(
                    check(Dtype::F32, &a, &b, &c, (m, k, n), vectors, &mut rng),
                    Verdict::Pass
                );
            }
            let ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
            let norms = 2.0 * (m * k + k * n) as f64;
            let per_vector = 2.0 * (k * n + m * k + m * n) as f64;
            let check_flops = norms + vectors as f64 * per_vector;
            let tile_flops = 2.0 * (m * n * k) as f64;
            println!(
                "{:>5} {:>5} {:>5} {:>8.2} {:>12.1} {:>12.1} {:>13.2}%",
                m,
                k,
                vectors,
                ms,
                check_flops / 1e6,
                tile_flops / 1e6,
                100.0 * check_flops / tile_flops
            );
        }
    }
}
