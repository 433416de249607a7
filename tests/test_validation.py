"""Bad input gives a clear ValueError/TypeError naming the argument; inputs are never mutated;
any memory layout works; empty batches and sequences are defined."""

import numpy as np
import pytest

import fastrnn
import fastrnn._validate as v
from cells import CELLS
from helpers import eval_numerical_gradient_array, make_inputs, upstream

N, T, D, H = 3, 4, 5, 6


def lstm_args(dtype=np.float64):
    x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, 4, dtype)
    return dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)


def rnn_args(dtype=np.float64):
    x, h0, _, Wx, Wh, b = make_inputs(N, T, D, H, 1, dtype)
    return dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)


def gru_args(dtype=np.float64):
    """GRU arguments under the same names, b standing for bx (bh is always valid)."""
    x, h0, _, Wx, Wh, b = make_inputs(N, T, D, H, 3, dtype)
    return dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)


def call(fn, args, **kw):
    if fn in (fastrnn.gru_forward, fastrnn.gru_inference):
        bh = np.zeros(args["Wh"].shape[1:], args["Wh"].dtype)
        return fn(args["x"], args["h0"], args["Wx"], args["Wh"], args["b"], bh, **kw)
    return fn(args["x"], args["h0"], args["Wx"], args["Wh"], args["b"], **kw)


f32 = np.float32
# (argument, replacement builder, exception, words the message must contain)
BAD_SEQUENCE_INPUTS = [
    ("x", lambda a: a["x"][0], ValueError, ["x", "(N, T, D)"]),
    ("x", lambda a: a["x"][..., None], ValueError, ["x", "(N, T, D)"]),
    ("x", lambda a: a["x"].astype(np.int64), TypeError, ["x", "int64"]),
    ("x", lambda a: a["x"] > 0, TypeError, ["x", "bool"]),
    ("x", lambda a: a["x"].astype(np.complex128), TypeError, ["x", "complex128"]),
    ("x", lambda a: a["x"].astype(np.float16), TypeError, ["x", "float16"]),
    ("x", lambda a: a["x"].astype(object), TypeError, ["x", "object"]),
    ("x", lambda a: None, TypeError, ["x"]),
    ("x", lambda a: a["x"][:, :, :0], ValueError, ["x", "D >= 1"]),
    ("x", lambda a: a["x"][:, :, :-1], ValueError, ["Wx", "(D, "]),
    ("h0", lambda a: a["h0"][0], ValueError, ["h0", "(N, H)"]),
    ("h0", lambda a: a["h0"][:-1], ValueError, ["h0", "(N, H)"]),
    ("h0", lambda a: a["h0"][:, :0], ValueError, ["h0", "H >= 1"]),
    ("h0", lambda a: a["h0"].astype(f32), TypeError, ["h0", "float32", "float64"]),
    ("h0", lambda a: a["h0"].astype(np.int32), TypeError, ["h0", "int32"]),
    ("Wx", lambda a: a["Wx"][:-1], ValueError, ["Wx", "(D, "]),
    ("Wx", lambda a: a["Wx"][:, :-1], ValueError, ["Wx", "(D, "]),
    ("Wx", lambda a: a["Wx"].T, ValueError, ["Wx", "(D, "]),
    ("Wx", lambda a: a["Wx"].astype(f32), TypeError, ["Wx", "float32"]),
    ("Wh", lambda a: a["Wh"][:-1], ValueError, ["Wh", "(H, "]),
    ("Wh", lambda a: a["Wh"][:, :-1], ValueError, ["Wh", "(H, "]),
    ("Wh", lambda a: a["Wh"][None], ValueError, ["Wh", "2-D"]),
    ("Wh", lambda a: a["Wh"].astype(f32), TypeError, ["Wh", "float32"]),
    ("b", lambda a: a["b"][:-1], ValueError, ["b", "H,)"]),
    ("b", lambda a: a["b"][None], ValueError, ["b", "1-D"]),
    ("b", lambda a: a["b"].astype(f32), TypeError, ["b", "float32"]),
    ("b", lambda a: a["b"].astype(np.int64), TypeError, ["b", "int64"]),
]


def _ids(case):
    return case[0]


@pytest.mark.parametrize("case", BAD_SEQUENCE_INPUTS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_SEQUENCE_INPUTS)])
@pytest.mark.parametrize("fn,make", [
    (fastrnn.lstm_forward, lstm_args), (fastrnn.lstm_inference, lstm_args),
    (fastrnn.rnn_forward, rnn_args), (fastrnn.rnn_inference, rnn_args),
    (fastrnn.gru_forward, gru_args), (fastrnn.gru_inference, gru_args)],
    ids=["lstm_forward", "lstm_inference", "rnn_forward", "rnn_inference", "gru_forward",
         "gru_inference"])
def test_bad_sequence_input_raises_naming_argument(fn, make, case):
    name, build, exc, words = case
    args = make()
    args[name] = build(args)
    if make is gru_args:  # the GRU calls its first bias bx
        words = ["bx" if w == "b" else w for w in words]
    with pytest.raises(exc) as info:
        call(fn, args)
    for word in words:
        assert word in str(info.value), f"message {str(info.value)!r} lacks {word!r}"


def test_bad_c0_raises_naming_c0():
    args = lstm_args()
    with pytest.raises(ValueError, match=r"c0 must have shape \(N, H\)"):
        call(fastrnn.lstm_forward, args, c0=np.zeros((N, H + 1)))
    with pytest.raises(TypeError, match="c0 has dtype float32"):
        call(fastrnn.lstm_forward, args, c0=np.zeros((N, H), np.float32))
    with pytest.raises(TypeError, match="c0 must be a float32 or float64 array, got dtype int64"):
        call(fastrnn.lstm_inference, args, c0=np.zeros((N, H), np.int64))


@pytest.mark.parametrize("fn", [fastrnn.rnn_forward, fastrnn.rnn_step_forward, fastrnn.rnn_inference])
def test_bad_nonlinearity(fn):
    args = rnn_args()
    if fn is fastrnn.rnn_step_forward:
        args["x"] = args["x"][:, 0]
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        call(fn, args, nonlinearity="sigmoid")


def test_bad_step_inputs():
    a = lstm_args()
    x = a["x"][:, 0]
    c = np.zeros((N, H))
    with pytest.raises(ValueError, match=r"x must be 2-D with shape \(N, D\)"):
        fastrnn.lstm_step_forward(a["x"], a["h0"], c, a["Wx"], a["Wh"], a["b"])
    with pytest.raises(ValueError, match=r"prev_h must have shape \(N, H\)"):
        fastrnn.lstm_step_forward(x, a["h0"][:1], c, a["Wx"], a["Wh"], a["b"])
    with pytest.raises(ValueError, match=r"prev_c must have shape \(N, H\)"):
        fastrnn.lstm_step_forward(x, a["h0"], c[:, :1], a["Wx"], a["Wh"], a["b"])
    with pytest.raises(TypeError, match="prev_c"):
        fastrnn.lstm_step_forward(x, a["h0"], None, a["Wx"], a["Wh"], a["b"])
    r = rnn_args()
    with pytest.raises(ValueError, match=r"Wh must have shape \(H, H\)"):
        fastrnn.rnn_step_forward(x, r["h0"], r["Wx"], r["Wh"][:, :-1], r["b"])


def test_bad_upstream_gradients():
    a = lstm_args()
    _, cache = call(fastrnn.lstm_forward, a)
    dh = upstream((N, T, H))
    with pytest.raises(ValueError, match=r"dh must have shape \(N, T, H\) = \(3, 4, 6\), got \(3, 3, 6\)"):
        fastrnn.lstm_backward(dh[:, :-1], cache)
    with pytest.raises(ValueError, match=r"dh must be 3-D"):
        fastrnn.lstm_backward(dh[0], cache)
    with pytest.raises(TypeError, match="dh has dtype float32 but the forward pass ran in float64"):
        fastrnn.lstm_backward(dh.astype(np.float32), cache)
    with pytest.raises(TypeError, match="dh must be a float32 or float64 array, got dtype int64"):
        fastrnn.lstm_backward(dh.astype(np.int64), cache)
    with pytest.raises(ValueError, match=r"dh_last must have shape \(N, H\)"):
        fastrnn.lstm_backward(dh, cache, dh_last=np.zeros((N, H + 1)))
    with pytest.raises(ValueError, match=r"dc_last must have shape \(N, H\)"):
        fastrnn.lstm_backward(dh, cache, dc_last=np.zeros((N + 1, H)))
    with pytest.raises(TypeError, match="cache must be the cache returned by fastrnn.lstm_forward, got tuple"):
        fastrnn.lstm_backward(dh, (1, 2))
    _, rnn_cache = call(fastrnn.rnn_forward, rnn_args())
    with pytest.raises(TypeError, match="cache must be the cache returned by fastrnn.lstm_forward, got RNNCache"):
        fastrnn.lstm_backward(dh, rnn_cache)
    with pytest.raises(ValueError, match=r"dh_last must be 2-D with shape \(N, H\)"):
        fastrnn.rnn_backward(dh, rnn_cache, dh_last=np.zeros(H))
    x = a["x"][:, 0]
    _, _, step_cache = fastrnn.lstm_step_forward(x, a["h0"], np.zeros((N, H)), a["Wx"], a["Wh"], a["b"])
    with pytest.raises(TypeError, match="lstm_step_backward"):
        fastrnn.lstm_backward(dh, step_cache)
    with pytest.raises(TypeError, match="lstm_backward"):
        fastrnn.lstm_step_backward(dh[:, 0], dh[:, 0], cache)
    with pytest.raises(ValueError, match=r"dnext_c must have shape \(N, H\)"):
        fastrnn.lstm_step_backward(dh[:, 0], dh[:, 0, :1], step_cache)
    with pytest.raises(TypeError, match="dnext_h has dtype float32"):
        fastrnn.lstm_step_backward(dh[:, 0].astype(np.float32), dh[:, 0], step_cache)


# ------------------------------------------------------------------------ layouts, mutation


def layouts(a):
    """The same values in other memory layouts: Fortran order, a transposed view, a strided view."""
    yield "fortran", np.asfortranarray(a)
    yield "transposed", np.ascontiguousarray(a.T).T
    padded = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    padded[..., ::2] = a
    yield "strided", padded[..., ::2]
    yield "readonly", _readonly(a)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_any_memory_layout_gives_the_same_result(cell):
    p = cell.params(*make_inputs(N, T, D, H, cell.gates, np.float32))
    dh = upstream((N, T, H), np.float32)
    dstates = tuple(upstream((N, H), np.float32, 2 + k) for k in range(len(cell.state_names)))
    h, states, cache = cell.forward(fastrnn, p)
    grads = cell.backward(fastrnn, dh, dstates, cache)
    for name in p:
        for layout, value in layouts(p[name]):
            h2, states2, cache2 = cell.forward(fastrnn, {**p, name: value})
            grads2 = cell.backward(fastrnn, dh, dstates, cache2)
            np.testing.assert_array_equal(h2, h, err_msg=f"h with {name} {layout}")
            for gname in grads:
                np.testing.assert_array_equal(grads2[gname], grads[gname],
                                              err_msg=f"d{gname} with {name} {layout}")
    for layout, value in layouts(dh):
        grads2 = cell.backward(fastrnn, value, dstates, cache)
        for gname in grads:
            np.testing.assert_array_equal(grads2[gname], grads[gname], err_msg=f"d{gname}, dh {layout}")


def step_calls(dtype=np.float32):
    """(name, step forward, its arguments by name) for each cell, at N = 1 (a sampling
    loop's step, which takes the checks' fast path)."""
    x, h0, c0, Wx, Wh, b = make_inputs(1, 1, D, H, 4, dtype)
    _, _, _, Wx3, Wh3, b3 = make_inputs(1, 1, D, H, 3, dtype)
    _, _, _, Wx1, Wh1, b1 = make_inputs(1, 1, D, H, 1, dtype)
    x = x[:, 0]
    return [("lstm", fastrnn.lstm_step_forward,
             dict(x=x, prev_h=h0, prev_c=c0, Wx=Wx, Wh=Wh, b=b)),
            ("gru", fastrnn.gru_step_forward,
             dict(x=x, prev_h=h0, Wx=Wx3, Wh=Wh3, bx=b3, bh=b3 + 0.5)),
            ("rnn", fastrnn.rnn_step_forward, dict(x=x, prev_h=h0, Wx=Wx1, Wh=Wh1, b=b1))]


@pytest.mark.parametrize("name, step, args", step_calls(), ids=[c[0] for c in step_calls()])
def test_steps_take_the_fast_path_only_with_kernel_ready_arrays(name, step, args):
    """validate.ready_step lets a step skip validate_step only when every argument is what
    the kernel takes; any other layout, dtype or shape goes through the checks, and every
    layout gives the plain call's bits."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[name]
    biases = tuple(args[k] for k in ("b", "bx", "bh") if k in args)
    prev_c = args.get("prev_c")

    def ready(a):
        return v.ready_step(a["x"], a["prev_h"], a["Wx"], a["Wh"],
                            tuple(a[k] for k in ("b", "bx", "bh") if k in a), gates,
                            a.get("prev_c"))
    assert ready(args) == (1, D, H)
    want = step(**args)
    # A sampling loop feeds each step the last one's state: arrays numba made, whose dtype
    # objects equal NumPy's without being the same object.
    assert ready({**args, "prev_h": want[0]}) == (1, D, H)
    for key in args:
        for layout, value in layouts(args[key]):
            other = {**args, key: value}
            if value.flags.c_contiguous and value.flags.writeable:
                # A vector or one row in "Fortran" order is C-contiguous all the same.
                assert ready(other) == (1, D, H), f"{key} {layout}"
            else:
                assert ready(other) is None, f"{key} {layout} took the fast path"
            got = step(**other)
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{key} {layout}")
        for bad in (args[key].astype(np.float64), args[key].tolist(), args[key][..., :-1]):
            assert ready({**args, key: bad}) is None, f"{key} {type(bad)} took the fast path"
    assert v.ready_step(args["x"], args["prev_h"], args["Wx"], args["Wh"], biases, gates,
                        prev_c) == (1, D, H)
    fastrnn.set_check_finite(True)
    try:
        assert ready(args) is None  # the finite check is validate_step's
    finally:
        fastrnn.set_check_finite(False)


def test_arrays_fastrnn_returned_take_the_sequence_fast_path():
    """A layer's output, a chunk's final state (TBPTT), the torch modules' converted
    weights are arrays numba made; their dtype objects equal NumPy's but are other objects.
    The check that lets kernel-ready arguments skip validation must take them too."""
    x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, 4)
    h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b, c0=c0)
    for name, made in (("x", h[:, :, :D].copy()), ("h0", cache.final_h),
                       ("c0", cache.final_c)):
        args = {"x": x, "h0": h0, "c0": c0, **{name: made}}
        ready = v._kernel_ready_cell(args["x"], args["h0"], Wx, Wh, (("b", b),), 4, args["c0"])
        assert ready is not None, f"{name} from a kernel took the slow path"


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_inputs_are_never_mutated(cell):
    p = cell.params(*make_inputs(N, T, D, H, cell.gates))
    dh = upstream((N, T, H))
    dstates = tuple(upstream((N, H), seed=2 + k) for k in range(len(cell.state_names)))
    before = {k: v.copy() for k, v in p.items()}
    dh_before, dstates_before = dh.copy(), [d.copy() for d in dstates]
    _, _, cache = cell.forward(fastrnn, p)
    cell.backward(fastrnn, dh, dstates, cache)
    cell.backward(fastrnn, dh, dstates, cache)  # the cache survives a backward, too
    cell.inference(fastrnn, p)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k], err_msg=f"{k} was mutated")
    np.testing.assert_array_equal(dh, dh_before, err_msg="dh was mutated")
    for d, d0 in zip(dstates, dstates_before):
        np.testing.assert_array_equal(d, d0, err_msg="a final-state gradient was mutated")


def test_step_inputs_are_never_mutated():
    x, h0, c0, Wx, Wh, b = make_inputs(N, 1, D, H, 4)
    args = (x[:, 0], h0, c0, Wx, Wh, b)
    before = [a.copy() for a in args]
    dnh, dnc = upstream((N, H)), upstream((N, H), seed=2)
    next_h, next_c, cache = fastrnn.lstm_step_forward(*args)
    fastrnn.lstm_step_backward(dnh, dnc, cache)
    for a, a0 in zip(args + (dnh,), before + [upstream((N, H))]):
        np.testing.assert_array_equal(a, a0)


def test_cs231n_gradient_check_pattern():
    """cs231n's notebook checker perturbs the captured array in place and its lambda ignores
    its argument; results must follow the array's current values (no caching by identity)."""
    x, h0, c0, Wx, Wh, b = make_inputs(2, 3, 4, 5, 4)
    dh = upstream((2, 3, 5))

    _, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
    dx, dh0, dWx, dWh, db = fastrnn.lstm_backward(dh, cache)
    fx = lambda _: fastrnn.lstm_forward(x, h0, Wx, Wh, b)[0]   # noqa: E731
    fWh = lambda _: fastrnn.lstm_forward(x, h0, Wx, Wh, b)[0]  # noqa: E731
    for name, analytic, numeric in (("dx", dx, eval_numerical_gradient_array(fx, x, dh)),
                                    ("dWh", dWh, eval_numerical_gradient_array(fWh, Wh, dh))):
        err = np.max(np.abs(analytic - numeric)) / np.max(np.abs(numeric))
        assert err < 1e-7, f"{name}: {err}"


# ------------------------------------------------------------------------ empty sizes


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_empty_sequence_returns_initial_state(cell, dtype):
    """T == 0: h is (N, 0, H), the final states are the initial ones, gradients pass through."""
    p = cell.params(*make_inputs(N, 0, D, H, cell.gates, dtype))
    h, states, cache = cell.forward(fastrnn, p)
    assert h.shape == (N, 0, H) and h.dtype == dtype
    initial = (p["h0"], p["c0"]) if cell.is_lstm else (p["h0"],)
    for s, s0 in zip(states, initial):
        np.testing.assert_array_equal(s, s0)
    dstates = tuple(upstream((N, H), dtype, 2 + k) for k in range(len(states)))
    grads = cell.backward(fastrnn, np.zeros((N, 0, H), dtype), dstates, cache)
    assert grads["x"].shape == (N, 0, D)
    np.testing.assert_array_equal(grads["h0"], dstates[0])
    if cell.is_lstm:
        np.testing.assert_array_equal(grads["c0"], dstates[1])
    for name in cell.param_names[2 + cell.is_lstm:]:
        assert grads[name].shape == p[name].shape and not grads[name].any()
    h_inf, states_inf = cell.inference(fastrnn, p)
    assert h_inf.shape == (N, 0, H)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_empty_batch_returns_empty_results(cell):
    p = cell.params(*make_inputs(0, T, D, H, cell.gates))
    h, states, cache = cell.forward(fastrnn, p)
    assert h.shape == (0, T, H)
    assert all(s.shape == (0, H) for s in states)
    grads = cell.backward(fastrnn, np.zeros((0, T, H)),
                          tuple(np.zeros((0, H)) for _ in states), cache)
    assert grads["x"].shape == (0, T, D)
    for name in cell.param_names[2 + cell.is_lstm:]:
        assert grads[name].shape == p[name].shape and not grads[name].any()


def test_float32_in_float32_out_and_lists_accepted():
    a = lstm_args(np.float32)
    h, cache = call(fastrnn.lstm_forward, a)
    assert h.dtype == np.float32 and cache.final_c.dtype == np.float32
    # Nested lists are converted like np.asarray does (float64).
    lists = {k: v.astype(np.float64).tolist() for k, v in a.items()}
    h64, _ = call(fastrnn.lstm_forward, lists)
    assert h64.dtype == np.float64
    np.testing.assert_allclose(h64, h, rtol=1e-5, atol=1e-6)


def test_big_endian_input_works():
    a = lstm_args()
    ref, _ = call(fastrnn.lstm_forward, a)
    swapped = {**a, "x": a["x"].astype(">f8")}
    got, _ = call(fastrnn.lstm_forward, swapped)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_nan_input_propagates_instead_of_a_silent_number(cell, dtype):
    """The clamped float32 approximations must not turn a NaN into a plausible value."""
    p = cell.params(*make_inputs(2, 3, 4, 5, cell.gates, dtype))
    p["x"] = p["x"].copy()
    p["x"][0, 1, 0] = np.nan
    h, states, _ = cell.forward(fastrnn, p)
    assert np.isnan(h[0, 1:]).all() and np.isnan(states[0][0]).all()
    assert not np.isnan(h[1]).any() and not np.isnan(h[0, 0]).any()


def test_cache_directory_check(tmp_path):
    """A read-only install must not make the import fail: the check finds a writable place
    or reports none (then fastrnn compiles without caching, with a warning)."""
    from fastrnn._config import writable_directory
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert writable_directory([str(blocker / "sub")]) is None  # cannot make a dir in a file
    assert writable_directory([str(blocker / "sub"), str(tmp_path / "ok")]) == str(tmp_path / "ok")
