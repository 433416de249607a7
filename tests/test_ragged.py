"""Ragged batches (``lengths=``) and the GRU step functions, against the reference (which
runs each sequence alone at its own length) and against finite differences."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import reference
from cells import CELLS, GRU
from helpers import (assert_close, assert_gradients, make_inputs, numerical_gradient,
                     upstream)
from test_kernels import DTYPES, assert_all_close, run_all

# Unsorted, with 0 and the full length T.
RAGGED = [
    ((5, 7, 3, 4), [3, 0, 7, 1, 7]),
    ((1, 4, 2, 3), [0]),
    ((1, 4, 2, 3), [2]),
    ((4, 5, 6, 5), [5, 5, 5, 5]),
    ((3, 6, 2, 2), [0, 0, 0]),
    ((17, 13, 5, 37), [13, 2, 0, 9, 13, 1, 4, 12, 7, 0, 3, 13, 6, 11, 5, 8, 10]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape,lengths", RAGGED, ids=[str(r[1]) for r in RAGGED])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_ragged_matches_each_sequence_alone(cell, shape, lengths, dtype):
    lengths = np.array(lengths)
    fast, ref, ref32 = run_all(cell, *shape, dtype, lengths=lengths)
    assert_all_close(fast, ref, ref32, dtype)
    N, T, D, H = shape
    padding = np.arange(T)[None, :] >= lengths[:, None]
    assert not fast["h"][padding].any(), "h is not exactly 0 past a length"
    assert not fast["dx"][padding].any(), "dx is not exactly 0 past a length"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(CELLS), data=st.data(), N=st.integers(1, 7), T=st.integers(1, 8),
       D=st.integers(1, 6), H=st.integers(1, 6), dtype=st.sampled_from(DTYPES))
def test_random_ragged_batches(cell, data, N, T, D, H, dtype):
    lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N)))
    assert_all_close(*run_all(cell, N, T, D, H, dtype, lengths=lengths), dtype)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_ragged_gradients_match_finite_differences(cell):
    N, T, D, H = 4, 5, 3, 2
    lengths = np.array([2, 5, 0, 3])
    p = cell.params(*make_inputs(N, T, D, H, cell.gates, seed=7))
    dh = upstream((N, T, H), seed=8)
    dstates = tuple(upstream((N, H), seed=9 + k) for k in range(len(cell.state_names)))
    _, _, cache = cell.forward(fastrnn, p, lengths)
    grads = cell.backward(fastrnn, dh, dstates, cache)
    for name in cell.param_names:
        def loss_of(value, name=name):
            return cell.loss(fastrnn, {**p, name: value}, dh, dstates, lengths)
        assert_gradients(name, grads[name], numerical_gradient(loss_of, p[name]))


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_ragged_inference_matches_forward(cell):
    N, T, D, H = 6, 70, 4, 9  # more than one inference chunk
    lengths = np.array([70, 0, 33, 1, 64, 32])
    p = cell.params(*make_inputs(N, T, D, H, cell.gates))
    h, states, _ = cell.forward(fastrnn, p, lengths)
    h_inf, states_inf = cell.inference(fastrnn, p, lengths)
    assert_close("h", h_inf, h, np.float64)
    for name, s, s_inf in zip(cell.state_names, states, states_inf):
        assert_close(name, s_inf, s, np.float64)


def test_ragged_dh_past_length_is_ignored():
    N, T, D, H = 3, 6, 2, 4
    lengths = np.array([6, 2, 4])
    x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, 4)
    _, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b, c0=c0, lengths=lengths)
    dh = upstream((N, T, H))
    noisy = dh.copy()
    noisy[np.arange(T)[None, :] >= lengths[:, None]] = 1e6
    for clean, dirty in zip(fastrnn.lstm_backward(dh, cache), fastrnn.lstm_backward(noisy, cache)):
        np.testing.assert_array_equal(clean, dirty)
    np.testing.assert_array_equal(cache.lengths, lengths)


@pytest.mark.parametrize("bad,exc,match", [
    (np.array([1, 2]), ValueError, r"lengths must have shape \(N,\) = \(3,\), got \(2,\)"),
    (np.array([[1, 2, 3]]), ValueError, r"lengths must have shape \(N,\)"),
    (np.array([1, -1, 2]), ValueError, r"lengths must lie in 0..T = 0..4, got values from -1"),
    (np.array([1, 5, 2]), ValueError, r"lengths must lie in 0..T = 0..4, got values from 1 to 5"),
    (np.array([1.0, 2.0, 3.0]), TypeError, r"lengths must be an integer array .* got dtype float64"),
    (np.array([True, False, True]), TypeError, r"lengths must be an integer array .* got dtype bool"),
])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_bad_lengths(cell, bad, exc, match):
    p = cell.params(*make_inputs(3, 4, 2, 5, cell.gates))
    with pytest.raises(exc, match=match):
        cell.forward(fastrnn, p, bad)
    with pytest.raises(exc, match=match):
        cell.inference(fastrnn, p, bad)


# ------------------------------------------------------------------------ GRU steps


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (13, 17, 37), (2, 9, 70), (1, 64, 256)],
                         ids=str)
def test_gru_step_matches_reference(shape, dtype):
    """Weights packed, and read in place (2, 9, 70; 1, 64, 256) on every target."""
    N, D, H = shape
    x, h0, _, Wx, Wh, b = make_inputs(N, 1, D, H, 3, dtype)
    p = GRU.params(x[:, 0], h0, None, Wx, Wh, b)
    dnext_h = upstream((N, H), dtype, 1)
    next_h, cache = fastrnn.gru_step_forward(*p.values())
    grads = fastrnn.gru_step_backward(dnext_h, cache)
    ref_h, ref_cache = reference.gru_step_forward(*(a.astype(np.float64) for a in p.values()))
    ref_grads = reference.gru_step_backward(dnext_h.astype(np.float64), ref_cache)
    assert_close("next_h", next_h, ref_h, dtype)
    for name, g, rg in zip(["dx", "dprev_h", "dWx", "dWh", "dbx", "dbh"], grads, ref_grads):
        assert_close(name, g, rg, dtype)


def test_gru_step_loop_equals_sequence():
    N, T, D, H = 4, 6, 5, 7
    p = GRU.params(*make_inputs(N, T, D, H, 3))
    x, h0, Wx, Wh, bx, bh = p.values()
    dh = upstream((N, T, H))
    h_seq, cache = fastrnn.gru_forward(x, h0, Wx, Wh, bx, bh)
    dx, dh0, *dweights = fastrnn.gru_backward(dh, cache)

    h, caches, hs = h0, [], []
    for t in range(T):
        h, step_cache = fastrnn.gru_step_forward(x[:, t], h, Wx, Wh, bx, bh)
        hs.append(h)
        caches.append(step_cache)
    assert_close("h", np.stack(hs, axis=1), h_seq, np.float64)

    sums = [0, 0, 0, 0]
    dx_steps = [None] * T
    dprev_h = np.zeros((N, H))
    for t in reversed(range(T)):
        dx_t, dprev_h, *dw = fastrnn.gru_step_backward(dh[:, t] + dprev_h, caches[t])
        dx_steps[t] = dx_t
        sums = [s + d for s, d in zip(sums, dw)]
    assert_close("dx", np.stack(dx_steps, axis=1), dx, np.float64)
    assert_close("dh0", dprev_h, dh0, np.float64)
    for name, got, want in zip(["dWx", "dWh", "dbx", "dbh"], sums, dweights):
        assert_close(name, got, want, np.float64)


def test_bad_gru_inputs_name_the_argument():
    x, h0, _, Wx, Wh, b = make_inputs(3, 4, 5, 6, 3)
    with pytest.raises(ValueError, match=r"bh must have shape \(3H,\) = \(18,\), got \(17,\)"):
        fastrnn.gru_forward(x, h0, Wx, Wh, b, b[:-1])
    with pytest.raises(ValueError, match=r"Wx must have shape \(D, 3H\) = \(5, 18\)"):
        fastrnn.gru_forward(x, h0, Wx[:, :-1], Wh, b, b)
    with pytest.raises(TypeError, match="bh has dtype float32"):
        fastrnn.gru_forward(x, h0, Wx, Wh, b, b.astype(np.float32))
    _, cache = fastrnn.gru_forward(x, h0, Wx, Wh, b, b)
    with pytest.raises(ValueError, match=r"dh must have shape \(N, T, H\)"):
        fastrnn.gru_backward(np.zeros((3, 4, 5)), cache)
    with pytest.raises(TypeError, match="gru_forward"):
        fastrnn.gru_backward(np.zeros((3, 4, 6)), ("not", "a cache"))
    with pytest.raises(ValueError, match=r"prev_h must have shape \(N, H\)"):
        fastrnn.gru_step_forward(x[:, 0], h0[:2], Wx, Wh, b, b)
