"""PyTorch drop-in modules: ``fastrnn.torch.LSTM``, ``GRU`` and ``RNN`` run their time loops
on fastrnn's kernels behind ``torch.nn.LSTM`` / ``GRU`` / ``RNN``'s interface.

Each class subclasses its torch counterpart, so the constructor, the parameters
(``weight_ih_l0``, ``weight_hh_l0_reverse``, ...), their initialisation, ``state_dict`` and
``isinstance(m, torch.nn.LSTM)`` are torch's own; only ``forward`` differs. It takes and
returns what torch's does: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM,
from a padded tensor (batched or not, ``batch_first`` either way) or a ``PackedSequence``
(sorted or not), with ``hx`` optional. Gradients reach the input, ``hx`` and every parameter
through one ``torch.autograd.Function`` per layer, which calls fastrnn's forward and
backward on the tensors' memory (NumPy views) and hands fastrnn's results back to torch
the same way (torch.from_numpy). What is copied per call: the weights, into fastrnn's
(K, G) layout (torch stores them transposed, and packs the LSTM's gates i, f, g, o where
fastrnn has i, f, o, g), and their gradients back; for a module without batch_first, the
input, output and their gradients between torch's time-major layout and fastrnn's
batch-major one; nothing else. With nothing to differentiate (``torch.no_grad()``, or no
input or parameter requiring grad) the forward runs fastrnn's inference path: no cache.

Supported: CPU tensors of float32 or float64 (the module's dtype), any number of layers,
bidirectional, bias or not, ``dropout`` between layers in training mode (torch's
semantics; the mask comes from torch's RNG but not from the same draws as torch's fused
kernel, so only the distribution is the same). Not supported, with an error naming
``torch.nn.*`` as the alternative: other devices (CUDA), other dtypes (half, bfloat16),
``proj_size``, double backward.

This module imports torch; ``import fastrnn`` does not import it.
"""

import functools
import weakref

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _memory
from . import gru as _gru
from . import lstm as _lstm
from . import rnn as _rnn
from .kernels.transpose import transpose_into
from .stack import _ready_backward, _ready_forward, reverse_within_lengths

__all__ = ["LSTM", "GRU", "RNN", "from_torch"]

_DTYPES = (torch.float32, torch.float64)


def _array(tensor):
    """The tensor's memory as a NumPy array (a view; None stays None)."""
    return None if tensor is None else tensor.detach().numpy()


# A NumPy result as a tensor on its memory. (None of the arrays handed over has negative
# strides, which torch cannot represent: reverse_within_lengths copies.)
_tensor = torch.from_numpy


@functools.lru_cache(maxsize=None)
def _gate_order(cell, G):
    """Indices taking the G gate rows from torch's order to fastrnn's, and back (the same
    permutation: torch packs the LSTM's gates i, f, g, o, fastrnn i, f, o, g); None for the
    GRU and RNN, whose orders agree."""
    if cell != "lstm":
        return None
    H = G // 4
    return np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H].astype(np.int64)  # as the kernels take it


# From the size fastrnn's memory pool keeps (_memory.MIN_POOLED_BYTES, 128 KB), the
# conversions below write into it rather than into new NumPy arrays: a module's weights and
# gradients are megabytes, which glibc hands back to the OS when freed, so each call
# page-faulted them in again (2000 faults, 12 ms a call for an LSTM's H = 512 weights on
# Zen 3, against ~1 ms of copying). Below it, NumPy's own operations are the cheaper calls
# (a numba call's dispatch costs more than copying 16 KB).


def _transposed(a, order=None):
    """a[order].T (a (P, K); order (P,) row indices, None for all rows in order) as a
    C-contiguous (K, P) array. From the pool's size up gathered and transposed in one pass
    (kernels/transpose.py): NumPy's copy of a transposed view reads one element per cache
    line (4.6 ms against 0.7 for 4 MB of float32 weights on Zen 3), and a gather first is
    another pass over them."""
    if a.nbytes < _memory.MIN_POOLED_BYTES:
        return (a if order is None else a.take(order, axis=0)).T.copy()
    a = np.ascontiguousarray(a)
    out = _memory.empty(a.shape[::-1], a.dtype)
    transpose_into(a, _all_rows(a.shape[0]) if order is None else order, out)
    return out


@functools.lru_cache(maxsize=None)
def _all_rows(P):
    return np.arange(P, dtype=np.int64)


def _rows(a, order):
    """a[order] (a (P, K), whole rows gathered) as a C-contiguous array: NumPy's take, but
    from the pool's size up, a C-contiguous a or the transpose of one (lstm_backward_small's
    weight gradients) into the pool, the transpose made C-contiguous first (_transposed):
    NumPy's gather of its strided rows took 5.3 ms for 4 MB on Zen 3 (an LSTM's gradients at
    H = 512: 9.0 -> 2.5 ms). mode="clip" (the indices are valid): with out= and the default
    "raise", NumPy gathers into a temporary and copies (3.4x as long). Column slices (the
    threaded backward's) keep take: into the pool they were 1.2-1.3x slower."""
    if a.nbytes >= _memory.MIN_POOLED_BYTES:
        if not a.flags.c_contiguous and a.T.flags.c_contiguous:
            a = _transposed(a.T)
        if a.flags.c_contiguous:
            return np.take(a, order, axis=0, out=_memory.empty(a.shape, a.dtype), mode="clip")
    return a.take(order, axis=0)


def _cell_weights(cell, w_ih, w_hh, b_ih=None, b_hh=None):
    """torch's (G, D), (G, H), (G,), (G,) parameters as the fastrnn cell function's weights:
    (Wx, Wh, b) for "lstm"/"rnn" (b = b_ih + b_hh), (Wx, Wh, bx, bh) for "gru"; Wx (D, G)
    and Wh (H, G) C-contiguous, which is how fastrnn's products read them.

    The LSTM's gate blocks are reordered as the weights are transposed (_transposed):
    slicing gate block by gate block took fifteen operations."""
    G = w_ih.shape[0]
    order = _gate_order(cell, G)
    if b_ih is None:
        b_ih = b_hh = np.zeros(G, w_ih.dtype)
    Wx, Wh = _transposed(w_ih, order), _transposed(w_hh, order)
    if cell == "gru":
        return Wx, Wh, b_ih, b_hh
    b = b_ih + b_hh
    return Wx, Wh, b if order is None else b.take(order)


def _parameter_grads(cell, dweights, has_bias):
    """fastrnn's weight gradients as gradients of torch's w_ih, w_hh and, with bias, b_ih,
    b_hh (new C-contiguous tensors, as torch's own gradients are). The LSTM's dWx and dWh
    come transposed, (G, D) and (G, H) (_ready_backward's weights_transposed): reordering
    their rows then copies whole rows, where transposing (D, G) had read columns 4H apart."""
    dWx, dWh, db, *dbh = dweights  # the GRU's (dbx, dbh); the others' one db = b_ih + b_hh
    order = _gate_order(cell, db.shape[0])
    if cell == "lstm":
        grads = [dWx, dWh]  # take(order) below copies them into C-contiguous arrays
    else:
        grads = [_transposed(dWx), _transposed(dWh)]
    if order is not None:
        grads = [_rows(g, order) for g in grads]
        db = db.take(order)
    if has_bias:  # b = b_ih + b_hh: both get db, as two tensors
        grads += [db, dbh[0] if dbh else db.copy()]
    return [_tensor(g) for g in grads]


def _cell_inference(cell, x, h0, c0, weights, lengths, nonlinearity):
    """_ready_forward without a cache (fastrnn's *_inference): (h, final states, None)."""
    if cell == "lstm":
        h, finals = _lstm.lstm_inference(x, h0, *weights, c0=c0, lengths=lengths,
                                         return_state=True)
        return h, finals, None
    if cell == "gru":
        h, final_h = _gru.gru_inference(x, h0, *weights, lengths=lengths, return_state=True)
    else:
        h, final_h = _rnn.rnn_inference(x, h0, *weights, nonlinearity=nonlinearity,
                                        lengths=lengths, return_state=True)
    return h, (final_h,), None


def _layer_forward(spec, x, h0, c0, run_direction):
    """One layer's forward, all directions, as _Layer.forward describes (spec: its tuple);
    run_direction is _ready_forward (keeping caches) or _cell_inference. Returns the
    output tensors and the directions' caches."""
    cell, nonlinearity, time_major, dirs, arrays, lengths = spec
    x = _batch_major(_array(x), time_major)
    N, T, _ = x.shape
    h0, c0 = _array(h0), _array(c0)
    if dirs == 1:
        # One direction, the common case, without the loop's lists: microseconds of a
        # small layer's step.
        h, states, cache = run_direction(
            cell, x, np.zeros((N, arrays[1].shape[1]), x.dtype) if h0 is None else h0[0],
            None if c0 is None else c0[0], _cell_weights(cell, *arrays), lengths,
            nonlinearity)
        if time_major and N > 1:
            out = _batch_major_view(h.shape, h.dtype, time_major)
            out[...] = h
        else:
            out = h  # already laid out as asked (one sequence: either way): no copy
        return ((_tensor(_batch_major(out, time_major)),)
                + tuple(_tensor(s[None]) for s in states)), [cache]
    H = arrays[1].shape[1]
    per_direction = len(arrays) // dirs
    caches, outs, finals = [], [], []
    for d in range(dirs):
        w = arrays[d * per_direction:(d + 1) * per_direction]
        h, states, cache = run_direction(
            cell, x if d == 0 else reverse_within_lengths(x, lengths),
            np.zeros((N, H), x.dtype) if h0 is None else h0[d],
            None if c0 is None else c0[d], _cell_weights(cell, *w), lengths, nonlinearity)
        outs.append(h if d == 0 else reverse_within_lengths(h, lengths))
        finals.append(states)
        caches.append(cache)
    out = _batch_major_view((N, T, dirs * H), x.dtype, time_major)
    for d, h in enumerate(outs):
        out[:, :, d * H:(d + 1) * H] = h
    return ((_tensor(_batch_major(out, time_major)),)
            + tuple(_tensor(f) for f in _by_direction(finals))), caches


def _batch_major(a, time_major):
    """An (N, T, F) view of a (T, N, F) array when ``time_major``, else a itself; the same
    swap takes it back. The layers hand time-major tensors on as they are (a module without
    batch_first): swapped here, in NumPy, it is not a torch operation for autograd to
    record and undo, a visible share of a small layer's step."""
    return a.transpose(1, 0, 2) if time_major else a


def _by_direction(states):
    """states[d]: one direction's tuple of (N, H) states -> a (dirs, N, H) array per state
    (for one direction, views of its own)."""
    return [s[0][None] if len(s) == 1 else np.stack(s) for s in zip(*states)]


def _batch_major_view(shape, dtype, time_major):
    """An (N, T, F) array whose memory is (T, N, F) when ``time_major`` (the layout of a
    module without batch_first, so its output needs no further copy), else (N, T, F)."""
    N, T, F = shape
    return _batch_major(np.empty((T, N, F) if time_major else shape, dtype), time_major)


class _Layer(torch.autograd.Function):
    """One layer, all its directions, through fastrnn's kernels.

    forward(ctx, spec, x, h0, c0, *params): spec the tuple (cell, nonlinearity, time_major,
    dirs, arrays, lengths); x (N, T, D), or (T, N, D) when ``time_major``; lengths (N,)
    int64 array or None; h0, c0 (dirs, N, H) or None for zeros (c0 is None but for the
    LSTM); params: for each of the dirs directions torch's w_ih, w_hh and, with bias, b_ih,
    b_hh; arrays: the same as NumPy views (the module's _parameter_arrays), which the
    kernels read; params are there for autograd.
    Returns out (N, T, dirs * H) ((T, N, dirs * H) when ``time_major``; 0 past each
    length), h_n (dirs, N, H) and for the LSTM c_n (dirs, N, H). The reverse
    direction runs each sequence's real steps backwards, as torch's does.

    The outputs are assembled in NumPy rather than with torch.cat/contiguous: a torch op
    large enough to run on its OpenMP threads leaves them spinning for milliseconds, on the
    cores fastrnn's next kernel needs.
    """

    @staticmethod
    def forward(ctx, spec, x, h0, c0, *params):
        outputs, caches = _layer_forward(spec, x, h0, c0, _ready_forward)
        ctx.fastrnn = (spec, caches, len(params) // spec[3] == 4, h0 is not None,
                       c0 is not None, outputs[0].shape)
        # Outputs the loss does not use get None, not a tensor of zeros: fastrnn then
        # skips them (a final state's None is its dh_last=None).
        ctx.set_materialize_grads(False)
        return outputs

    @staticmethod
    def backward(ctx, dout, dh_n, dc_n=None):
        # Gradients computed with grad mode on (create_graph=True) would have to be
        # differentiable again; once_differentiable makes differentiating them an error.
        # Without it (every plain backward) its no_grad context and checks are skipped:
        # microseconds of a small layer's step.
        if torch.is_grad_enabled():
            return _layer_backward_once(ctx, dout, dh_n, dc_n)
        return _layer_backward(ctx, dout, dh_n, dc_n)


def _layer_backward(ctx, dout, dh_n, dc_n):
    """_Layer.backward: the gradients of its forward's arguments (None for spec)."""
    spec, caches, has_bias, has_h0, has_c0, out_shape = ctx.fastrnn
    cell, time_major, lengths = spec[0], spec[2], spec[5]
    dtype = caches[0].final_h.dtype
    dout = _batch_major(np.zeros(out_shape, dtype) if dout is None else _array(dout),
                        time_major)
    dfinals = [_array(dh_n)] + ([_array(dc_n)] if cell == "lstm" else [])
    if len(caches) == 1:  # one direction: as the loop below, without its lists
        dx, dstates, dweights = _ready_backward(
            cell, dout, caches[0], [None if g is None else g[0] for g in dfinals],
            weights_transposed=cell == "lstm")
        dinits = [s[None] for s in dstates]
        grads = _parameter_grads(cell, dweights, has_bias)
    else:
        H = dout.shape[2] // len(caches)
        dxs, dinits, grads = [], [], []
        for d, cache in enumerate(caches):
            dh = dout[:, :, d * H:(d + 1) * H]
            if d == 1:
                dh = reverse_within_lengths(dh, lengths)
            dx, dstates, dweights = _ready_backward(
                cell, dh, cache, [None if g is None else g[d] for g in dfinals],
                weights_transposed=cell == "lstm")
            dxs.append(dx if d == 0 else reverse_within_lengths(dx, lengths))
            dinits.append(dstates)
            grads += _parameter_grads(cell, dweights, has_bias)
        dinits = _by_direction(dinits)
        dx = dxs[0] + dxs[1]  # the input feeds both directions
    return (None, _tensor(_batch_major(dx, time_major)),
            _tensor(dinits[0]) if has_h0 else None,
            _tensor(dinits[1]) if has_c0 else None, *grads)


_layer_backward_once = torch.autograd.function.once_differentiable(_layer_backward)


# module -> (key, views) for _FastrnnForward._parameter_arrays; kept outside the modules so
# that pickling, deepcopy and state_dict never see the views.
_PARAMETER_ARRAYS = weakref.WeakKeyDictionary()


class _FastrnnForward:
    """The forward shared by LSTM, GRU and RNN (a mixin ahead of the torch class)."""

    _cell = None  # "lstm", "gru" or "rnn"

    def _check_supported(self):
        if self.__dict__.get("proj_size"):
            raise ValueError(f"fastrnn.torch.{type(self).__name__} does not support proj_size; "
                             f"use torch.nn.LSTM for a projected LSTM")

    def _unsupported(self, what):
        base = self._cell.upper()
        return TypeError(f"fastrnn.torch.{type(self).__name__} runs on CPU float32 and float64 "
                         f"tensors only, got {what}; use torch.nn.{base} for it")

    def _check_tensor(self, name, tensor, dtype):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_cpu:
            raise self._unsupported(f"{name} on device {tensor.device}")
        if tensor.dtype not in _DTYPES:
            raise self._unsupported(f"{name} of dtype {tensor.dtype}")
        if tensor.dtype != dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but the module's parameters are "
                            f"{dtype}; convert one with .to({dtype}) (or the module with "
                            f".to({tensor.dtype}))")

    def _initial_state(self, name, state, batched, N, dtype):
        """hx's h0 or c0 as (L * dirs, N, H); None stays None (zeros)."""
        if state is None:
            return None
        shape = (self.num_layers * (2 if self.bidirectional else 1), N, self.hidden_size)
        self._check_tensor(name, state, dtype)
        expected = shape if batched else (shape[0], shape[2])
        if tuple(state.shape) != expected:
            letters = "(L * dirs, N, H)" if batched else "(L * dirs, H) for an unbatched input"
            raise ValueError(f"{name} must have shape {letters} = {expected}, "
                             f"got {tuple(state.shape)}")
        return state if batched else state.unsqueeze(1)

    def forward(self, input, hx=None):
        """input: (T, N, D), or (N, T, D) with batch_first, or (T, D) unbatched, or a
        PackedSequence; hx: h0 (L * dirs, N, H) ((L * dirs, H) unbatched), for the LSTM the
        pair (h0, c0); zeros when None. Returns (output, h_n), for the LSTM
        (output, (h_n, c_n)), as torch.nn.LSTM / GRU / RNN does."""
        self._check_supported()
        first = self._flat_weights[0]
        dtype = first.dtype
        if dtype not in _DTYPES or not first.is_cpu:
            raise self._unsupported(f"parameters of dtype {dtype} on {first.device}")
        packed = isinstance(input, PackedSequence)
        if packed:
            self._check_tensor("input.data", input.data, dtype)
            x, lengths = pad_packed_sequence(input, batch_first=True)  # caller's batch order
            lengths = lengths.numpy().astype(np.int64)
            batched = True
        else:
            self._check_tensor("input", input, dtype)
            if input.dim() not in (2, 3):
                raise ValueError(f"input must be 3-D, (T, N, D) or (N, T, D) with batch_first, "
                                 f"or 2-D (T, D) unbatched; got shape {tuple(input.shape)}")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1 - int(self.batch_first))
            lengths = None
        if x.shape[2] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size) in its "
                             f"last dimension, got shape {tuple(x.shape)}")
        time_major = not (packed or self.batch_first)
        N = x.shape[1 if time_major else 0]
        if self._cell == "lstm":
            if hx is None:
                hx = (None, None)
            elif not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx must be the pair (h0, c0) for an LSTM")
            h0 = self._initial_state("hx[0] (h0)", hx[0], batched, N, dtype)
            c0 = self._initial_state("hx[1] (c0)", hx[1], batched, N, dtype)
        else:
            h0 = self._initial_state("hx", hx, batched, N, dtype)
            c0 = None
        out, finals = self._run_layers(x, lengths, h0, c0, time_major)
        if packed:
            out = self._packed_like(input, out, lengths)
        elif not batched:
            out = out.squeeze(1 if time_major else 0)
        if not batched:
            finals = [s.squeeze(1) for s in finals]
        return out, (tuple(finals) if self._cell == "lstm" else finals[0])

    def _run_layers(self, x, lengths, h0, c0, time_major):
        """x (N, T, D) -> out (N, T, dirs * H), both (T, N, .) when ``time_major``, and the
        final states, each (L * dirs, N, H)."""
        dirs = 2 if self.bidirectional else 1
        per_layer = len(self._flat_weights) // self.num_layers
        # From __dict__: a missing attribute goes through Module.__getattr__, microseconds.
        nonlinearity = self.__dict__.get("nonlinearity", "tanh")
        # Nothing to differentiate (no_grad, or eval on inputs and weights that do not
        # require grad): fastrnn's inference path, faster and without a cache.
        differentiate = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, h0, c0, *self._flat_weights))
        arrays = self._parameter_arrays()
        finals = []
        layer_input = x
        for l in range(self.num_layers):
            k = slice(l * dirs, (l + 1) * dirs)
            # One argument for all that is not a tensor: each argument of apply costs
            # autograd time.
            spec = (self._cell, nonlinearity, time_major, dirs,
                    arrays[l * per_layer:(l + 1) * per_layer], lengths)
            h0_l, c0_l = None if h0 is None else h0[k], None if c0 is None else c0[k]
            if differentiate:
                layer_input, *states = _Layer.apply(
                    spec, layer_input, h0_l, c0_l,
                    *self._flat_weights[l * per_layer:(l + 1) * per_layer])
            else:
                (layer_input, *states), _ = _layer_forward(spec, layer_input, h0_l, c0_l,
                                                           _cell_inference)
            finals.append(states)
            if self.dropout and self.training and l < self.num_layers - 1:
                layer_input = torch.nn.functional.dropout(layer_input, self.dropout, True)
        if self.num_layers == 1:
            return layer_input, finals[0]
        return layer_input, [torch.cat(s) for s in zip(*finals)]

    def _parameter_arrays(self):
        """The parameters (self._flat_weights) as NumPy views of their memory, made again
        only when a parameter is another tensor or its memory moved (``.to()``, assigning
        ``.data``): making a view per tensor and call was a visible share of a small layer's
        step. The views hold their tensors, so memory they point to is never reused while
        cached."""
        weights = self._flat_weights
        key = tuple((id(w), w.data_ptr()) for w in weights)
        cached = _PARAMETER_ARRAYS.get(self)
        if cached is None or cached[0] != key:
            cached = _PARAMETER_ARRAYS[self] = (key, tuple(_array(w) for w in weights))
        return cached[1]

    @staticmethod
    def _packed_like(input, out, lengths):
        """out (N, T, F) in the caller's batch order as a PackedSequence with input's
        batch_sizes and indices, as torch returns it."""
        sorted_out, sorted_lengths = out, lengths
        if input.sorted_indices is not None:
            sorted_out = out.index_select(0, input.sorted_indices)
            sorted_lengths = lengths[input.sorted_indices.numpy()]
        data = pack_padded_sequence(sorted_out, torch.from_numpy(sorted_lengths),
                                    batch_first=True, enforce_sorted=True).data
        return PackedSequence(data, input.batch_sizes, input.sorted_indices,
                              input.unsorted_indices)


class LSTM(_FastrnnForward, torch.nn.LSTM):
    """torch.nn.LSTM whose forward and backward run on fastrnn's kernels; same constructor
    (``proj_size`` unsupported), parameters and forward. See the module docstring."""

    _cell = "lstm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()


class GRU(_FastrnnForward, torch.nn.GRU):
    """torch.nn.GRU whose forward and backward run on fastrnn's kernels; same constructor,
    parameters and forward. See the module docstring."""

    _cell = "gru"


class RNN(_FastrnnForward, torch.nn.RNN):
    """torch.nn.RNN (``nonlinearity`` "tanh" or "relu") whose forward and backward run on
    fastrnn's kernels; same constructor, parameters and forward. See the module docstring."""

    _cell = "rnn"


_WRAPPERS = {torch.nn.LSTM: LSTM, torch.nn.GRU: GRU, torch.nn.RNN: RNN}


def from_torch(module):
    """A fastrnn module running ``module`` (a torch.nn.LSTM, GRU or RNN, or a fastrnn one)
    with the same configuration and the same Parameter objects: training either trains
    both. The training/eval mode is copied."""
    kind = next((k for k in _WRAPPERS if isinstance(module, k)), None)
    if kind is None:
        raise TypeError(f"module must be a torch.nn.LSTM, GRU or RNN, got "
                        f"{type(module).__name__}")
    options = dict(num_layers=module.num_layers, bias=module.bias,
                   batch_first=module.batch_first, dropout=module.dropout,
                   bidirectional=module.bidirectional, device="meta")
    if kind is torch.nn.RNN:
        options["nonlinearity"] = module.nonlinearity
    if kind is torch.nn.LSTM:
        options["proj_size"] = module.proj_size  # refused by LSTM's own check
    wrapper = _WRAPPERS[kind](module.input_size, module.hidden_size, **options)
    for name in module._flat_weights_names:
        setattr(wrapper, name, getattr(module, name))
    return wrapper.train(module.training)
