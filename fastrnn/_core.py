"""Pieces the LSTM, RNN and GRU API modules share: batch ordering for ragged batches,
upstream-gradient buffers and the weight gradients."""

import numpy as np

from . import _validate as v
from .kernels.common import weight_grads_kernel


class BatchOrder:
    """How the kernels see a batch: sorted by length, longest first, so that the sequences
    still running at any step are a prefix of the batch (contiguous per-step products, and
    work proportional to the real steps). Without lengths, or already sorted, nothing moves.

    lengths: (N,) sorted lengths; active: (T,) sequences running at each step;
    ragged: some sequence is shorter than T; real_steps: the sum of the lengths.
    """

    def __init__(self, lengths, N, T):
        if lengths is None:
            self.order = None
            self.lengths = np.full(N, T, np.int64)
        else:
            order = np.argsort(-lengths, kind="stable")
            self.order = None if np.array_equal(order, np.arange(N)) else order
            self.lengths = np.ascontiguousarray(lengths[order], dtype=np.int64)
        # Number of lengths > t, for every t.
        self.active = (N - np.searchsorted(np.sort(self.lengths), np.arange(T), side="right")
                       ).astype(np.int64)
        self.ragged = bool(N) and int(self.lengths.min()) < T
        self.real_steps = int(self.lengths.sum())

    def sort(self, a):
        """a with its batch axis (axis 0) in kernel order; a itself when nothing moves."""
        return a if self.order is None else np.ascontiguousarray(a[self.order])

    def unsort(self, a):
        """a (batch axis 0) back in the caller's order; a itself when nothing moves."""
        if self.order is None:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out

    def unsort_copy(self, a):
        """As unsort, but always a new array (for outputs that must not share the cache's)."""
        out = self.unsort(a)
        return a.copy() if out is a else out


def state_grad(name, grad, N, H, dtype, order):
    """A fresh (N, H) buffer in kernel order holding ``grad`` (zeros when None)."""
    if grad is None:
        return np.zeros((N, H), dtype)
    grad = v.validate_upstream(name, grad, (N, H), "(N, H)", dtype)
    return np.array(order.sort(grad))  # always a copy: the kernel writes into it


def weight_grads(da_x, x, h0, h_hist, Wx, order, da_h=None):
    """dx, dWx, dWh, db_x (and db_h when da_h is given) from the gate gradients of all steps.

    da_x, da_h: (N, T, G); x: (N, T, D); h0: (N, H); h_hist: (N, T, H); Wx: (D, G), all in
    kernel order. dx comes back in kernel order, zero past each sequence's length.
    """
    N, T, G = da_x.shape
    D = x.shape[2]
    H = h0.shape[1]
    dtype = da_x.dtype
    dx = np.zeros((N, T, D), dtype)
    dWx = np.zeros((D, G), dtype)
    dWh = np.zeros((H, G), dtype)
    db_x = np.zeros(G, dtype)
    db_h = np.zeros(G if da_h is not None else 0, dtype)
    if order.real_steps:
        weight_grads_kernel(da_x, da_x if da_h is None else da_h, da_h is not None, x, h0,
                            h_hist, Wx, order.lengths, dx, dWx, dWh, db_x, db_h)
    return (dx, dWx, dWh, db_x) if da_h is None else (dx, dWx, dWh, db_x, db_h)
