"""Shared test helpers: random inputs, tolerance checks that name the tensor, numerical gradients."""

import numpy as np

# Relative tolerances from the brief: float64 kernels vs the float64 reference, float32 kernels
# vs the float64 reference run on the same float32-representable inputs.
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


def make_inputs(N, T, D, H, gates, dtype=np.float64, seed=0, scale=0.5):
    """Random (x, h0, c0, Wx, Wh, b) for a cell with ``gates`` gate blocks (4 LSTM, 1 RNN)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((N, H))
    c0 = rng.standard_normal((N, H))
    Wx = rng.standard_normal((D, gates * H)) * scale / np.sqrt(D)
    Wh = rng.standard_normal((H, gates * H)) * scale / np.sqrt(H)
    b = rng.standard_normal(gates * H) * scale
    return tuple(a.astype(dtype) for a in (x, h0, c0, Wx, Wh, b))


def upstream(shape, dtype=np.float64, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def relative_error(actual, expected):
    """Largest entry error relative to expected's largest entry.

    Entry-wise relative error is meaningless where an entry is ~0 after cancellation, so the
    error is measured against the tensor's magnitude.
    """
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    diff = np.abs(np.asarray(actual, np.float64) - expected)
    return float(np.max(diff, initial=0.0)) / scale, scale


def assert_close(name, actual, expected, dtype, float32_baseline=None):
    """actual within TOLERANCE[dtype] of expected (see relative_error); the message names the
    tensor.

    float32_baseline: the same tensor computed by the plain NumPy reference in float32, or a
    list of such (runs on inputs nudged by an ulp). A gradient that is a sum of terms
    cancelling to a small value is ill-conditioned: no float32 algorithm gets it to 1e-5
    relative. There the bound is 3x the reference's largest float32 error instead, so
    fastrnn must still be as accurate as straightforward float32 NumPy.
    """
    tol = TOLERANCE[np.dtype(dtype).type]
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != {np.dtype(dtype)}"
    err, scale = relative_error(actual, expected)
    if float32_baseline is not None:
        baselines = float32_baseline if isinstance(float32_baseline, list) else [float32_baseline]
        tol = max(tol, 3 * max(relative_error(b, expected)[0] for b in baselines))
    assert err <= tol, f"{name}: max error {err:.3g} relative to max |{name}| = {scale:.3g} exceeds {tol:.3g}"


def numerical_gradient(f, x, h=1e-6):
    """Centred finite-difference gradient of scalar f at x (float64), evaluated at f's argument.

    f is called with a fresh perturbed copy each time; it must use that argument (never rely on
    in-place mutation of a captured array).
    """
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus = x.copy()
        plus[idx] += h
        minus = x.copy()
        minus[idx] -= h
        grad[idx] = (f(plus) - f(minus)) / (2 * h)
    return grad


def assert_gradients(name, analytic, numeric, tol=1e-6):
    """Finite differences are good to ~1e-9 with h = 1e-6 in float64; 1e-6 relative catches
    any wrong term (a dropped or mis-signed term is O(1) relative)."""
    scale = max(float(np.max(np.abs(numeric), initial=0.0)), 1e-8)
    err = float(np.max(np.abs(analytic - numeric), initial=0.0)) / scale
    assert err <= tol, f"gradient {name}: max error {err:.3g} relative to {scale:.3g}"


def rel_error(x, y):
    """cs231n's: max relative error."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """cs231n's gradient_check.eval_numerical_gradient_array: centred differences,
    perturbing x in place (so f must read the array's current values)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f(x).copy()
        x[ix] = oldval - h
        neg = f(x).copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad
