"""Kernels shared by the cells: small matrix products and the chunked input projection.

Kernels trust their inputs: the API layer has checked shapes and made every array
C-contiguous and of one float dtype.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, SMALL_MATMUL_MACS
from ._math import zero_of


@njit(**JIT_OPTIONS)
def matmul_into(a, b, out):
    """out[:] = a @ b. a: (M, K), b: (K, P), out: (M, P).

    Small products (N = 1, small H) run as a plain loop: there a BLAS call costs more in
    overhead than the arithmetic. The loop order (k outer, p inner) keeps the inner loop
    contiguous so it vectorises, and fixes the summation order (deterministic).
    """
    M, K = a.shape
    P = b.shape[1]
    if M * K * P >= SMALL_MATMUL_MACS:
        np.dot(a, b, out)
        return
    zero = zero_of(out)
    for m in range(M):
        out_row = out[m]
        for p in range(P):
            out_row[p] = zero
        for k in range(K):
            a_mk = a[m, k]
            b_row = b[k]
            for p in range(P):
                out_row[p] += a_mk * b_row[p]


@njit(**JIT_OPTIONS)
def project_chunk(x, Wx, t0, x_chunk, proj):
    """proj[n, s] = x[n, t0 + s] @ Wx for the steps of one chunk, as one GEMM.

    x: (N, T, D); Wx: (D, G); x_chunk: (N, S, D) gather buffer; proj: (N, S, G) out.
    When the chunk is the whole sequence (S == T) x is used in place, no gather.
    Rows past the end of the sequence (last, partial chunk) hold stale data and are unused.
    """
    N, T, D = x.shape
    S = proj.shape[1]
    G = proj.shape[2]
    if S == T:
        np.dot(x.reshape((N * T, D)), Wx, proj.reshape((N * S, G)))
        return
    steps = min(S, T - t0)
    for n in range(N):
        for s in range(steps):
            x_chunk[n, s, :] = x[n, t0 + s, :]
    np.dot(x_chunk.reshape((N * S, D)), Wx, proj.reshape((N * S, G)))
