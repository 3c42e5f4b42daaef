//! Matrix-multiplication kernels for Distributed Brain volunteers: plain Rust, tested natively
//! against a naive reference, and compiled to WebAssembly with simd128 for browsers.
//!
//! C = A·B for row-major A (m×k) and B (k×n). The kernel packs both operands into micro-panels
//! and runs a register-tiled micro-kernel ([`gemm::MR`]×[`gemm::NR`] for f32), cache-blocked
//! along k and m (see [`gemm`]).
//!
//! In WebAssembly, `thread` is also the volunteer page's compute thread: the message loop of a
//! Web Worker that runs these kernels in duty-cycled row bands ([`duty`], [`speed`]).

use std::borrow::Cow;

#[cfg(target_arch = "wasm32")]
pub mod api;
pub mod duty;
pub mod gemm;
pub mod memory;
pub mod speed;
#[cfg(target_arch = "wasm32")]
pub mod thread;

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
    /// A task's operands do not hold m·k and k·n elements (bytes here, as they arrive).
    #[error("operands have {a} and {b} bytes, expected {expected_a} and {expected_b}")]
    OperandBytes {
        a: u64,
        b: u64,
        expected_a: u64,
        expected_b: u64,
    },
    /// A task's m, k or n is not a whole number of rows or columns (JavaScript's `String` of it).
    #[error("{name} = {value} is not a matrix dimension")]
    NotADimension { name: &'static str, value: String },
    /// A task names a panel the compute thread was to keep, and it does not hold it (or holds
    /// it with another shape): the page re-queues the task.
    #[error("panel {0} is not held by this thread")]
    PanelNotHeld(String),
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

/// `matmul_<t>` (a new C) and `matmul_<t>_into` (the caller's C) for one element type.
macro_rules! matmul_fns {
    ($t:ty, $new:ident, $into:ident, $gemm:path) => {
        #[doc = concat!("`C = A·B` in ", stringify!($t), ".")]
        pub fn $new(a: &[$t], b: &[$t], m: usize, k: usize, n: usize) -> Result<Vec<$t>, KernelError> {
            let mut c = vec![0.0; m.saturating_mul(n)];
            $into(a, b, &mut c, m, k, n)?;
            Ok(c)
        }

        #[doc = concat!("`C = A·B` in ", stringify!($t), ", into the caller's `c` (m×n), which is overwritten.")]
        pub fn $into(
            a: &[$t],
            b: &[$t],
            c: &mut [$t],
            m: usize,
            k: usize,
            n: usize,
        ) -> Result<(), KernelError> {
            check(a.len(), b.len(), c.len(), m, k, n)?;
            $gemm(a, b, c, m, k, n);
            Ok(())
        }
    };
}

matmul_fns!(f32, matmul_f32, matmul_f32_into, gemm::gemm_f32);
matmul_fns!(f64, matmul_f64, matmul_f64_into, gemm::gemm_f64);

/// A task straight from the bytes the Socket.io protocol delivers: row-major little-endian
/// operands in, C's bytes out.
pub fn matmul_bytes(
    dtype: Dtype,
    a: &[u8],
    b: &[u8],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<u8>, KernelError> {
    matmul_bytes_with(dtype, a, b, m, k, n, <[u8]>::to_vec)
}

/// [`matmul_bytes`], handing C's bytes to `out` instead of returning a copy: the JavaScript API
/// copies them once, straight into a `Uint8Array`. Operands that are aligned for their type
/// (as wasm-bindgen's allocations are) are read in place; others are copied once.
pub fn matmul_bytes_with<R>(
    dtype: Dtype,
    a: &[u8],
    b: &[u8],
    m: usize,
    k: usize,
    n: usize,
    out: impl FnOnce(&[u8]) -> R,
) -> Result<R, KernelError> {
    match dtype {
        Dtype::F32 => {
            let (a, b) = (floats::<f32>(a, "a")?, floats::<f32>(b, "b")?);
            let c = matmul_f32(&a, &b, m, k, n)?;
            Ok(out(&as_le_bytes(&c)))
        }
        Dtype::F64 => {
            let (a, b) = (floats::<f64>(a, "a")?, floats::<f64>(b, "b")?);
            let c = matmul_f64(&a, &b, m, k, n)?;
            Ok(out(&as_le_bytes(&c)))
        }
    }
}

/// The two element types, as little-endian bytes.
trait Float: Copy + 'static {
    const SIZE: usize;
    fn from_le(bytes: &[u8]) -> Self;
    fn to_le(self, out: &mut Vec<u8>);
}

macro_rules! impl_float {
    ($($t:ty),*) => {$(
        impl Float for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("chunks of SIZE bytes"))
            }
            fn to_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
impl_float!(f32, f64);

/// `bytes` as `T`s: borrowed when aligned on a little-endian target, copied otherwise.
fn floats<'a, T: Float>(
    bytes: &'a [u8],
    operand: &'static str,
) -> Result<Cow<'a, [T]>, KernelError> {
    if !bytes.len().is_multiple_of(T::SIZE) {
        return Err(KernelError::WrongLength {
            operand,
            got: bytes.len(),
            expected: bytes.len() / T::SIZE * T::SIZE,
        });
    }
    if cfg!(target_endian = "little") {
        // Safety: T is f32 or f64, for which every bit pattern is a valid value, and align_to
        // only puts whole, aligned elements in the middle part.
        let (head, mid, tail) = unsafe { bytes.align_to::<T>() };
        if head.is_empty() && tail.is_empty() {
            return Ok(Cow::Borrowed(mid));
        }
    }
    Ok(Cow::Owned(
        bytes.chunks_exact(T::SIZE).map(T::from_le).collect(),
    ))
}

/// `values` as little-endian bytes: a view on a little-endian target, a copy otherwise.
fn as_le_bytes<T: Float>(values: &[T]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // Safety: f32 and f64 have no padding, so their memory is size_of_val bytes of
        // initialised data, which outlive the returned borrow.
        return Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        });
    }
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.to_le(&mut out);
    }
    Cow::Owned(out)
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
