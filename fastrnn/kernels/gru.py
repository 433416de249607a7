"""Fused GRU time loops (forward and backward), compiled with numba. PyTorch's semantics.

N batch, T time, D input, H hidden, S steps per projection chunk; gates packed r, z, n along
the 3H axis:
  r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r)
  z = sigmoid(x Wx_z + bx_z + h Wh_z + bh_z)
  n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))
  h' = (1 - z) * n + z * h
"""

from numba import njit

from .._config import JIT_OPTIONS
from ._math import one_of, sigmoid, tanh
from .common import matmul_into, project_chunk


@njit(**JIT_OPTIONS)
def gru_forward_kernel(x, Wx, Wh, bx, bh, h, x_chunk, gates, rec, h_hist, hn_hist,
                       store, lengths, active):
    """Run the GRU over all T steps.

    x: (N, T, D); Wx: (D, 3H); Wh: (H, 3H); bx, bh: (3H,)
    h: (N, H) in: initial state; out: final state
    x_chunk: (N, S, D) gather buffer for the projection; unused when S == T
    gates: (N, S, 3H) input projection of a chunk of steps, activated in place; with store
        S == T and on return it holds r, z, n of every step (for the backward)
    rec: (N, 3H) scratch for h @ Wh
    h_hist: (N, T, H) out: hidden state of every real step (padding is not written)
    hn_hist: (N, T, H) out with store: h_{t-1} Wh_n + bh_n; otherwise (N, 1, H) scratch
    lengths: (N,) non-increasing; active: (T,) how many sequences run at step t
    """
    N, T, _ = x.shape
    H = h.shape[1]
    S = gates.shape[1]
    for t0 in range(0, T, S):
        project_chunk(x, Wx, t0, x_chunk, gates, lengths)
        for t in range(t0, min(t0 + S, T)):
            M = active[t]
            matmul_into(h[:M], Wh, rec[:M])
            for n in range(M):
                a = gates[n, t - t0]
                r = rec[n]
                for k in range(2 * H):
                    a[k] = sigmoid(a[k] + bx[k] + r[k] + bh[k])
                hn = hn_hist[n, t if store else 0]
                for j in range(H):
                    hn[j] = r[2 * H + j] + bh[2 * H + j]
                for j in range(H):
                    a[2 * H + j] = tanh(a[2 * H + j] + bx[2 * H + j] + a[j] * hn[j])
                h_row = h[n]
                for j in range(H):
                    h_row[j] = a[2 * H + j] + a[H + j] * (h_row[j] - a[2 * H + j])
                h_hist[n, t] = h_row


@njit(**JIT_OPTIONS)
def gru_backward_kernel(dh, gates, hn_hist, h0, h_hist, WhT, dh_next, da_x, da_h,
                        da_step, dh_rec, active):
    """Back-propagate through the T steps, writing both sides' pre-activation gradients.

    dh: (N, T, H) upstream gradient of every hidden state
    gates: (N, T, 3H) r, z, n; hn_hist: (N, T, H); h0: (N, H); h_hist: (N, T, H)
    WhT: (3H, H) Wh transposed, C-contiguous
    dh_next: (N, H) in: gradient of the final h; out: gradient of h0
    da_x: (N, T, 3H) out: gradient of x Wx + bx (r, z, n blocks)
    da_h: (N, T, 3H) out: gradient of h Wh + bh; differs from da_x in the n block (times r)
    da_step: (N, 3H), dh_rec: (N, H) scratch
    active: (T,) sequences running at step t (a prefix of the batch, sorted by length)
    """
    N, T, H = dh.shape
    one = one_of(dh)
    for t in range(T - 1, -1, -1):
        M = active[t]
        for n in range(M):
            g = gates[n, t]
            hn = hn_hist[n, t]
            h_prev = h_hist[n, t - 1] if t > 0 else h0[n]
            dh_t = dh[n, t]
            dh_row = dh_next[n]
            dax = da_x[n, t]
            dah = da_step[n]
            for j in range(H):
                dh_row[j] += dh_t[j]
            for j in range(H):
                z = g[H + j]
                nn = g[2 * H + j]
                dax[2 * H + j] = dh_row[j] * (one - z) * (one - nn * nn)
            for j in range(H):
                z = g[H + j]
                dax[H + j] = dh_row[j] * (h_prev[j] - g[2 * H + j]) * z * (one - z)
            for j in range(H):
                r = g[j]
                dax[j] = dax[2 * H + j] * hn[j] * r * (one - r)
            for j in range(2 * H):
                dah[j] = dax[j]
            for j in range(H):
                dah[2 * H + j] = dax[2 * H + j] * g[j]
            for j in range(H):
                dh_row[j] *= g[H + j]
            da_h[n, t] = dah
        matmul_into(da_step[:M], WhT, dh_rec[:M])
        for n in range(M):
            dh_next[n] += dh_rec[n]
