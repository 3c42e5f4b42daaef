//! Matrix-multiplication kernels for volunteers' browsers (filled in by the kernel issue).

/// Row-major `C = A·B` for `A` m×k and `B` k×n; a plain triple loop until the tuned kernel lands.
pub fn matmul_f32(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j];
            }
        }
    }
    c
}
