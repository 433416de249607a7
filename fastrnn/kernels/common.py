"""Kernels shared by the cells: small matrix products, the input projection and the weight
gradients.

Kernels trust their inputs: the API layer has checked shapes and made every array
C-contiguous and of one float dtype. Ragged batches arrive sorted by length, longest first
(``lengths`` non-increasing), so the sequences still running at step t are the prefix
``[0, active[t])`` of the batch and every per-step product works on a contiguous block.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, SMALL_MATMUL_ROWS
from ._math import zero_of


@njit(**JIT_OPTIONS)
def matmul_into(a, b, out):
    """out[:] = a @ b. a: (M, K), b: (K, P), out: (M, P).

    Products with few rows (small batches) run as a plain loop: OpenBLAS is slow there
    (2-8x slower than this loop for 2 to 8 rows, see _config.SMALL_MATMUL_ROWS).
    The loop order (k outer, p inner) keeps the inner loop contiguous so it vectorises,
    and fixes the summation order (deterministic).
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
def project_chunk(x, Wx, t0, x_chunk, proj, lengths):
    """proj[n, s] = x[n, t0 + s] @ Wx for the S steps of one chunk.

    x: (N, T, D); Wx: (D, G); x_chunk: (N, S, D) gather buffer; proj: (N, S, G) out;
    lengths: (N,) non-increasing.
    When the chunk is the whole sequence (S == T) x is used in place: one GEMM, or one per
    sequence over its real steps only when the batch is ragged. Entries past a sequence's
    length (and past the end of a partial last chunk) are left stale: nothing reads them.
    """
    N, T, D = x.shape
    S = proj.shape[1]
    G = proj.shape[2]
    if S == T:
        if lengths[N - 1] == T:
            np.dot(x.reshape((N * T, D)), Wx, proj.reshape((N * T, G)))
        else:
            for n in range(N):
                if lengths[n] > 0:
                    np.dot(x[n, :lengths[n]], Wx, proj[n, :lengths[n]])
        return
    for n in range(N):
        for s in range(min(S, T - t0)):
            x_chunk[n, s, :] = x[n, t0 + s, :]
    np.dot(x_chunk.reshape((N * S, D)), Wx, proj.reshape((N * S, G)))


@njit(**JIT_OPTIONS)
def weight_grads_kernel(da_x, da_h, separate_h, x, h0, h_hist, Wx, lengths,
                        dx, dWx, dWh, db_x, db_h):
    """dx, dWx, dWh and the bias gradients from the gate gradients of all steps, as GEMMs.

    da_x: (N, T, G) gradient of the input-side pre-activations (x_t Wx + b_x)
    da_h: (N, T, G) gradient of the recurrent-side ones (h_{t-1} Wh + b_h); only read when
        separate_h (the GRU), otherwise da_x serves for both and db_h is not written
    x: (N, T, D); h0: (N, H); h_hist: (N, T, H) forward states; Wx: (D, G)
    lengths: (N,) non-increasing; steps past a sequence's length take no part
    out: dx (N, T, D), zero past each length; dWx (D, G); dWh (H, G); db_x, db_h (G,)

    The real steps are packed into (R, .) blocks (R = sum of lengths) when the batch is
    ragged, so the cost follows the real work. These GEMMs go through the same BLAS as the
    per-step products (numba's np.dot): a second BLAS thread pool (NumPy's) spinning next
    to it on 2 cores slowed the next kernel call 2-3x.
    """
    N, T, G = da_x.shape
    D = x.shape[2]
    H = h0.shape[1]
    ragged = lengths[N - 1] < T
    R = 0
    for n in range(N):
        R += lengths[n]
    # h_{t-1} of every real step, packed; and x, da packed too when ragged.
    h_prev = np.empty((R, H), da_x.dtype)
    if ragged:
        x_packed = np.empty((R, D), da_x.dtype)
        dax_packed = np.empty((R, G), da_x.dtype)
        dah_packed = np.empty((R if separate_h else 0, G), da_x.dtype)
        dx_packed = np.empty((R, D), da_x.dtype)
    else:
        x_packed = x.reshape((N * T, D))
        dax_packed = da_x.reshape((N * T, G))
        dah_packed = da_h.reshape((N * T, G))
        dx_packed = dx.reshape((N * T, D))
    row = 0
    for n in range(N):
        L = lengths[n]
        if L == 0:
            continue
        h_prev[row] = h0[n]
        h_prev[row + 1:row + L] = h_hist[n, :L - 1]
        if ragged:
            x_packed[row:row + L] = x[n, :L]
            dax_packed[row:row + L] = da_x[n, :L]
            if separate_h:
                dah_packed[row:row + L] = da_h[n, :L]
        row += L
    if not separate_h:
        dah_packed = dax_packed
    np.dot(dax_packed, Wx.T, dx_packed)
    np.dot(x_packed.T, dax_packed, dWx)
    np.dot(h_prev.T, dah_packed, dWh)
    if ragged:
        row = 0
        for n in range(N):
            dx[n, :lengths[n]] = dx_packed[row:row + lengths[n]]
            row += lengths[n]
    # Rows summed in a fixed order: the bias gradients are the same bit for bit every run.
    db_x[:] = dax_packed[0]
    for r in range(1, R):
        db_x += dax_packed[r]
    if separate_h:
        db_h[:] = dah_packed[0]
        for r in range(1, R):
            db_h += dah_packed[r]
