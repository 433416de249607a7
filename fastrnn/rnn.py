"""Vanilla RNN API: validate -> allocate -> kernel -> (outputs, cache).

N batch, T time, D input, H hidden. h_t = act(x_t Wx + h_{t-1} Wh + b), act = tanh or relu.
The relu derivative at exactly 0 is taken as 0.
"""

import numpy as np

from . import _validate as v
from ._compiling import Ahead
from ._core import (CellCache, batch_order, backward_dx, backward_products,
                    backward_split_scratch, check_backward_cache, chunk_scratch, chunk_steps,
                    compiled_loop_split, dx_in_time_loop, in_place_address, in_steps,
                    infer_in_steps, no_rows, product_address, projection_address, run_steps,
                    single_worker_step, small_step, split_scratch, state_grad, step_operand,
                    step_scratch, streamed, weight_grad_rows, weight_panels)
from ._threads import kernel_threads
from .kernels.gemm import GEMM_PART_ARGS, gemm_part
from .kernels.rnn import (BACKWARD_STEPS_ARGS, TRAIN_STEPS_ARGS, rnn_backward_part,
                          rnn_backward_run, rnn_backward_steps, rnn_split_part, rnn_split_run,
                          rnn_step_small, rnn_train_steps)
from .kernels.sync import sync_slots


# What a cold cache's first call hands a helper process to compile beside it
# (_compiling.py): as in lstm.py.
_INFERENCE_AHEAD = Ahead((rnn_train_steps, TRAIN_STEPS_ARGS))
_BACKWARD_AHEAD = Ahead((gemm_part, GEMM_PART_ARGS), (rnn_backward_steps, BACKWARD_STEPS_ARGS))
_FORWARD_AHEAD = Ahead(*_INFERENCE_AHEAD.kernels, *_BACKWARD_AHEAD.kernels)
# A few sequences with big H: the forward's time loop split by hidden units once compiled
# (as the GRU's: _core.compiled_loop_split).
_SPLIT_AHEAD = Ahead((rnn_split_run.worker, rnn_split_run.worker_layout),
                     (rnn_split_part, rnn_split_run.part_layout))
_SPLIT_BACKWARD_AHEAD = Ahead((rnn_backward_run.worker, rnn_backward_run.worker_layout),
                              (rnn_backward_part, rnn_backward_run.part_layout))


class RNNCache(CellCache):
    """What rnn_backward needs from rnn_forward; treat it as read-only.

    Public attributes:
      final_h: (N, H) hidden state after each sequence's last step (h0 when its length is
      0); carry it into the next chunk of a long sequence as h0.
      lengths: (N,) the lengths the forward ran with (all T without ``lengths=``)
    """

    __slots__ = ("x_rows", "h0", "Wx", "Wh", "h_rows", "final_h", "relu", "order",
                 "is_step")


def _forward_infer(x, h0, Wx, Wh, b, order, relu):
    """The cache-free forward on validated arrays: h (N, T, H) and the final h."""
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    if in_steps(order, N, T):
        h_out, (h,) = infer_in_steps(x, (h0,), lambda x_t, state: rnn_step_small(
            x_t, state[0], Wx, Wh, b, relu, in_place_address(dtype))[:1])
        return h_out, h
    x, h0, h, h_out = order.start(x, h0)
    if order.real_steps:
        with kernel_threads(N, T, D, H, 1) as threads:
            S = chunk_steps(order, D, H, dtype, threads)
            none = no_rows(dtype)  # the training loop, keeping nothing
            bounds, ahead = compiled_loop_split(N, D, H, 1, threads, dtype, _SPLIT_AHEAD,
                                                _INFERENCE_AHEAD)
            if bounds is not None:
                _split_forward(x, Wx, Wh, b, h, S, h_out, order, bounds, none, none, relu)
                return order.unsort(h_out), order.final(h)
            ahead.ask(dtype)
            run_steps(rnn_train_steps, threads, order.active[0], x,
                      weight_panels(Wx), weight_panels(Wh), b, h, chunk_scratch(S, N, H, dtype),
                      step_scratch(N, H, dtype), none, h_out, none, relu, order.offsets,
                      order.active, False, projection_address(dtype), product_address(dtype))
    return order.unsort(h_out), order.final(h)


@v.outputs_finite
def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", lengths=None):
    """Forward pass of a vanilla RNN over a whole sequence.

    Inputs:
    - x: input data of shape (N, T, D)
    - h0: initial hidden state of shape (N, H)
    - Wx: input-to-hidden weights of shape (D, H)
    - Wh: hidden-to-hidden weights of shape (H, H)
    - b: biases of shape (H,)
    - nonlinearity: "tanh" (default) or "relu"
    - lengths: integer array (N,), values 0..T, any order (see lstm_forward); None: all T

    Returns a tuple of:
    - h: hidden states for all time steps, shape (N, T, H), dtype of x, 0 past each length
    - cache: an RNNCache for rnn_backward; cache.final_h (N, H) is the state after the last step
    """
    v.check_nonlinearity(nonlinearity)
    (x, h0, _, Wx, Wh, (b,)), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, (("b", b),), gates=1)
    order = batch_order(lengths, N, T)
    return _forward_with_cache(x, h0, Wx, Wh, b, order, nonlinearity, is_step=False)


def _forward_with_cache(x, h0, Wx, Wh, b, order, nonlinearity, is_step):
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    relu = nonlinearity == "relu"
    x, h0, h, h_out = order.start(x, h0)
    # x_rows: x in packed rows for the backward's dWx, filled by the time loop as it goes.
    x_rows, h_rows = order.rows(dtype, D, H)
    if order.real_steps:
        with kernel_threads(N, T, D, H, 1) as threads:
            S = chunk_steps(order, D, H, dtype, threads)
            bounds, ahead = compiled_loop_split(N, D, H, 1, threads, dtype, _SPLIT_AHEAD,
                                                _FORWARD_AHEAD)
            if bounds is not None:
                _BACKWARD_AHEAD.ask(dtype)
                _split_forward(x, Wx, Wh, b, h, S, h_out, order, bounds, x_rows, h_rows, relu)
            else:
                ahead.ask(dtype)
                run_steps(rnn_train_steps, threads, order.active[0], x,
                          weight_panels(Wx), weight_panels(Wh), b, h,
                          chunk_scratch(S, N, H, dtype), step_scratch(N, H, dtype), x_rows,
                          h_out, h_rows, relu, order.offsets, order.active,
                          streamed(order, dtype, D + 2 * H), projection_address(dtype),
                          product_address(dtype))
    # h0 copied (small): the backward reads it, and the caller may change theirs.
    cache = RNNCache(x_rows=x_rows, h0=h0.copy(), Wx=Wx, Wh=Wh, h_rows=h_rows,
                     final_h=order.final(h), relu=relu, order=order, is_step=is_step)
    return order.unsort(h_out), cache


def _split_forward(x, Wx, Wh, b, h, S, h_out, order, bounds, x_rows, h_rows, relu):
    """The forward's time loop with the hidden units split between the threads (bounds
    from _core.loop_split): kernels/rnn.rnn_split_part says what each argument is.
    h: (N rounded up to MR_STEP, H) in: h_0, out: final h."""
    N, T, D = x.shape
    H = h.shape[1]
    parts = bounds.shape[0] - 1
    h_steps = np.zeros((2,) + h.shape, x.dtype)
    h_steps[0] = h
    Wx_parts, Wh_parts, b_parts, _, proj, rec, _ = split_scratch(bounds, 1, N, D, H, S,
                                                                 x.dtype)
    rnn_split_run(parts, np.zeros(sync_slots(parts), np.int64), T, S,
                  (x, Wx, Wh, b, bounds, Wx_parts, Wh_parts, b_parts, h_steps, h, proj, rec,
                   h_out, order.active, x_rows, h_rows, order.offsets,
                   projection_address(x.dtype), product_address(x.dtype), np.bool_(relu)))


def _split_backward(dh, cache, dh_next, da, h_prev, bounds):
    """The backward's time loop with the hidden units split between the threads
    (kernels/rnn.rnn_backward_part). Returns dx: (N, T, D) filled where the row schedule
    fills it in its loop (_core.dx_in_time_loop; the same bits), else (N, T, 0), as
    lstm._split_backward."""
    order = cache.order
    N, T = order.shape
    D, H = cache.Wx.shape[0], cache.h0.shape[1]
    dtype = cache.h0.dtype
    parts = bounds.shape[0] - 1
    dx, dx_bounds, WT_parts, WT_own, da_steps, rec = backward_split_scratch(
        order, bounds, D if dx_in_time_loop(D, H, dtype) else 0, H, dtype)
    rnn_backward_run(parts, np.zeros(sync_slots(parts), np.int64), T, T,
                     (dh, cache.h_rows, cache.h0, cache.Wh, cache.Wx, bounds, dx_bounds,
                      WT_parts, WT_own, dh_next, da, h_prev, dx, da_steps, rec,
                      np.bool_(cache.relu), order.offsets, order.active,
                      product_address(dtype)))
    return dx


def rnn_backward(dh, cache, *, dh_last=None):
    """Backward pass of rnn_forward.

    Inputs:
    - dh: upstream gradient of all hidden states, shape (N, T, H); ignored past each length
    - cache: the cache from rnn_forward
    - dh_last: gradient flowing into cache.final_h, shape (N, H); zeros when None

    Returns a tuple of:
    - dx: (N, T, D); dh0: (N, H); dWx: (D, H); dWh: (H, H); db: (H,)
    """
    N, T, H, dtype = check_backward_cache(cache, RNNCache, "rnn", step=False)
    dh = v.validate_upstream("dh", dh, (N, T, H), "(N, T, H)", dtype)
    return _backward(dh, cache, dh_last, "dh_last")


def _backward(dh, cache, dh_last, dh_last_name):
    order = cache.order
    N, T = order.shape
    H = cache.h0.shape[1]
    dh_next = state_grad(dh_last_name, dh_last, N, H, dh.dtype, order)
    D = cache.Wx.shape[0]
    # The loop fills da and the first H columns of grad_rows (h_prev).
    da, grad_rows = weight_grad_rows(order, cache.x_rows, H, H)
    with kernel_threads(N, T, D, H, 1) as threads:
        bounds, ahead = (compiled_loop_split(N, D, H, 1, threads, dh.dtype,
                                             _SPLIT_BACKWARD_AHEAD, _BACKWARD_AHEAD)
                         if order.real_steps else (None, _BACKWARD_AHEAD))
        if bounds is not None:
            _BACKWARD_AHEAD.ask(dh.dtype)
            dx = _split_backward(order.sort(dh), cache, dh_next, da, grad_rows, bounds)
        else:
            dx, panels = backward_dx(order, cache.Wh, cache.Wx)
            if order.real_steps:
                ahead.ask(dh.dtype)
                run_steps(rnn_backward_steps, threads, order.active[0],
                          order.sort(dh), cache.h_rows, cache.h0, panels, dh_next, da,
                          grad_rows, dx, step_operand(N, H, dh.dtype),
                          step_scratch(N, H + dx.shape[2], dh.dtype), cache.relu,
                          order.offsets, order.active, product_address(dh.dtype))
        dx, dWx, dWh, db = backward_products(dx, da, grad_rows, H, cache.Wx, order, threads)
    return order.unsort(dx), order.unsort(dh_next), dWx, dWh, db


@v.outputs_finite
def rnn_inference(x, h0, Wx, Wh, b, *, nonlinearity="tanh", lengths=None, return_state=False):
    """rnn_forward for inference: no cache, working memory O(N * H) beyond x and h.

    Arguments as rnn_forward. Returns h: (N, T, H), or with return_state=True the tuple
    (h, final_h) with final_h of shape (N, H), as torch.nn.RNN returns them.
    """
    v.check_nonlinearity(nonlinearity)
    (x, h0, _, Wx, Wh, (b,)), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, (("b", b),), gates=1)
    order = batch_order(lengths, N, T)
    h, final_h = _forward_infer(x, h0, Wx, Wh, b, order, nonlinearity == "relu")
    return (h, final_h) if return_state else h


@v.outputs_finite
def rnn_step_forward(x, prev_h, Wx, Wh, b, *, nonlinearity="tanh"):
    """Forward pass of a single RNN time step.

    Inputs:
    - x: input data, shape (N, D)
    - prev_h: previous hidden state, shape (N, H)
    - Wx: (D, H); Wh: (H, H); b: (H,)
    - nonlinearity: "tanh" (default) or "relu"

    Returns a tuple of:
    - next_h: next hidden state, shape (N, H)
    - cache: for rnn_step_backward
    """
    v.check_nonlinearity(nonlinearity)
    relu = nonlinearity == "relu"
    shape = v.ready_step(x, prev_h, Wx, Wh, (b,), 1)
    if shape is not None and small_step(*shape, 1, False):
        # A sampling loop's step: arguments as the kernel takes them, no checks to convert.
        _BACKWARD_AHEAD.ask(x.dtype)
        step = rnn_step_small(x, prev_h, Wx, Wh, b, relu, in_place_address(x.dtype))
        return _step_outputs(step, prev_h, Wx, Wh, relu)
    (x3, prev_h, _, Wx, Wh, (b,)), (N, T, D, H) = v.validate_step(
        x, prev_h, Wx, Wh, (("b", b),), gates=1)
    if single_worker_step(N, D, H, 1):
        _BACKWARD_AHEAD.ask(x3.dtype)
        step = rnn_step_small(x3.reshape(N, D), prev_h, Wx, Wh, b, relu,
                              in_place_address(x3.dtype))
        return _step_outputs(step, prev_h, Wx, Wh, relu)
    h_seq, cache = _forward_with_cache(x3, prev_h, Wx, Wh, b, batch_order(None, N, 1),
                                       nonlinearity, is_step=True)
    return h_seq.reshape(N, H), cache


def _step_outputs(step, prev_h, Wx, Wh, relu):
    """rnn_step_forward's (next_h, cache) from rnn_step_small's (h, x_rows)."""
    next_h, x_rows = step
    # h_rows (the backward's h_t) and final_h share next_h; the caller gets a copy.
    cache = RNNCache(x_rows=x_rows, h0=prev_h.copy(), Wx=Wx, Wh=Wh, h_rows=next_h,
                     final_h=next_h, relu=relu, order=batch_order(None, next_h.shape[0], 1),
                     is_step=True)
    return next_h.copy(), cache


def rnn_step_backward(dnext_h, cache):
    """Backward pass of a single RNN time step.

    Inputs:
    - dnext_h: gradient of next_h, shape (N, H)
    - cache: from rnn_step_forward

    Returns a tuple of:
    - dx: (N, D); dprev_h: (N, H); dWx: (D, H); dWh: (H, H); db: (H,)
    """
    N, _, H, dtype = check_backward_cache(cache, RNNCache, "rnn", step=True)
    D = cache.x_rows.shape[1]
    dnext_h = v.validate_upstream("dnext_h", dnext_h, (N, H), "(N, H)", dtype)
    dx, dprev_h, dWx, dWh, db = _backward(dnext_h.reshape(N, 1, H), cache, None, "dh_last")
    return dx.reshape(N, D), dprev_h, dWx, dWh, db
