"""Vanilla RNN API: validate -> allocate -> kernel -> (outputs, cache).

N batch, T time, D input, H hidden. h_t = act(x_t Wx + h_{t-1} Wh + b), act = tanh or relu.
The relu derivative at exactly 0 is taken as 0.
"""

import numpy as np

from . import _validate as v
from ._config import INFERENCE_CHUNK
from ._core import BatchOrder, state_grad, weight_grads
from .kernels.rnn import rnn_backward_kernel, rnn_forward_kernel


class RNNCache:
    """What rnn_backward needs from rnn_forward; treat it as read-only.

    Public attributes:
      final_h: (N, H) hidden state after each sequence's last step (h0 when its length is
      0); carry it into the next chunk of a long sequence as h0.
      lengths: (N,) the lengths the forward ran with (all T without ``lengths=``)
    """

    __slots__ = ("x", "h0", "Wx", "Wh", "h_hist", "final_h", "relu", "order", "is_step")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields[name])

    @property
    def lengths(self):
        return self.order.unsort(self.order.lengths)


def _forward(x, h0, Wx, Wh, b, order, relu, steps_per_chunk):
    """Run the kernel on validated arrays. Returns h_hist (N, T, H), the final h and the
    sorted x and h0, all in kernel order."""
    N, T, D = x.shape
    H = h0.shape[1]
    dtype = x.dtype
    x, h0 = order.sort(x), order.sort(h0)
    h = h0.copy()
    h_hist = (np.zeros if order.ragged else np.empty)((N, T, H), dtype)
    if order.real_steps:
        proj = np.empty((N, steps_per_chunk, H), dtype)
        x_chunk = np.empty((N, 0 if steps_per_chunk == T else steps_per_chunk, D), dtype)
        rec = np.empty((N, H), dtype)
        rnn_forward_kernel(x, Wx, Wh, b, h, x_chunk, proj, rec, h_hist, relu,
                           order.lengths, order.active)
    return h_hist, h, x, h0


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
    order = BatchOrder(v.validate_lengths(lengths, N, T), N, T)
    return _forward_with_cache(x, h0, Wx, Wh, b, order, nonlinearity, is_step=False)


def _forward_with_cache(x, h0, Wx, Wh, b, order, nonlinearity, is_step):
    relu = nonlinearity == "relu"
    h_hist, h, x, h0 = _forward(x, h0, Wx, Wh, b, order, relu, steps_per_chunk=x.shape[1])
    cache = RNNCache(x=x, h0=h0, Wx=Wx, Wh=Wh, h_hist=h_hist, final_h=order.unsort(h),
                     relu=relu, order=order, is_step=is_step)
    return order.unsort_copy(h_hist), cache


def rnn_backward(dh, cache, *, dh_last=None):
    """Backward pass of rnn_forward.

    Inputs:
    - dh: upstream gradient of all hidden states, shape (N, T, H); ignored past each length
    - cache: the cache from rnn_forward
    - dh_last: gradient flowing into cache.final_h, shape (N, H); zeros when None

    Returns a tuple of:
    - dx: (N, T, D); dh0: (N, H); dWx: (D, H); dWh: (H, H); db: (H,)
    """
    v.check_cache(cache, RNNCache, "rnn_forward")
    if cache.is_step:
        raise TypeError("cache comes from rnn_step_forward; pass it to rnn_step_backward")
    N, T, _ = cache.x.shape
    H = cache.h0.shape[1]
    dh = v.validate_upstream("dh", dh, (N, T, H), "(N, T, H)", cache.x.dtype)
    return _backward(dh, cache, dh_last, "dh_last")


def _backward(dh, cache, dh_last, dh_last_name):
    N, T, _ = cache.x.shape
    H = cache.h0.shape[1]
    order = cache.order
    dh_next = state_grad(dh_last_name, dh_last, N, H, dh.dtype, order)
    da = np.empty((N, T, H), dh.dtype)
    if order.real_steps:
        WhT = np.ascontiguousarray(cache.Wh.T)
        rnn_backward_kernel(order.sort(dh), cache.h_hist, WhT, dh_next, da,
                            np.empty((N, H), dh.dtype), cache.relu, order.active)
    dx, dWx, dWh, db = weight_grads(da, cache.x, cache.h0, cache.h_hist, cache.Wx, order)
    return order.unsort(dx), order.unsort(dh_next), dWx, dWh, db


def rnn_inference(x, h0, Wx, Wh, b, *, nonlinearity="tanh", lengths=None, return_state=False):
    """rnn_forward for inference: no cache, working memory O(N * H) beyond x and h.

    Arguments as rnn_forward. Returns h: (N, T, H), or with return_state=True the tuple
    (h, final_h) with final_h of shape (N, H), as torch.nn.RNN returns them.
    """
    v.check_nonlinearity(nonlinearity)
    (x, h0, _, Wx, Wh, (b,)), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, (("b", b),), gates=1)
    order = BatchOrder(v.validate_lengths(lengths, N, T), N, T)
    h_hist, h, _, _ = _forward(x, h0, Wx, Wh, b, order, nonlinearity == "relu",
                               steps_per_chunk=min(T, INFERENCE_CHUNK))
    h_hist = order.unsort(h_hist)
    return (h_hist, order.unsort(h)) if return_state else h_hist


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
    (x3, prev_h, _, Wx, Wh, (b,)), (N, T, D, H) = v.validate_step(
        x, prev_h, Wx, Wh, (("b", b),), gates=1)
    h_seq, cache = _forward_with_cache(x3, prev_h, Wx, Wh, b,
                                       BatchOrder(None, N, 1), nonlinearity, is_step=True)
    return h_seq.reshape(N, H), cache


def rnn_step_backward(dnext_h, cache):
    """Backward pass of a single RNN time step.

    Inputs:
    - dnext_h: gradient of next_h, shape (N, H)
    - cache: from rnn_step_forward

    Returns a tuple of:
    - dx: (N, D); dprev_h: (N, H); dWx: (D, H); dWh: (H, H); db: (H,)
    """
    v.check_cache(cache, RNNCache, "rnn_step_forward")
    if not cache.is_step:
        raise TypeError("cache comes from rnn_forward; pass it to rnn_backward")
    N, _, D = cache.x.shape
    H = cache.h0.shape[1]
    dnext_h = v.validate_upstream("dnext_h", dnext_h, (N, H), "(N, H)", cache.x.dtype)
    dx, dprev_h, dWx, dWh, db = _backward(dnext_h.reshape(N, 1, H), cache, None, "dh_last")
    return dx.reshape(N, D), dprev_h, dWx, dWh, db
