//! The kernels compiled to WebAssembly and run in Node (wasm-bindgen-test), against a naive
//! reference over many pseudo-random shapes, and a check that this build uses simd128.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::wasm_bindgen_test;
use worker_wasm::{matmul_bytes, matmul_f32, matmul_f64, Dtype};

#[wasm_bindgen_test]
#[allow(
    clippy::assertions_on_constants,
    reason = "a failing test run, not a failing build, is the report wanted"
)]
fn the_build_uses_simd128() {
    assert!(cfg!(target_feature = "simd128"), "built without simd128");
    assert_ne!(worker_wasm::variant(), "scalar");
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[wasm_bindgen_test]
fn random_shapes_match_the_reference() {
    let mut s = 0x9e3779b97f4a7c15u64;
    for case in 0..60 {
        let (m, k, n) = match case {
            0 => (1, 1, 1),
            1 => (37, 1, 29),
            2 => (1, 300, 1),
            3 => (257, 5, 3),
            _ => (
                1 + next(&mut s) as usize % 70,
                1 + next(&mut s) as usize % 400,
                1 + next(&mut s) as usize % 70,
            ),
        };
        let a: Vec<f64> = (0..m * k)
            .map(|_| (next(&mut s) % 2001) as f64 / 1000.0 - 1.0)
            .collect();
        let b: Vec<f64> = (0..k * n)
            .map(|_| (next(&mut s) % 2001) as f64 / 1000.0 - 1.0)
            .collect();
        let mut want = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    want[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        let c32 = matmul_f32(&a32, &b32, m, k, n).expect("valid");
        let c64 = matmul_f64(&a, &b, m, k, n).expect("valid");
        let bound32 = 2.0 * (k * k) as f64 * f64::from(f32::EPSILON) + 1e-6;
        for idx in 0..m * n {
            assert!(
                (f64::from(c32[idx]) - want[idx]).abs() <= bound32,
                "f32 {m}x{k}x{n} at {idx}"
            );
            assert!(
                (c64[idx] - want[idx]).abs() <= 2.0 * (k * k) as f64 * f64::EPSILON,
                "f64 {m}x{k}x{n}"
            );
        }
        let bytes = matmul_bytes(
            Dtype::F32,
            &a32.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
            &b32.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
            m,
            k,
            n,
        )
        .expect("valid");
        assert_eq!(bytes.len(), m * n * 4);
    }
}

#[wasm_bindgen_test]
fn nan_propagates_and_bad_lengths_are_errors() {
    assert!(matmul_f32(&[f32::NAN], &[1.0], 1, 1, 1).expect("valid")[0].is_nan());
    assert!(matmul_f32(&[1.0; 3], &[1.0; 4], 2, 2, 2).is_err());
}
