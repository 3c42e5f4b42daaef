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
/// `ArrayBuffer`s); returns C's bytes, ready to send back as `task_result.c`. The operands are
/// copied once into wasm memory and read there in place; C is copied once, out into the
/// returned `Uint8Array`.
#[wasm_bindgen(js_name = runTask)]
pub fn run_task(
    dtype: &str,
    a: &[u8],
    b: &[u8],
    m: usize,
    k: usize,
    n: usize,
) -> Result<js_sys::Uint8Array, JsError> {
    let dtype: Dtype = dtype.parse().map_err(js_error)?;
    crate::matmul_bytes_with(dtype, a, b, m, k, n, |c: &[u8]| js_sys::Uint8Array::from(c))
        .map_err(js_error)
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

/// Runs the kernel for about `ms` milliseconds (200 when absent or not a positive number, at
/// most 2000) so the engine compiles it with its optimising tier before the first real tile;
/// returns the average GFLOP/s over the warm-up.
#[wasm_bindgen(js_name = warmUp)]
pub fn warm_up(ms: Option<f64>) -> f64 {
    let ms = ms
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .unwrap_or(200.0)
        .min(2000.0);
    let n = 128;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    // Date.now() is coarse (1 ms), so the speed is averaged over the whole warm-up.
    let start = js_sys::Date::now();
    let mut rounds = 0u32;
    loop {
        crate::gemm::gemm_f32(&a, &b, &mut c, n, n, n);
        rounds += 1;
        let elapsed = js_sys::Date::now() - start;
        if elapsed >= ms {
            return 2.0 * (n * n * n) as f64 * f64::from(rounds) / elapsed / 1e6;
        }
    }
}
