"""Vanilla RNN API: validate -> allocate -> kernel -> (outputs, cache).

N batch, T time, D input, H hidden. h_t = act(x_t Wx + h_{t-1} Wh + b), act = tanh or relu.
The relu derivative at exactly 0 is taken as 0.
"""

import numpy as np

from . import _validate as v
from ._config import INFERENCE_CHUNK
from .kernels.rnn import rnn_backward_kernel, rnn_forward_kernel
from .lstm import weight_grads


class RNNCache:
    """What rnn_backward needs from rnn_forward; treat it as read-only.

    Public attribute:
      final_h: (N, H) hidden state after the last step (h0 when T == 0); carry it into the
      next chunk of a long sequence as h0.
    """

    __slots__ = ("x", "h0", "Wx", "Wh", "h_hist", "final_h", "relu", "is_step")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields[name])


def _forward(x, h0, Wx, Wh, b, N, T, D, H, relu, steps_per_chunk):
    """Run the kernel on validated arrays. Returns h_hist (N, T, H) and the final h."""
    dtype = x.dtype
    h = h0.copy()
    h_hist = np.empty((N, T, H), dtype)
    if N and T:
        proj = np.empty((N, steps_per_chunk, H), dtype)
        x_chunk = np.empty((N, 0 if steps_per_chunk == T else steps_per_chunk, D), dtype)
        rec = np.empty((N, H), dtype)
        rnn_forward_kernel(x, Wx, Wh, b, h, x_chunk, proj, rec, h_hist, relu)
    return h_hist, h


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh"):
    """Forward pass of a vanilla RNN over a whole sequence.

    Inputs:
    - x: input data of shape (N, T, D)
    - h0: initial hidden state of shape (N, H)
    - Wx: input-to-hidden weights of shape (D, H)
    - Wh: hidden-to-hidden weights of shape (H, H)
    - b: biases of shape (H,)
    - nonlinearity: "tanh" (default) or "relu"

    Returns a tuple of:
    - h: hidden states for all time steps, shape (N, T, H), dtype of x
    - cache: an RNNCache for rnn_backward; cache.final_h (N, H) is the state after the last step
    """
    v.check_nonlinearity(nonlinearity)
    (x, h0, _, Wx, Wh, b), (N, T, D, H) = v.validate_sequence(x, h0, Wx, Wh, b, gates=1)
    return _forward_with_cache(x, h0, Wx, Wh, b, N, T, D, H, nonlinearity, is_step=False)


def _forward_with_cache(x, h0, Wx, Wh, b, N, T, D, H, nonlinearity, is_step):
    relu = nonlinearity == "relu"
    h_hist, h = _forward(x, h0, Wx, Wh, b, N, T, D, H, relu, steps_per_chunk=T)
    cache = RNNCache(x=x, h0=h0, Wx=Wx, Wh=Wh, h_hist=h_hist, final_h=h, relu=relu,
                     is_step=is_step)
    return h_hist.copy(), cache


def rnn_backward(dh, cache, *, dh_last=None):
    """Backward pass of rnn_forward.

    Inputs:
    - dh: upstream gradient of all hidden states, shape (N, T, H)
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
    if dh_last is None:
        dh_next = np.zeros((N, H), cache.x.dtype)
    else:
        dh_next = v.validate_upstream("dh_last", dh_last, (N, H), "(N, H)",
                                      cache.x.dtype).copy()
    return _backward(dh, cache, dh_next)


def _backward(dh, cache, dh_next):
    N, T, _ = cache.x.shape
    H = cache.h0.shape[1]
    da = np.empty((N, T, H), dh.dtype)
    if N and T:
        WhT = np.ascontiguousarray(cache.Wh.T)
        rnn_backward_kernel(dh, cache.h_hist, WhT, dh_next, da, np.empty((N, H), dh.dtype),
                            cache.relu)
    dx, dWx, dWh, db = weight_grads(da, cache.x, cache.h0, cache.h_hist, cache.Wx)
    return dx, dh_next, dWx, dWh, db


def rnn_inference(x, h0, Wx, Wh, b, *, nonlinearity="tanh", return_state=False):
    """rnn_forward for inference: no cache, working memory O(N * H) beyond x and h.

    Arguments as rnn_forward. Returns h: (N, T, H), or with return_state=True the tuple
    (h, final_h) with final_h of shape (N, H), as torch.nn.RNN returns them.
    """
    v.check_nonlinearity(nonlinearity)
    (x, h0, _, Wx, Wh, b), (N, T, D, H) = v.validate_sequence(x, h0, Wx, Wh, b, gates=1)
    h_hist, h = _forward(x, h0, Wx, Wh, b, N, T, D, H, nonlinearity == "relu",
                         steps_per_chunk=min(T, INFERENCE_CHUNK))
    return (h_hist, h) if return_state else h_hist


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
    (x3, prev_h, _, Wx, Wh, b), (N, T, D, H) = v.validate_step(x, prev_h, Wx, Wh, b, gates=1)
    h_seq, cache = _forward_with_cache(np.ascontiguousarray(x3), prev_h, Wx, Wh, b,
                                       N, T, D, H, nonlinearity, is_step=True)
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
    dx, dprev_h, dWx, dWh, db = _backward(dnext_h.reshape(N, 1, H), cache,
                                          np.zeros((N, H), cache.x.dtype))
    return dx.reshape(N, D), dprev_h, dWx, dWh, db
