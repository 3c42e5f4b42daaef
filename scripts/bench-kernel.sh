#!/usr/bin/env bash
# Kernel figures: each wasm build in Node (single thread) beside a naive JavaScript loop, then
# the native build, then NumPy's OpenBLAS on one thread when NumPy is installed
# (informational). Prints GFLOP/s; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ -f worker-wasm/pkg-simd/worker_wasm_bg.wasm ] || scripts/build-wasm.sh
echo "targets at 512³ (issue 3): f32 simd128 ≥ 32, relaxed ≥ 42; f64 simd128 ≥ 16, relaxed ≥ 21 GFLOP/s"
echo "anchors here: TensorFlow.js wasm (XNNPACK) ~27 f32, onnxruntime-web ~23 f32 / 7.7 f64"
cd worker-wasm/bench
node bench.mjs ../pkg-scalar
node bench.mjs ../pkg-simd --naive
node --experimental-wasm-relaxed-simd bench.mjs ../pkg-relaxed
cd ../..
cargo bench -p worker-wasm --bench kernel
if python3 -c 'import numpy' 2>/dev/null; then
  OPENBLAS_NUM_THREADS=1 python3 worker-wasm/bench/numpy_ref.py
else
  echo "(numpy not installed: no OpenBLAS reference; pip install numpy to print it)"
fi
