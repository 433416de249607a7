"""Kernels shared by the cells: small matrix products and the chunked input projection.

Kernels trust their inputs: the API layer has checked shapes and made every array
C-contiguous and of one float dtype.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, SMALL_MATMUL_ROWS
from ._math import zero_of


@njit(**JIT_OPTIONS)
def matmul_into(a, b, out):
    """out[:] = a @ b. a: (M, K), b: (K, P), out: (M, P).

    Products with few rows (small batches) run as a plain loop: OpenBLAS is slow there
    (2-8x slower than this loop for 2 to 8 rows, see _config.SMALL_MATMUL_ROWS). The loop order (k outer, p inner) keeps the inner loop
    contiguous so it vectorises, and fixes the summation order (deterministic).
    """
    M, K = a.shape
    P = b.shape[1]
    if M >= SMALL_MATMUL_ROWS:
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
    """proj[n, s] = x[n, t0 + s] @ Wx for the S steps of one chunk, as one GEMM.

    x: (N, T, D); Wx: (D, G); x_chunk: (N, S, D) gather buffer; proj: (N, S, G) out.
    When the chunk is the whole sequence (S == T) x is used in place, no gather.
    Rows past the end of the sequence (last, partial chunk) hold stale data and are unused.
    """
    N, T, D = x.shape
    S = proj.shape[1]
    G = proj.shape[2]
    if S == T:
        np.dot(x.reshape((N * T, D)), Wx, proj.reshape((N * T, G)))
        return
    for n in range(N):
        for s in range(min(S, T - t0)):
            x_chunk[n, s, :] = x[n, t0 + s, :]
    np.dot(x_chunk.reshape((N * S, D)), Wx, proj.reshape((N * S, G)))


@njit(**JIT_OPTIONS)
def weight_grads_kernel(da, x, h0, h_hist, Wx, dx, dWx, dWh, db, h_prev):
    """dx, dWx, dWh, db from the pre-activation gradients of all steps, as large GEMMs.

    da: (N, T, G); x: (N, T, D); h0: (N, H); h_hist: (N, T, H); Wx: (D, G)
    out: dx (N, T, D); dWx (D, G); dWh (H, G); db (G,)
    h_prev: (N, T, H) scratch for h_{t-1} of every step

    These GEMMs go through the same BLAS as the per-step products (numba's np.dot): a
    second BLAS thread pool (NumPy's) spinning next to it on 2 cores slowed the next
    kernel call 2-3x.
    """
    N, T, G = da.shape
    D = x.shape[2]
    H = h0.shape[1]
    da2 = da.reshape((N * T, G))
    np.dot(da2, Wx.T, dx.reshape((N * T, D)))
    np.dot(x.reshape((N * T, D)).T, da2, dWx)
    for n in range(N):
        h_prev[n, 0] = h0[n]
        h_prev[n, 1:] = h_hist[n, :T - 1]
    np.dot(h_prev.reshape((N * T, H)).T, da2, dWh)
    # Rows in a fixed order: db is the same bit for bit on every run.
    db[:] = da2[0]
    for row in range(1, N * T):
        db += da2[row]
