"""OpenBLAS through NumPy, one thread: the informational native reference printed beside the
kernel's own native figures by `make bench-kernel`. Run with OPENBLAS_NUM_THREADS=1."""
import time

import numpy as np

print("numpy", np.__version__, "(OpenBLAS), single thread")
for n in (256, 512, 1024):
    row = []
    for dtype in (np.float32, np.float64):
        a = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)
        b = np.random.default_rng(2).standard_normal((n, n)).astype(dtype)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            a @ b
            reps += 1
        row.append(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    print(f"  {n:>5}³  f32 {row[0]:6.1f} GFLOP/s   f64 {row[1]:6.1f} GFLOP/s")
