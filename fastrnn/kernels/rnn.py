"""Fused vanilla-RNN time loops (forward for training and for inference, backward),
compiled with numba.

N batch, T time, D input, H hidden, R real steps (packed rows, see kernels/common.py),
S steps per inference projection chunk. h_t = act(x_t Wx + h_{t-1} Wh + b), act = tanh
or relu.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from ._math import one_of, tanh, zero_of
from .common import matmul_into, project_chunk


@njit(inline="always", **JIT_OPTIONS)
def rnn_cell(a, r, b, h, relu):
    """One step of one sequence: h[:] = act(a + r + b). a, r, b, h: (H,)."""
    H = h.shape[0]
    if relu:
        zero = zero_of(h)
        for j in range(H):
            h[j] = max(a[j] + r[j] + b[j], zero)
    else:
        for j in range(H):
            h[j] = tanh(a[j] + r[j] + b[j])


@njit(**JIT_OPTIONS)
def rnn_forward_train(x_rows, Wx, Wh, b, h, rec, proj, h_out, h_prev, h_rows, relu,
                      offsets, active):
    """Run the RNN over all steps, keeping what the backward needs.

    x_rows: (R, D) packed inputs; Wx: (D, H); Wh: (H, H); b: (H,)
    h: (N, H) in: initial state; out: final state; rec: (N, H) scratch for h @ Wh
    out, packed rows: proj (R, H) x_t Wx; h_prev (R, H) h_{t-1}; h_rows (R, H) h_t
    h_out: (N, T, H) out: h_t of every real step (padding is not written)
    relu: relu instead of tanh; offsets, active: see kernels/common.py
    """
    np.dot(x_rows, Wx, proj)
    for t in range(active.shape[0]):
        M = active[t]
        matmul_into(h[:M], Wh, rec[:M])
        for n in range(M):
            row = offsets[n] + t
            h_prev[row] = h[n]
            rnn_cell(proj[row], rec[n], b, h[n], relu)
            h_rows[row] = h[n]
            h_out[n, t] = h[n]


@njit(**JIT_OPTIONS)
def rnn_forward_infer(x, Wx, Wh, b, h, rec, x_chunk, proj, h_out, relu, active):
    """Run the RNN keeping nothing but the output.

    x: (N, T, D); x_chunk: (N * S, D), proj: (N * S, H) one chunk's input and projection;
    the rest as rnn_forward_train.
    """
    N, T, _ = x.shape
    S = proj.shape[0] // N
    for t0 in range(0, T, S):
        M0 = active[t0]
        if M0 == 0:
            break
        project_chunk(x[:M0], Wx, t0, x_chunk[:M0 * S], proj[:M0 * S])
        for t in range(t0, min(t0 + S, T)):
            M = active[t]
            matmul_into(h[:M], Wh, rec[:M])
            for n in range(M):
                rnn_cell(proj[n * S + t - t0], rec[n], b, h[n], relu)
                h_out[n, t] = h[n]


@njit(**JIT_OPTIONS)
def rnn_backward_kernel(dh, h_rows, WhT, dh_next, da, da_step, relu, offsets, active):
    """Back-propagate through all steps, writing the pre-activation gradients.

    dh: (N, T, H) upstream gradient of every hidden state; h_rows: (R, H) forward states
    WhT: (H, H) Wh transposed, C-contiguous
    dh_next: (N, H) in: gradient of the final h; out: gradient of h0
    da: (R, H) out, packed rows; da_step: (N, H) scratch; offsets, active: as the forward
    """
    H = dh.shape[2]
    one = one_of(dh)
    zero = zero_of(dh)
    for t in range(active.shape[0] - 1, -1, -1):
        M = active[t]
        for n in range(M):
            row = offsets[n] + t
            h_t = h_rows[row]
            dh_t = dh[n, t]
            dh_row = dh_next[n]
            da_row = da_step[n]
            if relu:
                for j in range(H):
                    da_row[j] = dh_t[j] + dh_row[j] if h_t[j] > zero else zero
            else:
                for j in range(H):
                    da_row[j] = (dh_t[j] + dh_row[j]) * (one - h_t[j] * h_t[j])
            da[row] = da_row
        matmul_into(da_step[:M], WhT, dh_next[:M])
