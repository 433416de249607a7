"""Fused vanilla-RNN time loops (forward and backward), compiled with numba.

N batch, T time, D input, H hidden, S steps per projection chunk.
h_t = act(x_t Wx + h_{t-1} Wh + b), act = tanh or relu.
"""

from numba import njit

from .._config import JIT_OPTIONS
from ._math import one_of, tanh, zero_of
from .common import matmul_into, project_chunk


@njit(**JIT_OPTIONS)
def rnn_forward_kernel(x, Wx, Wh, b, h, x_chunk, proj, rec, h_hist, relu, lengths, active):
    """Run the RNN over all T steps.

    x: (N, T, D); Wx: (D, H); Wh: (H, H); b: (H,)
    h: (N, H) in: initial state; out: final state
    x_chunk: (N, S, D) gather buffer for the projection; unused when S == T
    proj: (N, S, H) input projection x @ Wx of a chunk of S steps (S == T: all at once)
    rec: (N, H) scratch for h @ Wh
    h_hist: (N, T, H) out: hidden state of every real step (padding is not written)
    relu: use relu instead of tanh
    lengths: (N,) non-increasing; active: (T,) how many sequences run at step t
    """
    N, T, _ = x.shape
    H = h.shape[1]
    S = proj.shape[1]
    zero = zero_of(h)
    for t0 in range(0, T, S):
        project_chunk(x, Wx, t0, x_chunk, proj, lengths)
        for t in range(t0, min(t0 + S, T)):
            M = active[t]
            matmul_into(h[:M], Wh, rec[:M])
            for n in range(M):
                a = proj[n, t - t0]
                r = rec[n]
                h_row = h[n]
                if relu:
                    for j in range(H):
                        h_row[j] = max(a[j] + r[j] + b[j], zero)
                else:
                    for j in range(H):
                        h_row[j] = tanh(a[j] + r[j] + b[j])
                h_hist[n, t] = h_row


@njit(**JIT_OPTIONS)
def rnn_backward_kernel(dh, h_hist, WhT, dh_next, da, da_step, relu, active):
    """Back-propagate through the T steps, writing the pre-activation gradients.

    dh: (N, T, H) upstream gradient of every hidden state; h_hist: (N, T, H) forward states
    WhT: (H, H) Wh transposed, C-contiguous
    dh_next: (N, H) in: gradient of the final h; out: gradient of h0
    da: (N, T, H) out: gradient of the pre-activations; da_step: (N, H) scratch
    active: (T,) sequences running at step t (see lstm_backward_kernel)
    """
    N, T, H = dh.shape
    one = one_of(dh)
    zero = zero_of(dh)
    for t in range(T - 1, -1, -1):
        M = active[t]
        for n in range(M):
            h_t = h_hist[n, t]
            dh_t = dh[n, t]
            dh_row = dh_next[n]
            da_row = da_step[n]
            if relu:
                for j in range(H):
                    da_row[j] = dh_t[j] + dh_row[j] if h_t[j] > zero else zero
            else:
                for j in range(H):
                    da_row[j] = (dh_t[j] + dh_row[j]) * (one - h_t[j] * h_t[j])
            da[n, t, :] = da_row
        matmul_into(da_step[:M], WhT, dh_next[:M])
