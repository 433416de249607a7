"""Multi-layer and bidirectional stacks of LSTM, GRU or vanilla-RNN layers.

A thin layer over the single-layer functions, laid out like ``torch.nn.LSTM(num_layers=L,
bidirectional=...)``:

- ``weights[l][d]`` holds layer l's weights for direction d (0 forward, 1 reverse) as the
  single-layer function takes them: ``(Wx, Wh, b)`` for "lstm" and "rnn", ``(Wx, Wh, bx, bh)``
  for "gru". Layer 0's Wx has D rows; higher layers' have ``dirs * H`` rows (they read the
  layer below's output).
- ``h0``/``c0`` and the returned final states have shape (L * dirs, N, H), indexed
  ``l * dirs + d`` as in PyTorch.
- The output is the top layer's, (N, T, dirs * H): the forward direction's H features, then
  the reverse direction's.
- The reverse direction runs over each sequence's own real steps, backwards: for a sequence
  of length L_n it reads x[n, L_n - 1], ..., x[n, 0]; padding is never touched.

Which time step each final state comes from, for a sequence of length L_n (T = padded length):

    direction   output[n, t, block] holds        final state h_n[l * dirs + d, n] equals
    forward     state after reading x[n, 0..t]   output[n, L_n - 1, :H]  (after its last step)
    reverse     state after reading x[n, t..L_n-1]  output[n, 0, H:]     (after reading x[n, 0])

A sequence of length 0 has final states h0/c0 and all-zero output.
"""

import numpy as np

from . import _validate as v
from . import gru as _gru
from . import lstm as _lstm
from . import rnn as _rnn
from ._core import batch_order
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward

CELLS = ("lstm", "gru", "rnn")
_WEIGHTS = {"lstm": ("Wx", "Wh", "b"), "gru": ("Wx", "Wh", "bx", "bh"), "rnn": ("Wx", "Wh", "b")}


class StackCache:
    """What stack_backward needs; treat as read-only. ``final_h`` (and ``final_c`` for the
    LSTM) are the final states, shape (L * dirs, N, H)."""

    __slots__ = ("cell", "layer_caches", "lengths", "dirs", "final_h", "final_c", "out_shape")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields[name])


def reverse_within_lengths(a, lengths):
    """a: (N, T, F) with each sequence's first lengths[n] steps in reverse order; steps past a
    length stay where they are. Applying it twice gives a back. lengths None: all T."""
    N, T = a.shape[:2]
    t = np.arange(T)[None, :]
    L = np.full((N, 1), T) if lengths is None else np.asarray(lengths).reshape(N, 1)
    index = np.where(t < L, L - 1 - t, t)
    return np.take_along_axis(a, index[:, :, None], axis=1)


def _cell_forward(cell, x, h0, c0, w, lengths, nonlinearity):
    """One direction of one layer: (h, (final states), cache)."""
    if cell == "lstm":
        h, cache = lstm_forward(x, h0, *w, c0=c0, lengths=lengths)
    elif cell == "gru":
        h, cache = gru_forward(x, h0, *w, lengths=lengths)
    else:
        h, cache = rnn_forward(x, h0, *w, nonlinearity=nonlinearity, lengths=lengths)
    return _forward_result(cell, h, cache)


def _forward_result(cell, h, cache):
    """A cell forward's (h, cache) as a layer direction's (h, (final states), cache)."""
    finals = (cache.final_h, cache.final_c) if cell == "lstm" else (cache.final_h,)
    return h, finals, cache


def _cell_backward(cell, dh, cache, dstates, weights_transposed=False):
    """(dx, (d initial states), (d weights)) of one direction of one layer; the LSTM's dWx
    and dWh transposed when ``weights_transposed`` (lstm_backward's option)."""
    if cell == "lstm":
        return _backward_result(cell, lstm_backward(
            dh, cache, dh_last=dstates[0], dc_last=dstates[1], return_dc0=True,
            weights_transposed=weights_transposed))
    backward = gru_backward if cell == "gru" else rnn_backward
    return _backward_result(cell, backward(dh, cache, dh_last=dstates[0]))


def _backward_result(cell, grads):
    """A cell backward's gradients (the LSTM's with dc0 last) as a layer direction's
    (dx, (d initial states), (d weights))."""
    if cell == "lstm":
        dx, dh0, dWx, dWh, db, dc0 = grads
        return dx, (dh0, dc0), (dWx, dWh, db)
    dx, dh0, *dweights = grads
    return dx, (dh0,), tuple(dweights)


_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _ready_forward(cell, x, h0, c0, w, lengths, nonlinearity):
    """_cell_forward for a caller that has checked what it passes but the arrays' layout
    (fastrnn.torch: the dtypes, x's features, h0's and c0's shapes, nonlinearity, lengths
    from pad_packed_sequence): the arrays made C-contiguous and writeable, _validate's fast
    check of them (shapes, one dtype), then the cell's forward without the public
    function's checks and wrappers, a visible share of a small module step. Whatever that
    check rejects, and every call while the finite check is on, takes _cell_forward."""
    x, h0 = v.kernel_ready(x), v.kernel_ready(h0)
    c0 = None if c0 is None else v.kernel_ready(c0)
    N, T, D = x.shape
    if v._check_finite or v._arrays_ready(x, h0, c0, w[0], w[1], tuple(w[2:]), _GATES[cell],
                                          N, D) is None:
        return _cell_forward(cell, x, h0, c0, w, lengths, nonlinearity)
    order = batch_order(lengths, N, T)
    if cell == "lstm":
        h, cache = _lstm._forward_with_cache(x, h0, c0, *w, order, is_step=False)
    elif cell == "gru":
        h, cache = _gru._forward_with_cache(x, h0, *w, order, is_step=False)
    else:
        h, cache = _rnn._forward_with_cache(x, h0, *w, order, nonlinearity, is_step=False)
    return _forward_result(cell, h, cache)


def _ready_backward(cell, dh, cache, dstates, weights_transposed=False):
    """_cell_backward for _ready_forward's cache and a dh of its output's shape and dtype
    (what autograd hands fastrnn.torch), made kernel-ready here; the final states'
    gradients are checked as usual. Anything else, and every call while the finite check
    is on, takes _cell_backward."""
    dh = v.kernel_ready(dh)
    if v._check_finite or dh.shape != cache.order.shape + (cache.h0.shape[1],) or (
            dh.dtype != cache.h0.dtype):
        return _cell_backward(cell, dh, cache, dstates, weights_transposed)
    if cell == "lstm":
        return _backward_result(cell, _lstm._backward(dh, cache, dstates[0], dstates[1],
                                                      "dh_last", "dc_last",
                                                      weights_transposed))
    backward = _gru._backward if cell == "gru" else _rnn._backward
    return _backward_result(cell, backward(dh, cache, dstates[0], "dh_last"))


def _check_structure(cell, weights, bidirectional):
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    dirs = 2 if bidirectional else 1
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights must be a non-empty list over layers of lists over directions")
    for l, layer in enumerate(weights):
        if not isinstance(layer, (list, tuple)) or len(layer) != dirs:
            raise ValueError(f"weights[{l}] must hold {dirs} direction(s) "
                             f"({'bidirectional' if bidirectional else 'unidirectional'}), "
                             f"got {len(layer) if isinstance(layer, (list, tuple)) else layer!r}")
        for d, w in enumerate(layer):
            if not isinstance(w, (list, tuple)) or len(w) != len(_WEIGHTS[cell]):
                raise ValueError(f"weights[{l}][{d}] must be the tuple "
                                 f"({', '.join(_WEIGHTS[cell])}) for cell {cell!r}")
    return dirs


def _initial_states(name, states, shape, dtype):
    """(L * dirs, N, H) initial states; zeros when None."""
    if states is None:
        return np.zeros(shape, dtype)
    states = v.as_float_array(name, states)
    v.check_shape(name, states, shape, "(L * dirs, N, H)")
    return states


def _with_context(l, d, fn, *args):
    """Run fn, prefixing any argument error with the layer and direction it concerns."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as e:
        raise type(e)(f"layer {l}, direction {d}: {e}") from None


def stack_forward(cell, x, weights, *, h0=None, c0=None, lengths=None, bidirectional=False,
                  nonlinearity="tanh"):
    """Forward pass of a stack of recurrent layers.

    Inputs:
    - cell: "lstm", "gru" or "rnn"
    - x: (N, T, D)
    - weights: weights[l][d] = (Wx, Wh, b) ("lstm", "rnn") or (Wx, Wh, bx, bh) ("gru")
    - h0, c0: (L * dirs, N, H) initial states, zeros when None (c0: LSTM only)
    - lengths: (N,) integer, values 0..T, any order; None: all T
    - bidirectional: run every layer in both directions
    - nonlinearity: "tanh" or "relu" (RNN only)

    Returns a tuple of:
    - out: (N, T, dirs * H), 0 past each length
    - final states: h_n (L * dirs, N, H) for "gru"/"rnn", the pair (h_n, c_n) for "lstm"
    - cache: a StackCache for stack_backward
    """
    dirs = _check_structure(cell, weights, bidirectional)
    x = v.as_float_array("x", x)
    v.check_ndim("x", x, 3, "(N, T, D)")
    N, T, _ = x.shape
    Wh = v.as_float_array("weights[0][0][1] (Wh)", weights[0][0][1])
    v.check_ndim("weights[0][0][1] (Wh)", Wh, 2, "(H, G)")
    H = Wh.shape[0]
    num_layers = len(weights)
    shape = (num_layers * dirs, N, H)
    h0 = _initial_states("h0", h0, shape, x.dtype)
    c0 = _initial_states("c0", c0, shape, x.dtype) if cell == "lstm" else None
    lengths = v.validate_lengths(lengths, N, T)
    layer_input = x
    layer_caches = []
    final = [np.empty(shape, x.dtype) for _ in range(2 if cell == "lstm" else 1)]
    for l in range(num_layers):
        outs, caches = [], []
        for d in range(dirs):
            k = l * dirs + d
            seq = layer_input if d == 0 else reverse_within_lengths(layer_input, lengths)
            h, states, cache = _with_context(
                l, d, _cell_forward, cell, seq, h0[k], None if c0 is None else c0[k],
                weights[l][d], lengths, nonlinearity)
            outs.append(h if d == 0 else reverse_within_lengths(h, lengths))
            caches.append(cache)
            for buf, s in zip(final, states):
                buf[k] = s
        layer_input = outs[0] if dirs == 1 else np.concatenate(outs, axis=2)
        layer_caches.append(caches)
    cache = StackCache(cell=cell, layer_caches=layer_caches, lengths=lengths, dirs=dirs,
                       final_h=final[0], final_c=final[1] if cell == "lstm" else None,
                       out_shape=layer_input.shape)
    return layer_input, (tuple(final) if cell == "lstm" else final[0]), cache


def stack_backward(dout, cache, *, dh_n=None, dc_n=None):
    """Backward pass of stack_forward.

    Inputs:
    - dout: (N, T, dirs * H) gradient of out; ignored past each length
    - cache: from stack_forward
    - dh_n, dc_n: (L * dirs, N, H) gradients of the final states; zeros when None

    Returns a tuple of:
    - dx: (N, T, D)
    - dh0: (L * dirs, N, H), and for "lstm" the pair (dh0, dc0) in its place
    - dweights: dweights[l][d], the gradients of weights[l][d], same structure
    """
    if not isinstance(cache, StackCache):
        raise TypeError(f"cache must be the cache returned by fastrnn.stack_forward, "
                        f"got {type(cache).__name__}")
    cell, dirs, lengths = cache.cell, cache.dirs, cache.lengths
    shape = cache.final_h.shape
    dtype = cache.final_h.dtype
    dfinal = [_initial_states("dh_n", dh_n, shape, dtype)]
    if cell == "lstm":
        dfinal.append(_initial_states("dc_n", dc_n, shape, dtype))
    H = shape[2]
    dinit = [np.empty(shape, dtype) for _ in dfinal]
    dweights = [[None] * dirs for _ in cache.layer_caches]
    dlayer = v.as_float_array("dout", dout)
    v.check_shape("dout", dlayer, cache.out_shape, "(N, T, dirs * H)")
    for l in reversed(range(len(cache.layer_caches))):
        dinput = 0
        for d in range(dirs):
            k = l * dirs + d
            dh = np.ascontiguousarray(dlayer[:, :, d * H:(d + 1) * H])
            if d == 1:
                dh = reverse_within_lengths(dh, lengths)
            dx, dstates, dweights[l][d] = _with_context(
                l, d, _cell_backward, cell, dh, cache.layer_caches[l][d],
                tuple(g[k] for g in dfinal))
            dinput = dinput + (dx if d == 0 else reverse_within_lengths(dx, lengths))
            for buf, g in zip(dinit, dstates):
                buf[k] = g
        dlayer = dinput
    return dlayer, (tuple(dinit) if cell == "lstm" else dinit[0]), dweights


def weights_from_torch(module):
    """fastrnn weights for a ``torch.nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (batch_first or not).

    Returns (cell, weights, options): pass them as ``stack_forward(cell, x, weights,
    **options)`` (options: bidirectional, and nonlinearity for the RNN). PyTorch packs LSTM
    gates i, f, g, o (fastrnn: i, f, o, g) and stores weights transposed; the LSTM's and
    RNN's two biases are summed into b.
    """
    name = type(module).__name__
    cell = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}.get(name)
    if cell is None:
        raise TypeError(f"module must be a torch.nn.LSTM, GRU or RNN, got {name}")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTMs with proj_size are not supported")
    H = module.hidden_size
    order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H] if cell == "lstm" else slice(None)
    dirs = 2 if module.bidirectional else 1

    def param(p):
        return getattr(module, p).detach().cpu().numpy()

    weights = []
    for l in range(module.num_layers):
        layer = []
        for d in range(dirs):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            Wx = param("weight_ih" + sfx).T[:, order].copy()
            Wh = param("weight_hh" + sfx).T[:, order].copy()
            if module.bias:
                bx, bh = param("bias_ih" + sfx), param("bias_hh" + sfx)
            else:
                bx = bh = np.zeros(Wx.shape[1], Wx.dtype)
            if cell == "gru":
                layer.append((Wx, Wh, bx.copy(), bh.copy()))
            else:
                layer.append((Wx, Wh, (bx + bh)[order].copy()))
        weights.append(layer)
    options = {"bidirectional": module.bidirectional}
    if cell == "rnn":
        options["nonlinearity"] = module.nonlinearity
    return cell, weights, options
