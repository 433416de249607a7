"""Fused LSTM time loops (forward for training and for inference, backward), compiled
with numba.

N batch, T time, D input, H hidden, R real steps (packed rows, see kernels/__init__.py);
gates packed i, f, o, g along the 4H axis.

Sequences do not interact, so the batch is cut into tiles of MR_STEP rows and the workers
(numba threads) take the tiles round-robin, each running the whole time loop on its own
rows with no synchronisation: per step and tile, the products (MR_STEP, D) @ (D, 4H) and
(MR_STEP, H) @ (H, 4H) by the micro-kernel (kernels/gemm.py), then the gate nonlinearities
and the cell update per row. Round-robin keeps the work even when a ragged batch (sorted
longest first) shrinks. In the backward, dx and the weight gradients are single big GEMMs
outside the loop.
Nothing is summed across tiles, so results do not depend on the number of workers.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, setup_kernels
from ._math import one_of, sigmoid, tanh
from .address import caller
from .gemm import (MR_STEP, chunk_scratch_like, gemm_at as _gemm_at, in_place_at,
                   packed_panels, panel_width, step_product_at, steps_product_at,
                   times_transposed)
from .split import (BEGIN, CHUNK, END, STEP, driver, pack_transposed_part, pack_unit_part,
                    part_product, part_projection)
from .stream import copy_row, copy_rows, store_fence


@njit(inline="always", **JIT_OPTIONS)
def lstm_cell(xp, hp, b, a, c, h, tanh_c):
    """One step of one sequence.

    xp: (4H,) x_t Wx; hp: (4H,) h_{t-1} Wh; b: (4H,)
    a: (4H,) out: the activated gates i, f, o, g (may be hp itself)
    c, h: (H,) in: c_{t-1}, h_{t-1}; out: c_t, h_t
    tanh_c: (H,) out: tanh(c_t)

    Short loops over contiguous rows, each touching few arrays: LLVM then proves them
    alias-free at run time and vectorises them (one fused loop touching nine arrays stayed
    scalar, several times slower per unit).
    """
    H = h.shape[0]
    for k in range(3 * H):
        a[k] = sigmoid(xp[k] + hp[k] + b[k])
    # Indexed loops over the whole row, not lstm_cell_units' views: ten slices per row and
    # step cost the sequence kernels 10-40 % (measured A/B), and from 0 LLVM sees the
    # indices are non-negative.
    for j in range(H):
        a[3 * H + j] = tanh(xp[3 * H + j] + hp[3 * H + j] + b[3 * H + j])
    for j in range(H):
        c[j] = a[H + j] * c[j] + a[j] * a[3 * H + j]
    for j in range(H):
        tanh_c[j] = tanh(c[j])
    for j in range(H):
        h[j] = a[2 * H + j] * tanh_c[j]


@njit(inline="always", **JIT_OPTIONS)
def lstm_cell_units(xp, hp, b, a, c, h, tanh_c, j0, j1):
    """lstm_cell for the hidden units j0 <= j < j1 only (their columns of each gate block):
    a worker's share of a step split by columns. Same operations per unit, same bits."""
    H = h.shape[0]
    for gate in range(3):
        lo = gate * H + j0
        hi = gate * H + j1
        _sigmoid_block(xp[lo:hi], hp[lo:hi], b[lo:hi], a[lo:hi])
    _lstm_cell_update(xp, hp, b, a, c, h, tanh_c, j0, j1)


@njit(inline="always", **JIT_OPTIONS)
def _sigmoid_block(xp, hp, b, a):
    """a = sigmoid(xp + hp + b) on (U,) views."""
    for u in range(a.shape[0]):
        a[u] = sigmoid(xp[u] + hp[u] + b[u])


@njit(inline="always", **JIT_OPTIONS)
def _lstm_cell_update(xp, hp, b, a, c, h, tanh_c, j0, j1):
    """The rest of the cell for units j0..j1, once i, f, o are in a: g, c_t, tanh(c_t), h_t.
    On views that start at the range: indexed from a j0 LLVM cannot prove non-negative,
    every access carries numba's negative-index wraparound and the loops stay scalar."""
    H = h.shape[0]
    g0 = 3 * H + j0
    g1 = 3 * H + j1
    _cell_update_blocks(xp[g0:g1], hp[g0:g1], b[g0:g1], a[j0:j1], a[H + j0:H + j1],
                        a[2 * H + j0:2 * H + j1], a[g0:g1], c[j0:j1], h[j0:j1],
                        tanh_c[j0:j1])


@njit(inline="always", **JIT_OPTIONS)
def _cell_update_blocks(xp_g, hp_g, b_g, i, f, o, g, c, h, tanh_c):
    """On (U,) views: g = tanh(xp_g + hp_g + b_g); c = f * c + i * g; tanh_c = tanh(c);
    h = o * tanh_c."""
    for u in range(c.shape[0]):
        g[u] = tanh(xp_g[u] + hp_g[u] + b_g[u])
    for u in range(c.shape[0]):
        c[u] = f[u] * c[u] + i[u] * g[u]
    for u in range(c.shape[0]):
        tanh_c[u] = tanh(c[u])
    for u in range(c.shape[0]):
        h[u] = o[u] * tanh_c[u]


@njit(**JIT_OPTIONS)
def lstm_cell_kernel(xp, hp, b, a, c, h, tanh_c):
    """lstm_cell compiled on its own, for the time loop and the single step to call through
    its address (cell_at, CELL_ARGS): the gate math, most of what compiling a cell's loop
    costs, is then compiled once instead of once per kernel that runs it.

    a must not be hp (or xp): compiled apart from its callers, LLVM cannot see that they
    are one array, its run-time overlap checks fail and the loops run scalar (inference
    1.7x slower when the time loop passed hp as a)."""
    lstm_cell(xp, hp, b, a, c, h, tanh_c)


CELL_ARGS = "1111111"
cell_at = caller(CELL_ARGS)


@njit(**JIT_OPTIONS)
def lstm_train_steps(worker, workers, x, Wx_panels, Wh_panels, b, h, c, proj, rec, x_rows,
                     gates, h_out, c_hist, tanh_c, offsets, active, stream, projection, product,
                     cell):
    """The training time loop for the row tiles worker, worker + workers, ...

    x: (N, T, D); Wx_panels, Wh_panels: pack_panels(Wx), pack_panels(Wh); b: (4H,)
    h: (N rounded up to MR_STEP, H) in: initial state; out: final state (a sequence's row
        stops changing after its last step); c: (N, H) likewise
    proj: (S, rows of h, 4H rounded up to a panel) scratch: x_t Wx for S steps at a time
    rec: (rows of h, 4H rounded up to a panel) scratch: h_{t-1} Wh. The cell writes the
        gates straight into their cache row, or (streaming, or nothing kept) into a
        scratch row
    out, packed rows: x_rows (R, D) x_t; gates (R, 4H) activated i, f, o, g;
        c_hist (R, H) c_t. Not h_{t-1}: the backward rebuilds it as o_{t-1} * tanh(c_{t-1})
        from these, to the bit (see lstm_backward_steps). With no rows (inference:
        lstm_inference's loop is this one, compiled once for both), nothing is kept: the
        gates are built in rec, and the working memory is O(N * H) whatever T is.
    tanh_c: (N, H) scratch (the backward recomputes tanh(c_t): cheaper than storing it)
    h_out: (N, T, H) out: h_t of every real step (padding is not written)
    offsets: (T,) first packed row of each step; active: (T,) sequences running at t
    stream: write the packed rows and h_out with non-temporal stores (kernels/stream.py)
    projection, product: _core.projection_address and product_address, the input
        projection's and the per-step product's kernels; cell: the address of
        lstm_cell_kernel (lstm.cell_address)

    The input projection runs inside the loop, S steps at a time into proj, which stays in
    cache for the cells: projecting all steps first wrote the (R, 4H) pre-activations to
    memory and read them back, a measurable cost at large shapes such as (100, 64, 256, 256).
    """
    N, T, D = x.shape
    S = proj.shape[0]
    keep = gates.shape[0] > 0
    activated = np.empty(4 * h.shape[1], x.dtype)  # a row's gates, when not written in place
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
                    # The gates straight into the cache, or (streamed from a finished row,
                    # or not kept) into a scratch row.
                    direct = keep and not stream
                    cell_at(cell, (proj[t - t0, n], rec[n], b,
                                   gates[row] if direct else activated, c[n], h[n], tanh_c[n]))
                    if keep and stream:
                        copy_row(gates[row], activated, True)
                    if keep:
                        copy_row(c_hist[row], c[n], stream)
                    copy_row(h_out[n, t], h[n], stream)
    if stream:
        store_fence()


# lstm_train_steps' argument types (address.array_types), for the small wrapper below,
# which calls it through its address: linked in, the wrapper compiled the whole time loop
# again (kernels/address.py).
TRAIN_STEPS_ARGS = "ii3111223222322IIbiii"
_call_train_steps = caller(TRAIN_STEPS_ARGS)


@njit(**JIT_OPTIONS)
def lstm_train_small(x, h0, c0, Wx, Wh, b, S, R, offsets, active, ragged, steps_address,
                     projection, product, cell):
    """The whole training forward on the calling thread in one call, for calls too small to
    share out: the outputs' allocation, the weights' panels and the time loop without
    Python between them (allocating from Python was a noticeable share of a call as small
    as (50, 1, 32, 32)).

    x: (N, T, D); h0, c0: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,)
    S: steps per projection chunk; R: real steps, or 0 for inference (nothing kept, see
    lstm_train_steps); offsets, active: see kernels/__init__.py
    ragged: some sequence stops before T (its padding in h_out must read 0)
    steps_address: address.entry_address of lstm_train_steps for TRAIN_STEPS_ARGS;
    projection, product, cell: as lstm_train_steps
    Returns h_out (N, T, H), x_rows (R, D), gates (R, 4H), c_hist (R, H) as lstm_train_steps
    fills them, and the final h (N rounded up to MR_STEP, H) and c (N, H).
    """
    N, T, D = x.shape
    H = h0.shape[1]
    G = Wx.shape[1]
    h = np.zeros(((N + MR_STEP - 1) // MR_STEP * MR_STEP, H), x.dtype)
    copy_rows(h, h0)
    c = c0.copy()
    h_out = np.zeros((N, T, H), x.dtype) if ragged else np.empty((N, T, H), x.dtype)
    x_rows = np.empty((R, D), x.dtype)
    gates = np.empty((R, G), x.dtype)
    c_hist = np.empty((R, H), x.dtype)
    # Typed constants, not literals: a jitted call with literal arguments compiles the
    # callee again for those literal types (here a second whole time loop).
    one_worker, no = np.int64(1), np.bool_(False)
    _call_train_steps(steps_address, (
        one_worker - 1, one_worker, x, packed_panels(Wx, no), packed_panels(Wh, no), b, h, c,
        chunk_scratch_like(h, S, G), chunk_scratch_like(h, 1, G)[0], x_rows, gates, h_out,
        c_hist, np.empty(c.shape, c.dtype), offsets, active, no, projection, product, cell))
    return h_out, x_rows, gates, c_hist, h, c


@njit(**JIT_OPTIONS)
def lstm_split_part(stage, p, t, s, state):
    """The forward time loop split by hidden units (kernels/split.py): what part p does at
    each stage. state = (x, Wx, Wh, b, bounds, Wx_parts, Wh_parts, b_parts, h_steps, h, c,
    c_parts, proj, rec, tanh_c, h_out, active, x_rows, gates, c_hist, offsets,
    projection, product, cell):

    x: (N, T, D); Wx: (D, 4H); Wh: (H, 4H); b: (4H,); bounds: (parts + 1,) unit bounds
    Wx_parts, Wh_parts: (parts, >= panel length) scratch: each part's columns, packed;
        b_parts: (parts, >= 4 U) each part's biases
    h_steps: (2, N rounded up to MR_STEP, H) h_{t-1} in h_steps[t % 2], h_0 given in [0]
    h, c: (N, H) out: final states (in: c_0); c_parts: (parts, N, >= U) each part's c
    proj: (parts, S, rows of h_steps, >= 4 U rounded up to a panel), rec: (parts, rows of
        h_steps, as proj) scratch: the parts' x_t Wx and h_{t-1} Wh, then gates
    tanh_c: (parts, N, >= U) scratch; h_out: (N, T, H) out; active, offsets: as
        lstm_train_steps
    x_rows (R, D), gates (R, 4H), c_hist (R, H): out, as lstm_train_steps fills them, for
        the training forward; with no rows (inference) nothing is kept
    projection, product, cell: as lstm_train_steps
    activated: (parts, >= 4 U) scratch: a row's gates (not in rec: see lstm_cell_kernel)
    """
    (x, Wx, Wh, b, bounds, Wx_parts, Wh_parts, b_parts, h_steps, h, c, c_parts, proj, rec,
     tanh_c, h_out, active, x_rows, gates, c_hist, offsets, projection, product, cell,
     activated) = state
    j0 = bounds[p]
    j1 = bounds[p + 1]
    U = j1 - j0
    H = h.shape[1]
    if stage == BEGIN:
        pack_unit_part(Wx, bounds, p, 4, Wx_parts[p])
        pack_unit_part(Wh, bounds, p, 4, Wh_parts[p])
        for g in range(4):
            copy_row(b_parts[p, g * U:(g + 1) * U], b[g * H + j0:g * H + j1], False)
        copy_rows(c_parts[p], c[:, j0:j1])
    elif stage == CHUNK:
        part_projection(projection, x, t, s, Wx_parts, p, U, 4, proj, active)
    elif stage == STEP:
        M = active[t]
        h_next = h_steps[(t + 1) % 2]
        part_product(product, h_steps[t % 2], Wh_parts, p, 4 * U, rec, M, t)
        a = activated[p, :4 * U]
        for n in range(M):
            c_n = c_parts[p, n, :U]
            cell_at(cell, (proj[p, s, n], rec[p, n], b_parts[p], a, c_n, h_next[n, j0:j1],
                           tanh_c[p, n, :U]))
            copy_row(h_out[n, t, j0:j1], h_next[n, j0:j1], False)
            copy_row(h[n, j0:j1], h_next[n, j0:j1], False)
            if gates.shape[0]:
                row = offsets[t] + n
                for g in range(4):
                    copy_row(gates[row, g * H + j0:g * H + j1], a[g * U:(g + 1) * U], False)
                copy_row(c_hist[row, j0:j1], c_n, False)
                if p == 0:
                    copy_row(x_rows[row], x[n, t], False)
    else:
        copy_rows(c[:, j0:j1], c_parts[p, :, :U])


# The split forward, called from Python as lstm_split_run(parts, sync, T, S, state).
lstm_split_run = driver(lstm_split_part, "lstm", "3221I22232234333I222Iiii2")


@njit(inline="always", **JIT_OPTIONS)
def lstm_step_products(x, h_prev, Wx, Wh, projected, recurrent, j0, j1, in_place):
    """Hidden units j0..j1's columns of every gate block of x Wx and h_prev Wh for one LSTM
    step of N = x.shape[0] sequences, Wx and Wh read where they lie (gemm.in_place_kernel
    at ``in_place``, _core.in_place_address). Different ranges touch different columns
    only, so workers can take them at once.

    x: (N, D); h_prev: (N rounded up to MR_STEP, H); Wx: (D, 4H), Wh: (H, 4H)
    projected: (N, 4H), recurrent: (rows of h_prev, 4H) out
    """
    N = x.shape[0]
    H = Wh.shape[0]
    yes, no = np.bool_(True), np.bool_(False)  # not literals: see lstm_train_small
    # All units: the 4H columns as one range (one pass over W's rows); else each gate
    # block's columns of the units.
    whole = j0 == 0 and j1 == H
    for gate in range(1 if whole else 4):
        lo = 0 if whole else gate * H + j0
        hi = 4 * H if whole else gate * H + j1
        in_place_at(in_place, (x, Wx, projected, N, yes, lo, hi))
        in_place_at(in_place, (h_prev, Wh, recurrent, N, no, lo, hi))


@njit(inline="always", **JIT_OPTIONS)
def _step_buffers(x, h0, c0, G):
    """The allocations of a single step: h_prev (h0 in rows padded to MR_STEP), c (a copy of
    c0 the cell updates), projected, recurrent, gates, h_next, tanh_c (see lstm_step_small)."""
    N, H = h0.shape
    h_prev = np.zeros(((N + MR_STEP - 1) // MR_STEP * MR_STEP, H), x.dtype)
    copy_rows(h_prev, h0)
    return (h_prev, c0.copy(), np.empty((N, G), x.dtype), np.empty((h_prev.shape[0], G), x.dtype),
            np.empty((N, G), x.dtype), np.empty((N, H), x.dtype), np.empty((N, H), x.dtype))


@njit(**JIT_OPTIONS)
def lstm_step_small(x, h0, c0, Wx, Wh, b, in_place, cell):
    """One LSTM step on the calling thread, in one call: products reading Wx and Wh where
    they lie (a single step uses each weight once, so packing them would cost more than it
    saves). Same bits as lstm_train_small over one step.

    x: (N, D); h0, c0: (N, H); Wx: (D, 4H), Wh: (H, 4H); b: (4H,); in_place: as
    lstm_step_products; cell: as lstm_train_steps
    Returns h (N, H), c (N, H), gates (N, 4H) activated i, f, o, g, and x_rows, a copy of x
    (the cache's rows, as lstm_train_steps fills them).
    """
    h_prev, c, projected, recurrent, gates, h_next, tanh_c = _step_buffers(x, h0, c0,
                                                                           Wx.shape[1])
    lstm_step_products(x, h_prev, Wx, Wh, projected, recurrent, 0, c.shape[1], in_place)
    for n in range(x.shape[0]):
        cell_at(cell, (projected[n], recurrent[n], b, gates[n], c[n], h_next[n], tanh_c[n]))
    return h_next, c, gates, x.copy()


STEP_SMALL_ARGS = "222221ii"  # lstm_step_small's argument types (for _compiling.Ahead)


@njit(**JIT_OPTIONS)
def lstm_step_buffers(x, h0, c0, G):
    """_step_buffers, for a step split between threads (lstm_step_part)."""
    return _step_buffers(x, h0, c0, G)


@njit(**JIT_OPTIONS)
def lstm_step_part(w, workers, x, h_prev, Wx, Wh, b, projected, recurrent, gates, c, h_next,
                   tanh_c, unit_bounds, in_place):
    """Worker w's share of one LSTM step split between ``workers`` threads: units
    unit_bounds[w]..unit_bounds[w + 1], on lstm_step_buffers' arrays (in_place: as
    lstm_step_products). For a step whose rows make one tile, the only way to share it
    out. Each worker streams only its columns of Wx and Wh, which stay in its core's cache
    from one call to the next. Same bits as lstm_step_small for any split: the same sums
    per element (lstm_step_products), the same operations per unit (lstm_cell_units).
    h_prev is read whole, h_next is written by units (two buffers)."""
    j0, j1 = unit_bounds[w], unit_bounds[w + 1]
    lstm_step_products(x, h_prev, Wx, Wh, projected, recurrent, j0, j1, in_place)
    for n in range(x.shape[0]):
        lstm_cell_units(projected[n], recurrent[n], b, gates[n], c[n], h_next[n], tanh_c[n],
                        j0, j1)


@njit(inline="always", **JIT_OPTIONS)
def lstm_cell_backward(gate, c_prev, tanh_c, dh_row, dc_row, da_row):
    """The backward of one step of one sequence, given the total gradients of its outputs.

    gate: (4H,) activated i, f, o, g; c_prev: (H,) c_{t-1}; tanh_c: (H,) tanh(c_t)
    dh_row: (H,) gradient of h_t; dc_row: (H,) in: gradient of c_t from later steps,
        out: gradient of c_{t-1}
    da_row: (4H,) out: gradient of the gate pre-activations
    Short loops, one per gate block, as in lstm_cell, so that each vectorises; indexed from
    0 over the whole row (lstm_cell_backward_units' views cost the sequence kernels time).
    """
    H = dh_row.shape[0]
    one = one_of(dh_row)
    for j in range(H):
        dc_row[j] += dh_row[j] * gate[2 * H + j] * (one - tanh_c[j] * tanh_c[j])
    for j in range(H):
        da_row[j] = dc_row[j] * gate[3 * H + j] * gate[j] * (one - gate[j])
    for j in range(H):
        da_row[H + j] = dc_row[j] * c_prev[j] * gate[H + j] * (one - gate[H + j])
    for j in range(H):
        o = gate[2 * H + j]
        da_row[2 * H + j] = dh_row[j] * tanh_c[j] * o * (one - o)
    for j in range(H):
        g = gate[3 * H + j]
        da_row[3 * H + j] = dc_row[j] * gate[j] * (one - g * g)
    for j in range(H):
        dc_row[j] *= gate[H + j]


@njit(inline="always", **JIT_OPTIONS)
def lstm_cell_backward_units(gate, c_prev, tanh_c, dh_row, dc_row, da_row, j0, j1):
    """lstm_cell_backward for the hidden units j0 <= j < j1 only (their columns of each gate
    block of da_row): a part's share of a step split by units. Same operations per unit.
    On views that start at the range: indexed from a j0 LLVM cannot prove non-negative,
    every access carried numba's negative-index wraparound and the loops stayed scalar
    (8 ns per unit)."""
    H = dh_row.shape[0]
    _cell_backward_blocks(gate[j0:j1], gate[H + j0:H + j1], gate[2 * H + j0:2 * H + j1],
                          gate[3 * H + j0:3 * H + j1], c_prev[j0:j1], tanh_c[j0:j1],
                          dh_row[j0:j1], dc_row[j0:j1], da_row[j0:j1],
                          da_row[H + j0:H + j1], da_row[2 * H + j0:2 * H + j1],
                          da_row[3 * H + j0:3 * H + j1])


@njit(inline="always", **JIT_OPTIONS)
def _cell_backward_blocks(i, f, o, g, c_prev, tanh_c, dh, dc, da_i, da_f, da_o, da_g):
    """The LSTM cell's backward on (U,) views: activated gates i, f, o, g; c_{t-1}; tanh(c_t);
    dh (gradient of h_t); dc (in: of c_t from later steps, out: of c_{t-1}); out: da_i ..
    da_g, the gradients of the gate pre-activations. Short loops, one per gate block, as in
    lstm_cell, so that each vectorises."""
    one = one_of(dh)
    for u in range(dh.shape[0]):
        dc[u] += dh[u] * o[u] * (one - tanh_c[u] * tanh_c[u])
    for u in range(dh.shape[0]):
        da_i[u] = dc[u] * g[u] * i[u] * (one - i[u])
    for u in range(dh.shape[0]):
        da_f[u] = dc[u] * c_prev[u] * f[u] * (one - f[u])
    for u in range(dh.shape[0]):
        da_o[u] = dh[u] * tanh_c[u] * o[u] * (one - o[u])
    for u in range(dh.shape[0]):
        da_g[u] = dc[u] * i[u] * (one - g[u] * g[u])
    for u in range(dh.shape[0]):
        dc[u] *= f[u]


@njit(**JIT_OPTIONS)
def lstm_step_backward_small(dnext_h, dnext_c, gates, c_next, c_prev, h_prev, x, Wx, Wh, dWx,
                             dWh):
    """The backward of one LSTM step of a few sequences (one row tile), in one call, reading
    Wx and Wh where they lie: dx = da Wx.T and dh_prev = da Wh.T as dot products with the
    rows of the weights (gemm.times_transposed), where packing Wh.T and Wx.T into panels
    cost more than the whole step; the weight gradients as outer products.

    dnext_h, dnext_c: (N, H); gates: (N, 4H); c_next, c_prev, h_prev: (N, H); x: (N, D)
    Wx: (D, 4H); Wh: (H, 4H)
    dWx: (D, 4H), dWh: (H, 4H) out: the weight gradients (given, so that Python takes them
        from fastrnn's memory pool: fresh pages cost more than filling them)
    Returns dx (N, D), dprev_h (N, H), dprev_c (N, H), db (4H,).
    Each sum over the rows runs n = 0, 1, ... in order.
    """
    N, H = dnext_h.shape
    D = x.shape[1]
    G = 4 * H
    da = np.empty((N, G), x.dtype)
    dprev_c = dnext_c.copy()
    tanh_c = np.empty(H, x.dtype)
    for n in range(N):
        for j in range(H):
            tanh_c[j] = tanh(c_next[n, j])
        lstm_cell_backward(gates[n], c_prev[n], tanh_c, dnext_h[n], dprev_c[n], da[n])
    dx = np.empty((N, D), x.dtype)
    dprev_h = np.empty((N, H), x.dtype)
    times_transposed(da, Wx, dx)
    times_transposed(da, Wh, dprev_h)
    outer_sum(x, da, dWx)
    outer_sum(h_prev, da, dWh)
    db = np.empty((1, G), x.dtype)
    outer_sum(np.ones((N, 1), x.dtype), da, db)
    return dx, dprev_h, dprev_c, db[0]


STEP_BACKWARD_SMALL_ARGS = "22222222222"  # lstm_step_backward_small's (see STEP_SMALL_ARGS)


@njit(inline="always", **JIT_OPTIONS)
def outer_sum(u, v, out):
    """out = u.T @ v for a few rows: out[k, g] = sum_n u[n, k] v[n, g], n in order.
    u: (N, K); v: (N, G); out: (K, G)."""
    N, K = u.shape
    G = v.shape[1]
    for k in range(K):
        row = out[k]
        first = u[0, k]
        v0 = v[0]
        for g in range(G):
            row[g] = first * v0[g]
        for n in range(1, N):
            weight = u[n, k]
            vn = v[n]
            for g in range(G):
                row[g] += weight * vn[g]


@njit(**JIT_OPTIONS)
def lstm_backward_steps(worker, workers, dh, gates, c_hist, tanh_c_rows, h0, c0, WT_panels,
                        dh_next, dc_next, da, h_prev, dx, da_step, rec, offsets, active, product):
    """The backward time loop for the row tiles worker, worker + workers, ...

    dh: (N, T, H) upstream gradient of every hidden state (read at real steps only)
    gates: (R, 4H) activated gates; c_hist: (R, H) c_t; h0, c0: (N, H)
    tanh_c_rows: (N, H) scratch for tanh(c_t)
    WT_panels: pack_panels([Wh.T | Wx.T]), (4H, H + D), or of Wh.T alone when D = 0
        (_core.backward_dx)
    dh_next, dc_next: (N, H) in: gradient of the final h and c; out: gradient of h0 and c0.
        A sequence's rows are left alone until its last real step, so the final-state
        gradients enter there, and after its first step they are its dh0, dc0.
    da: (R, 4H) out: gradient of the gate pre-activations, packed rows
    h_prev: (R, >= H) out: h_{t-1} of every packed row in its first H columns, for dWh
        (the others: _core.weight_grad_rows). The forward does not keep it: h_t =
        o_t * tanh(c_t) is rebuilt here from the tanh(c_t) this loop needs anyway, with
        the same operations on the same bits, so it equals the forward's h_t exactly; that
        takes H of the D + 7H values per row off the forward's writes.
    dx: (N, T, D) out: gradient of x at real steps (padding is not written); D = 0 where
        a GEMM after the loop makes it instead (_core.dx_in_time_loop)
    da_step: (N rounded up to MR_STEP, 4H) scratch: one step of da, the product's operand
    rec: (rows of da_step, H + D rounded up to a panel) scratch for da_step @ [Wh.T | Wx.T]
    offsets, active, product: as lstm_train_steps

    dx_t = da_t Wx.T comes out of the step's product with dh_{t-1} = da_t Wh.T, as extra
    columns: with D or H under a panel (64 float32 columns) the product filled half-empty
    panels anyway, and the big dx GEMM after the loop read da back from memory and
    transposed its result into (N, T, D).

    Short loops over contiguous rows, as in lstm_cell, so that each vectorises.
    """
    H = dh.shape[2]
    D = dx.shape[2]
    for t in range(active.shape[0] - 1, -1, -1):
        M = active[t]
        for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
            for n in range(m0, min(m0 + MR_STEP, M)):
                row = offsets[t] + n
                gate = gates[row]
                c_prev = c_hist[offsets[t - 1] + n] if t > 0 else c0[n]
                c_t = c_hist[row]
                tanh_c = tanh_c_rows[n]
                for j in range(H):
                    tanh_c[j] = tanh(c_t[j])
                # h_t is step t + 1's h_{t-1}; a sequence running at t + 1 runs at t (sorted).
                if t + 1 < active.shape[0] and n < active[t + 1]:
                    h_next_prev = h_prev[offsets[t + 1] + n]
                    for j in range(H):
                        h_next_prev[j] = gate[2 * H + j] * tanh_c[j]
                if t == 0:
                    copy_row(h_prev[n], h0[n], False)
                dh_t = dh[n, t]
                # dh_row, dc_row: (H,) total gradient of h_t and c_t, built in place.
                dh_row = dh_next[n]
                dc_row = dc_next[n]
                da_row = da_step[n]
                for j in range(H):
                    dh_row[j] += dh_t[j]
                lstm_cell_backward(gate, c_prev, tanh_c, dh_row, dc_row, da_row)
                copy_row(da[row], da_row, False)
        step_product_at(product, (da_step, WT_panels, rec, worker, workers, M,
                                  np.bool_(False)))
        for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
            for n in range(m0, min(m0 + MR_STEP, M)):
                copy_row(dh_next[n], rec[n, :H], False)
                copy_row(dx[n, t], rec[n, H:H + D], False)


# lstm_backward_steps' argument types, for lstm_backward_small (as TRAIN_STEPS_ARGS).
BACKWARD_STEPS_ARGS = "ii32222212222322IIi"
_call_backward_steps = caller(BACKWARD_STEPS_ARGS)


@njit(**JIT_OPTIONS)
def lstm_backward_small(dh, gates, c_hist, h0, c0, Wh, Wx, x_rows, dh_next, dc_next,
                        offsets, active, ragged, dx_in_loop, steps_address, gemm_address,
                        product):
    """The whole backward on the calling thread in one call, for calls too small to share
    out (as lstm_train_small for the forward): the time loop, dx and the weight gradients
    without Python between them. The same operations as the threaded path on one worker,
    so the same bits.

    dh: (N, T, H); gates (R, 4H), c_hist (R, H), x_rows (R, D): the forward's cache rows;
    h0, c0: (N, H); Wh: (H, 4H); Wx: (D, 4H), packed here as the loop's product operand
    (as _core.backward_panels packs them: from Python, the packing was a tenth of the call)
    dh_next, dc_next: (N, H) in: gradients of the final h and c; out: of h0 and c0
    offsets, active: see kernels/__init__.py; ragged: some sequence stops before T
    dx_in_loop: dx_t from the loop's per-step product (_core.dx_in_time_loop), else one
        product da @ Wx.T after it
    steps_address, gemm_address: entry_address of lstm_backward_steps for
        BACKWARD_STEPS_ARGS and of gemm.gemm_part for GEMM_PART_ARGS; product: as
        lstm_train_steps
    Returns dx (N, T, D) (0 past each length), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    N, T, H = dh.shape
    D, G = Wx.shape
    R = gates.shape[0]
    dtype = dh.dtype
    rows = (N + MR_STEP - 1) // MR_STEP * MR_STEP
    NR = panel_width(dh)
    D_loop = D if dx_in_loop else 0
    dx = np.zeros((N, T, D), dtype) if ragged else np.empty((N, T, D), dtype)
    dx_loop = dx if dx_in_loop else np.empty((N, T, 0), dtype)
    da = np.empty((R, G), dtype)
    # As _core.weight_grad_rows: [h_prev | x_rows | 1], h_prev filled by the loop.
    grad_rows = np.empty((R, H + D + 1), dtype)
    for r in range(R):
        row = grad_rows[r]
        x_row = x_rows[r]
        for k in range(D):
            row[H + k] = x_row[k]
        row[H + D] = 1
    yes, no = np.bool_(True), np.bool_(False)  # not literals: see lstm_train_small
    if dx_in_loop:  # [Wh.T | Wx.T]: the loop's product gives dh_{t-1} and dx_t together
        both = np.empty((H + D, G), dtype)
        # Not slice assignment: its shape check's error message cost this kernel's first
        # compile 4.6 s (see copy_rows).
        copy_rows(both[:H], Wh)
        copy_rows(both[H:], Wx)
        WT_panels = packed_panels(both, yes)
    else:
        WT_panels = packed_panels(Wh, yes)
    _call_backward_steps(steps_address, (
        np.int64(0), np.int64(1), dh, gates, c_hist, np.empty((N, H), dtype), h0, c0,
        WT_panels, dh_next, dc_next, da, grad_rows, dx_loop, np.zeros((rows, G), dtype),
        np.empty((rows, (H + D_loop + NR - 1) // NR * NR), dtype), offsets, active, product))
    nothing = np.empty(0, dtype)
    # As _core.backward_products: dWh, dWx and db from one product grad_rows.T @ da.
    grads = np.empty((H + D + 1, G), dtype)
    _gemm_at(gemm_address, (grad_rows, yes, da, nothing, grads, no, np.int64(0), H + D + 1,
                            np.int64(0), G, nothing))
    if not dx_in_loop:  # as _core.input_grad, then the rows unpacked into (N, T, D)
        dx_rows = np.empty((R, D), dtype)
        _gemm_at(gemm_address, (da, no, np.empty((0, 0), dtype), packed_panels(Wx, yes),
                                dx_rows, no, np.int64(0), R, np.int64(0), D, nothing))
        for t in range(T):
            for n in range(active[t]):
                copy_row(dx[n, t], dx_rows[offsets[t] + n], False)
    return dx, grads[H:H + D], grads[:H], grads[H + D]


@njit(**JIT_OPTIONS)
def lstm_backward_part(stage, p, i, s, state):
    """The backward time loop split by hidden units (kernels/split.py), step i being time
    t = T - 1 - i: what part p does at each stage. state = (dh, gates, c_hist, tanh_c, h0,
    c0, Wh, Wx, bounds, dx_bounds, WT_parts, WT_own, dh_next, dc_next, da, h_prev, dx,
    da_steps, rec, offsets, active, product), as lstm_backward_steps takes them but for:

    WT_parts: (parts, >= panel length) scratch: part p's columns j0..j1 of Wh.T and
        d0..d1 of Wx.T side by side, packed (dx_bounds: (parts + 1,) its columns of dx,
        all zeros when dx has none)
    WT_own: (parts, >= 4H * (U + d1 - d0)) scratch: the same columns unpacked, as rows
        (their transpose), the packing's source (given from Python's memory pool, as
        every big scratch array)
    da_steps: (2, rows, 4H) scratch: da_t in da_steps[t % 2], the operand of step t's
        product, which the parts read whole (two buffers: see split.py)
    rec: (parts, rows, U + d1 - d0 rounded up to a panel) scratch: a part's columns of
        da_t [Wh.T | Wx.T]
    tanh_c, dh_next, dc_next, h_prev, da: the part writes its units' columns only; dx its
        columns d0..d1

    Step t is the product of step t + 1 (dh_t's recurrent part, this part's units), then
    the cell's backward of step t for the part's units; END makes step 0's product (dh_0).
    """
    (dh, gates, c_hist, tanh_c_rows, h0, c0, Wh, Wx, bounds, dx_bounds, WT_parts, WT_own,
     dh_next, dc_next, da, h_prev, dx, da_steps, rec, offsets, active, product) = state
    j0 = bounds[p]
    j1 = bounds[p + 1]
    U = j1 - j0
    d0 = dx_bounds[p]
    d1 = dx_bounds[p + 1]
    T = active.shape[0]
    H = dh.shape[2]
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
        da_t = da_steps[t % 2]
        for n in range(active[t]):
            row = offsets[t] + n
            gate = gates[row]
            c_prev = c_hist[offsets[t - 1] + n] if t > 0 else c0[n]
            # Loops over views of the part's units, from 0 (see lstm_cell_backward_units).
            c_t = c_hist[row, j0:j1]
            tanh_c = tanh_c_rows[n, j0:j1]
            for u in range(U):
                tanh_c[u] = tanh(c_t[u])
            if t + 1 < T and n < active[t + 1]:
                h_next_prev = h_prev[offsets[t + 1] + n, j0:j1]
                o = gate[2 * H + j0:2 * H + j1]
                for u in range(U):
                    h_next_prev[u] = o[u] * tanh_c[u]
            if t == 0:
                copy_row(h_prev[n, j0:j1], h0[n, j0:j1], False)
            dh_t = dh[n, t, j0:j1]
            dh_row = dh_next[n, j0:j1]
            for u in range(U):
                dh_row[u] += dh_t[u]
            lstm_cell_backward_units(gate, c_prev, tanh_c_rows[n], dh_next[n], dc_next[n],
                                     da_t[n], j0, j1)
            for g in range(4):
                copy_row(da[row, g * H + j0:g * H + j1], da_t[n, g * H + j0:g * H + j1],
                         False)


# The split backward, called from Python as lstm_backward_run(parts, sync, T, T, state).
lstm_backward_run = driver(lstm_backward_part, "lstm_backward", "32222222II222222333IIi")


setup_kernels(globals())  # every kernel above: see _config.py
