"""LSTM API: validate -> allocate -> kernel -> (outputs, cache).

N batch, T time, D input, H hidden. Gates are packed along the 4H axis in the order
i, f, o, g: i, f, o go through the sigmoid, g through tanh;
c_t = f * c_{t-1} + i * g and h_t = o * tanh(c_t).
"""

import numpy as np

from . import _memory
from . import _validate as v
from ._compiling import Ahead
from ._core import (CellCache, batch_order, backward_dx, backward_products,
                    backward_split_scratch, check_backward_cache, chunk_scratch, chunk_steps,
                    dx_in_time_loop, in_place_address, in_steps, infer_in_steps, loop_split,
                    no_rows, product_address, projection_address, run_steps,
                    single_worker_step, small_step, split_scratch, state_grad, step_operand,
                    step_split, step_scratch, streamed, weight_grad_rows, weight_panels)
from ._isa import MR_STEP
from ._threads import kernel_threads, run_workers
from .kernels.address import entry_address
from .kernels.gemm import GEMM_PART_ARGS, gemm_part
from .kernels.lstm import (BACKWARD_STEPS_ARGS, CELL_ARGS, STEP_BACKWARD_SMALL_ARGS,
                           STEP_SMALL_ARGS, TRAIN_STEPS_ARGS, lstm_backward_part,
                           lstm_backward_run, lstm_backward_small, lstm_backward_steps,
                           lstm_cell_kernel, lstm_split_part, lstm_split_run,
                           lstm_step_backward_small, lstm_step_small, lstm_step_buffers,
                           lstm_step_part, lstm_train_small, lstm_train_steps)
from .kernels.sync import sync_slots


def cell_address(dtype):
    """The address of kernels/lstm.lstm_cell_kernel for ``dtype``, which the time loop and
    the single step call (compiled or loaded once per process: entry_address keeps it)."""
    return entry_address(lstm_cell_kernel, dtype, CELL_ARGS)


# What a cold cache's first call hands a helper process to compile beside it
# (_compiling.py), per path: the biggest kernels it reaches last, the last one first (see
# Ahead). A training forward's include its backward's, which nearly always follows it.
_INFERENCE_AHEAD = Ahead((lstm_train_steps, TRAIN_STEPS_ARGS))
_BACKWARD_AHEAD = Ahead((gemm_part, GEMM_PART_ARGS), (lstm_backward_steps, BACKWARD_STEPS_ARGS))
_FORWARD_AHEAD = Ahead(*_INFERENCE_AHEAD.kernels, *_BACKWARD_AHEAD.kernels)
_SPLIT_INFERENCE_AHEAD = Ahead((lstm_split_run.worker, lstm_split_run.worker_layout),
                               (lstm_split_part, lstm_split_run.part_layout))
_SPLIT_BACKWARD_AHEAD = Ahead((gemm_part, GEMM_PART_ARGS),
                              (lstm_backward_run.worker, lstm_backward_run.worker_layout),
                              (lstm_backward_part, lstm_backward_run.part_layout))
_SPLIT_FORWARD_AHEAD = Ahead(*_SPLIT_INFERENCE_AHEAD.kernels,
                             *_SPLIT_BACKWARD_AHEAD.kernels[1:])
# A single step of one row tile has a backward of its own; a bigger one, the sequences'.
_SMALL_STEP_AHEAD = Ahead((lstm_step_backward_small, STEP_BACKWARD_SMALL_ARGS),
                          (lstm_step_small, STEP_SMALL_ARGS))


class LSTMCache(CellCache):
    """What lstm_backward needs from lstm_forward; treat it as read-only.

    Public attributes:
      final_h: (N, H) hidden state after each sequence's last step (h0 when its length is 0)
      final_c: (N, H) cell state after each sequence's last step (c0 when its length is 0)
      lengths: (N,) the lengths the forward ran with (all T without ``lengths=``)
    Carry (final_h, final_c) into the next chunk of a long sequence as (h0, c0).
    The rest is internal (activated gates, cell states, inputs in kernel order).
    """

    __slots__ = ("x_rows", "h0", "c0", "Wx", "Wh", "gates", "c_hist", "final_h", "final_c",
                 "order", "is_step")


def _c0_in_order(c0, h0, order):
    """c0 in kernel order, zeros (like h0) when None."""
    # np.zeros, not np.zeros_like: the cheaper call of the two, and this runs on every call.
    return np.zeros(h0.shape, h0.dtype) if c0 is None else order.sort(c0)


def _start(x, h0, c0, order):
    """order.start plus the cell state: x, h0, c0 (zeros when None) in kernel order, running
    states h, c and the (N, T, H) output."""
    x, h0, h, h_out = order.start(x, h0)
    c0 = _c0_in_order(c0, h0, order)
    return x, h0, c0, h, c0.copy(), h_out


def _forward_infer(x, h0, c0, Wx, Wh, b, order):
    """The cache-free forward on validated arrays: h (N, T, H), final h, final c. The
    training forward's kernels given no cache rows (lstm_train_steps keeps nothing then):
    one time loop to compile for both."""
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    if in_steps(order, N, T):
        # The single-step kernels (_step_kernels; more than a row tile of sequences on one
        # worker, which the step function gives the sequence kernels).
        def step(x_t, state):
            h, c = state
            return (_step_kernels(x_t, h, c, Wx, Wh, b) or lstm_step_small(
                x_t, h, c, Wx, Wh, b, in_place_address(dtype), cell_address(dtype)))[:2]
        h_out, (h, c) = infer_in_steps(x, (h0, np.zeros_like(h0) if c0 is None else c0),
                                       step)
        return h_out, h, c
    with kernel_threads(N, T, D, H, 4) as threads:
        if threads == 1 and order.real_steps:
            _INFERENCE_AHEAD.ask(dtype)
            _, _, (h_out, _, _, _, h, c) = _one_call_forward(x, h0, c0, Wx, Wh, b, order,
                                                             keep=False)
            return order.unsort(h_out), order.final(h), order.final(c)
        x, h0, c0, h, c, h_out = _start(x, h0, c0, order)
        if order.real_steps:
            S = chunk_steps(order, D, 4 * H, dtype, threads)
            bounds = loop_split(N, D, H, 4, threads)
            none = no_rows(dtype)  # for x_rows, gates and c_hist: nothing kept
            (_INFERENCE_AHEAD if bounds is None else _SPLIT_INFERENCE_AHEAD).ask(dtype)
            if bounds is not None:
                _split_forward(x, Wx, Wh, b, h, c, S, h_out, order, bounds, none, none,
                               none)
            else:
                run_steps(lstm_train_steps, threads, order.active[0], x,
                          weight_panels(Wx), weight_panels(Wh), b, h, c,
                          chunk_scratch(S, N, 4 * H, dtype), step_scratch(N, 4 * H, dtype),
                          none, none, h_out, none, np.empty((N, H), dtype),
                          order.offsets, order.active, False, projection_address(dtype),
                          product_address(dtype), cell_address(dtype))
    return order.unsort(h_out), order.final(h), order.final(c)


def _one_call_forward(x, h0, c0, Wx, Wh, b, order, keep):
    """A small call's forward on one thread: one numba call allocates and runs everything
    (lstm_train_small), keeping the cache rows or (inference) none. Returns h0 and c0 in
    kernel order (c0 zeros when None) and lstm_train_small's (h_out, x_rows, gates,
    c_hist, h, c)."""
    D, H = x.shape[2], h0.shape[1]
    dtype = x.dtype
    x, h0 = order.sort(x), order.sort(h0)
    c0 = _c0_in_order(c0, h0, order)
    # The time loop's address last: on a cold cache a helper compiles it meanwhile.
    projection, product, cell = (projection_address(dtype), product_address(dtype),
                                 cell_address(dtype))
    return h0, c0, lstm_train_small(
        x, h0, c0, Wx, Wh, b, chunk_steps(order, D, 4 * H, dtype, 1),
        order.real_steps if keep else 0, order.offsets, order.active, order.ragged,
        entry_address(lstm_train_steps, dtype, TRAIN_STEPS_ARGS), projection, product, cell)


def _split_forward(x, Wx, Wh, b, h, c, S, h_out, order, bounds, x_rows, gates, c_hist):
    """The forward's time loop with the hidden units split between the threads (bounds
    from _core.loop_split): kernels/lstm.lstm_split_part says what each argument is.
    h: (N rounded up to MR_STEP, H) in: h_0, out: final h; c: (N, H) likewise."""
    N, T, D = x.shape
    H = h.shape[1]
    parts = bounds.shape[0] - 1
    h_steps = np.zeros((2,) + h.shape, x.dtype)
    h_steps[0] = h
    Wx_parts, Wh_parts, b_parts, c_parts, proj, rec, tanh_c = split_scratch(
        bounds, 4, N, D, H, S, x.dtype)
    lstm_split_run(parts, np.zeros(sync_slots(parts), np.int64), T, S,
                   (x, Wx, Wh, b, bounds, Wx_parts, Wh_parts, b_parts, h_steps, h, c, c_parts,
                    proj, rec, tanh_c, h_out, order.active, x_rows, gates, c_hist,
                    order.offsets, projection_address(x.dtype), product_address(x.dtype),
                    cell_address(x.dtype), np.empty_like(b_parts)))


def _split_backward(dh, cache, dh_next, dc_next, da, h_prev, bounds):
    """The backward's time loop with the hidden units split between the threads
    (kernels/lstm.lstm_backward_part). Returns dx: (N, T, D) filled where the row schedule
    fills it in its loop (_core.dx_in_time_loop; the same bits), else (N, T, 0)."""
    order = cache.order
    N, T = order.shape
    D, H = cache.Wx.shape[0], cache.h0.shape[1]
    dtype = cache.h0.dtype
    parts = bounds.shape[0] - 1
    dx, dx_bounds, WT_parts, WT_own, da_steps, rec = backward_split_scratch(
        order, bounds, D if dx_in_time_loop(D, H, dtype) else 0, 4 * H, dtype)
    lstm_backward_run(parts, np.zeros(sync_slots(parts), np.int64), T, T,
                      (dh, cache.gates, cache.c_hist, np.empty((N, H), dtype), cache.h0,
                       cache.c0, cache.Wh, cache.Wx, bounds, dx_bounds, WT_parts, WT_own,
                       dh_next, dc_next, da, h_prev, dx, da_steps, rec, order.offsets,
                       order.active, product_address(dtype)))
    return dx


@v.outputs_finite
def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, lengths=None):
    """Forward pass of an LSTM over a whole sequence.

    Inputs:
    - x: input data of shape (N, T, D)
    - h0: initial hidden state of shape (N, H)
    - Wx: input-to-hidden weights of shape (D, 4H), gate blocks i, f, o, g
    - Wh: hidden-to-hidden weights of shape (H, 4H)
    - b: biases of shape (4H,)
    - c0: initial cell state of shape (N, H); zeros when None
    - lengths: integer array (N,), values 0..T, any order: sequence n runs for lengths[n]
      steps; h is 0 past its length and its final state is the state after its last step.
      None: every sequence runs all T steps.

    Returns a tuple of:
    - h: hidden states for all time steps, shape (N, T, H), dtype of x
    - cache: an LSTMCache for lstm_backward; cache.final_h and cache.final_c (N, H) are the
      states after the last step

    T == 0 gives h of shape (N, 0, H) and final states h0, c0; N == 0 gives empty outputs.
    """
    (x, h0, c0, Wx, Wh, (b,)), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, (("b", b),), gates=4, c0=c0)
    order = batch_order(lengths, N, T)
    return _forward_with_cache(x, h0, c0, Wx, Wh, b, order, is_step=False)


def _forward_with_cache(x, h0, c0, Wx, Wh, b, order, is_step):
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    c0_given = c0 is not None
    with kernel_threads(N, T, D, H, 4) as threads:
        if threads == 1 and order.real_steps:
            _FORWARD_AHEAD.ask(dtype)
            h0, c0, (h_out, x_rows, gates, c_hist, h, c) = _one_call_forward(
                x, h0, c0, Wx, Wh, b, order, keep=True)
        else:
            x, h0, c0, h, c, h_out = _start(x, h0, c0, order)
            # x_rows: x in packed rows for the backward's dWx, filled by the time loop.
            x_rows, gates, c_hist = order.rows(dtype, D, 4 * H, H)
            if order.real_steps:
                S = chunk_steps(order, D, 4 * H, dtype, threads)
                bounds = loop_split(N, D, H, 4, threads)
                (_FORWARD_AHEAD if bounds is None else _SPLIT_FORWARD_AHEAD).ask(dtype)
            if order.real_steps and bounds is not None:
                _split_forward(x, Wx, Wh, b, h, c, S, h_out, order, bounds, x_rows, gates,
                               c_hist)
            elif order.real_steps:
                run_steps(lstm_train_steps, threads, order.active[0], x,
                          weight_panels(Wx), weight_panels(Wh), b, h, c,
                          chunk_scratch(S, N, 4 * H, dtype),
                          step_scratch(N, 4 * H, dtype), x_rows, gates, h_out, c_hist,
                          np.empty((N, H), dtype), order.offsets, order.active,
                          streamed(order, dtype, D + 6 * H), projection_address(dtype),
                          product_address(dtype), cell_address(dtype))
    # h0 and c0 copied (small): the backward reads them, and the caller may change theirs
    # (c0 made here, zeros, is nobody else's).
    cache = LSTMCache(x_rows=x_rows, h0=h0.copy(), c0=c0.copy() if c0_given else c0, Wx=Wx,
                      Wh=Wh, gates=gates, c_hist=c_hist, final_h=order.final(h),
                      final_c=order.final(c), order=order, is_step=is_step)
    return order.unsort(h_out), cache


def lstm_backward(dh, cache, *, dh_last=None, dc_last=None, return_dc0=False,
                  weights_transposed=False):
    """Backward pass of lstm_forward.

    Inputs:
    - dh: upstream gradient of all hidden states, shape (N, T, H); entries past a
      sequence's length are ignored
    - cache: the cache from lstm_forward
    - dh_last, dc_last: gradients flowing into the final states cache.final_h and
      cache.final_c, shape (N, H); zeros when None (truncated BPTT passes the next chunk's
      dh0 and dc0 here)
    - return_dc0: also return the gradient of c0
    - weights_transposed: return dWx and dWh transposed, (4H, D) and (4H, H), as torch
      lays its weights out (fastrnn.torch asks for these; they may not be C-contiguous)

    Returns a tuple of:
    - dx: (N, T, D), 0 past each sequence's length; dh0: (N, H); dWx: (D, 4H);
      dWh: (H, 4H); db: (4H,)
    - and dc0: (N, H) last, when return_dc0 is true
    """
    N, T, H, dtype = check_backward_cache(cache, LSTMCache, "lstm", step=False)
    dh = v.validate_upstream("dh", dh, (N, T, H), "(N, T, H)", dtype)
    grads = _backward(dh, cache, dh_last, dc_last, "dh_last", "dc_last",
                      bool(weights_transposed))
    return grads if return_dc0 else grads[:5]


def _backward(dh, cache, dh_last, dc_last, dh_last_name, dc_last_name,
              weights_transposed=False):
    """Returns dx, dh0, dWx, dWh, db, dc0 (caller's order) for a validated dh; dWx.T and
    dWh.T instead when ``weights_transposed`` (see lstm_backward)."""
    order = cache.order
    N, T = order.shape
    H = cache.h0.shape[1]
    dtype = cache.h0.dtype
    dh_next = state_grad(dh_last_name, dh_last, N, H, dtype, order)
    dc_next = state_grad(dc_last_name, dc_last, N, H, dtype, order)
    D = cache.Wx.shape[0]
    with kernel_threads(N, T, D, H, 4) as threads:
        # Small sequences: one numba call allocates and runs everything
        # (lstm_backward_small). Not a single step of more than MR_STEP rows, which
        # lstm_step_backward sends here: its first call would compile that kernel too, for
        # a call the kernels it shares with the sequences already serve.
        if threads == 1 and order.real_steps and not cache.is_step:
            _BACKWARD_AHEAD.ask(dtype)
            in_loop = dx_in_time_loop(D, H, dtype)
            dx, dWx, dWh, db = lstm_backward_small(
                order.sort(dh), cache.gates, cache.c_hist, cache.h0, cache.c0, cache.Wh,
                cache.Wx, cache.x_rows, dh_next, dc_next, order.offsets, order.active,
                order.ragged, in_loop,
                entry_address(lstm_backward_steps, dtype, BACKWARD_STEPS_ARGS),
                entry_address(gemm_part, dtype, GEMM_PART_ARGS), product_address(dtype))
            if weights_transposed:  # small: the kernel's layout, transposed as views
                dWx, dWh = dWx.T, dWh.T
            return (order.unsort(dx), order.unsort(dh_next), dWx, dWh, db,
                    order.unsort(dc_next))
        # The loop fills da and the first H columns of grad_rows (h_prev).
        da, grad_rows = weight_grad_rows(order, cache.x_rows, 4 * H, H)
        bounds = loop_split(N, D, H, 4, threads) if order.real_steps else None
        (_BACKWARD_AHEAD if bounds is None else _SPLIT_BACKWARD_AHEAD).ask(dtype)
        if bounds is not None:
            dx = _split_backward(order.sort(dh), cache, dh_next, dc_next, da, grad_rows,
                                 bounds)
        else:
            dx, panels = backward_dx(order, cache.Wh, cache.Wx)
            if order.real_steps:
                run_steps(lstm_backward_steps, threads,
                          order.active[0], order.sort(dh), cache.gates, cache.c_hist,
                          np.empty((N, H), dtype), cache.h0, cache.c0, panels, dh_next,
                          dc_next, da, grad_rows, dx, step_operand(N, 4 * H, dtype),
                          step_scratch(N, H + dx.shape[2], dtype), order.offsets,
                          order.active, product_address(dtype))
        dx, dWx, dWh, db = backward_products(dx, da, grad_rows, H, cache.Wx, order, threads,
                                             weights_transposed)
    return (order.unsort(dx), order.unsort(dh_next), dWx, dWh, db, order.unsort(dc_next))


@v.outputs_finite
def lstm_inference(x, h0, Wx, Wh, b, *, c0=None, lengths=None, return_state=False):
    """lstm_forward for inference: no cache, working memory O(N * H) beyond x and h.

    Arguments as lstm_forward. Returns h: (N, T, H), or with return_state=True the tuple
    (h, (final_h, final_c)) with final states of shape (N, H), as torch.nn.LSTM returns them.
    """
    (x, h0, c0, Wx, Wh, (b,)), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, (("b", b),), gates=4, c0=c0)
    order = batch_order(lengths, N, T)
    h, final_h, final_c = _forward_infer(x, h0, c0, Wx, Wh, b, order)
    return (h, (final_h, final_c)) if return_state else h


@v.outputs_finite
def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """Forward pass of a single LSTM time step.

    Inputs:
    - x: input data, shape (N, D)
    - prev_h, prev_c: previous hidden and cell state, shape (N, H)
    - Wx: (D, 4H); Wh: (H, 4H); b: (4H,)

    Returns a tuple of:
    - next_h, next_c: next hidden and cell state, shape (N, H)
    - cache: for lstm_step_backward
    """
    if prev_c is None:
        raise TypeError("prev_c must be a float32 or float64 array of shape (N, H), got None")
    shape = v.ready_step(x, prev_h, Wx, Wh, (b,), 4, prev_c)
    if shape is not None and small_step(*shape, 4, True):
        (_SMALL_STEP_AHEAD if shape[0] <= MR_STEP else _BACKWARD_AHEAD).ask(x.dtype)
        # A sampling loop's step: arguments as the kernel takes them, no checks to convert.
        step = lstm_step_small(x, prev_h, prev_c, Wx, Wh, b, in_place_address(x.dtype),
                               cell_address(x.dtype))
        return _step_outputs(step, prev_h, prev_c, Wx, Wh)
    (x3, prev_h, prev_c, Wx, Wh, (b,)), (N, T, D, H) = v.validate_step(
        x, prev_h, Wx, Wh, (("b", b),), gates=4, prev_c=prev_c)
    step = _step_kernels(x3.reshape(N, D), prev_h, prev_c, Wx, Wh, b)
    if step is not None:
        return _step_outputs(step, prev_h, prev_c, Wx, Wh)
    h_seq, cache = _forward_with_cache(x3, prev_h, prev_c, Wx, Wh, b, batch_order(None, N, 1),
                                       is_step=True)
    return h_seq.reshape(N, H), cache.final_c.copy(), cache


def _step_outputs(step, prev_h, prev_c, Wx, Wh):
    """lstm_step_forward's (next_h, next_c, cache) from a step kernel's (h, c, gates,
    x_rows)."""
    next_h, next_c, gates, x_rows = step
    cache = LSTMCache(x_rows=x_rows, h0=prev_h.copy(), c0=prev_c.copy(), Wx=Wx, Wh=Wh,
                      gates=gates, c_hist=next_c, final_h=next_h, final_c=next_c,
                      order=batch_order(None, next_h.shape[0], 1), is_step=True)
    # Copies: the cache keeps its own (the caller may write into what it gets).
    return next_h.copy(), next_c.copy(), cache


def _step_kernels(x, prev_h, prev_c, Wx, Wh, b):
    """One step of checked, kernel-ready arrays (x (N, D), prev_h and prev_c (N, H), Wx, Wh,
    b) on the single-step kernels, whose products read the weights where they lie: its
    hidden units split between the threads (step_split) or on one worker. Returns the
    kernels' (next_h, next_c, gates, x_rows), or None for a step they do not take (several
    row tiles and big enough to share out by rows: the sequence kernels' then)."""
    N, D = x.shape
    H = prev_h.shape[1]
    (_SMALL_STEP_AHEAD if N <= MR_STEP else _BACKWARD_AHEAD).ask(x.dtype)
    with step_split(N, D, H, 4, x.dtype) as unit_bounds:
        if unit_bounds is not None:
            h_prev, c, projected, recurrent, gates, h_next, tanh_c = lstm_step_buffers(
                x, prev_h, prev_c, 4 * H)
            run_workers(lstm_step_part, unit_bounds.shape[0] - 1, x, h_prev, Wx, Wh, b,
                        projected, recurrent, gates, c, h_next, tanh_c, unit_bounds,
                        in_place_address(x.dtype))
            return h_next, c, gates, x.copy()
        if single_worker_step(N, D, H, 4):
            return lstm_step_small(x, prev_h, prev_c, Wx, Wh, b, in_place_address(x.dtype),
                                   cell_address(x.dtype))
    return None


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward pass of a single LSTM time step.

    Inputs:
    - dnext_h, dnext_c: gradients of next_h and next_c, shape (N, H)
    - cache: from lstm_step_forward

    Returns a tuple of:
    - dx: (N, D); dprev_h, dprev_c: (N, H); dWx: (D, 4H); dWh: (H, 4H); db: (4H,)
    """
    N, _, H, dtype = check_backward_cache(cache, LSTMCache, "lstm", step=True)
    D = cache.x_rows.shape[1]
    dnext_h = v.validate_upstream("dnext_h", dnext_h, (N, H), "(N, H)", dtype)
    dnext_c = v.validate_upstream("dnext_c", dnext_c, (N, H), "(N, H)", dtype)
    if 0 < N <= MR_STEP:
        dWx, dWh = _memory.empty(cache.Wx.shape, dtype), _memory.empty(cache.Wh.shape, dtype)
        dx, dprev_h, dprev_c, db = lstm_step_backward_small(
            dnext_h, dnext_c, cache.gates, cache.c_hist, cache.c0, cache.h0, cache.x_rows,
            cache.Wx, cache.Wh, dWx, dWh)
        return dx, dprev_h, dprev_c, dWx, dWh, db
    dx, dprev_h, dWx, dWh, db, dprev_c = _backward(
        dnext_h.reshape(N, 1, H), cache, None, dnext_c, "dh_last", "dnext_c")
    return dx.reshape(N, D), dprev_h, dprev_c, dWx, dWh, db
