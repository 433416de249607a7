"""Accuracy of the kernels' vectorisable gate functions against NumPy's (libm) ones."""

import numpy as np
import pytest
from numba import njit

from fastrnn.kernels._math import sigmoid, tanh


@njit(cache=True)
def apply(fn_id, x, out):
    for i in range(x.size):
        out[i] = tanh(x[i]) if fn_id == 0 else sigmoid(x[i])


GRID = np.concatenate([np.linspace(-60, 60, 1_200_001), np.geomspace(1e-300, 2, 100_001),
                       -np.geomspace(1e-300, 2, 100_001), [0.0, -0.0, np.inf, -np.inf]])


def run(fn_id, dtype):
    x = GRID.astype(dtype)
    out = np.empty_like(x)
    apply(fn_id, x, out)
    exact = np.tanh(x.astype(np.float64)) if fn_id == 0 else 1 / (1 + np.exp(-x.astype(np.float64)))
    return x, out.astype(np.float64), exact


def test_float64_tanh_relative_error():
    x, got, exact = run(0, np.float64)
    rel = np.abs(got - exact) / np.maximum(np.abs(exact), 1e-300)
    assert rel.max() < 5e-14, f"max relative error {rel.max():.2e} at x = {x[rel.argmax()]}"
    assert np.array_equal(np.sign(got), np.sign(exact))


def test_float64_sigmoid_error():
    x, got, exact = run(1, np.float64)
    inside = x > -40  # below, exp(-x) is clamped: tiny absolute error, not relative
    rel = np.abs(got - exact)[inside] / exact[inside]
    assert rel.max() < 5e-14, f"max relative error {rel.max():.2e}"
    assert np.abs(got - exact)[~inside].max() < 5e-18


@pytest.mark.parametrize("fn_id,bound", [(0, 5e-7), (1, 3e-7)], ids=["tanh", "sigmoid"])
def test_float32_absolute_error(fn_id, bound):
    x, got, exact = run(fn_id, np.float32)
    err = np.abs(got - exact)
    assert err.max() < bound, f"max abs error {err.max():.2e} at x = {x[err.argmax()]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn_id", [0, 1], ids=["tanh", "sigmoid"])
def test_nan_stays_nan(fn_id, dtype):
    out = np.empty(1, dtype)
    apply(fn_id, np.array([np.nan], dtype), out)
    assert np.isnan(out[0])


def test_float32_sigmoid_relative_error():
    """Small gates keep their relative accuracy (a forget gate of 0.01 multiplies dc): the
    old 0.5 + 0.5 tanh(x / 2) was 1.5e-5 off relatively there, from cancellation."""
    x, got, exact = run(1, np.float32)
    normal = np.isfinite(x) & (exact > np.finfo(np.float32).tiny)
    rel = np.abs(got - exact)[normal] / exact[normal]
    assert rel.max() < 3e-7, f"max relative error {rel.max():.2e} at x = {x[normal][rel.argmax()]}"


# Issue 14's grid: [-30, 30] every 3e-4, and +-[1e-12, 1] geometrically.
ULP_GRID = np.concatenate([np.arange(-30, 30, 3e-4), np.geomspace(1e-12, 1, 20_000),
                           -np.geomspace(1e-12, 1, 20_000)])
MAX_ULP = {np.float64: 2.0, np.float32: 3.0}


def _gates_through_the_api(x):
    """sigmoid(x) and tanh(x) as lstm_step_forward computes them: with zero weights and
    inputs the pre-activations are the bias, and the cache holds the activated gates
    i, f, o (sigmoid) and g (tanh)."""
    import fastrnn
    sig, th = np.empty_like(x), np.empty_like(x)
    for lo in range(0, x.size, 2048):
        chunk = x[lo:lo + 2048]
        H = chunk.size
        zeros = np.zeros((1, H), x.dtype)
        _, _, cache = fastrnn.lstm_step_forward(
            np.zeros((1, 1), x.dtype), zeros, zeros, np.zeros((1, 4 * H), x.dtype),
            np.zeros((H, 4 * H), x.dtype), np.tile(chunk, 4))
        gates = cache.gates.reshape(4, H)
        sig[lo:lo + H], th[lo:lo + H] = gates[1], gates[3]
    return sig, th


def ulp_error(got, x, exact_fn):
    """|got - exact| in units of the last place of the exact value rounded to got's dtype,
    exact computed in long double."""
    exact = exact_fn(x.astype(np.longdouble))
    ulp = np.abs(np.spacing(exact.astype(got.dtype))).astype(np.longdouble)
    return (np.abs(got.astype(np.longdouble) - exact) / ulp).astype(np.float64)


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps / 100,
                    reason="long double no more precise than float64 here")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gates_through_the_api_within_a_few_ulp(dtype):
    x = ULP_GRID.astype(dtype)
    sig, th = _gates_through_the_api(x)
    for name, got, exact_fn in (("sigmoid", sig, lambda v: 1 / (1 + np.exp(-v))),
                                ("tanh", th, np.tanh)):
        err = ulp_error(got, x, exact_fn)
        worst = int(np.argmax(err))
        assert err[worst] <= MAX_ULP[dtype], (
            f"{name} {np.dtype(dtype).name}: {err[worst]:.2f} ulp at x = {x[worst]!r}")
