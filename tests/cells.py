"""One adapter per cell so every test runs on the LSTM, both RNN nonlinearities and the GRU.

Each adapter runs a module (fastrnn or fastrnn.reference) forward and backward with full
state: it returns h and the final states, and all gradients by name, including those of the
initial states, with gradients flowing in from h and from the final states.
"""

from dataclasses import dataclass

import numpy as np


def final_states(cache, names):
    if isinstance(cache, dict):  # fastrnn.reference
        return tuple(cache[n] for n in names)
    return tuple(getattr(cache, n) for n in names)


@dataclass(frozen=True)
class Cell:
    name: str
    gates: int
    nonlinearity: str | None = None  # the RNN's

    @property
    def is_lstm(self):
        return self.name == "lstm"

    @property
    def is_gru(self):
        return self.name == "gru"

    @property
    def state_names(self):
        return ("final_h", "final_c") if self.is_lstm else ("final_h",)

    @property
    def param_names(self):
        if self.is_lstm:
            return ("x", "h0", "c0", "Wx", "Wh", "b")
        if self.is_gru:
            return ("x", "h0", "Wx", "Wh", "bx", "bh")
        return ("x", "h0", "Wx", "Wh", "b")

    def params(self, x, h0, c0, Wx, Wh, b):
        """The inputs this cell takes, by name (the RNN has no c0; the GRU has two biases,
        made from b)."""
        values = dict(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b, bx=b, bh=0.7 * b[::-1].copy())
        return {n: values[n] for n in self.param_names}

    def forward(self, mod, p, lengths=None):
        """(h, final states tuple, cache)."""
        kw = {} if lengths is None else {"lengths": lengths}
        if self.is_lstm:
            h, cache = mod.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], c0=p["c0"], **kw)
        elif self.is_gru:
            h, cache = mod.gru_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["bx"], p["bh"], **kw)
        else:
            h, cache = mod.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"],
                                       nonlinearity=self.nonlinearity, **kw)
        return h, final_states(cache, self.state_names), cache

    def backward(self, mod, dh, dstates, cache):
        """Gradients by parameter name."""
        if self.is_lstm:
            dx, dh0, dWx, dWh, db, dc0 = mod.lstm_backward(
                dh, cache, dh_last=dstates[0], dc_last=dstates[1], return_dc0=True)
            return dict(x=dx, h0=dh0, c0=dc0, Wx=dWx, Wh=dWh, b=db)
        if self.is_gru:
            dx, dh0, dWx, dWh, dbx, dbh = mod.gru_backward(dh, cache, dh_last=dstates[0])
            return dict(x=dx, h0=dh0, Wx=dWx, Wh=dWh, bx=dbx, bh=dbh)
        dx, dh0, dWx, dWh, db = mod.rnn_backward(dh, cache, dh_last=dstates[0])
        return dict(x=dx, h0=dh0, Wx=dWx, Wh=dWh, b=db)

    def inference(self, mod, p, lengths=None):
        """(h, final states tuple) from the cache-free path."""
        kw = {"return_state": True}
        if lengths is not None:
            kw["lengths"] = lengths
        if self.is_lstm:
            return mod.lstm_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], c0=p["c0"], **kw)
        if self.is_gru:
            h, final_h = mod.gru_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["bx"], p["bh"], **kw)
        else:
            h, final_h = mod.rnn_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"],
                                           nonlinearity=self.nonlinearity, **kw)
        return h, (final_h,)

    def loss(self, mod, p, dh, dstates, lengths=None):
        """Scalar whose gradients are exactly what backward(dh, dstates) returns."""
        h, states, _ = self.forward(mod, p, lengths)
        return float(np.sum(h * dh) + sum(np.sum(s * d) for s, d in zip(states, dstates)))


LSTM = Cell("lstm", 4)
RNN_TANH = Cell("rnn_tanh", 1, "tanh")
RNN_RELU = Cell("rnn_relu", 1, "relu")
GRU = Cell("gru", 3)
CELLS = [LSTM, RNN_TANH, RNN_RELU, GRU]
