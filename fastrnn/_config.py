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

# Per-step products with fewer multiply-adds than this use a hand-written loop instead of a
# BLAS call: below it the call overhead of BLAS dominates (measured: see README).
SMALL_MATMUL_MACS = 16384

# Time steps whose input projection the cache-free inference path computes at once; bounds
# its working memory to O(N * INFERENCE_CHUNK * 4H) whatever T is.
INFERENCE_CHUNK = 32
