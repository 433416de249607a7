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
from .split import (BEGIN, CHUNK, END, STEP, driver, pack_transposed_part, pack_unit_part,
                    part_product, part_projection)
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
def gru_split_part(stage, p, t, s, state):
    """The forward time loop split by hidden units (kernels/split.py): what part p does at
    each stage, as kernels/lstm.lstm_split_part for the LSTM. state = (x, Wx, Wh, bx, bh,
    bounds, Wx_parts, Wh_parts, bx_parts, bh_parts, h_steps, h, proj, rec, hn_parts, h_out,
    active, x_rows, gates, h_prev, hn_hist, offsets, projection, product, cell):

    x: (N, T, D); Wx: (D, 3H); Wh: (H, 3H); bx, bh: (3H,); bounds: (parts + 1,) unit bounds
    Wx_parts, Wh_parts: (parts, >= panel length) scratch: each part's columns (its units'
        r, z and n columns side by side), packed; bx_parts, bh_parts: (parts, >= 3 U)
    h_steps: (2, N rounded up to MR_STEP, H) h_{t-1} in h_steps[t % 2], h_0 given in [0]
    h: (N rounded up to MR_STEP, H) out: final states (a sequence's row stops changing after
        its last step)
    proj: (parts, S, rows of h_steps, >= 3 U rounded up to a panel), rec: (parts, rows of
        h_steps, as proj) scratch: the parts' x_t Wx (then the gates) and h_{t-1} Wh
    hn_parts: (parts, N, >= U) scratch; h_out: (N, T, H) out; active, offsets: as
        gru_train_steps
    x_rows (R, D), gates (R, 3H), h_prev (R, H), hn_hist (R, H): out, as gru_train_steps
        fills them, for the training forward; with no rows (inference) nothing is kept
    projection, product, cell: as gru_train_steps

    A part's cell updates its units of h_{t+1} in h_steps[(t + 1) % 2], started from a copy
    of their h_t: h_steps[t % 2] is read whole by every part's product until all have met.
    Same bits as gru_train_steps: per element the same sums (kernels/split.py) and the
    same operations per unit (gru_cell works unit by unit within each gate block).
    """
    (x, Wx, Wh, bx, bh, bounds, Wx_parts, Wh_parts, bx_parts, bh_parts, h_steps, h, proj,
     rec, hn_parts, h_out, active, x_rows, gates, h_prev, hn_hist, offsets, projection,
     product, cell) = state
    j0 = bounds[p]
    j1 = bounds[p + 1]
    U = j1 - j0
    H = h.shape[1]
    if stage == BEGIN:
        pack_unit_part(Wx, bounds, p, 3, Wx_parts[p])
        pack_unit_part(Wh, bounds, p, 3, Wh_parts[p])
        for g in range(3):
            copy_row(bx_parts[p, g * U:(g + 1) * U], bx[g * H + j0:g * H + j1], False)
            copy_row(bh_parts[p, g * U:(g + 1) * U], bh[g * H + j0:g * H + j1], False)
    elif stage == CHUNK:
        part_projection(projection, x, t, s, Wx_parts, p, U, 3, proj, active)
    elif stage == STEP:
        M = active[t]
        h_now = h_steps[t % 2]
        h_next = h_steps[(t + 1) % 2]
        part_product(product, h_now, Wh_parts, p, 3 * U, rec, M, t)
        for n in range(M):
            a = proj[p, s, n]
            hn = hn_parts[p, n, :U]
            copy_row(h_next[n, j0:j1], h_now[n, j0:j1], False)
            cell_at(cell, (a, rec[p, n], bx_parts[p], bh_parts[p], h_next[n, j0:j1], hn))
            copy_row(h_out[n, t, j0:j1], h_next[n, j0:j1], False)
            copy_row(h[n, j0:j1], h_next[n, j0:j1], False)
            if gates.shape[0]:
                row = offsets[t] + n
                for g in range(3):
                    copy_row(gates[row, g * H + j0:g * H + j1], a[g * U:(g + 1) * U], False)
                copy_row(h_prev[row, j0:j1], h_now[n, j0:j1], False)
                copy_row(hn_hist[row, j0:j1], hn, False)
                if p == 0:
                    copy_row(x_rows[row], x[n, t], False)


# The split forward, called from Python as gru_split_run(parts, sync, T, S, state).
gru_split_run = driver(gru_split_part, "gru", "32211I2222324333I2222Iiii")


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


@njit(**JIT_OPTIONS)
def gru_backward_part(stage, p, i, s, state):
    """The backward time loop split by hidden units (kernels/split.py), step i being time
    t = T - 1 - i: what part p does at each stage, as kernels/lstm.lstm_backward_part for
    the LSTM. state = (dh, gates, hn_hist, h_prev, Wh, bounds, WT_parts, WT_own, dh_next,
    da_x, da_h, da_steps, rec, offsets, active, product), as gru_backward_steps takes them
    but for:

    WT_parts: (parts, >= panel length) scratch: part p's columns j0..j1 of Wh.T, packed
    WT_own: (parts, >= 3H * U) scratch: the same columns unpacked, as rows (Wh[j0:j1]),
        the packing's source
    da_steps: (2, rows, 3H) scratch: the recurrent side's da of step t in da_steps[t % 2],
        the operand of its product, which the parts read whole (two buffers: split.py)
    rec: (parts, rows, U rounded up to a panel) scratch: a part's columns of da_t Wh.T
    dh_next, da_x, da_h: the part writes its units' columns only

    Step t is the product of step t + 1 (dh_t's recurrent part, this part's units), then
    the cell's backward of step t for the part's units; END makes step 0's product (dh_0).
    The operations per unit and their order are gru_backward_steps': the same bits.
    """
    (dh, gates, hn_hist, h_prev, Wh, bounds, WT_parts, WT_own, dh_next, da_x, da_h,
     da_steps, rec, offsets, active, product) = state
    j0 = bounds[p]
    j1 = bounds[p + 1]
    U = j1 - j0
    T = active.shape[0]
    H = dh.shape[2]
    t = T - 1 - i
    if stage == BEGIN:
        pack_transposed_part(Wh, Wh, j0, j1, 0, 0, WT_own, WT_parts, p)  # no Wx rows
    elif stage == STEP or stage == END:
        after = t + 1 if stage == STEP else 0  # the step whose product comes first
        if after < T:
            M = active[after]
            part_product(product, da_steps[after % 2], WT_parts, p, U, rec, M, after)
            for n in range(M):
                dh_row = dh_next[n, j0:j1]
                for u in range(U):
                    dh_row[u] += rec[p, n, u]
        if stage == END:
            return
        one = one_of(dh)
        dah = da_steps[t % 2]
        for n in range(active[t]):
            row = offsets[t] + n
            g = gates[row]
            hn = hn_hist[row, j0:j1]
            hp = h_prev[row, j0:j1]
            dh_t = dh[n, t, j0:j1]
            dh_row = dh_next[n, j0:j1]
            dax = da_x[row]
            da_row = dah[n]
            for u in range(U):
                dh_row[u] += dh_t[u]
            for u in range(U):
                z = g[H + j0 + u]
                nn = g[2 * H + j0 + u]
                dax[2 * H + j0 + u] = dh_row[u] * (one - z) * (one - nn * nn)
            for u in range(U):
                z = g[H + j0 + u]
                dax[H + j0 + u] = dh_row[u] * (hp[u] - g[2 * H + j0 + u]) * z * (one - z)
            for u in range(U):
                r = g[j0 + u]
                dax[j0 + u] = dax[2 * H + j0 + u] * hn[u] * r * (one - r)
            for blk in range(2):
                for u in range(U):
                    da_row[blk * H + j0 + u] = dax[blk * H + j0 + u]
            for u in range(U):
                da_row[2 * H + j0 + u] = dax[2 * H + j0 + u] * g[j0 + u]
            for u in range(U):
                dh_row[u] *= g[H + j0 + u]
            for blk in range(3):
                copy_row(da_h[row, blk * H + j0:blk * H + j1],
                         da_row[blk * H + j0:blk * H + j1], False)


# The split backward, called from Python as gru_backward_run(parts, sync, T, T, state).
gru_backward_run = driver(gru_backward_part, "gru_backward", "32222I2222233IIi")


setup_kernels(globals())  # every kernel above: see _config.py
