//! The JavaScript API (wasm-bindgen): one thin layer over the Rust kernels. Matrices cross as
//! typed arrays (one copy in, one out); small metadata goes through serde-wasm-bindgen.

use wasm_bindgen::prelude::*;

use crate::{Dtype, KernelError};

fn js_error(e: KernelError) -> JsError {
    JsError::new(&e.to_string())
}

/// `C = A·B` for row-major f32 matrices.
#[wasm_bindgen(js_name = matmulF32)]
pub fn matmul_f32(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>, JsError> {
    crate::matmul_f32(a, b, m, k, n).map_err(js_error)
}

/// `C = A·B` for row-major f64 matrices.
#[wasm_bindgen(js_name = matmulF64)]
pub fn matmul_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Result<Vec<f64>, JsError> {
    crate::matmul_f64(a, b, m, k, n).map_err(js_error)
}

/// Runs a task from the bytes `task_assigned` delivers (`Uint8Array` views of its
/// `ArrayBuffer`s); returns C's bytes, ready to send back as `task_result.c`.
#[wasm_bindgen(js_name = runTask)]
pub fn run_task(
    dtype: &str,
    a: &[u8],
    b: &[u8],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<u8>, JsError> {
    let dtype: Dtype = dtype.parse().map_err(js_error)?;
    crate::matmul_bytes(dtype, a, b, m, k, n).map_err(js_error)
}

#[derive(serde::Serialize)]
struct KernelInfo {
    version: &'static str,
    simd: bool,
    relaxed_simd: bool,
    variant: &'static str,
}

/// Which build runs: `{version, simd, relaxed_simd, variant}`.
#[wasm_bindgen(js_name = kernelInfo)]
pub fn kernel_info() -> Result<JsValue, JsError> {
    let info = KernelInfo {
        version: env!("CARGO_PKG_VERSION"),
        simd: cfg!(target_feature = "simd128"),
        relaxed_simd: cfg!(target_feature = "relaxed-simd"),
        variant: crate::variant(),
    };
    serde_wasm_bindgen::to_value(&info).map_err(|e| JsError::new(&e.to_string()))
}

/// Runs the kernel for about `ms` milliseconds so the engine compiles it with its optimising
/// tier before the first real tile; returns the GFLOP/s of the last round.
#[wasm_bindgen(js_name = warmUp)]
pub fn warm_up(ms: f64) -> f64 {
    let n = 128;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let now = || js_sys::Date::now();
    let start = now();
    let mut gflops = 0.0;
    loop {
        let t0 = now();
        crate::gemm::gemm_f32(&a, &b, &mut c, n, n, n);
        let dt = now() - t0;
        if dt > 0.0 {
            gflops = 2.0 * (n * n * n) as f64 / dt / 1e6;
        }
        if now() - start >= ms {
            return gflops;
        }
    }
}
