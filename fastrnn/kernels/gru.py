"""Fused GRU time loops (forward for training and for inference, backward), compiled
with numba. PyTorch's semantics.

N batch, T time, D input, H hidden, R real steps (packed rows, see kernels/common.py),
S steps per inference projection chunk; gates packed r, z, n along the 3H axis:
  r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r)
  z = sigmoid(x Wx_z + bx_z + h Wh_z + bh_z)
  n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))
  h' = (1 - z) * n + z * h
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from ._math import one_of, sigmoid, tanh
from .common import matmul_into, project_chunk


@njit(inline="always", **JIT_OPTIONS)
def gru_cell(a, r, bx, bh, h, hn):
    """One step of one sequence, in place.

    a: (3H,) in: x_t Wx; out: r, z, n.  r: (3H,) h_{t-1} Wh; bx, bh: (3H,)
    h: (H,) in: h_{t-1}; out: h_t.  hn: (H,) out: h_{t-1} Wh_n + bh_n
    """
    H = h.shape[0]
    for k in range(2 * H):
        a[k] = sigmoid(a[k] + bx[k] + r[k] + bh[k])
    for j in range(H):
        hn[j] = r[2 * H + j] + bh[2 * H + j]
    for j in range(H):
        a[2 * H + j] = tanh(a[2 * H + j] + bx[2 * H + j] + a[j] * hn[j])
    for j in range(H):
        h[j] = a[2 * H + j] + a[H + j] * (h[j] - a[2 * H + j])


@njit(**JIT_OPTIONS)
def gru_forward_train(x_rows, Wx, Wh, bx, bh, h, rec, gates, h_out, h_prev, hn_hist,
                      offsets, active):
    """Run the GRU over all steps, keeping what the backward needs.

    x_rows: (R, D) packed inputs; Wx: (D, 3H); Wh: (H, 3H); bx, bh: (3H,)
    h: (N, H) in: initial state; out: final state; rec: (N, 3H) scratch for h @ Wh
    out, packed rows: gates (R, 3H) r, z, n; h_prev (R, H); hn_hist (R, H)
    h_out: (N, T, H) out: h_t of every real step (padding is not written)
    offsets, active: see kernels/common.py
    """
    np.dot(x_rows, Wx, gates)
    for t in range(active.shape[0]):
        M = active[t]
        matmul_into(h[:M], Wh, rec[:M])
        for n in range(M):
            row = offsets[n] + t
            h_prev[row] = h[n]
            gru_cell(gates[row], rec[n], bx, bh, h[n], hn_hist[row])
            h_out[n, t] = h[n]


@njit(**JIT_OPTIONS)
def gru_forward_infer(x, Wx, Wh, bx, bh, h, rec, x_chunk, gates, hn, h_out, active):
    """Run the GRU keeping nothing but the output.

    x: (N, T, D); x_chunk: (N * S, D), gates: (N * S, 3H) one chunk's input and projection;
    hn: (N, H) scratch; the rest as gru_forward_train.
    """
    N, T, _ = x.shape
    S = gates.shape[0] // N
    for t0 in range(0, T, S):
        M0 = active[t0]
        if M0 == 0:
            break
        project_chunk(x[:M0], Wx, t0, x_chunk[:M0 * S], gates[:M0 * S])
        for t in range(t0, min(t0 + S, T)):
            M = active[t]
            matmul_into(h[:M], Wh, rec[:M])
            for n in range(M):
                gru_cell(gates[n * S + t - t0], rec[n], bx, bh, h[n], hn[n])
                h_out[n, t] = h[n]


@njit(**JIT_OPTIONS)
def gru_backward_kernel(dh, gates, hn_hist, h_prev, WhT, dh_next, da_x, da_h, da_step,
                        dh_rec, offsets, active):
    """Back-propagate through all steps, writing both sides' pre-activation gradients.

    dh: (N, T, H) upstream gradient of every hidden state (read at real steps only)
    gates: (R, 3H) r, z, n; hn_hist, h_prev: (R, H)
    WhT: (3H, H) Wh transposed, C-contiguous
    dh_next: (N, H) in: gradient of the final h; out: gradient of h0
    da_x: (R, 3H) out: gradient of x Wx + bx (r, z, n blocks)
    da_h: (R, 3H) out: gradient of h Wh + bh; differs from da_x in the n block (times r)
    da_step: (N, 3H), dh_rec: (N, H) scratch; offsets, active: as the forward
    """
    H = dh.shape[2]
    one = one_of(dh)
    for t in range(active.shape[0] - 1, -1, -1):
        M = active[t]
        for n in range(M):
            row = offsets[n] + t
            g = gates[row]
            hn = hn_hist[row]
            hp = h_prev[row]
            dh_t = dh[n, t]
            dh_row = dh_next[n]
            dax = da_x[row]
            dah = da_step[n]
            for j in range(H):
                dh_row[j] += dh_t[j]
            for j in range(H):
                z = g[H + j]
                nn = g[2 * H + j]
                dax[2 * H + j] = dh_row[j] * (one - z) * (one - nn * nn)
            for j in range(H):
                z = g[H + j]
                dax[H + j] = dh_row[j] * (hp[j] - g[2 * H + j]) * z * (one - z)
            for j in range(H):
                r = g[j]
                dax[j] = dax[2 * H + j] * hn[j] * r * (one - r)
            for j in range(2 * H):
                dah[j] = dax[j]
            for j in range(H):
                dah[2 * H + j] = dax[2 * H + j] * g[j]
            for j in range(H):
                dh_row[j] *= g[H + j]
            da_h[row] = dah
        matmul_into(da_step[:M], WhT, dh_rec[:M])
        for n in range(M):
            dh_next[n] += dh_rec[n]
