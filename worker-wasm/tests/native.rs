//! The kernels against a naive f64 reference over random shapes, natively (proptest).
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use worker_wasm::{matmul_bytes, matmul_f32, matmul_f32_into, matmul_f64, Dtype, KernelError};

fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    c
}

fn values(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f64 / 1000.0 - 1.0
        })
        .collect()
}

/// Shapes that exercise every edge: 1×1, k = 1, vectors, tall-thin, short-wide, and sizes
/// that are not multiples of the micro-kernel or the k-block.
fn shape() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        (1usize..70, 1usize..600, 1usize..70),
        Just((1, 1, 1)),
        (1usize..50, Just(1usize), 1usize..50),
        (Just(1usize), 1usize..300, Just(1usize)),
        (200usize..400, 1usize..8, 1usize..4),
        (1usize..4, 1usize..8, 200usize..400),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn f32_matches_the_reference((m, k, n) in shape(), seed in any::<u64>()) {
        let (a, b) = (values(m * k, seed), values(k * n, seed ^ 0x5555));
        let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        let c = matmul_f32(&a32, &b32, m, k, n).expect("valid shapes");
        let want = naive(&a, &b, m, k, n);
        // |error| ≤ γ_k Σ|a||b| ≤ k·u·k for entries in [-1, 1]: a bound that grows with k.
        let bound = 2.0 * k as f64 * f64::from(f32::EPSILON) * k as f64 + 1e-6;
        for (got, want) in c.iter().zip(&want) {
            prop_assert!((f64::from(*got) - want).abs() <= bound, "{} vs {} (bound {})", got, want, bound);
        }
    }

    #[test]
    fn f64_matches_the_reference((m, k, n) in shape(), seed in any::<u64>()) {
        let (a, b) = (values(m * k, seed), values(k * n, seed ^ 0xaaaa));
        let c = matmul_f64(&a, &b, m, k, n).expect("valid shapes");
        let want = naive(&a, &b, m, k, n);
        let bound = 2.0 * k as f64 * f64::EPSILON * k as f64;
        for (got, want) in c.iter().zip(&want) {
            prop_assert!((got - want).abs() <= bound);
        }
    }

    #[test]
    fn bytes_in_bytes_out_matches_typed((m, k, n) in shape(), seed in any::<u64>()) {
        let a: Vec<f32> = values(m * k, seed).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = values(k * n, !seed).iter().map(|&x| x as f32).collect();
        // An odd offset: bytes from the network need not be aligned.
        let mut raw = vec![0u8];
        raw.extend(a.iter().flat_map(|x| x.to_le_bytes()));
        let bb: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
        let c = matmul_bytes(Dtype::F32, &raw[1..], &bb, m, k, n).expect("valid");
        let typed = matmul_f32(&a, &b, m, k, n).expect("valid");
        let from_bytes: Vec<f32> = c.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect();
        prop_assert_eq!(from_bytes, typed);
    }
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    assert_eq!(
        matmul_f32(&[1.0; 5], &[1.0; 6], 2, 3, 2),
        Err(KernelError::WrongLength {
            operand: "a",
            got: 5,
            expected: 6
        })
    );
    assert!(matches!(
        matmul_f64(&[1.0; 6], &[1.0; 5], 2, 3, 2),
        Err(KernelError::WrongLength { operand: "b", .. })
    ));
    assert!(matches!(
        matmul_f32(&[], &[], 0, 3, 2),
        Err(KernelError::ZeroDimension { .. })
    ));
    let mut c = [0.0f32; 3];
    assert!(matches!(
        matmul_f32_into(&[1.0; 6], &[1.0; 6], &mut c, 2, 3, 2),
        Err(KernelError::WrongLength { operand: "c", .. })
    ));
    assert!(matmul_bytes(Dtype::F64, &[0; 7], &[0; 8], 1, 1, 1).is_err());
    assert!("f16".parse::<Dtype>().is_err());
}

#[test]
fn nan_and_infinity_propagate() {
    let c = matmul_f32(&[f32::NAN, 1.0], &[1.0, 2.0], 1, 2, 1).expect("valid");
    assert!(c[0].is_nan());
    let c = matmul_f32(&[f32::INFINITY, 1.0], &[1.0, 2.0], 1, 2, 1).expect("valid");
    assert_eq!(c[0], f32::INFINITY);
    let c = matmul_f64(&[f64::INFINITY, 0.0], &[0.0, 1.0], 1, 2, 1).expect("valid");
    assert!(c[0].is_nan(), "∞·0 is NaN");
}
