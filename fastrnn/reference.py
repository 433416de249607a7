"""Plain NumPy reference implementations: the ground truth the kernels are tested against.

Written for clarity in the style of cs231n's ``rnn_layers.py``: one Python loop over time
calling small step functions. Nothing here imports numba or the fastrnn kernels, and nothing
here validates its inputs; keep it that way.

Dimension letters: N batch, T time, D input features, H hidden units.
LSTM gates are packed along the 4H axis in the order i, f, o, g.

The functions take the same arguments as the public ``fastrnn`` functions and return the
same tuples. Caches are plain ``dict`` objects; the final states are ``cache["final_h"]``
and ``cache["final_c"]`` (``fastrnn`` exposes them as ``cache.final_h``/``cache.final_c``).
"""

import numpy as np


def sigmoid(x):
    """Numerically stable logistic function, elementwise."""
    pos = x >= 0
    neg = ~pos
    z = np.zeros_like(x)
    z[pos] = np.exp(-x[pos])
    z[neg] = np.exp(x[neg])
    top = np.ones_like(x)
    top[neg] = z[neg]
    return top / (1 + z)


# ----------------------------------------------------------------------------- vanilla RNN


def _rnn_activation(a, nonlinearity):
    if nonlinearity == "tanh":
        return np.tanh(a)
    if nonlinearity == "relu":
        return np.maximum(a, 0)
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _rnn_activation_grad(next_h, nonlinearity):
    """d activation / d pre-activation, written in terms of the activation's output."""
    if nonlinearity == "tanh":
        return 1 - next_h**2
    return (next_h > 0).astype(next_h.dtype)


def rnn_step_forward(x, prev_h, Wx, Wh, b, *, nonlinearity="tanh"):
    """One RNN step. x: (N, D), prev_h: (N, H), Wx: (D, H), Wh: (H, H), b: (H,).

    Returns next_h: (N, H) and a cache for rnn_step_backward.
    """
    next_h = _rnn_activation(x @ Wx + prev_h @ Wh + b, nonlinearity)
    cache = {"x": x, "prev_h": prev_h, "Wx": Wx, "Wh": Wh, "next_h": next_h,
             "nonlinearity": nonlinearity}
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    """Backward of one RNN step. dnext_h: (N, H). Returns dx, dprev_h, dWx, dWh, db."""
    da = dnext_h * _rnn_activation_grad(cache["next_h"], cache["nonlinearity"])
    dx = da @ cache["Wx"].T
    dprev_h = da @ cache["Wh"].T
    dWx = cache["x"].T @ da
    dWh = cache["prev_h"].T @ da
    db = da.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh"):
    """RNN over a whole sequence. x: (N, T, D), h0: (N, H). Returns h: (N, T, H), cache."""
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H), dtype=x.dtype)
    prev_h = h0
    steps = []
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b,
                                              nonlinearity=nonlinearity)
        h[:, t] = prev_h
        steps.append(step_cache)
    cache = {"steps": steps, "x_shape": x.shape, "Wx": Wx, "Wh": Wh, "final_h": prev_h}
    return h, cache


def rnn_backward(dh, cache, *, dh_last=None):
    """Backward of rnn_forward. dh: (N, T, H); dh_last: (N, H) gradient of the final state.

    Returns dx, dh0, dWx, dWh, db.
    """
    N, T, D = cache["x_shape"]
    dx = np.zeros((N, T, D), dtype=dh.dtype)
    dWx = np.zeros_like(cache["Wx"])
    dWh = np.zeros_like(cache["Wh"])
    db = np.zeros(cache["Wh"].shape[1], dtype=dh.dtype)
    dprev_h = np.zeros_like(cache["final_h"]) if dh_last is None else dh_last.copy()
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(
            dh[:, t] + dprev_h, cache["steps"][t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


def rnn_inference(x, h0, Wx, Wh, b, *, nonlinearity="tanh", return_state=False):
    """rnn_forward without a cache. Returns h, or (h, final_h) with return_state=True."""
    h, cache = rnn_forward(x, h0, Wx, Wh, b, nonlinearity=nonlinearity)
    return (h, cache["final_h"]) if return_state else h


# ----------------------------------------------------------------------------- LSTM


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step. x: (N, D), prev_h, prev_c: (N, H), Wx: (D, 4H), Wh: (H, 4H), b: (4H,).

    Returns next_h, next_c: (N, H) and a cache for lstm_step_backward.
    """
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i = sigmoid(a[:, 0 * H:1 * H])
    f = sigmoid(a[:, 1 * H:2 * H])
    o = sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:4 * H])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    cache = {"x": x, "prev_h": prev_h, "prev_c": prev_c, "Wx": Wx, "Wh": Wh,
             "i": i, "f": f, "o": o, "g": g, "tanh_c": tanh_c}
    return next_h, next_c, cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward of one LSTM step. dnext_h, dnext_c: (N, H).

    Returns dx, dprev_h, dprev_c, dWx, dWh, db.
    """
    i, f, o, g, tanh_c = cache["i"], cache["f"], cache["o"], cache["g"], cache["tanh_c"]
    dc = dnext_c + dnext_h * o * (1 - tanh_c**2)
    di = dc * g
    df = dc * cache["prev_c"]
    do = dnext_h * tanh_c
    dg = dc * i
    da = np.concatenate(
        [di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)], axis=1)
    dx = da @ cache["Wx"].T
    dprev_h = da @ cache["Wh"].T
    dprev_c = dc * f
    dWx = cache["x"].T @ da
    dWh = cache["prev_h"].T @ da
    db = da.sum(axis=0)
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None):
    """LSTM over a whole sequence. x: (N, T, D), h0: (N, H), c0: (N, H) or None (zeros).

    Returns h: (N, T, H) and a cache for lstm_backward.
    """
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H), dtype=x.dtype)
    prev_h = h0
    prev_c = np.zeros_like(h0) if c0 is None else c0
    steps = []
    for t in range(T):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        steps.append(step_cache)
    cache = {"steps": steps, "x_shape": x.shape, "Wx": Wx, "Wh": Wh,
             "final_h": prev_h, "final_c": prev_c}
    return h, cache


def lstm_backward(dh, cache, *, dh_last=None, dc_last=None, return_dc0=False):
    """Backward of lstm_forward. dh: (N, T, H); dh_last, dc_last: (N, H) or None (zeros).

    Returns dx, dh0, dWx, dWh, db, and dc0 last when return_dc0 is true.
    """
    N, T, D = cache["x_shape"]
    dx = np.zeros((N, T, D), dtype=dh.dtype)
    dWx = np.zeros_like(cache["Wx"])
    dWh = np.zeros_like(cache["Wh"])
    db = np.zeros(cache["Wh"].shape[1], dtype=dh.dtype)
    dprev_h = np.zeros_like(cache["final_h"]) if dh_last is None else dh_last.copy()
    dprev_c = np.zeros_like(cache["final_c"]) if dc_last is None else dc_last.copy()
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t] + dprev_h, dprev_c, cache["steps"][t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    grads = (dx, dprev_h, dWx, dWh, db)
    return grads + (dprev_c,) if return_dc0 else grads


def lstm_inference(x, h0, Wx, Wh, b, *, c0=None, return_state=False):
    """lstm_forward without a cache. Returns h, or (h, (final_h, final_c)) with return_state."""
    h, cache = lstm_forward(x, h0, Wx, Wh, b, c0=c0)
    return (h, (cache["final_h"], cache["final_c"])) if return_state else h
