"""Argument checks for the public API, run before any kernel.

Every check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong ndim, shape or
value) with a message that names the argument, the shape it must have and the shape it has.
On success the arrays come back C-contiguous, native-endian and all of one float dtype, which
is what the kernels assume. Nothing here copies an array that is already in that form, and
nothing here writes into an input.
"""

import functools

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
NONLINEARITIES = ("tanh", "relu")


def as_float_array(name, value):
    """``value`` as a float32/float64 ndarray, or TypeError naming ``name``."""
    if value is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got None")
    arr = np.asarray(value)
    dtype = arr.dtype
    if dtype is SUPPORTED_DTYPES[0] or dtype is SUPPORTED_DTYPES[1]:
        return arr  # the common case, by identity (numpy's native dtypes are singletons)
    if dtype.kind == "f" and dtype.itemsize in (4, 8) and not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {arr.dtype}; "
            f"convert it with {name}.astype(np.float32) or .astype(np.float64)")
    return arr


def check_shape(name, arr, expected, letters):
    """Raise ValueError unless ``arr.shape == expected``.

    expected: tuple of ints; letters: the same shape written with dimension letters,
    e.g. "(N, H)", so the message says both what the dimensions mean and their values.
    """
    if arr.ndim != len(expected):
        raise ValueError(
            f"{name} must be {len(expected)}-D with shape {letters} = {expected}, "
            f"got a {arr.ndim}-D array of shape {arr.shape}")
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {letters} = {tuple(expected)}, "
                         f"got {arr.shape}")


def check_ndim(name, arr, ndim, letters):
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with shape {letters}, "
                         f"got a {arr.ndim}-D array of shape {arr.shape}")


def check_same_dtype(named_arrays):
    """All arrays share the first one's dtype, or TypeError naming the odd one."""
    first_name, first = named_arrays[0]
    for name, arr in named_arrays[1:]:
        if arr.dtype is not first.dtype and arr.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {arr.dtype} but {first_name} has dtype {first.dtype}; "
                f"all arrays must share one dtype (float32 or float64)")


def check_nonlinearity(nonlinearity):
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def kernel_ready(a):
    """a as a C-contiguous, writeable array, copied only when it is not one already.

    Read-only inputs are copied too: numba types them differently (a second compilation of
    every kernel) and they cannot share code paths with the kernels' own buffers.
    """
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def contiguous(*arrays):
    return tuple(kernel_ready(a) for a in arrays)


GATE_LETTERS = {1: "H", 3: "3H", 4: "4H"}


def validate_sequence(x, h0, Wx, Wh, biases, gates, c0=None):
    """Check the arguments of a sequence forward (x: (N, T, D)).

    biases: ((name, array), ...), each of shape (gates * H,).
    gates: 1 for the RNN, 3 for the GRU, 4 for the LSTM (Wx/Wh/biases are gates * H wide).
    Returns (x, h0, c0, Wx, Wh, biases) converted (c0 is None unless given), and (N, T, D, H).
    """
    x = as_float_array("x", x)
    check_ndim("x", x, 3, "(N, T, D)")
    result = _validate_cell(x, h0, Wx, Wh, biases, gates, c0, x_letters="(N, T, D)")
    if _check_finite:
        _inputs_finite(result[0], biases, "h0", "c0")
    return result


def validate_step(x, prev_h, Wx, Wh, biases, gates, prev_c=None):
    """Check the arguments of a single-step forward (x: (N, D)); returns as validate_sequence,
    with x as an (N, 1, D) sequence of one step."""
    x = as_float_array("x", x)
    check_ndim("x", x, 2, "(N, D)")
    result = _validate_cell(x[:, None, :], prev_h, Wx, Wh, biases, gates, prev_c,
                            x_letters="(N, D)", h_name="prev_h", c_name="prev_c")
    if _check_finite:
        x3, *rest = result[0]
        _inputs_finite((x3[:, 0], *rest), biases, "prev_h", "prev_c")
    return result


def ready_step(x, prev_h, Wx, Wh, biases, gates, prev_c=None):
    """(N, D, H) when the arguments of a single step need no checking or converting: ndarrays
    of one float dtype, C-contiguous, writeable, of the shapes x (N, D), prev_h and prev_c
    (N, H), Wx (D, G), Wh (H, G), each of ``biases`` (G,) with G = gates * H, and the finite
    check off; else None, and validate_step checks them one by one and names what is
    wrong. A sampling loop calls a step per token with the same arrays: this is
    validate_step's fast path without its sequence-shaped detour (x[:, None, :], the named
    pairs), which cost several microseconds of a step that takes 10 to 30."""
    if _check_finite or type(x) is not np.ndarray or x.ndim != 2:
        return None
    N, D = x.shape
    H = _arrays_ready(x, prev_h, prev_c, Wx, Wh, biases, gates, N, D)
    return None if H is None else (N, D, H)


def _kernel_ready_cell(x, h0, Wx, Wh, biases, gates, c0):
    """_validate_cell's result when every argument is already what the kernels take
    (ndarrays of one float dtype, C-contiguous, writeable, of the right shapes), else None.
    The common case, checked in a few microseconds: it is paid on every call, a visible
    share of a small one such as (50, 1, 32, 32). Anything else goes through the checks
    one by one, which name what is wrong."""
    if type(x) is not np.ndarray:
        return None
    N, T, D = x.shape
    bias_arrays = tuple(b for _, b in biases)
    H = _arrays_ready(x, h0, c0, Wx, Wh, bias_arrays, gates, N, D)
    if H is None:
        return None
    return (x, h0, c0, Wx, Wh, bias_arrays), (N, T, D, H)


def _arrays_ready(x, h0, c0, Wx, Wh, bias_arrays, gates, N, D):
    """H when x (an ndarray of N sequences of D features) and the cell's arrays are one
    float dtype, C-contiguous and writeable, and h0, c0 (None for none) (N, H), Wx (D, G),
    Wh (H, G) and each bias (G,), G = gates * H; else None."""
    # Identity first, equality second: the arrays numba's kernels return (fastrnn's own
    # outputs, a sampling loop's state) carry dtype objects equal to NumPy's but not the same.
    dtype = x.dtype
    if (dtype is not SUPPORTED_DTYPES[0] and dtype is not SUPPORTED_DTYPES[1]
            and dtype not in SUPPORTED_DTYPES):
        return None
    for a in (x, h0, Wx, Wh) + bias_arrays + (() if c0 is None else (c0,)):
        if type(a) is not np.ndarray or (a.dtype is not dtype and a.dtype != dtype):
            return None
        flags = a.flags
        if not (flags.c_contiguous and flags.writeable):
            return None
    if h0.ndim != 2 or D < 1:
        return None
    H = h0.shape[1]
    G = gates * H
    if (H < 1 or h0.shape != (N, H) or Wx.shape != (D, G) or Wh.shape != (H, G)
            or (c0 is not None and c0.shape != (N, H))):
        return None
    for b in bias_arrays:
        if b.shape != (G,):
            return None
    return H


def _validate_cell(x, h0, Wx, Wh, biases, gates, c0, x_letters,
                   h_name="h0", c_name="c0"):
    ready = _kernel_ready_cell(x, h0, Wx, Wh, biases, gates, c0)
    if ready is not None:
        return ready
    N, T, D = x.shape
    G = GATE_LETTERS[gates]
    h0 = as_float_array(h_name, h0)
    check_ndim(h_name, h0, 2, "(N, H)")
    H = h0.shape[1]
    if H < 1:
        raise ValueError(f"{h_name} must have shape (N, H) with H >= 1 hidden units, "
                         f"got {h0.shape}")
    if D < 1:
        raise ValueError(f"x must have shape {x_letters} with D >= 1 input features, "
                         f"got D = 0")
    check_shape(h_name, h0, (N, H), "(N, H)")
    Wx = as_float_array("Wx", Wx)
    check_shape("Wx", Wx, (D, gates * H), f"(D, {G})")
    Wh = as_float_array("Wh", Wh)
    check_shape("Wh", Wh, (H, gates * H), f"(H, {G})")
    named = [("x", x), (h_name, h0), ("Wx", Wx), ("Wh", Wh)]
    for name, b in biases:
        b = as_float_array(name, b)
        check_shape(name, b, (gates * H,), f"({G},)")
        named.append((name, b))
    if c0 is not None:
        c0 = as_float_array(c_name, c0)
        check_shape(c_name, c0, (N, H), "(N, H)")
        named.append((c_name, c0))
    check_same_dtype(named)
    x, h0, Wx, Wh = contiguous(x, h0, Wx, Wh)
    biases = contiguous(*(b for name, b in named[4:4 + len(biases)]))
    if c0 is not None:
        c0 = kernel_ready(c0)
    return (x, h0, c0, Wx, Wh, biases), (N, T, D, H)


def validate_lengths(lengths, N, T):
    """None, or lengths as an int64 (N,) array of values in 0..T."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array of shape (N,) = ({N},), "
                        f"got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"lengths must have shape (N,) = ({N},), got {arr.shape}")
    if N and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths must lie in 0..T = 0..{T}, got values from "
                         f"{arr.min()} to {arr.max()}")
    return arr.astype(np.int64)


def check_cache(cache, cache_type, producer):
    if not isinstance(cache, cache_type):
        raise TypeError(f"cache must be the cache returned by fastrnn.{producer}, "
                        f"got {type(cache).__name__}")


def validate_upstream(name, grad, expected, letters, dtype):
    """An upstream gradient: float array of ``expected`` shape and the forward's dtype."""
    grad = as_float_array(name, grad)
    check_shape(name, grad, expected, letters)
    if grad.dtype != dtype:
        raise TypeError(f"{name} has dtype {grad.dtype} but the forward pass ran in {dtype}; "
                        f"pass {name} as {dtype}")
    if _check_finite:
        check_finite(name, grad)
    return kernel_ready(grad)


# ---------------------------------------------------------------- the opt-in finite check

_check_finite = False


def set_check_finite(enabled):
    """Turn the finite check on or off for every later call (process-wide; off by
    default); returns the previous setting. When on, every forward and backward first
    checks its arrays (inputs, initial states, weights, upstream gradients) and raises
    ValueError naming the first that holds NaN or Inf and the index of the first such
    element; and a forward whose outputs become non-finite although its inputs were finite
    (an overflow) raises FloatingPointError saying at which (n, t). When off, it costs one
    flag test per call."""
    global _check_finite
    previous, _check_finite = _check_finite, bool(enabled)
    return previous


def get_check_finite():
    """Whether the finite check (set_check_finite) is on."""
    return _check_finite


def check_finite(name, arr):
    """ValueError naming ``name`` and the first index where arr is NaN or Inf."""
    if not np.isfinite(arr).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} holds {arr[index]} at index {index} (the finite check is "
                         f"on: fastrnn.set_check_finite(False) turns it off)")


def _inputs_finite(arrays, biases, h_name, c_name):
    """The validated (x, h0, c0, Wx, Wh, bias arrays) of a forward, checked."""
    x, h0, c0, Wx, Wh, bias_arrays = arrays
    named = [("x", x), (h_name, h0), ("Wx", Wx), ("Wh", Wh)]
    named += [(name, b) for (name, _), b in zip(biases, bias_arrays)]
    if c0 is not None:
        named.append((c_name, c0))
    for name, a in named:
        check_finite(name, a)


def outputs_finite(function):
    """Decorator for the public forwards: with the finite check on, FloatingPointError if a
    result array holds NaN or Inf, naming the first (n, t) (sequences, (N, T, H)) or n
    (states, (N, H)). The inputs were checked finite before the kernels ran, so this is an
    overflow inside the recurrence."""
    @functools.wraps(function)
    def checked(*args, **kwargs):
        result = function(*args, **kwargs)
        if _check_finite:
            flat = []
            for item in result if isinstance(result, tuple) else (result,):
                flat.extend(item if isinstance(item, tuple) else (item,))
            for k, a in enumerate(a for a in flat if isinstance(a, np.ndarray)):
                bad = ~np.isfinite(a)
                if bad.any():
                    first = np.argwhere(bad)[0]
                    where = (f"(n, t) = {(int(first[0]), int(first[1]))}" if a.ndim == 3
                             else f"sequence n = {int(first[0])}")
                    raise FloatingPointError(
                        f"{function.__name__}: the state became non-finite at {where} "
                        f"(output {k}, shape {a.shape}), from finite inputs")
        return result
    return checked
