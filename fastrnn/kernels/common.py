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

from .._config import JIT_OPTIONS, OWN_MATMUL_MAX_B_SIZE, OWN_MATMUL_MAX_ROWS
from ._math import zero_of


@njit(**JIT_OPTIONS)
def _rows_4x4(a, b, out, m):
    """out[m:m+4] = a[m:m+4] @ b, four rows of a against four rows of b per pass.

    The inner loop runs along contiguous rows of b and out, so it vectorises; each load of
    b and each load/store of out feeds four multiply-adds per row block, 16 per pass, which
    keeps the loop compute-bound instead of load/store-bound.
    """
    K = a.shape[1]
    P = b.shape[1]
    zero = zero_of(out)
    o0, o1, o2, o3 = out[m], out[m + 1], out[m + 2], out[m + 3]
    for p in range(P):
        o0[p] = zero
        o1[p] = zero
        o2[p] = zero
        o3[p] = zero
    K4 = K - K % 4
    for k in range(0, K4, 4):
        b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
        a00, a01, a02, a03 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
        a10, a11, a12, a13 = a[m + 1, k], a[m + 1, k + 1], a[m + 1, k + 2], a[m + 1, k + 3]
        a20, a21, a22, a23 = a[m + 2, k], a[m + 2, k + 1], a[m + 2, k + 2], a[m + 2, k + 3]
        a30, a31, a32, a33 = a[m + 3, k], a[m + 3, k + 1], a[m + 3, k + 2], a[m + 3, k + 3]
        for p in range(P):
            x0, x1, x2, x3 = b0[p], b1[p], b2[p], b3[p]
            o0[p] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
            o1[p] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
            o2[p] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
            o3[p] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
    for k in range(K4, K):
        b0 = b[k]
        a0, a1, a2, a3 = a[m, k], a[m + 1, k], a[m + 2, k], a[m + 3, k]
        for p in range(P):
            x0 = b0[p]
            o0[p] += a0 * x0
            o1[p] += a1 * x0
            o2[p] += a2 * x0
            o3[p] += a3 * x0


@njit(**JIT_OPTIONS)
def _row(a, b, out, m):
    """out[m] = a[m] @ b, four rows of b per pass (for the rows left over by _rows_4x4)."""
    K = a.shape[1]
    P = b.shape[1]
    o = out[m]
    for p in range(P):
        o[p] = zero_of(out)
    K4 = K - K % 4
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
def matmul_into(a, b, out):
    """out[:] = a @ b. a: (M, K), b: (K, P), out: (M, P). The per-step products.

    Up to OWN_MATMUL_MAX_ROWS rows (batches up to 48) and a b of up to
    OWN_MATMUL_MAX_B_SIZE elements, fastrnn's own register-blocked loops, single-threaded,
    beat 2-thread OpenBLAS (Haswell kernel) by 1.5-6x (see _config); otherwise BLAS. The
    own loops sum in a fixed order, so their results do not depend on the thread count.
    """
    M = a.shape[0]
    if M > OWN_MATMUL_MAX_ROWS or b.size > OWN_MATMUL_MAX_B_SIZE:
        np.dot(a, b, out)
        return
    M4 = M - M % 4
    for m in range(0, M4, 4):
        _rows_4x4(a, b, out, m)
    for m in range(M4, M):
        _row(a, b, out, m)


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
