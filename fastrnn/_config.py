"""Jit options for every kernel, in one place.

- ``cache=True``: compiled machine code is written to ``__pycache__`` (or ``NUMBA_CACHE_DIR``)
  so a new process loads it in milliseconds instead of compiling for seconds.
- ``error_model="numpy"``: no zero-division check on every float division; that check blocks
  vectorisation of the gate math (see shared/PERF-FACTS.md).
- ``fastmath``: only the flags that let LLVM vectorise and contract (FMA). ``nnan``/``ninf``
  are left out so NaN and inf inputs propagate as IEEE says instead of being undefined.
"""

FASTMATH_FLAGS = {"nsz", "arcp", "contract", "reassoc"}

JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy",
                   fastmath=FASTMATH_FLAGS)

# Per-step products (M, K) @ (K, P) with fewer rows M than this use fastrnn's own loop instead
# of BLAS. Measured here (OpenBLAS 0.3.30, 2 threads, float32, GFLOP/s loop vs BLAS):
# M=1: 82 vs 62; M=2: 91 vs 12; M=4: 68 vs 25; M=8: 77 vs 68; M=16: 65 vs 117; M=32: 42 vs 80.
SMALL_MATMUL_ROWS = 12

# Time steps whose input projection the cache-free inference path computes at once; bounds
# its working memory to O(N * INFERENCE_CHUNK * 4H) whatever T is.
INFERENCE_CHUNK = 32
