//! Matrix-multiplication kernels for Distributed Brain volunteers: plain Rust, tested natively
//! against a naive reference, and compiled to WebAssembly with simd128 for browsers.
//!
//! C = A·B for row-major A (m×k) and B (k×n). The kernel packs B into column panels of
//! [`gemm::NR`] and runs a register-tiled micro-kernel over rows of A, cache-blocked along k.

#[cfg(target_arch = "wasm32")]
pub mod api;
pub mod gemm;

/// Why a product cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("dimensions must be at least 1, got m={m}, k={k}, n={n}")]
    ZeroDimension { m: usize, k: usize, n: usize },
    #[error("{operand} has {got} elements, expected {expected}")]
    WrongLength {
        operand: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("dtype must be \"f32\" or \"f64\", not {0:?}")]
    UnknownDtype(String),
}

/// Element type of the byte-level entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

fn check(a: usize, b: usize, c: usize, m: usize, k: usize, n: usize) -> Result<(), KernelError> {
    if m == 0 || k == 0 || n == 0 {
        return Err(KernelError::ZeroDimension { m, k, n });
    }
    for (operand, got, expected) in [("a", a, m * k), ("b", b, k * n), ("c", c, m * n)] {
        if got != expected {
            return Err(KernelError::WrongLength {
                operand,
                got,
                expected,
            });
        }
    }
    Ok(())
}

/// `C = A·B` in f32.
pub fn matmul_f32(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<f32>, KernelError> {
    let mut c = vec![0.0; m.saturating_mul(n)];
    matmul_f32_into(a, b, &mut c, m, k, n)?;
    Ok(c)
}

/// `C = A·B` in f32, into the caller's `c` (m×n), which is overwritten.
pub fn matmul_f32_into(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), KernelError> {
    check(a.len(), b.len(), c.len(), m, k, n)?;
    gemm::gemm_f32(a, b, c, m, k, n);
    Ok(())
}

/// `C = A·B` in f64.
pub fn matmul_f64(
    a: &[f64],
    b: &[f64],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<f64>, KernelError> {
    let mut c = vec![0.0; m.saturating_mul(n)];
    matmul_f64_into(a, b, &mut c, m, k, n)?;
    Ok(c)
}

/// `C = A·B` in f64, into the caller's `c` (m×n), which is overwritten.
pub fn matmul_f64_into(
    a: &[f64],
    b: &[f64],
    c: &mut [f64],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), KernelError> {
    check(a.len(), b.len(), c.len(), m, k, n)?;
    gemm::gemm_f64(a, b, c, m, k, n);
    Ok(())
}

/// A task straight from the bytes the Socket.io protocol delivers: row-major little-endian
/// operands in, C's bytes out. Unaligned input is fine (it is copied once into typed memory).
pub fn matmul_bytes(
    dtype: Dtype,
    a: &[u8],
    b: &[u8],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<u8>, KernelError> {
    match dtype {
        Dtype::F32 => {
            let (a, b) = (f32s(a, "a")?, f32s(b, "b")?);
            let c = matmul_f32(&a, &b, m, k, n)?;
            Ok(c.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        Dtype::F64 => {
            let (a, b) = (f64s(a, "a")?, f64s(b, "b")?);
            let c = matmul_f64(&a, &b, m, k, n)?;
            Ok(c.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
    }
}

fn f32s(bytes: &[u8], operand: &'static str) -> Result<Vec<f32>, KernelError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(KernelError::WrongLength {
            operand,
            got: bytes.len(),
            expected: bytes.len() / 4 * 4,
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn f64s(bytes: &[u8], operand: &'static str) -> Result<Vec<f64>, KernelError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(KernelError::WrongLength {
            operand,
            got: bytes.len(),
            expected: bytes.len() / 8 * 8,
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

impl std::str::FromStr for Dtype {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, KernelError> {
        match s {
            "f32" => Ok(Dtype::F32),
            "f64" => Ok(Dtype::F64),
            other => Err(KernelError::UnknownDtype(other.to_owned())),
        }
    }
}

/// Which build this is, for the page to show.
pub fn variant() -> &'static str {
    if cfg!(target_feature = "relaxed-simd") {
        "relaxed"
    } else if cfg!(target_feature = "simd128") {
        "simd128"
    } else {
        "scalar"
    }
}
