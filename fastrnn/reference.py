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


def rnn_forward(x, h0, Wx, Wh, b, *, nonlinearity="tanh", lengths=None):
    """RNN over a whole sequence. x: (N, T, D), h0: (N, H). Returns h: (N, T, H), cache.

    lengths: (N,) or None; with it each sequence runs alone for its own length.
    """
    if lengths is not None:
        return _forward_each(
            lambda n, L: rnn_forward(x[n:n + 1, :L], h0[n:n + 1], Wx, Wh, b,
                                     nonlinearity=nonlinearity), x, h0, lengths)
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
    if "each" in cache:
        return _backward_each(
            lambda n, L, c: rnn_backward(dh[n:n + 1, :L], c, dh_last=_row(dh_last, n)),
            cache, per_sequence=(0, 1))
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


def rnn_inference(x, h0, Wx, Wh, b, *, nonlinearity="tanh", lengths=None, return_state=False):
    """rnn_forward without a cache. Returns h, or (h, final_h) with return_state=True."""
    h, cache = rnn_forward(x, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths)
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


def lstm_forward(x, h0, Wx, Wh, b, *, c0=None, lengths=None):
    """LSTM over a whole sequence. x: (N, T, D), h0: (N, H), c0: (N, H) or None (zeros).

    lengths: (N,) or None; with it each sequence runs alone for its own length.
    Returns h: (N, T, H) and a cache for lstm_backward.
    """
    if lengths is not None:
        c0 = np.zeros_like(h0) if c0 is None else c0
        return _forward_each(
            lambda n, L: lstm_forward(x[n:n + 1, :L], h0[n:n + 1], Wx, Wh, b, c0=c0[n:n + 1]),
            x, h0, lengths)
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


def lstm_backward(dh, cache, *, dh_last=None, dc_last=None, return_dc0=False,
                  weights_transposed=False):
    """Backward of lstm_forward. dh: (N, T, H); dh_last, dc_last: (N, H) or None (zeros).

    Returns dx, dh0, dWx, dWh, db, and dc0 last when return_dc0 is true; dWx.T (4H, D)
    and dWh.T (4H, H) in their places when weights_transposed is true.
    """
    if weights_transposed:
        dx, dh0, dWx, dWh, *rest = lstm_backward(dh, cache, dh_last=dh_last,
                                                 dc_last=dc_last, return_dc0=return_dc0)
        return (dx, dh0, dWx.T, dWh.T, *rest)
    if "each" in cache:
        grads = _backward_each(
            lambda n, L, c: lstm_backward(dh[n:n + 1, :L], c, dh_last=_row(dh_last, n),
                                          dc_last=_row(dc_last, n), return_dc0=True),
            cache, per_sequence=(0, 1, 5))
        return grads if return_dc0 else grads[:5]
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


def lstm_inference(x, h0, Wx, Wh, b, *, c0=None, lengths=None, return_state=False):
    """lstm_forward without a cache. Returns h, or (h, (final_h, final_c)) with return_state."""
    h, cache = lstm_forward(x, h0, Wx, Wh, b, c0=c0, lengths=lengths)
    return (h, (cache["final_h"], cache["final_c"])) if return_state else h


# ----------------------------------------------------------------------------- GRU


def gru_step_forward(x, prev_h, Wx, Wh, bx, bh):
    """One GRU step, PyTorch's formulation. x: (N, D), prev_h: (N, H), Wx: (D, 3H),
    Wh: (H, 3H), bx, bh: (3H,), gates r, z, n along 3H.

    Returns next_h: (N, H) and a cache for gru_step_backward.
    """
    H = prev_h.shape[1]
    ax = x @ Wx + bx
    ah = prev_h @ Wh + bh
    r = sigmoid(ax[:, :H] + ah[:, :H])
    z = sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])
    hn = ah[:, 2 * H:]
    n = np.tanh(ax[:, 2 * H:] + r * hn)
    next_h = (1 - z) * n + z * prev_h
    cache = {"x": x, "prev_h": prev_h, "Wx": Wx, "Wh": Wh, "r": r, "z": z, "n": n, "hn": hn}
    return next_h, cache


def gru_step_backward(dnext_h, cache):
    """Backward of one GRU step. dnext_h: (N, H). Returns dx, dprev_h, dWx, dWh, dbx, dbh."""
    r, z, n, hn, prev_h = cache["r"], cache["z"], cache["n"], cache["hn"], cache["prev_h"]
    dn = dnext_h * (1 - z)
    dz = dnext_h * (prev_h - n)
    dan = dn * (1 - n**2)
    dr = dan * hn
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    dax = np.concatenate([dar, daz, dan], axis=1)
    dah = np.concatenate([dar, daz, dan * r], axis=1)
    dx = dax @ cache["Wx"].T
    dprev_h = dnext_h * z + dah @ cache["Wh"].T
    dWx = cache["x"].T @ dax
    dWh = prev_h.T @ dah
    return dx, dprev_h, dWx, dWh, dax.sum(axis=0), dah.sum(axis=0)


def gru_forward(x, h0, Wx, Wh, bx, bh, *, lengths=None):
    """GRU over a whole sequence. x: (N, T, D), h0: (N, H). Returns h: (N, T, H), cache.

    lengths: (N,) or None; with it each sequence runs alone for its own length.
    """
    if lengths is not None:
        return _forward_each(
            lambda n, L: gru_forward(x[n:n + 1, :L], h0[n:n + 1], Wx, Wh, bx, bh),
            x, h0, lengths)
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H), dtype=x.dtype)
    prev_h = h0
    steps = []
    for t in range(T):
        prev_h, step_cache = gru_step_forward(x[:, t], prev_h, Wx, Wh, bx, bh)
        h[:, t] = prev_h
        steps.append(step_cache)
    cache = {"steps": steps, "x_shape": x.shape, "Wx": Wx, "Wh": Wh, "final_h": prev_h}
    return h, cache


def gru_backward(dh, cache, *, dh_last=None):
    """Backward of gru_forward. dh: (N, T, H); dh_last: (N, H) gradient of the final state.

    Returns dx, dh0, dWx, dWh, dbx, dbh.
    """
    if "each" in cache:
        return _backward_each(
            lambda n, L, c: gru_backward(dh[n:n + 1, :L], c, dh_last=_row(dh_last, n)),
            cache, per_sequence=(0, 1))
    N, T, D = cache["x_shape"]
    dx = np.zeros((N, T, D), dtype=dh.dtype)
    dWx = np.zeros_like(cache["Wx"])
    dWh = np.zeros_like(cache["Wh"])
    dbx = np.zeros(cache["Wh"].shape[1], dtype=dh.dtype)
    dbh = np.zeros(cache["Wh"].shape[1], dtype=dh.dtype)
    dprev_h = np.zeros_like(cache["final_h"]) if dh_last is None else dh_last.copy()
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, dbx_t, dbh_t = gru_step_backward(
            dh[:, t] + dprev_h, cache["steps"][t])
        dWx += dWx_t
        dWh += dWh_t
        dbx += dbx_t
        dbh += dbh_t
    return dx, dprev_h, dWx, dWh, dbx, dbh


def gru_inference(x, h0, Wx, Wh, bx, bh, *, lengths=None, return_state=False):
    """gru_forward without a cache. Returns h, or (h, final_h) with return_state=True."""
    h, cache = gru_forward(x, h0, Wx, Wh, bx, bh, lengths=lengths)
    return (h, cache["final_h"]) if return_state else h


# ----------------------------------------------------------------------------- ragged batches


def _forward_each(forward_one, x, h0, lengths):
    """The meaning of ``lengths``: sequence n runs alone for lengths[n] steps.

    forward_one(n, L) runs sequence n on its first L steps and returns (h, cache). Outputs
    past each length are 0; the final states are those after each sequence's last step.
    """
    N, T, _ = x.shape
    h = np.zeros((N, T, h0.shape[1]), dtype=x.dtype)
    caches = []
    for n in range(N):
        L = int(lengths[n])
        h_n, cache_n = forward_one(n, L)
        h[n, :L] = h_n[0]
        caches.append(cache_n)
    cache = {"each": caches, "lengths": lengths, "x_shape": x.shape}
    for state in ("final_h", "final_c"):
        if state in caches[0]:
            cache[state] = np.concatenate([c[state] for c in caches])
    return h, cache


def _backward_each(backward_one, cache, per_sequence):
    """Backward of _forward_each: per-sequence gradients (positions ``per_sequence`` of the
    returned tuple, e.g. dx, dh0) are stacked, weight gradients summed."""
    N, T, D = cache["x_shape"]
    total = None
    for n, cache_n in enumerate(cache["each"]):
        L = int(cache["lengths"][n])
        grads = list(backward_one(n, L, cache_n))
        if total is None:
            total = [np.zeros((N, T, D), grads[0].dtype) if k == 0 else
                     np.zeros((N,) + g.shape[1:], g.dtype) if k in per_sequence else
                     np.zeros_like(g) for k, g in enumerate(grads)]
        for k, g in enumerate(grads):
            if k == 0:
                total[0][n, :L] = g[0]
            elif k in per_sequence:
                total[k][n] = g[0]
            else:
                total[k] += g
    return tuple(total)


def _row(a, n):
    return None if a is None else a[n:n + 1]
