"""Conversions between PyTorch's recurrent-layer parameter layout and fastrnn's, for
``fastrnn.torch`` (no torch import here: they take NumPy views of the tensors).

torch stores a layer's weights as (G, K) (w_ih (G, D), w_hh (G, H)), G = gates * H, and
orders the LSTM's gate blocks i, f, g, o; fastrnn's products read (K, G), gates i, f, o, g.
So a conversion transposes each gate block into its place, swapping the LSTM's last two
blocks (the same swap both ways). One call converts a layer direction's parameters, where
NumPy took about fifteen small operations, each a call's overhead, and its strided copies
ran at a few GB/s; the tiled loops keep both sides' cache lines in use.

Shapes: G = gates * H; K = D (input weights) or H (recurrent weights).
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS

# Square tiles of the transpose: 16 rows of 16 float32 are one cache line each.
_TILE = 16


@njit(inline="always", **JIT_OPTIONS)
def _other_block(block, swap):
    """Where gate block ``block`` of one layout sits in the other: the LSTM (``swap``)
    exchanges blocks 2 and 3 (torch's g, o; fastrnn's o, g); otherwise it stays."""
    if swap and block >= 2:
        return 5 - block
    return block


@njit(inline="always", **JIT_OPTIONS)
def _transpose(src, out):
    """out (C, R) = src (R, C) transposed, tile by tile."""
    R, C = src.shape
    for i0 in range(0, R, _TILE):
        for j0 in range(0, C, _TILE):
            for i in range(i0, min(i0 + _TILE, R)):
                for j in range(j0, min(j0 + _TILE, C)):
                    out[j, i] = src[i, j]


@njit(**JIT_OPTIONS)
def weights_from_torch(w_ih, w_hh, b_ih, b_hh, H, swap):
    """torch's w_ih (G, D), w_hh (G, H), b_ih (G,), b_hh (G,) -> fastrnn's Wx (D, G),
    Wh (H, G) and b = b_ih + b_hh (G,), new C-contiguous arrays, gate blocks exchanged if
    ``swap``. (The GRU keeps its two biases apart and ignores b.)"""
    G = w_ih.shape[0]
    Wx = np.empty((w_ih.shape[1], G), w_ih.dtype)
    Wh = np.empty((w_hh.shape[1], G), w_hh.dtype)
    b = np.empty(G, b_ih.dtype)
    for block in range(G // H):
        t0, o0 = block * H, _other_block(block, swap) * H
        _transpose(w_ih[t0:t0 + H], Wx[:, o0:o0 + H])
        _transpose(w_hh[t0:t0 + H], Wh[:, o0:o0 + H])
        # Element by element: a slice assignment compiles numba's shape check and its
        # error message (string formatting), seconds of the first call.
        for j in range(H):
            b[o0 + j] = b_ih[t0 + j] + b_hh[t0 + j]
    return Wx, Wh, b


@njit(**JIT_OPTIONS)
def grads_to_torch(dWx, dWh, db, H, swap):
    """fastrnn's dWx (D, G), dWh (H, G), db (G,) -> torch's dw_ih (G, D), dw_hh (G, H) and
    db (G,), new C-contiguous arrays, gate blocks exchanged back if ``swap``."""
    G = dWx.shape[1]
    dw_ih = np.empty((G, dWx.shape[0]), dWx.dtype)
    dw_hh = np.empty((G, dWh.shape[0]), dWh.dtype)
    db_torch = np.empty(G, db.dtype)
    for block in range(G // H):
        o0, t0 = block * H, _other_block(block, swap) * H
        _transpose(dWx[:, o0:o0 + H], dw_ih[t0:t0 + H])
        _transpose(dWh[:, o0:o0 + H], dw_hh[t0:t0 + H])
        for j in range(H):  # not a slice assignment: see weights_from_torch
            db_torch[t0 + j] = db[o0 + j]
    return dw_ih, dw_hh, db_torch
