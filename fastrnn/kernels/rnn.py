"""Fused vanilla-RNN time loops (forward for training and for inference, backward),
compiled with numba.

N batch, T time, D input, H hidden, R real steps (packed rows, see kernels/__init__.py).
h_t = act(x_t Wx + h_{t-1} Wh + b), act = tanh
or relu. Work is split over row tiles as in kernels/lstm.py.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, setup_kernels
from ._math import one_of, tanh, zero_of
from .gemm import MR_STEP, in_place_at, step_product_at, steps_product_at
from .split import (BEGIN, CHUNK, END, STEP, driver, pack_transposed_part, pack_unit_part,
                    part_product, part_projection)
from .stream import copy_row, copy_rows, store_fence


@njit(inline="always", **JIT_OPTIONS)
def rnn_cell(xp, hp, b, h, relu):
    """One step of one sequence: h[:] = act(xp + hp + b). xp: x_t Wx; hp: h_{t-1} Wh;
    b, h: (H,)."""
    H = h.shape[0]
    if relu:
        zero = zero_of(h)
        for j in range(H):
            h[j] = max(xp[j] + hp[j] + b[j], zero)
    else:
        for j in range(H):
            h[j] = tanh(xp[j] + hp[j] + b[j])


@njit(**JIT_OPTIONS)
def rnn_train_steps(worker, workers, x, Wx_panels, Wh_panels, b, h, proj, rec, x_rows, h_out,
                    h_rows, relu, offsets, active, stream, projection, product):
    """The training time loop for the row tiles worker, worker + workers, ...

    x: (N, T, D); Wx_panels, Wh_panels: pack_panels(Wx), pack_panels(Wh); b: (H,)
    h: (N rounded up to MR_STEP, H) in: initial state; out: final state
    proj: (S, rows of h, H rounded up to a panel) scratch: x_t Wx for S steps at a time
    rec: (rows of h, H rounded up to a panel) scratch: h_{t-1} Wh
    packed rows out: x_rows (R, D) x_t; h_rows (R, H) h_t (the backward takes h_{t-1}
        from these too). With no rows (inference: rnn_inference's loop is this one,
        compiled once for both), nothing is kept: working memory O(N * H).
    h_out: (N, T, H) out: h_t of every real step (padding is not written)
    relu: relu instead of tanh; offsets, active: see kernels/__init__.py
    stream: non-temporal stores for the packed rows and h_out (kernels/stream.py)
    projection, product: _core.projection_address and product_address, the input
        projection's and the per-step product's kernels
    """
    N, T, D = x.shape
    S = proj.shape[0]
    keep = h_rows.shape[0] > 0
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
                    rnn_cell(proj[t - t0, n], rec[n], b, h[n], relu)
                    if keep:
                        copy_row(h_rows[row], h[n], stream)
                    copy_row(h_out[n, t], h[n], stream)
    if stream:
        store_fence()


# rnn_train_steps' argument types (address.array_types), for _compiling.Ahead.
TRAIN_STEPS_ARGS = "ii3111232232bIIbii"


@njit(**JIT_OPTIONS)
def rnn_split_part(stage, p, t, s, state):
    """The forward time loop split by hidden units (kernels/split.py): what part p does at
    each stage, as kernels/lstm.lstm_split_part for the LSTM. state = (x, Wx, Wh, b,
    bounds, Wx_parts, Wh_parts, b_parts, h_steps, h, proj, rec, h_out, active, x_rows,
    h_rows, offsets, projection, product, relu):

    x: (N, T, D); Wx: (D, H); Wh: (H, H); b: (H,); bounds: (parts + 1,) unit bounds
    Wx_parts, Wh_parts: (parts, >= panel length) scratch: each part's columns, packed;
        b_parts: (parts, >= U)
    h_steps: (2, N rounded up to MR_STEP, H) h_{t-1} in h_steps[t % 2], h_0 given in [0]
    h: (N rounded up to MR_STEP, H) out: final states (a sequence's row stops changing after
        its last step)
    proj: (parts, S, rows of h_steps, >= U rounded up to a panel), rec: (parts, rows of
        h_steps, as proj) scratch: the parts' x_t Wx and h_{t-1} Wh
    h_out: (N, T, H) out; active, offsets: as rnn_train_steps
    x_rows (R, D), h_rows (R, H): out, as rnn_train_steps fills them, for the training
        forward; with no rows (inference) nothing is kept
    projection, product: as rnn_train_steps; relu: relu instead of tanh

    Same bits as rnn_train_steps: per element the same sums (kernels/split.py) and the
    same operation per unit.
    """
    (x, Wx, Wh, b, bounds, Wx_parts, Wh_parts, b_parts, h_steps, h, proj, rec, h_out,
     active, x_rows, h_rows, offsets, projection, product, relu) = state
    j0 = bounds[p]
    j1 = bounds[p + 1]
    U = j1 - j0
    if stage == BEGIN:
        pack_unit_part(Wx, bounds, p, 1, Wx_parts[p])
        pack_unit_part(Wh, bounds, p, 1, Wh_parts[p])
        copy_row(b_parts[p, :U], b[j0:j1], False)
    elif stage == CHUNK:
        part_projection(projection, x, t, s, Wx_parts, p, U, 1, proj, active)
    elif stage == STEP:
        M = active[t]
        h_next = h_steps[(t + 1) % 2]
        part_product(product, h_steps[t % 2], Wh_parts, p, U, rec, M, t)
        for n in range(M):
            rnn_cell(proj[p, s, n], rec[p, n], b_parts[p], h_next[n, j0:j1], relu)
            copy_row(h_out[n, t, j0:j1], h_next[n, j0:j1], False)
            copy_row(h[n, j0:j1], h_next[n, j0:j1], False)
            if h_rows.shape[0]:
                row = offsets[t] + n
                copy_row(h_rows[row, j0:j1], h_next[n, j0:j1], False)
                if p == 0:
                    copy_row(x_rows[row], x[n, t], False)


# The split forward, called from Python as rnn_split_run(parts, sync, T, S, state).
rnn_split_run = driver(rnn_split_part, "rnn", "3221I22232433I22Iiib")


@njit(**JIT_OPTIONS)
def rnn_step_small(x, h0, Wx, Wh, b, relu, in_place):
    """One RNN step of a few sequences on the calling thread, in one call, the products
    reading Wx and Wh where they lie (as kernels/lstm.lstm_step_small; same bits as
    rnn_train_steps over one step).

    x: (N, D); h0: (N, H); Wx: (D, H), Wh: (H, H); b: (H,); in_place: the address of
    gemm.in_place_kernel (_core.in_place_address)
    Returns h (N, H) and x_rows, a copy of x (the cache's rows).
    """
    N, D = x.shape
    H = h0.shape[1]
    h = np.zeros(((N + MR_STEP - 1) // MR_STEP * MR_STEP, H), x.dtype)
    copy_rows(h, h0)
    projected = np.empty((N, H), x.dtype)
    recurrent = np.empty((h.shape[0], H), x.dtype)
    yes, no = np.bool_(True), np.bool_(False)  # not literals: see lstm_train_small
    in_place_at(in_place, (x, Wx, projected, N, yes, 0, H))
    in_place_at(in_place, (h, Wh, recurrent, N, no, 0, H))
    for n in range(N):
        rnn_cell(projected[n], recurrent[n], b, h[n], relu)
    return h[:N], x.copy()


@njit(**JIT_OPTIONS)
def rnn_backward_steps(worker, workers, dh, h_rows, h0, WT_panels, dh_next, da, h_prev, dx,
                       da_step, rec, relu, offsets, active, product):
    """The backward time loop for the row tiles worker, worker + workers, ...

    dh: (N, T, H) upstream gradient of every hidden state; h_rows: (R, H) forward states;
    h0: (N, H)
    WT_panels: pack_panels([Wh.T | Wx.T]), (H, H + D), or of Wh.T alone when D = 0
        (_core.backward_dx)
    dh_next: (N, H) in: gradient of the final h; out: gradient of h0
    da: (R, H) out, packed rows
    h_prev: (R, >= H) out: h_{t-1} of every packed row in its first H columns (the others:
        _core.weight_grad_rows), for dWh, copied from h_rows and h0 here
        rather than written by the forward (a quarter of its D + 3H values per row)
    dx: (N, T, D) out: gradient of x at real steps, from the step's product with
        dh_{t-1} (see kernels/lstm.lstm_backward_steps); D = 0 where a GEMM makes it
    da_step: (N rounded up to MR_STEP, H) scratch operand;
    rec: (rows of da_step, H + D rounded up to a panel) scratch; offsets, active: as the
    forward
    """
    H = dh.shape[2]
    D = dx.shape[2]
    one = one_of(dh)
    zero = zero_of(dh)
    for t in range(active.shape[0] - 1, -1, -1):
        M = active[t]
        for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
            for n in range(m0, min(m0 + MR_STEP, M)):
                row = offsets[t] + n
                h_t = h_rows[row]
                # h_t is step t + 1's h_{t-1}; a sequence running at t + 1 runs at t (sorted).
                if t + 1 < active.shape[0] and n < active[t + 1]:
                    copy_row(h_prev[offsets[t + 1] + n], h_t, False)
                if t == 0:
                    copy_row(h_prev[n], h0[n], False)
                dh_t = dh[n, t]
                dh_row = dh_next[n]
                da_row = da_step[n]
                if relu:
                    for j in range(H):
                        da_row[j] = dh_t[j] + dh_row[j] if h_t[j] > zero else zero
                else:
                    for j in range(H):
                        da_row[j] = (dh_t[j] + dh_row[j]) * (one - h_t[j] * h_t[j])
                copy_row(da[row], da_row, False)
        step_product_at(product, (da_step, WT_panels, rec, worker, workers, M,
                                  np.bool_(False)))
        for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
            for n in range(m0, min(m0 + MR_STEP, M)):
                copy_row(dh_next[n], rec[n, :H], False)
                copy_row(dx[n, t], rec[n, H:H + D], False)


BACKWARD_STEPS_ARGS = "ii3221222322bIIi"  # rnn_backward_steps' (see TRAIN_STEPS_ARGS)


@njit(**JIT_OPTIONS)
def rnn_backward_part(stage, p, i, s, state):
    """The backward time loop split by hidden units (kernels/split.py), step i being time
    t = T - 1 - i: what part p does at each stage, as kernels/lstm.lstm_backward_part for
    the LSTM. state = (dh, h_rows, h0, Wh, Wx, bounds, dx_bounds, WT_parts, WT_own, dh_next,
    da, h_prev, dx, da_steps, rec, relu, offsets, active, product), as rnn_backward_steps
    takes them but for:

    WT_parts: (parts, >= panel length) scratch: part p's columns j0..j1 of Wh.T and
        d0..d1 of Wx.T side by side, packed (dx_bounds: (parts + 1,) its columns of dx,
        all zeros when dx has none)
    WT_own: (parts, >= H * (U + d1 - d0)) scratch: the same columns unpacked, as rows
    da_steps: (2, rows, H) scratch: da_t in da_steps[t % 2], the operand of step t's
        product, which the parts read whole (two buffers: see split.py)
    rec: (parts, rows, U + d1 - d0 rounded up to a panel) scratch
    dh_next, da, h_prev: the part writes its units' columns only; dx its columns d0..d1

    Step t is the product of step t + 1 (dh_t's recurrent part, this part's units), then
    the cell's backward of step t for the part's units; END makes step 0's product (dh_0).
    The operations per unit are rnn_backward_steps': the same bits.
    """
    (dh, h_rows, h0, Wh, Wx, bounds, dx_bounds, WT_parts, WT_own, dh_next, da, h_prev, dx,
     da_steps, rec, relu, offsets, active, product) = state
    j0 = bounds[p]
    j1 = bounds[p + 1]
    U = j1 - j0
    d0 = dx_bounds[p]
    d1 = dx_bounds[p + 1]
    T = active.shape[0]
    t = T - 1 - i
    if stage == BEGIN:
        pack_transposed_part(Wh, Wx, j0, j1, d0, d1, WT_own, WT_parts, p)
    elif stage == STEP or stage == END:
        after = t + 1 if stage == STEP else 0  # the step whose product comes first
        if after < T:
            M = active[after]
            part_product(product, da_steps[after % 2], WT_parts, p, U + d1 - d0, rec, M,
                         after)
            for n in range(M):
                copy_row(dh_next[n, j0:j1], rec[p, n, :U], False)
                copy_row(dx[n, after, d0:d1], rec[p, n, U:U + d1 - d0], False)
        if stage == END:
            return
        one = one_of(dh)
        zero = zero_of(dh)
        da_t = da_steps[t % 2]
        for n in range(active[t]):
            row = offsets[t] + n
            h_t = h_rows[row, j0:j1]
            if t + 1 < T and n < active[t + 1]:
                copy_row(h_prev[offsets[t + 1] + n, j0:j1], h_t, False)
            if t == 0:
                copy_row(h_prev[n, j0:j1], h0[n, j0:j1], False)
            dh_t = dh[n, t, j0:j1]
            dh_row = dh_next[n, j0:j1]
            da_row = da_t[n, j0:j1]
            if relu:
                for u in range(U):
                    da_row[u] = dh_t[u] + dh_row[u] if h_t[u] > zero else zero
            else:
                for u in range(U):
                    da_row[u] = (dh_t[u] + dh_row[u]) * (one - h_t[u] * h_t[u])
            copy_row(da[row, j0:j1], da_row, False)


# The split backward, called from Python as rnn_backward_run(parts, sync, T, T, state).
rnn_backward_run = driver(rnn_backward_part, "rnn_backward", "32222II22222333bIIi")


setup_kernels(globals())  # every kernel above: see _config.py
