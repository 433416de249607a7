"""Kernels shared by the cells: small matrix products, the input projection of a chunk and
the weight gradients.

Kernels trust their inputs: the API layer has checked shapes and made every array
C-contiguous and of one float dtype.

Layouts. The batch arrives sorted by length, longest first, so the sequences still running
at step t are the prefix ``[0, active[t])`` and every per-step product works on a
contiguous block of rows. What the training forward keeps for the backward is stored in
"packed rows": the real steps of sequence n occupy rows ``offsets[n] .. offsets[n] + L_n - 1``
of an (R, .) array, R the sum of the lengths. Without ragged lengths offsets[n] = n * T
and a packed array is exactly an (N, T, .) array reshaped, so nothing is copied; with them
no memory or work is spent on padding.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, SMALL_MATMUL_ROWS
from ._math import zero_of


@njit(**JIT_OPTIONS)
def matmul_into(a, b, out):
    """out[:] = a @ b. a: (M, K), b: (K, P), out: (M, P).

    Products with few rows (small batches) run as a plain loop: OpenBLAS is slow there
    (2-8x slower than this loop for 2 to 8 rows, see _config.SMALL_MATMUL_ROWS). The inner
    loop runs along a contiguous row of b and out, so it vectorises; four rows of b per pass
    make four multiply-adds per load and store of out (measured for (1, 32) @ (32, 128):
    34 -> 69 GFLOP/s in float32, 26 -> 56 in float64). The summation order is fixed, so
    results are the same bit for bit on every run.
    """
    M, K = a.shape
    P = b.shape[1]
    if M >= SMALL_MATMUL_ROWS:
        np.dot(a, b, out)
        return
    zero = zero_of(out)
    K4 = K - K % 4
    for m in range(M):
        o = out[m]
        for p in range(P):
            o[p] = zero
        for k in range(0, K4, 4):
            a0, a1, a2, a3 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            for p in range(P):
                o[p] += a0 * b0[p] + a1 * b1[p] + a2 * b2[p] + a3 * b3[p]
        for k in range(K4, K):
            a0 = a[m, k]
            b0 = b[k]
            for p in range(P):
                o[p] += a0 * b0[p]


@njit(**JIT_OPTIONS)
def project_chunk(x, Wx, t0, x_chunk, proj):
    """proj[n * S + s] = x[n, t0 + s] @ Wx for the S steps of one chunk, as one GEMM.

    x: (N, T, D); Wx: (D, G); x_chunk: (N * S, D) gather buffer; proj: (N * S, G) out.
    Rows past the end of the sequence (last, partial chunk) hold stale data and are unused.
    """
    N, T, D = x.shape
    S = x_chunk.shape[0] // N
    for n in range(N):
        for s in range(min(S, T - t0)):
            x_chunk[n * S + s] = x[n, t0 + s]
    np.dot(x_chunk, Wx, proj)


@njit(**JIT_OPTIONS)
def weight_grads_kernel(da_x, da_h, separate_h, x_rows, h_prev, Wx, dx_rows, dWx, dWh,
                        db_x, db_h):
    """dx, dWx, dWh and the bias gradients from the gate gradients of all real steps.

    All per-step arrays are packed rows (R = sum of lengths, see the module docstring):
    da_x: (R, G) gradient of the input-side pre-activations (x_t Wx + b_x)
    da_h: (R, G) gradient of the recurrent-side ones (h_{t-1} Wh + b_h); only read when
        separate_h (the GRU); otherwise da_x serves for both and db_h is not written
    x_rows: (R, D); h_prev: (R, H) h_{t-1} of every step; Wx: (D, G)
    out: dx_rows (R, D); dWx (D, G); dWh (H, G); db_x, db_h (G,)

    These GEMMs go through the same BLAS as the per-step products (numba's np.dot): a
    second BLAS thread pool (NumPy's) spinning next to it on 2 cores slowed the next
    kernel call 2-3x.
    """
    R = da_x.shape[0]
    dah = da_h if separate_h else da_x
    np.dot(da_x, Wx.T, dx_rows)
    np.dot(x_rows.T, da_x, dWx)
    np.dot(h_prev.T, dah, dWh)
    # Rows summed in a fixed order: the bias gradients are the same bit for bit every run.
    db_x[:] = da_x[0]
    for r in range(1, R):
        db_x += da_x[r]
    if separate_h:
        db_h[:] = da_h[0]
        for r in range(1, R):
            db_h += da_h[r]
