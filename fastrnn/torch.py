"""PyTorch drop-in modules: ``fastrnn.torch.LSTM``, ``GRU`` and ``RNN`` run their time loops
on fastrnn's kernels behind ``torch.nn.LSTM`` / ``GRU`` / ``RNN``'s interface.

Each class subclasses its torch counterpart, so the constructor, the parameters
(``weight_ih_l0``, ``weight_hh_l0_reverse``, ...), their initialisation, ``state_dict`` and
``isinstance(m, torch.nn.LSTM)`` are torch's own; only ``forward`` differs. It takes and
returns what torch's does: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM,
from a padded tensor (batched or not, ``batch_first`` either way) or a ``PackedSequence``
(sorted or not), with ``hx`` optional. Gradients reach the input, ``hx`` and every parameter
through one ``torch.autograd.Function`` per layer and direction, which calls fastrnn's
forward and backward on the tensors' memory (NumPy views, no copies) and hands fastrnn's
outputs back to torch the same way. Only the LSTM's weights are copied per call (torch packs
its gates i, f, g, o, fastrnn i, f, o, g; a few hundred KB at most against a sequence's work).

Supported: CPU tensors of float32 or float64 (the module's dtype), any number of layers,
bidirectional, bias or not, ``dropout`` between layers in training mode (torch's
semantics; the mask comes from torch's RNG but not from the same draws as torch's fused
kernel, so only the distribution is the same). Not supported, with an error naming
``torch.nn.*`` as the alternative: other devices (CUDA), other dtypes (half, bfloat16),
``proj_size``, double backward.

This module imports torch; ``import fastrnn`` does not import it.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import gru as _gru
from . import lstm as _lstm
from . import rnn as _rnn
from .stack import reverse_within_lengths

__all__ = ["LSTM", "GRU", "RNN", "from_torch"]

_DTYPES = (torch.float32, torch.float64)


def _lstm_gate_order(H):
    """torch's LSTM gate blocks i, f, g, o -> fastrnn's i, f, o, g; the permutation swaps two
    blocks, so it is its own inverse and maps fastrnn's gradients back too."""
    return np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]


def _array(tensor):
    """The tensor's memory as a NumPy array (a view; None stays None)."""
    return None if tensor is None else tensor.detach().numpy()


def _tensor(array):
    """A NumPy result as a tensor on its memory (copied only if its strides are negative,
    which torch cannot represent)."""
    if any(s < 0 for s in array.strides):
        array = np.ascontiguousarray(array)
    return torch.from_numpy(array)


def _cell_weights(cell, w_ih, w_hh, b_ih, b_hh):
    """torch's (G, D), (G, H), (G,), (G,) parameters as the fastrnn cell function's weights:
    (Wx, Wh, b) for "lstm"/"rnn" (b = b_ih + b_hh), (Wx, Wh, bx, bh) for "gru"."""
    Wx, Wh = w_ih.T, w_hh.T  # views: fastrnn takes any layout
    G = Wx.shape[1]
    if b_ih is None:
        b_ih = b_hh = np.zeros(G, Wx.dtype)
    if cell == "gru":
        return Wx, Wh, b_ih, b_hh
    b = b_ih + b_hh
    if cell == "lstm":
        order = _lstm_gate_order(G // 4)
        return Wx[:, order], Wh[:, order], b[order]
    return Wx, Wh, b


def _parameter_grads(cell, dweights, has_bias):
    """fastrnn's weight gradients as gradients of torch's w_ih, w_hh, b_ih, b_hh (None for
    absent biases)."""
    if cell == "gru":
        dWx, dWh, dbx, dbh = dweights
    else:
        dWx, dWh, db = dweights
        if cell == "lstm":
            order = _lstm_gate_order(dWx.shape[1] // 4)
            dWx, dWh, db = dWx[:, order], dWh[:, order], db[order]
        dbx = dbh = db  # b = b_ih + b_hh
    grads = [torch.from_numpy(np.ascontiguousarray(g.T)) for g in (dWx, dWh)]
    if has_bias:
        grads += [torch.from_numpy(np.ascontiguousarray(dbx)),
                  torch.from_numpy(np.array(dbh, copy=True))]
    else:
        grads += [None, None]
    return grads


class _Direction(torch.autograd.Function):
    """One layer, one direction, through fastrnn's kernels.

    forward(ctx, cell, nonlinearity, reverse, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh):
    x (N, T, D), lengths (N,) int64 array or None, h0 and c0 (N, H) (c0 None except for
    the LSTM), torch's parameters of this layer and direction (biases None without bias).
    Returns out (N, T, H) (0 past each length) and h_n (N, H), and for the LSTM c_n (N, H).
    ``reverse`` runs each sequence's real steps backwards, as torch's reverse direction does.
    """

    @staticmethod
    def forward(ctx, cell, nonlinearity, reverse, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh):
        x_np = _array(x)
        if reverse:
            x_np = reverse_within_lengths(x_np, lengths)
        weights = _cell_weights(cell, _array(w_ih), _array(w_hh), _array(b_ih), _array(b_hh))
        if cell == "lstm":
            h, cache = _lstm.lstm_forward(x_np, _array(h0), *weights, c0=_array(c0),
                                          lengths=lengths)
            finals = (cache.final_h, cache.final_c)
        elif cell == "gru":
            h, cache = _gru.gru_forward(x_np, _array(h0), *weights, lengths=lengths)
            finals = (cache.final_h,)
        else:
            h, cache = _rnn.rnn_forward(x_np, _array(h0), *weights, nonlinearity=nonlinearity,
                                        lengths=lengths)
            finals = (cache.final_h,)
        if reverse:
            h = reverse_within_lengths(h, lengths)
        ctx.fastrnn = (cell, reverse, lengths, cache, b_ih is not None)
        return (_tensor(h),) + tuple(_tensor(s) for s in finals)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dh_n, dc_n=None):
        cell, reverse, lengths, cache, has_bias = ctx.fastrnn
        ctx.fastrnn = None  # the cache is large; the graph may outlive the backward
        dh = _array(dout)
        if reverse:
            dh = reverse_within_lengths(dh, lengths)
        if cell == "lstm":
            dx, dh0, *dweights, dc0 = _lstm.lstm_backward(
                dh, cache, dh_last=_array(dh_n), dc_last=_array(dc_n), return_dc0=True)
        else:
            backward = _gru.gru_backward if cell == "gru" else _rnn.rnn_backward
            dx, dh0, *dweights = backward(dh, cache, dh_last=_array(dh_n))
            dc0 = None
        if reverse:
            dx = reverse_within_lengths(dx, lengths)
        return (None, None, None, _tensor(dx), None, _tensor(dh0),
                None if dc0 is None else _tensor(dc0),
                *_parameter_grads(cell, dweights, has_bias))


class _FastrnnForward:
    """The forward shared by LSTM, GRU and RNN (a mixin ahead of the torch class)."""

    _cell = None  # "lstm", "gru" or "rnn"

    def _check_supported(self):
        if getattr(self, "proj_size", 0):
            raise ValueError(f"fastrnn.torch.{type(self).__name__} does not support proj_size; "
                             f"use torch.nn.LSTM for a projected LSTM")

    def _unsupported(self, what):
        base = self._cell.upper()
        return TypeError(f"fastrnn.torch.{type(self).__name__} runs on CPU float32 and float64 "
                         f"tensors only, got {what}; use torch.nn.{base} for it")

    def _check_tensor(self, name, tensor, dtype):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.device.type != "cpu":
            raise self._unsupported(f"{name} on device {tensor.device}")
        if tensor.dtype not in _DTYPES:
            raise self._unsupported(f"{name} of dtype {tensor.dtype}")
        if tensor.dtype != dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but the module's parameters are "
                            f"{dtype}; convert one with .to({dtype}) (or the module with "
                            f".to({tensor.dtype}))")

    def _initial_state(self, name, state, batched, N, dtype):
        """hx's h0 or c0 as (L * dirs, N, H), zeros when None."""
        shape = (self.num_layers * (2 if self.bidirectional else 1), N, self.hidden_size)
        if state is None:
            return torch.zeros(shape, dtype=dtype)
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
        weights = self._flat_weights
        dtype = weights[0].dtype
        if dtype not in _DTYPES or weights[0].device.type != "cpu":
            raise self._unsupported(f"parameters of dtype {dtype} on {weights[0].device}")
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
            x = x if self.batch_first else x.transpose(0, 1)  # (N, T, D), a view
            lengths = None
        if x.shape[2] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size) in its "
                             f"last dimension, got shape {tuple(x.shape)}")
        N = x.shape[0]
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
        out, finals = self._run_layers(x, lengths, h0, c0)
        if packed:
            out = self._packed_like(input, out, lengths)
        elif not batched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1).contiguous()
        if not batched:
            finals = [s.squeeze(1) for s in finals]
        return out, (tuple(finals) if self._cell == "lstm" else finals[0])

    def _run_layers(self, x, lengths, h0, c0):
        """x (N, T, D) -> out (N, T, dirs * H) and the final states, each (L * dirs, N, H)."""
        dirs = 2 if self.bidirectional else 1
        per_direction = len(self._flat_weights) // (self.num_layers * dirs)
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        finals = []
        layer_input = x
        for l in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = l * dirs + d
                w = self._flat_weights[k * per_direction:(k + 1) * per_direction]
                w_ih, w_hh, b_ih, b_hh = (w if self.bias else (*w, None, None))
                out, *states = _Direction.apply(
                    self._cell, nonlinearity, d == 1, layer_input, lengths, h0[k],
                    None if c0 is None else c0[k], w_ih, w_hh, b_ih, b_hh)
                outs.append(out)
                finals.append(states)
            layer_input = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
            if self.dropout and self.training and l < self.num_layers - 1:
                layer_input = torch.nn.functional.dropout(layer_input, self.dropout, True)
        return layer_input, [torch.stack(s) for s in zip(*finals)]

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
    if getattr(module, "proj_size", 0):
        raise ValueError("fastrnn.torch does not support proj_size; keep the torch.nn.LSTM")
    wrapper = _WRAPPERS[kind](module.input_size, module.hidden_size, **options)
    for name in module._flat_weights_names:
        setattr(wrapper, name, getattr(module, name))
    return wrapper.train(module.training)
