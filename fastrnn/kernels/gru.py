"""Fused GRU time loops (forward for training and for inference, backward), compiled
with numba. PyTorch's semantics.

N batch, T time, D input, H hidden, R real steps (packed rows, see kernels/__init__.py);
gates packed r, z, n along the 3H axis:
  r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r)
  z = sigmoid(x Wx_z + bx_z + h Wh_z + bh_z)
  n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))
  h' = (1 - z) * n + z * h
Work is split over row tiles as in kernels/lstm.py.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, setup_kernels
from ._math import one_of, sigmoid, tanh
from .address import caller
from .gemm import MR_STEP, in_place_at, step_product_at, steps_product_at
from .stream import copy_row, copy_rows, store_fence


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
def gru_cell_kernel(a, r, bx, bh, h, hn):
    """gru_cell compiled on its own, for the time loop and the single step to call through
    its address (cell_at, CELL_ARGS), as kernels/lstm.lstm_cell_kernel: the gate math is
    compiled once instead of once per kernel that runs it. The arguments must be distinct
    arrays (see lstm_cell_kernel)."""
    gru_cell(a, r, bx, bh, h, hn)


CELL_ARGS = "111111"
cell_at = caller(CELL_ARGS)


@njit(**JIT_OPTIONS)
def gru_train_steps(worker, workers, x, Wx_panels, Wh_panels, bx, bh, h, proj, rec, hn, x_rows,
                    gates, h_out, h_prev, hn_hist, offsets, active, stream, projection, product,
                    cell):
    """The training time loop for the row tiles worker, worker + workers, ...

    x: (N, T, D); Wx_panels, Wh_panels: pack_panels(Wx), pack_panels(Wh); bx, bh: (3H,)
    h: (N rounded up to MR_STEP, H) in: initial state; out: final state
    proj: (S, rows of h, 3H rounded up to a panel) scratch: x_t Wx for S steps at a time,
        then the gates r, z, n; rec: (rows of h, 3H rounded up) scratch: h_{t-1} Wh (kept
        apart from x_t Wx: the n gate scales only the recurrent part by r); hn: (N, H) scratch
    packed rows out: x_rows (R, D) x_t; gates (R, 3H) r, z, n; h_prev (R, H) h_{t-1};
        hn_hist (R, H) h_{t-1} Wh_n + bh_n. With no rows (inference: gru_inference's loop
        is this one, compiled once for both), nothing is kept: working memory O(N * H).
    h_out: (N, T, H) out: h_t of every real step (padding is not written)
    offsets, active: see kernels/__init__.py
    stream: non-temporal stores for the packed rows and h_out (kernels/stream.py)
    projection, product: _core.projection_address and product_address, the input
        projection's and the per-step product's kernels; cell: the address of
        gru_cell_kernel (gru.cell_address)
    """
    N, T, D = x.shape
    G = gates.shape[1]
    S = proj.shape[0]
    keep = gates.shape[0] > 0
    for t0 in range(0, T, S):
        steps_product_at(projection, (x, t0, min(S, T - t0), Wx_panels, proj, worker, workers,
                                      active))
        for t in range(t0, min(t0 + S, T)):
            M = active[t]
            step_product_at(product, (h, Wh_panels, rec, worker, workers, M,
                                      np.bool_(False)))
            for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
                for n in range(m0, min(m0 + MR_STEP, M)):
                    row = offsets[t] + n
                    if keep:
                        copy_row(x_rows[row], x[n, t], stream)
                        copy_row(h_prev[row], h[n], stream)
                    cell_at(cell, (proj[t - t0, n], rec[n], bx, bh, h[n], hn[n]))
                    if keep:
                        copy_row(gates[row], proj[t - t0, n, :G], stream)
                        copy_row(hn_hist[row], hn[n], stream)
                    copy_row(h_out[n, t], h[n], stream)
    if stream:
        store_fence()


# gru_train_steps' argument types (address.array_types), for _compiling.Ahead.
TRAIN_STEPS_ARGS = "ii31111232222322IIbiii"


@njit(**JIT_OPTIONS)
def gru_step_small(x, h0, Wx, Wh, bx, bh, in_place, cell):
    """One GRU step of a few sequences on the calling thread, in one call, the products
    reading Wx and Wh where they lie (as kernels/lstm.lstm_step_small; same bits as
    gru_train_steps over one step).

    x: (N, D); h0: (N, H); Wx: (D, 3H), Wh: (H, 3H); bx, bh: (3H,); in_place: the address
    of gemm.in_place_kernel (_core.in_place_address); cell: as gru_train_steps
    Returns h (N, H), gates (N, 3H) r, z, n, hn (N, H) h0 Wh_n + bh_n, and copies of h0 and
    x (the cache's rows, as gru_train_steps fills them).
    """
    N, D = x.shape
    H = h0.shape[1]
    G = Wx.shape[1]
    h = np.zeros(((N + MR_STEP - 1) // MR_STEP * MR_STEP, H), x.dtype)
    copy_rows(h, h0)
    gates = np.empty((N, G), x.dtype)  # x Wx, then the activated gates (gru_cell)
    recurrent = np.empty((h.shape[0], G), x.dtype)
    yes, no = np.bool_(True), np.bool_(False)  # not literals: see lstm_train_small
    in_place_at(in_place, (x, Wx, gates, N, yes, 0, G))
    in_place_at(in_place, (h, Wh, recurrent, N, no, 0, G))
    hn = np.empty((N, H), x.dtype)
    for n in range(N):
        cell_at(cell, (gates[n], recurrent[n], bx, bh, h[n], hn[n]))
    return h[:N], gates, hn, h0.copy(), x.copy()


@njit(**JIT_OPTIONS)
def gru_backward_steps(worker, workers, dh, gates, hn_hist, h_prev, WhT_panels, dh_next, da_x,
                       da_h, da_step, rec, offsets, active, product):
    """The backward time loop for the row tiles worker, worker + workers, ...

    dh: (N, T, H) upstream gradient of every hidden state (read at real steps only)
    gates: (R, 3H) r, z, n; hn_hist, h_prev: (R, H); WhT_panels: pack_panels(Wh.T)
    dh_next: (N, H) in: gradient of the final h; out: gradient of h0
    da_x: (R, 3H) out: gradient of x Wx + bx (r, z, n blocks)
    da_h: (R, 3H) out: gradient of h Wh + bh; differs from da_x in the n block (times r)
    da_step: (N rounded up to MR_STEP, 3H) scratch: one step of da_h, the product's operand
    rec: (rows of da_step, H rounded up to a panel) scratch; offsets, active, product: as the
        forward
    """
    H = dh.shape[2]
    one = one_of(dh)
    for t in range(active.shape[0] - 1, -1, -1):
        M = active[t]
        for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
            for n in range(m0, min(m0 + MR_STEP, M)):
                row = offsets[t] + n
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
                copy_row(da_h[row], dah, False)
        step_product_at(product, (da_step, WhT_panels, rec, worker, workers, M,
                                  np.bool_(False)))
        for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
            for n in range(m0, min(m0 + MR_STEP, M)):
                dh_row = dh_next[n]
                for j in range(H):
                    dh_row[j] += rec[n, j]


BACKWARD_STEPS_ARGS = "ii3222122222IIi"  # gru_backward_steps' (see TRAIN_STEPS_ARGS)


setup_kernels(globals())  # every kernel above: see _config.py
