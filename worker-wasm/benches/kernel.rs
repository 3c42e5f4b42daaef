//! Native GFLOP/s of the kernels (single thread), for comparison with the wasm figures.
//! `cargo bench -p worker-wasm --bench kernel`
use std::time::Instant;

fn main() {
    println!("native kernel, single thread");
    for &n in &[256usize, 512, 1024] {
        let a32 = vec![0.5f32; n * n];
        let b32 = vec![0.25f32; n * n];
        let a64 = vec![0.5f64; n * n];
        let b64 = vec![0.25f64; n * n];
        let flops = 2.0 * (n * n * n) as f64;
        let reps = (2e9 / flops).ceil().max(1.0) as usize;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(worker_wasm::matmul_f32(&a32, &b32, n, n, n).expect("valid"));
        }
        let f32_gflops = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(worker_wasm::matmul_f64(&a64, &b64, n, n, n).expect("valid"));
        }
        let f64_gflops = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("  {n:>5}³  f32 {f32_gflops:6.1} GFLOP/s   f64 {f64_gflops:6.1} GFLOP/s");
    }
}
