"""LSTM API: validate -> allocate -> kernel -> (outputs, cache).

N batch, T time, D input, H hidden. Gates are packed along the 4H axis in the order
i, f, o, g: i, f, o go through the sigmoid, g through tanh;
c_t = f * c_{t-1} + i * g and h_t = o * tanh(c_t).
"""

import numpy as np

from . import _validate as v
from ._config import INFERENCE_CHUNK
from .kernels.common import weight_grads_kernel
from .kernels.lstm import lstm_backward_kernel, lstm_forward_kernel


class LSTMCache:
    """What lstm_backward needs from lstm_forward; treat it as read-only.

    Public attributes:
      final_h: (N, H) hidden state after the last step (h0 when T == 0)
      final_c: (N, H) cell state after the last step (c0 when T == 0)
    Carry (final_h, final_c) into the next chunk of a long sequence as (h0, c0).
    The rest is internal (activated gates, cell states, inputs) and may change.
    """

    __slots__ = ("x", "h0", "c0", "Wx", "Wh", "gates", "h_hist", "c_hist", "tanh_c_hist",
                 "final_h", "final_c", "is_step")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields[name])


def _forward(x, h0, c0, Wx, Wh, b, N, T, D, H, store):
    """Run the kernel on validated arrays. Returns h_hist (N, T, H), final h, c and the
    training buffers (gates, c_hist, tanh_c_hist), which are empty when not store."""
    dtype = x.dtype
    h = h0.copy()
    c = np.zeros((N, H), dtype) if c0 is None else c0.copy()
    h_hist = np.empty((N, T, H), dtype)
    if store:
        steps_per_chunk = T
        c_hist = np.empty((N, T, H), dtype)
        tanh_c_hist = np.empty((N, T, H), dtype)
    else:
        # Bounded working memory: the input projection is done INFERENCE_CHUNK steps at a time.
        steps_per_chunk = min(T, INFERENCE_CHUNK)
        c_hist = np.empty((0, 0, 0), dtype)
        tanh_c_hist = np.empty((N, 1, H), dtype)
    gates = np.empty((N, steps_per_chunk, 4 * H), dtype)
    if N and T:
        x_chunk = np.empty((N, 0 if steps_per_chunk == T else steps_per_chunk, D), dtype)
        rec = np.empty((N, 4 * H), dtype)
        lstm_forward_kernel(x, Wx, Wh, b, h, c, x_chunk, gates, rec,
                            h_hist, c_hist, tanh_c_hist, store)
    return h_hist, h, c, gates, c_hist, tanh_c_hist


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None):
    """Forward pass of an LSTM over a whole sequence.

    Inputs:
    - x: input data of shape (N, T, D)
    - h0: initial hidden state of shape (N, H)
    - Wx: input-to-hidden weights of shape (D, 4H), gate blocks i, f, o, g
    - Wh: hidden-to-hidden weights of shape (H, 4H)
    - b: biases of shape (4H,)
    - c0: initial cell state of shape (N, H); zeros when None

    Returns a tuple of:
    - h: hidden states for all time steps, shape (N, T, H), dtype of x
    - cache: an LSTMCache for lstm_backward; cache.final_h and cache.final_c (N, H) are the
      states after the last step

    T == 0 gives h of shape (N, 0, H) and final states h0, c0; N == 0 gives empty outputs.
    """
    (x, h0, c0, Wx, Wh, b), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, b, gates=4, c0=c0, has_c0=True)
    return _forward_with_cache(x, h0, c0, Wx, Wh, b, N, T, D, H, is_step=False)


def _forward_with_cache(x, h0, c0, Wx, Wh, b, N, T, D, H, is_step):
    h_hist, h, c, gates, c_hist, tanh_c_hist = _forward(
        x, h0, c0, Wx, Wh, b, N, T, D, H, store=True)
    if c0 is None:
        c0 = np.zeros_like(h0)
    cache = LSTMCache(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, gates=gates, h_hist=h_hist,
                      c_hist=c_hist, tanh_c_hist=tanh_c_hist, final_h=h, final_c=c,
                      is_step=is_step)
    return h_hist.copy(), cache


def lstm_backward(dh, cache, *, dh_last=None, dc_last=None, return_dc0=False):
    """Backward pass of lstm_forward.

    Inputs:
    - dh: upstream gradient of all hidden states, shape (N, T, H)
    - cache: the cache from lstm_forward
    - dh_last, dc_last: gradients flowing into the final states cache.final_h and
      cache.final_c, shape (N, H); zeros when None (truncated BPTT passes the next chunk's
      dh0 and dc0 here)
    - return_dc0: also return the gradient of c0

    Returns a tuple of:
    - dx: (N, T, D); dh0: (N, H); dWx: (D, 4H); dWh: (H, 4H); db: (4H,)
    - and dc0: (N, H) last, when return_dc0 is true
    """
    v.check_cache(cache, LSTMCache, "lstm_forward")
    if cache.is_step:
        raise TypeError("cache comes from lstm_step_forward; pass it to lstm_step_backward")
    N, T, _ = cache.x.shape
    H = cache.h0.shape[1]
    dh = v.validate_upstream("dh", dh, (N, T, H), "(N, T, H)", cache.x.dtype)
    grads = _backward(dh, cache, dh_last, dc_last, "dh_last", "dc_last")
    return grads if return_dc0 else grads[:5]


def _backward(dh, cache, dh_last, dc_last, dh_last_name, dc_last_name):
    """Returns dx, dh0, dWx, dWh, db, dc0 for validated dh."""
    N, T, D = cache.x.shape
    H = cache.h0.shape[1]
    dtype = cache.x.dtype
    dh_next = _state_grad(dh_last_name, dh_last, N, H, dtype)
    dc_next = _state_grad(dc_last_name, dc_last, N, H, dtype)
    da = np.empty((N, T, 4 * H), dtype)
    if N and T:
        WhT = np.ascontiguousarray(cache.Wh.T)
        lstm_backward_kernel(dh, cache.gates, cache.c_hist, cache.tanh_c_hist, cache.c0,
                             WhT, dh_next, dc_next, da, np.empty((N, 4 * H), dtype))
    dx, dWx, dWh, db = weight_grads(da, cache.x, cache.h0, cache.h_hist, cache.Wx)
    return dx, dh_next, dWx, dWh, db, dc_next


def _state_grad(name, grad, N, H, dtype):
    """A fresh (N, H) buffer holding ``grad`` (zeros when None); the kernel overwrites it."""
    if grad is None:
        return np.zeros((N, H), dtype)
    return v.validate_upstream(name, grad, (N, H), "(N, H)", dtype).copy()


def weight_grads(da, x, h0, h_hist, Wx):
    """dx, dWx, dWh, db from the pre-activation gradients da: (N, T, G) of all steps.

    x: (N, T, D); h0: (N, H); h_hist: (N, T, H); Wx: (D, G). Shared with the RNN.
    """
    N, T, G = da.shape
    D = x.shape[2]
    H = h0.shape[1]
    dx = np.zeros((N, T, D), da.dtype)
    dWx = np.zeros((D, G), da.dtype)
    dWh = np.zeros((H, G), da.dtype)
    db = np.zeros(G, da.dtype)
    if N and T:
        weight_grads_kernel(da, x, h0, h_hist, Wx, dx, dWx, dWh, db, np.empty((N, T, H), da.dtype))
    return dx, dWx, dWh, db


def lstm_inference(x, h0, Wx, Wh, b, *, c0=None, return_state=False):
    """lstm_forward for inference: no cache, working memory O(N * H) beyond x and h.

    Arguments as lstm_forward. Returns h: (N, T, H), or with return_state=True the tuple
    (h, (final_h, final_c)) with final states of shape (N, H), as torch.nn.LSTM returns them.
    """
    (x, h0, c0, Wx, Wh, b), (N, T, D, H) = v.validate_sequence(
        x, h0, Wx, Wh, b, gates=4, c0=c0, has_c0=True)
    h_hist, h, c, *_ = _forward(x, h0, c0, Wx, Wh, b, N, T, D, H, store=False)
    return (h_hist, (h, c)) if return_state else h_hist


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
    (x3, prev_h, prev_c, Wx, Wh, b), (N, T, D, H) = v.validate_step(
        x, prev_h, Wx, Wh, b, gates=4, prev_c=prev_c, has_c0=True)
    h_seq, cache = _forward_with_cache(np.ascontiguousarray(x3), prev_h, prev_c, Wx, Wh, b,
                                       N, T, D, H, is_step=True)
    return h_seq.reshape(N, H), cache.final_c.copy(), cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward pass of a single LSTM time step.

    Inputs:
    - dnext_h, dnext_c: gradients of next_h and next_c, shape (N, H)
    - cache: from lstm_step_forward

    Returns a tuple of:
    - dx: (N, D); dprev_h, dprev_c: (N, H); dWx: (D, 4H); dWh: (H, 4H); db: (4H,)
    """
    v.check_cache(cache, LSTMCache, "lstm_step_forward")
    if not cache.is_step:
        raise TypeError("cache comes from lstm_forward; pass it to lstm_backward")
    N, _, D = cache.x.shape
    H = cache.h0.shape[1]
    dnext_h = v.validate_upstream("dnext_h", dnext_h, (N, H), "(N, H)", cache.x.dtype)
    dnext_c = v.validate_upstream("dnext_c", dnext_c, (N, H), "(N, H)", cache.x.dtype)
    dx, dprev_h, dWx, dWh, db, dprev_c = _backward(
        dnext_h.reshape(N, 1, H), cache, None, dnext_c, "dh_last", "dnext_c")
    return dx.reshape(N, D), dprev_h, dprev_c, dWx, dWh, db
