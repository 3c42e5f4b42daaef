#!/usr/bin/env bash
# `make bench-verify`: the verification figures of docs/benchmarks.md and docs/security.md.
# Writes the honest-tile corpus (VERIFY_CORPUS_GROUPS operand pairs, 20,000 by default, each
# multiplied by the three wasm builds and a naive loop in Node, then by NumPy/OpenBLAS: 100,000
# tiles), then runs `cargo bench -p server --bench verify`, which prints the check's cost
# against the tile's compute, the smallest refused error against k, every false refusal of the
# corpus (it fails if there is one) and the refusal rates of three lie patterns.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
groups=${VERIFY_CORPUS_GROUPS:-20000}
dir=target/verify-corpus
mkdir -p "$dir"
scripts/build-wasm.sh
if ! python3 -c 'import numpy' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "numpy==2.3.5"
fi
node --experimental-wasm-relaxed-simd worker-wasm/bench/verify-corpus.mjs "$dir/wasm.bin" "$groups"
# One BLAS thread: the corpus is about rounding, and the machine is shared.
OPENBLAS_NUM_THREADS=1 python3 scripts/verify_corpus_numpy.py "$dir/wasm.bin" "$dir/corpus.bin"
rm -f "$dir/wasm.bin"
VERIFY_CORPUS="$PWD/$dir/corpus.bin" cargo bench -p server --bench verify
rm -f "$dir/corpus.bin"
