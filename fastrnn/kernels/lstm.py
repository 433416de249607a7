"""Fused LSTM time loops (forward and backward), compiled with numba.

N batch, T time, D input, H hidden, S steps per projection chunk; gates packed i, f, o, g
along the 4H axis. Each step: one recurrent product (N, H) @ (H, 4H), then one fused,
vectorisable loop over the hidden units for the gate nonlinearities and the cell update.
The weight gradients and dx are not accumulated per step: the API computes them afterwards
as a few large GEMMs from the per-step gate gradients ``da`` this kernel writes.
"""

from numba import njit

from .._config import JIT_OPTIONS
from ._math import one_of, sigmoid, tanh
from .common import matmul_into, project_chunk


@njit(**JIT_OPTIONS)
def lstm_forward_kernel(x, Wx, Wh, b, h, c, x_chunk, gates, rec,
                        h_hist, c_hist, tanh_c_hist, store):
    """Run the LSTM over all T steps.

    x: (N, T, D); Wx: (D, 4H); Wh: (H, 4H); b: (4H,)
    h, c: (N, H) in: initial state; out: final state
    x_chunk: (N, S, D) scratch (unused when S == T)
    gates: (N, S, 4H) the input projection of a chunk of steps; with store, S == T and on
        return it holds the activated gates i, f, o, g of every step (for the backward)
    rec: (N, 4H) scratch for h @ Wh
    h_hist: (N, T, H) out: hidden state of every step
    c_hist, tanh_c_hist: (N, T, H) out with store: c_t and tanh(c_t); ignored otherwise
    store: keep what the backward needs (training) or not (inference)
    """
    N, T, _ = x.shape
    H = h.shape[1]
    S = gates.shape[1]
    for t0 in range(0, T, S):
        project_chunk(x, Wx, t0, x_chunk, gates)
        for t in range(t0, min(t0 + S, T)):
            matmul_into(h, Wh, rec)
            for n in range(N):
                a = gates[n, t - t0]
                r = rec[n]
                c_row = c[n]
                h_row = h[n]
                out_row = h_hist[n, t]
                for j in range(H):
                    i = sigmoid(a[j] + r[j] + b[j])
                    f = sigmoid(a[H + j] + r[H + j] + b[H + j])
                    o = sigmoid(a[2 * H + j] + r[2 * H + j] + b[2 * H + j])
                    g = tanh(a[3 * H + j] + r[3 * H + j] + b[3 * H + j])
                    c_new = f * c_row[j] + i * g
                    tanh_c = tanh(c_new)
                    h_new = o * tanh_c
                    c_row[j] = c_new
                    h_row[j] = h_new
                    out_row[j] = h_new
                    if store:
                        a[j] = i
                        a[H + j] = f
                        a[2 * H + j] = o
                        a[3 * H + j] = g
                        c_hist[n, t, j] = c_new
                        tanh_c_hist[n, t, j] = tanh_c


@njit(**JIT_OPTIONS)
def lstm_backward_kernel(dh, gates, c_hist, tanh_c_hist, c0, WhT, dh_next, dc_next,
                         da, da_step):
    """Back-propagate through the T steps, writing the pre-activation gate gradients.

    dh: (N, T, H) upstream gradient of every hidden state
    gates: (N, T, 4H) activated gates i, f, o, g; c_hist, tanh_c_hist: (N, T, H); c0: (N, H)
    WhT: (4H, H) Wh transposed, C-contiguous
    dh_next, dc_next: (N, H) in: gradient of the final h and c; out: gradient of h0 and c0
    da: (N, T, 4H) out: gradient of the gate pre-activations
    da_step: (N, 4H) scratch: one step of da, contiguous for the recurrent product
    """
    N, T, H = dh.shape
    one = one_of(dh)
    for t in range(T - 1, -1, -1):
        for n in range(N):
            gate = gates[n, t]
            c_prev = c_hist[n, t - 1] if t > 0 else c0[n]
            tanh_c = tanh_c_hist[n, t]
            dh_t = dh[n, t]
            dh_row = dh_next[n]
            dc_row = dc_next[n]
            da_row = da_step[n]
            for j in range(H):
                i = gate[j]
                f = gate[H + j]
                o = gate[2 * H + j]
                g = gate[3 * H + j]
                tc = tanh_c[j]
                dh_total = dh_t[j] + dh_row[j]
                dc = dc_row[j] + dh_total * o * (one - tc * tc)
                da_row[j] = dc * g * i * (one - i)
                da_row[H + j] = dc * c_prev[j] * f * (one - f)
                da_row[2 * H + j] = dh_total * tc * o * (one - o)
                da_row[3 * H + j] = dc * i * (one - g * g)
                dc_row[j] = dc * f
            da[n, t, :] = da_row
        matmul_into(da_step, WhT, dh_next)
