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
