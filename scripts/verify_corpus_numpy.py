"""Adds NumPy/OpenBLAS's product to every group of a verification corpus written by
worker-wasm/bench/verify-corpus.mjs (format described there), one thread, streaming.

    python3 scripts/verify_corpus_numpy.py <in file> <out file>
"""

import struct
import sys
import time

import numpy as np

NUMPY_KERNEL = 4


def main(src: str, dst: str) -> None:
    started = time.monotonic()
    groups = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while header := fin.read(24):
            magic, dtype, family, kernels, m, k, n, _ = struct.unpack("<IBBHIIII", header)
            if magic != 0x454C4954:
                raise SystemExit(f"bad corpus record at group {groups}")
            t = np.float32 if dtype == 0 else np.float64
            size = np.dtype(t).itemsize
            a_bytes = fin.read(m * k * size)
            b_bytes = fin.read(k * n * size)
            cs = [fin.read(4 + m * n * size) for _ in range(kernels)]
            a = np.frombuffer(a_bytes, dtype="<" + np.dtype(t).char).reshape(m, k)
            b = np.frombuffer(b_bytes, dtype="<" + np.dtype(t).char).reshape(k, n)
            c = np.matmul(a, b).astype(t, copy=False)
            fout.write(struct.pack("<IBBHIIII", magic, dtype, family, kernels + 1, m, k, n, 0))
            fout.write(a_bytes)
            fout.write(b_bytes)
            for record in cs:
                fout.write(record)
            fout.write(struct.pack("<I", NUMPY_KERNEL))
            fout.write(np.ascontiguousarray(c).astype("<" + np.dtype(t).char).tobytes())
            groups += 1
    print(f"verify-corpus: NumPy {np.__version__} products added to {groups} groups "
          f"in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
