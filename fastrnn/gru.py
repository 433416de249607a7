"""GRU API, with PyTorch's semantics: validate -> allocate -> kernel -> (outputs, cache).

N batch, T time, D input, H hidden. Gates along the 3H axis in the order r, z, n:
  r = sigmoid(x Wx_r + bx_r + h Wh_r + bh_r)
  z = sigmoid(x Wx_z + bx_z + h Wh_z + bh_z)
  n = tanh(x Wx_n + bx_n + r * (h Wh_n + bh_n))
  h' = (1 - z) * n + z * h
From a torch.nn.GRU: Wx = weight_ih_l0.T, Wh = weight_hh_l0.T, bx = bias_ih_l0,
bh = bias_hh_l0.
"""

import numpy as np

from . import _validate as v
from ._compiling import Ahead
from ._core import (CellCache, backward_split_scratch, batch_order, check_backward_cache,
                    chunk_scratch, chunk_steps, compiled_loop_split, in_place_address,
                    in_steps, infer_in_steps, input_grad, no_rows, products, product_address,
                    projection_address, run_steps, single_worker_step, small_step,
                    split_scratch, state_grad, step_operand, step_scratch, streamed,
                    weight_grads, weight_panels)
from ._threads import kernel_threads
from .kernels.address import entry_address
from .kernels.gemm import GEMM_PART_ARGS, gemm_part
from .kernels.gru import (BACKWARD_STEPS_ARGS, CELL_ARGS, TRAIN_STEPS_ARGS, gru_backward_part,
                          gru_backward_run, gru_backward_steps, gru_cell_kernel,
                          gru_split_part, gru_split_run, gru_step_small, gru_train_steps)
from .kernels.sync import sync_slots


# What a cold cache's first call hands a helper process to compile beside it
# (_compiling.py): as in lstm.py.
_INFERENCE_AHEAD = Ahead((gru_train_steps, TRAIN_STEPS_ARGS))
_BACKWARD_AHEAD = Ahead((gemm_part, GEMM_PART_ARGS), (gru_backward_steps, BACKWARD_STEPS_ARGS))
_FORWARD_AHEAD = Ahead(*_INFERENCE_AHEAD.kernels, *_BACKWARD_AHEAD.kernels)
# A few sequences with big H: the forward's time loop split by hidden units
# (kernels/split.py; its backward is the row schedule's), once these are compiled. Until
# then the row schedule, whose helper compiles them after its own kernels (one helper: a
# second beside it slowed the call's own compiling on 2 cores).
_SPLIT_AHEAD = Ahead((gru_split_run.worker, gru_split_run.worker_layout),
                     (gru_split_part, gru_split_run.part_layout))
# The backward's split loop likewise (its products after the loop are the row schedule's).
_SPLIT_BACKWARD_AHEAD = Ahead((gru_backward_run.worker, gru_backward_run.worker_layout),
                              (gru_backward_part, gru_backward_run.part_layout))


def cell_address(dtype):
    """The address of kernels/gru.gru_cell_kernel for ``dtype``, which the time loop and the
    single step call (as lstm.cell_address)."""
    return entry_address(gru_cell_kernel, dtype, CELL_ARGS)


class GRUCache(CellCache):
    """What gru_backward needs from gru_forward; treat it as read-only.

    Public attributes:
      final_h: (N, H) hidden state after each sequence's last step (h0 when its length is 0)
      lengths: (N,) the lengths the forward ran with (all T without ``lengths=``)
    """

    __slots__ = ("x_rows", "h0", "Wx", "Wh", "gates", "hn_hist", "h_prev", "final_h", "order",
                 "is_step")


def _validate(x, h0, Wx, Wh, bx, bh, lengths, step=False):
    biases = (("bx", bx), ("bh", bh))
    if step:
        (x, h0, _, Wx, Wh, (bx, bh)), (N, T, D, H) = v.validate_step(x, h0, Wx, Wh, biases, 3)
        return (x, h0, Wx, Wh, bx, bh), batch_order(None, N, 1)
    (x, h0, _, Wx, Wh, (bx, bh)), (N, T, D, H) = v.validate_sequence(x, h0, Wx, Wh, biases, 3)
    return (x, h0, Wx, Wh, bx, bh), batch_order(lengths, N, T)


def _forward_infer(x, h0, Wx, Wh, bx, bh, order):
    """The cache-free forward on validated arrays: h (N, T, H) and the final h."""
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    if in_steps(order, N, T):
        h_out, (h,) = infer_in_steps(x, (h0,), lambda x_t, state: gru_step_small(
            x_t, state[0], Wx, Wh, bx, bh, in_place_address(dtype), cell_address(dtype))[:1])
        return h_out, h
    x, h0, h, h_out = order.start(x, h0)
    if order.real_steps:
        with kernel_threads(N, T, D, H, 3) as threads:
            S = chunk_steps(order, D, 3 * H, dtype, threads)
            none = no_rows(dtype)  # the training loop, keeping nothing
            bounds, ahead = compiled_loop_split(N, D, H, 3, threads, dtype, _SPLIT_AHEAD,
                                                _INFERENCE_AHEAD)
            if bounds is not None:
                _split_forward(x, Wx, Wh, bx, bh, h, S, h_out, order, bounds, none, none,
                               none, none)
                return order.unsort(h_out), order.final(h)
            ahead.ask(dtype)
            run_steps(gru_train_steps, threads, order.active[0], x,
                      weight_panels(Wx), weight_panels(Wh), bx, bh, h,
                      chunk_scratch(S, N, 3 * H, dtype), step_scratch(N, 3 * H, dtype),
                      np.empty((N, H), dtype), none, none, h_out, none, none, order.offsets,
                      order.active, False, projection_address(dtype), product_address(dtype),
                      cell_address(dtype))
    return order.unsort(h_out), order.final(h)


@v.outputs_finite
def gru_forward(x, h0, Wx, Wh, bx, bh, *, lengths=None):
    """Forward pass of a GRU over a whole sequence.

    Inputs:
    - x: input data of shape (N, T, D)
    - h0: initial hidden state of shape (N, H)
    - Wx: input-to-hidden weights of shape (D, 3H), gate blocks r, z, n
    - Wh: hidden-to-hidden weights of shape (H, 3H)
    - bx, bh: input-side and hidden-side biases, each of shape (3H,)
    - lengths: integer array (N,), values 0..T, any order (see lstm_forward); None: all T

    Returns a tuple of:
    - h: hidden states for all time steps, shape (N, T, H), dtype of x, 0 past each length
    - cache: a GRUCache for gru_backward; cache.final_h (N, H) is the state after the last step
    """
    args, order = _validate(x, h0, Wx, Wh, bx, bh, lengths)
    return _forward_with_cache(*args, order, is_step=False)


def _forward_with_cache(x, h0, Wx, Wh, bx, bh, order, is_step):
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    x, h0, h, h_out = order.start(x, h0)
    # x_rows: x in packed rows for the backward's dWx, filled by the time loop as it goes.
    x_rows, gates, h_prev, hn_hist = order.rows(dtype, D, 3 * H, H, H)
    if order.real_steps:
        with kernel_threads(N, T, D, H, 3) as threads:
            S = chunk_steps(order, D, 3 * H, dtype, threads)
            bounds, ahead = compiled_loop_split(N, D, H, 3, threads, dtype, _SPLIT_AHEAD,
                                                _FORWARD_AHEAD)
            if bounds is not None:
                _BACKWARD_AHEAD.ask(dtype)
                _split_forward(x, Wx, Wh, bx, bh, h, S, h_out, order, bounds, x_rows, gates,
                               h_prev, hn_hist)
            else:
                ahead.ask(dtype)
                run_steps(gru_train_steps, threads, order.active[0], x,
                          weight_panels(Wx), weight_panels(Wh), bx, bh, h,
                          chunk_scratch(S, N, 3 * H, dtype), step_scratch(N, 3 * H, dtype),
                          np.empty((N, H), dtype), x_rows, gates, h_out, h_prev, hn_hist,
                          order.offsets, order.active, streamed(order, dtype, D + 6 * H),
                          projection_address(dtype), product_address(dtype),
                          cell_address(dtype))
    cache = GRUCache(x_rows=x_rows, h0=h0, Wx=Wx, Wh=Wh, gates=gates, hn_hist=hn_hist,
                     h_prev=h_prev, final_h=order.final(h), order=order, is_step=is_step)
    return order.unsort(h_out), cache


def _split_forward(x, Wx, Wh, bx, bh, h, S, h_out, order, bounds, x_rows, gates, h_prev,
                   hn_hist):
    """The forward's time loop with the hidden units split between the threads (bounds
    from _core.loop_split): kernels/gru.gru_split_part says what each argument is.
    h: (N rounded up to MR_STEP, H) in: h_0, out: final h."""
    N, T, D = x.shape
    H = h.shape[1]
    parts = bounds.shape[0] - 1
    h_steps = np.zeros((2,) + h.shape, x.dtype)
    h_steps[0] = h
    Wx_parts, Wh_parts, bx_parts, hn_parts, proj, rec, _ = split_scratch(
        bounds, 3, N, D, H, S, x.dtype)
    gru_split_run(parts, np.zeros(sync_slots(parts), np.int64), T, S,
                  (x, Wx, Wh, bx, bh, bounds, Wx_parts, Wh_parts, bx_parts,
                   np.empty_like(bx_parts), h_steps, h, proj, rec, hn_parts, h_out,
                   order.active, x_rows, gates, h_prev, hn_hist, order.offsets,
                   projection_address(x.dtype), product_address(x.dtype),
                   cell_address(x.dtype)))


def _split_backward(dh, cache, dh_next, da_x, da_h, bounds):
    """The backward's time loop with the hidden units split between the threads
    (kernels/gru.gru_backward_part): dh_next, da_x and da_h filled as gru_backward_steps
    fills them. dh: (N, T, H) in kernel order."""
    order = cache.order
    N, T = order.shape
    H = cache.h0.shape[1]
    dtype = cache.h0.dtype
    parts = bounds.shape[0] - 1
    # No dx columns: the GRU's dx is always the GEMM's after the loop.
    _, _, WT_parts, WT_own, da_steps, rec = backward_split_scratch(order, bounds, 0, 3 * H,
                                                                   dtype)
    gru_backward_run(parts, np.zeros(sync_slots(parts), np.int64), T, T,
                     (dh, cache.gates, cache.hn_hist, cache.h_prev, cache.Wh, bounds,
                      WT_parts, WT_own, dh_next, da_x, da_h, da_steps, rec, order.offsets,
                      order.active, product_address(dtype)))


def gru_backward(dh, cache, *, dh_last=None):
    """Backward pass of gru_forward.

    Inputs:
    - dh: upstream gradient of all hidden states, shape (N, T, H); ignored past each length
    - cache: the cache from gru_forward
    - dh_last: gradient flowing into cache.final_h, shape (N, H); zeros when None

    Returns a tuple of:
    - dx: (N, T, D); dh0: (N, H); dWx: (D, 3H); dWh: (H, 3H); dbx: (3H,); dbh: (3H,)
    """
    N, T, H, dtype = check_backward_cache(cache, GRUCache, "gru", step=False)
    dh = v.validate_upstream("dh", dh, (N, T, H), "(N, T, H)", dtype)
    return _backward(dh, cache, dh_last, "dh_last")


def _backward(dh, cache, dh_last, dh_last_name):
    order = cache.order
    N, T = order.shape
    H = cache.h0.shape[1]
    dtype = dh.dtype
    dh_next = state_grad(dh_last_name, dh_last, N, H, dtype, order)
    da_x, da_h = order.rows(dtype, 3 * H, 3 * H)
    D = cache.Wx.shape[0]
    with kernel_threads(N, T, D, H, 3) as threads:
        if order.real_steps:
            bounds, ahead = compiled_loop_split(N, D, H, 3, threads, dtype,
                                                _SPLIT_BACKWARD_AHEAD, _BACKWARD_AHEAD)
            if bounds is not None:
                _BACKWARD_AHEAD.ask(dtype)
                _split_backward(order.sort(dh), cache, dh_next, da_x, da_h, bounds)
            else:
                ahead.ask(dtype)
                run_steps(gru_backward_steps, threads, order.active[0],
                          order.sort(dh), cache.gates, cache.hn_hist, cache.h_prev,
                          weight_panels(cache.Wh, transpose=True), dh_next, da_x, da_h,
                          step_operand(N, 3 * H, dtype), step_scratch(N, H, dtype),
                          order.offsets, order.active, product_address(dtype))
        # dx and the weight gradients in one launch of the threads.
        dx_jobs, dx_rows = input_grad(da_x, cache.Wx, order)
        grad_jobs, (dWx, dWh, dbx, dbh) = weight_grads(da_x, da_h, cache.x_rows,
                                                       cache.h_prev, order)
        products(dx_jobs + grad_jobs, threads)
        dx = order.unpack(dx_rows)
    return order.unsort(dx), order.unsort(dh_next), dWx, dWh, dbx, dbh


@v.outputs_finite
def gru_inference(x, h0, Wx, Wh, bx, bh, *, lengths=None, return_state=False):
    """gru_forward for inference: no cache, working memory O(N * H) beyond x and h.

    Arguments as gru_forward. Returns h: (N, T, H), or with return_state=True the tuple
    (h, final_h) with final_h of shape (N, H).
    """
    args, order = _validate(x, h0, Wx, Wh, bx, bh, lengths)
    h, final_h = _forward_infer(*args, order)
    return (h, final_h) if return_state else h


@v.outputs_finite
def gru_step_forward(x, prev_h, Wx, Wh, bx, bh):
    """Forward pass of a single GRU time step.

    Inputs:
    - x: input data, shape (N, D)
    - prev_h: previous hidden state, shape (N, H)
    - Wx: (D, 3H); Wh: (H, 3H); bx, bh: (3H,)

    Returns a tuple of:
    - next_h: next hidden state, shape (N, H)
    - cache: for gru_step_backward
    """
    shape = v.ready_step(x, prev_h, Wx, Wh, (bx, bh), 3)
    if shape is not None and small_step(*shape, 3, False):
        # A sampling loop's step: arguments as the kernel takes them, no checks to convert.
        _BACKWARD_AHEAD.ask(x.dtype)
        step = gru_step_small(x, prev_h, Wx, Wh, bx, bh, in_place_address(x.dtype),
                              cell_address(x.dtype))
        return _step_outputs(step, prev_h, Wx, Wh)
    args, order = _validate(x, prev_h, Wx, Wh, bx, bh, None, step=True)
    x3, prev_h, Wx, Wh, bx, bh = args
    N, _, D = x3.shape
    H = prev_h.shape[1]
    if single_worker_step(N, D, H, 3):
        _BACKWARD_AHEAD.ask(x3.dtype)
        step = gru_step_small(x3.reshape(N, D), prev_h, Wx, Wh, bx, bh,
                              in_place_address(x3.dtype), cell_address(x3.dtype))
        return _step_outputs(step, prev_h, Wx, Wh)
    h_seq, cache = _forward_with_cache(*args, order, is_step=True)
    return h_seq.reshape(prev_h.shape), cache


def _step_outputs(step, prev_h, Wx, Wh):
    """gru_step_forward's (next_h, cache) from gru_step_small's (h, gates, hn, h_prev,
    x_rows)."""
    next_h, gates, hn, h_prev, x_rows = step
    cache = GRUCache(x_rows=x_rows, h0=prev_h, Wx=Wx, Wh=Wh, gates=gates, hn_hist=hn,
                     h_prev=h_prev, final_h=next_h,
                     order=batch_order(None, next_h.shape[0], 1), is_step=True)
    return next_h.copy(), cache  # a copy: the cache keeps its own


def gru_step_backward(dnext_h, cache):
    """Backward pass of a single GRU time step.

    Inputs:
    - dnext_h: gradient of next_h, shape (N, H)
    - cache: from gru_step_forward

    Returns a tuple of:
    - dx: (N, D); dprev_h: (N, H); dWx: (D, 3H); dWh: (H, 3H); dbx: (3H,); dbh: (3H,)
    """
    N, _, H, dtype = check_backward_cache(cache, GRUCache, "gru", step=True)
    D = cache.x_rows.shape[1]
    dnext_h = v.validate_upstream("dnext_h", dnext_h, (N, H), "(N, H)", dtype)
    dx, dprev_h, dWx, dWh, dbx, dbh = _backward(dnext_h.reshape(N, 1, H), cache, None,
                                                "dh_last")
    return dx.reshape(N, D), dprev_h, dWx, dWh, dbx, dbh
