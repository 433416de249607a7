"""Gradient clipping against PyTorch's clip_grad_norm_ / clip_grad_value_."""

import numpy as np
import pytest

import fastrnn


def _grads(dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(5)
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in ((3, 8), (4, 8), (8,))]


def _torch_clip_norm(grads, max_norm):
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
              for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.copy())
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad.numpy() for p in params], float(total)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3, 0.0])
def test_clip_grad_norm_matches_torch(dtype, max_norm):
    grads = _grads(dtype, scale=2.0)
    before = [g.copy() for g in grads]
    want, want_total = _torch_clip_norm(grads, max_norm)
    got, total = fastrnn.clip_grad_norm(grads, max_norm)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert total == pytest.approx(want_total, rel=rtol)
    for g, w, b, original in zip(got, want, before, grads):
        assert g.dtype == dtype and g is not original
        np.testing.assert_allclose(g, w, rtol=rtol, atol=0)
        np.testing.assert_array_equal(original, b)  # inputs untouched


def test_clip_grad_norm_in_place_and_dicts():
    grads = {"dWx": _grads()[0], "db": _grads()[2]}
    arrays = dict(grads)
    clipped, total = fastrnn.clip_grad_norm(grads, 1.0, inplace=True)
    assert list(clipped) == ["dWx", "db"] and clipped["dWx"] is arrays["dWx"]
    assert np.sqrt(sum((g ** 2).sum() for g in clipped.values())) == pytest.approx(1.0, 1e-5)
    assert total > 1.0
    small = [np.full(3, 0.1)]
    (same,), _ = fastrnn.clip_grad_norm(small, 10.0)
    np.testing.assert_array_equal(same, small[0])  # under the norm: left as it is


def test_clip_grad_norm_nonfinite():
    grads = _grads()
    grads[1][2, 3] = np.nan
    with pytest.raises(FloatingPointError, match=r"grads\[1\] holds NaN or Inf"):
        fastrnn.clip_grad_norm(grads, 1.0)
    clipped, total = fastrnn.clip_grad_norm(grads, 1.0, error_if_nonfinite=False)
    want, want_total = _torch_clip_norm(grads, 1.0)
    assert np.isnan(total) and np.isnan(want_total)
    for g, w in zip(clipped, want):
        np.testing.assert_array_equal(g, w)
    grads[1][2, 3] = np.inf
    clipped, total = fastrnn.clip_grad_norm(grads, 1.0, error_if_nonfinite=False)
    want, _ = _torch_clip_norm(grads, 1.0)
    assert total == np.inf
    for g, w in zip(clipped, want):
        np.testing.assert_array_equal(g, w)


def test_clip_grad_norm_empty_and_bad_input():
    assert fastrnn.clip_grad_norm([], 1.0) == ([], 0.0)
    with pytest.raises(TypeError, match=r"grads\[1\] must be a float32 or float64 ndarray"):
        fastrnn.clip_grad_norm([np.zeros(2), [1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match="grads must be a list, tuple or dict"):
        fastrnn.clip_grad_norm(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="max_norm must be a finite number >= 0, got -1.0"):
        fastrnn.clip_grad_norm([np.zeros(2)], -1)
    read_only = np.zeros(2)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[0\] is read-only"):
        fastrnn.clip_grad_norm([read_only], 1.0, inplace=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    grads = _grads(dtype, scale=3.0)
    grads[0][0, 0] = np.nan
    before = [g.copy() for g in grads]
    got = fastrnn.clip_grad_value(tuple(grads), 1.5)
    assert isinstance(got, tuple)
    for g, b, original in zip(got, before, grads):
        param = torch.nn.Parameter(torch.zeros(b.shape, dtype=torch.from_numpy(b).dtype))
        param.grad = torch.from_numpy(b.copy())
        torch.nn.utils.clip_grad_value_([param], 1.5)
        want = param.grad.numpy()
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, want)
        np.testing.assert_array_equal(original, b)
    inplace = fastrnn.clip_grad_value(grads, 1.5, inplace=True)
    assert inplace[0] is grads[0] and np.nanmax(np.abs(grads[0])) <= 1.5


# ------------------------------------------------------------------ the finite check

@pytest.fixture
def finite_check():
    previous = fastrnn.set_check_finite(True)
    yield
    fastrnn.set_check_finite(previous)


def _lstm_inputs(dtype=np.float64):
    rng = np.random.default_rng(1)
    N, T, D, H = 3, 5, 4, 6
    return [rng.standard_normal(s).astype(dtype) * 0.3
            for s in ((N, T, D), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,))]


def test_finite_check_is_off_by_default_and_nan_propagates():
    assert fastrnn.get_check_finite() is False
    x, h0, Wx, Wh, b = _lstm_inputs()
    x[1, 2, 0] = np.nan
    h, _ = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
    assert np.isnan(h[1, 2:]).all() and np.isfinite(h[[0, 2]]).all()


@pytest.mark.parametrize("name, index", [("x", (1, 2, 0)), ("h0", (2, 5)), ("Wh", (0, 3)),
                                         ("b", (7,))])
def test_finite_check_names_the_input_and_the_index(finite_check, name, index):
    arrays = dict(zip(("x", "h0", "Wx", "Wh", "b"), _lstm_inputs()))
    arrays[name][index] = np.inf
    with pytest.raises(ValueError, match=rf"{name} holds inf at index \({', '.join(map(str, index))},?\)"):
        fastrnn.lstm_forward(*arrays.values())
    with pytest.raises(ValueError, match=rf"{name} holds inf"):
        fastrnn.lstm_inference(*arrays.values())


def test_finite_check_on_steps_other_cells_and_upstream_gradients(finite_check):
    x, h0, Wx, Wh, b = _lstm_inputs()
    c0 = np.zeros_like(h0)
    c0[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"prev_c holds nan at index \(0, 1\)"):
        fastrnn.lstm_step_forward(x[:, 0], h0, c0, Wx, Wh, b)
    rng = np.random.default_rng(2)
    gru = [x, h0, rng.standard_normal((4, 18)), rng.standard_normal((6, 18)), np.zeros(18),
           np.zeros(18)]
    gru[5][4] = -np.inf
    with pytest.raises(ValueError, match=r"bh holds -inf at index \(4,\)"):
        fastrnn.gru_forward(*gru)
    h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
    dh = np.ones_like(h)
    dh[2, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"dh holds nan at index \(2, 4, 5\)"):
        fastrnn.lstm_backward(dh, cache)


def test_finite_check_says_where_the_state_overflowed(finite_check):
    """A relu RNN with big recurrent weights overflows from finite inputs."""
    N, T, D, H = 2, 60, 3, 4
    x = np.ones((N, T, D))
    x[1] *= 0.0  # the second sequence stays at zero
    h0 = np.zeros((N, H))
    Wx, Wh, b = np.full((D, H), 1.0), np.full((H, H), 1e10), np.zeros(H)
    fastrnn.set_check_finite(False)
    h, _ = fastrnn.rnn_forward(x, h0, Wx, Wh, b, nonlinearity="relu")
    fastrnn.set_check_finite(True)
    t = int(np.argmax(~np.isfinite(h[0]).all(axis=1)))
    assert 0 < t < T and np.isfinite(h[1]).all()
    with pytest.raises(FloatingPointError, match=rf"rnn_forward: the state became non-finite "
                                                 rf"at \(n, t\) = \(0, {t}\)"):
        fastrnn.rnn_forward(x, h0, Wx, Wh, b, nonlinearity="relu")
