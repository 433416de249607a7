"""The fused kernels against fastrnn.reference and against finite differences."""

import importlib

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import reference
from fastrnn._core import IN_STEPS_ROWS
from fastrnn._isa import MR, MR_STEP
from cells import CELLS
from helpers import assert_close, assert_gradients, make_inputs, numerical_gradient, upstream

# (N, T, D, H): ones, primes, non-powers of two, partial row tiles and panels, a long
# sequence. (The threaded path has its own tests below, with enough work to take it.)
SHAPES = [
    (1, 1, 1, 1),
    (1, 7, 3, 5),
    (2, 3, 1, 1),
    (3, 1, 5, 2),
    (5, 11, 7, 13),
    (4, 6, 9, 3),
    (1, 50, 32, 32),
    (7, 13, 17, 37),
    (3, 69, 6, 11),
    (2, 5, 67, 3),  # D wider than the padding of H's panel: dx from a GEMM in float32 too
]
DTYPES = [np.float64, np.float32]


def run_all(cell, N, T, D, H, dtype, seed=0, lengths=None):
    """fastrnn in ``dtype``, the reference in float64 on the same (dtype-rounded) inputs, and
    the reference in ``dtype`` (the float32 accuracy baseline; None for float64).

    Returns three dicts holding h, the final states and every gradient by name; the third
    holds, per name, the float32 reference's results on the inputs and on PERTURBED_RUNS
    copies of them moved by one float32 ulp each: how far float32 arithmetic can land
    from the truth on this case, which one lucky run of the reference understates where a
    sum cancels (dc0 = 0.0024 from terms near 1: the reference off by 2.5e-6 relative on
    the inputs, 1.3e-5 with an ulp's nudge, as fastrnn).
    """
    inputs = make_inputs(N, T, D, H, cell.gates, dtype, seed=seed)
    p = cell.params(*inputs)
    dh = upstream((N, T, H), dtype, seed=seed + 1)
    dstates = tuple(upstream((N, H), dtype, seed=seed + 2 + k) for k in range(len(cell.state_names)))
    rng = np.random.default_rng(seed + 100)
    runs = [(fastrnn, dtype, p), (reference, np.float64, p)]
    if dtype == np.float32:
        runs.append((reference, np.float32, p))
        for _ in range(PERTURBED_RUNS):
            runs.append((reference, np.float32, {k: nudged(v, rng) for k, v in p.items()}))
    results = []
    for mod, cast, params in runs:
        pc = {k: v.astype(cast) for k, v in params.items()}
        h, states, cache = cell.forward(mod, pc, lengths)
        grads = cell.backward(mod, dh.astype(cast), tuple(d.astype(cast) for d in dstates), cache)
        out = {"h": h, **dict(zip(cell.state_names, states))}
        out.update({"d" + k: g for k, g in grads.items()})
        results.append(out)
    if len(results) == 2:
        return results + [None]
    baselines = {name: [r[name] for r in results[2:]] for name in results[0]}
    return results[0], results[1], baselines


PERTURBED_RUNS = 3


def nudged(a, rng):
    """float32 a with every entry moved one ulp up or down at random."""
    a = np.asarray(a, np.float32)
    return np.where(rng.random(a.shape) < 0.5, np.nextafter(a, np.float32(np.inf)),
                    np.nextafter(a, np.float32(-np.inf))).astype(np.float32)


def assert_all_close(fast, ref, ref32, dtype):
    assert fast.keys() == ref.keys()
    for name in ref:
        assert_close(name, fast[name], ref[name], dtype, None if ref32 is None else ref32[name])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_forward_and_gradients_match_reference(cell, shape, dtype):
    assert_all_close(*run_all(cell, *shape, dtype), dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.sampled_from(CELLS), N=st.integers(1, 6), T=st.integers(1, 9),
       D=st.integers(1, 9), H=st.integers(1, 9), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_random_shapes_match_reference(cell, N, T, D, H, dtype, seed):
    assert_all_close(*run_all(cell, N, T, D, H, dtype, seed=seed), dtype)


GRADCHECK_SHAPES = [(1, 1, 1, 1), (2, 3, 2, 3), (3, 4, 5, 2)]


@pytest.mark.parametrize("shape", GRADCHECK_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
@pytest.mark.parametrize("mod", [fastrnn, reference], ids=["fastrnn", "reference"])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_gradients_match_finite_differences(cell, mod, shape):
    """Every backward, of the kernels and of the reference (the ground truth is checked too),
    against centred differences of the loss sum(h * dh) + sum(final states * their grads)."""
    N, T, D, H = shape
    p = cell.params(*make_inputs(N, T, D, H, cell.gates, seed=3))
    dh = upstream((N, T, H), seed=4)
    dstates = tuple(upstream((N, H), seed=5 + k) for k in range(len(cell.state_names)))
    _, _, cache = cell.forward(mod, p)
    grads = cell.backward(mod, dh, dstates, cache)
    for name in cell.param_names:
        def loss_of(value, name=name):
            return cell.loss(mod, {**p, name: value}, dh, dstates)
        assert_gradients(name, grads[name], numerical_gradient(loss_of, p[name]))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 11, 7, 13), (3, 69, 6, 11)],
                         ids=lambda s: "N{}T{}D{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_inference_matches_forward(cell, shape, dtype):
    p = cell.params(*make_inputs(*shape, cell.gates, dtype))
    h, states, _ = cell.forward(fastrnn, p)
    h_inf, states_inf = cell.inference(fastrnn, p)
    ref_h, ref_states = cell.inference(reference, p)
    assert_close("h", h_inf, h, dtype)
    assert_close("h vs reference", h_inf, ref_h, dtype)
    for name, s, s_inf, s_ref in zip(cell.state_names, states, states_inf, ref_states):
        assert_close(name, s_inf, s, dtype)
        assert_close(name + " vs reference", s_inf, s_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("N", sorted({1, 2, MR_STEP, MR_STEP + 1, 2 * MR_STEP + 3, IN_STEPS_ROWS}))
@pytest.mark.parametrize("T", range(1, MR))
@pytest.mark.parametrize("DH", [(7, 13), (64, 256)], ids=lambda s: "D{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_short_inference_in_steps_equals_the_sequence_kernels(cell, DH, T, N, dtype,
                                                              monkeypatch):
    """Inference of fewer than MR steps of up to IN_STEPS_ROWS sequences (one row tile and
    several) runs as single steps reading the weights in place (_core.infer_in_steps
    with the cell's step kernel, no packing) and gives the sequence kernels' bits: the
    training forward's h and final states, without lengths and with lengths that are all
    T (the LSTM also without c0); ragged lengths keep the sequence kernels."""
    module = importlib.import_module(f"fastrnn.{cell.name.split('_')[0]}")
    calls = []
    real = module.infer_in_steps
    monkeypatch.setattr(module, "infer_in_steps", lambda *args: calls.append(1) or real(*args))
    p = cell.params(*make_inputs(N, T, DH[0], DH[1], cell.gates, dtype))
    for lengths in (None, np.full(N, T)):
        h, states = cell.inference(fastrnn, p, lengths)
        h_train, states_train, _ = cell.forward(fastrnn, p, lengths)
        np.testing.assert_array_equal(h, h_train)
        for name, s, s_train in zip(cell.state_names, states, states_train):
            np.testing.assert_array_equal(s, s_train, err_msg=name)
    if cell.is_lstm:
        h, _ = fastrnn.lstm_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"],
                                      return_state=True)
        np.testing.assert_array_equal(
            h, fastrnn.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])[0])
    assert len(calls) == (3 if cell.is_lstm else 2)
    expected = len(calls)
    if N > 1:  # ragged: the sequence kernels
        cell.inference(fastrnn, p, np.arange(N) % (T + 1))
        assert len(calls) == expected
    if N == IN_STEPS_ROWS:  # one sequence more: the sequence kernels
        wider = cell.params(*make_inputs(N + 1, T, DH[0], DH[1], cell.gates, dtype))
        cell.inference(fastrnn, wider)
        assert len(calls) == expected


# ------------------------------------------------------------------------ step functions


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (8, 17, 37), (2, 9, 70), (1, 64, 256),
                                   (3, 64, 256), (2, 256, 512)], ids=str)
def test_lstm_step_matches_reference(shape, dtype):
    """Shapes for each way a step runs: weights packed (4H under a panel, or rows for more
    than one tile), read in place on one thread (2, 9, 70: a last column block overlapping
    the one before it on every target; 1, 64, 256: one row, rows 4 KB apart in float32;
    3, 64, 256: a tile of rows), and split by hidden units (2, 256, 512, with two
    threads)."""
    N, D, H = shape
    x, h0, c0, Wx, Wh, b = make_inputs(N, 1, D, H, 4, dtype)
    x = x[:, 0]
    dnext_h, dnext_c = upstream((N, H), dtype, 1), upstream((N, H), dtype, 2)
    next_h, next_c, cache = fastrnn.lstm_step_forward(x, h0, c0, Wx, Wh, b)
    grads = fastrnn.lstm_step_backward(dnext_h, dnext_c, cache)
    as64 = [a.astype(np.float64) for a in (x, h0, c0, Wx, Wh, b)]
    ref_h, ref_c, ref_cache = reference.lstm_step_forward(*as64)
    ref_grads = reference.lstm_step_backward(dnext_h.astype(np.float64),
                                             dnext_c.astype(np.float64), ref_cache)
    assert_close("next_h", next_h, ref_h, dtype)
    assert_close("next_c", next_c, ref_c, dtype)
    for name, g, rg in zip(["dx", "dprev_h", "dprev_c", "dWx", "dWh", "db"], grads, ref_grads):
        assert_close(name, g, rg, dtype)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (8, 17, 37), (2, 9, 70), (1, 64, 256)],
                         ids=str)
def test_rnn_step_matches_reference(shape, dtype, nonlinearity):
    """Weights packed, and read in place (2, 9, 70; 1, 64, 256) on every target."""
    N, D, H = shape
    x, h0, _, Wx, Wh, b = make_inputs(N, 1, D, H, 1, dtype)
    x = x[:, 0]
    dnext_h = upstream((N, H), dtype, 1)
    next_h, cache = fastrnn.rnn_step_forward(x, h0, Wx, Wh, b, nonlinearity=nonlinearity)
    grads = fastrnn.rnn_step_backward(dnext_h, cache)
    as64 = [a.astype(np.float64) for a in (x, h0, Wx, Wh, b)]
    ref_h, ref_cache = reference.rnn_step_forward(*as64, nonlinearity=nonlinearity)
    ref_grads = reference.rnn_step_backward(dnext_h.astype(np.float64), ref_cache)
    assert_close("next_h", next_h, ref_h, dtype)
    for name, g, rg in zip(["dx", "dprev_h", "dWx", "dWh", "db"], grads, ref_grads):
        assert_close(name, g, rg, dtype)


def test_lstm_step_loop_equals_sequence():
    """Stepping over T with the step functions gives the sequence functions' h and gradients."""
    N, T, D, H = 4, 6, 5, 7
    x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, 4)
    dh = upstream((N, T, H))
    h_seq, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b, c0=c0)
    dx, dh0, dWx, dWh, db, dc0 = fastrnn.lstm_backward(dh, cache, return_dc0=True)

    h, c, caches, hs = h0, c0, [], []
    for t in range(T):
        h, c, step_cache = fastrnn.lstm_step_forward(x[:, t], h, c, Wx, Wh, b)
        hs.append(h)
        caches.append(step_cache)
    assert_close("h", np.stack(hs, axis=1), h_seq, np.float64)

    grads = {"dWx": 0, "dWh": 0, "db": 0}
    dx_steps = [None] * T
    dprev_h, dprev_c = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        dx_t, dprev_h, dprev_c, dWx_t, dWh_t, db_t = fastrnn.lstm_step_backward(
            dh[:, t] + dprev_h, dprev_c, caches[t])
        dx_steps[t] = dx_t
        grads["dWx"] += dWx_t
        grads["dWh"] += dWh_t
        grads["db"] += db_t
    assert_close("dx", np.stack(dx_steps, axis=1), dx, np.float64)
    assert_close("dh0", dprev_h, dh0, np.float64)
    assert_close("dc0", dprev_c, dc0, np.float64)
    for name, expected in (("dWx", dWx), ("dWh", dWh), ("db", db)):
        assert_close(name, grads[name], expected, np.float64)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_step_loop_equals_sequence(nonlinearity):
    N, T, D, H = 4, 6, 5, 7
    x, h0, _, Wx, Wh, b = make_inputs(N, T, D, H, 1)
    dh = upstream((N, T, H))
    h_seq, cache = fastrnn.rnn_forward(x, h0, Wx, Wh, b, nonlinearity=nonlinearity)
    dx, dh0, dWx, dWh, db = fastrnn.rnn_backward(dh, cache)

    h, caches, hs = h0, [], []
    for t in range(T):
        h, step_cache = fastrnn.rnn_step_forward(x[:, t], h, Wx, Wh, b, nonlinearity=nonlinearity)
        hs.append(h)
        caches.append(step_cache)
    assert_close("h", np.stack(hs, axis=1), h_seq, np.float64)

    sums = {"dWx": 0, "dWh": 0, "db": 0}
    dx_steps = [None] * T
    dprev_h = np.zeros((N, H))
    for t in reversed(range(T)):
        dx_t, dprev_h, dWx_t, dWh_t, db_t = fastrnn.rnn_step_backward(dh[:, t] + dprev_h, caches[t])
        dx_steps[t] = dx_t
        sums["dWx"] += dWx_t
        sums["dWh"] += dWh_t
        sums["db"] += db_t
    assert_close("dx", np.stack(dx_steps, axis=1), dx, np.float64)
    assert_close("dh0", dprev_h, dh0, np.float64)
    for name, expected in (("dWx", dWx), ("dWh", dWh), ("db", db)):
        assert_close(name, sums[name], expected, np.float64)


# ------------------------------------------------------------------------ properties


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_results_are_bit_identical_run_to_run(cell):
    p = cell.params(*make_inputs(6, 9, 10, 40, cell.gates, np.float32))
    dh = upstream((6, 9, 40), np.float32)
    dstates = tuple(upstream((6, 40), np.float32, 2 + k) for k in range(len(cell.state_names)))
    runs = []
    for _ in range(2):
        h, states, cache = cell.forward(fastrnn, p)
        runs.append([h, *states, *cell.backward(fastrnn, dh, dstates, cache).values()])
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


def test_kernels_actually_run_fused_code():
    """Guard against a silent fallback: the kernels are compiled dispatchers with cache on
    (numba's, or fastrnn's subclass of it that loads without refreshing: _config.py)."""
    from numba.core.caching import FunctionCache
    from fastrnn.kernels.gemm import gemm_part, steps_product_kernel
    from fastrnn.kernels.lstm import lstm_train_small, lstm_train_steps
    small = make_inputs(2, 2, 2, 2, 4)
    h, cache = fastrnn.lstm_forward(*small[:2], *small[3:])  # one serial call
    fastrnn.lstm_backward(h, cache)  # the weight gradients: gemm_part
    big = make_inputs(32, 8, 40, 64, 4)  # enough work for the worker threads
    h, cache = fastrnn.lstm_forward(*big[:2], *big[3:])  # lstm_train_steps on each
    fastrnn.lstm_backward(h, cache)
    # steps_product_kernel: called through its address (kernels/address.py), compiled and
    # cached through its dispatcher all the same.
    for kernel in (lstm_train_small, gemm_part, lstm_train_steps, steps_product_kernel):
        assert kernel.signatures, kernel
        assert isinstance(kernel._cache, FunctionCache), kernel
    # The split loops' drivers are copies made by split._bind: cached too (they once were
    # not, and every process compiled them again).
    from fastrnn.kernels.lstm import lstm_backward_run, lstm_split_run
    for run in (lstm_split_run, lstm_backward_run):
        assert isinstance(run.worker._cache, FunctionCache), run


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_set_num_threads_and_results_are_bit_identical_for_any_thread_count(cell, ragged):
    before = fastrnn.get_num_threads()
    N, T, D, H = 37, 25, 40, 67  # enough work for the threaded path, odd row and panel edges
    assert 2 * N * T * (D + H) * cell.gates * H >= fastrnn._isa.PARALLEL_MIN_FLOPS
    p = cell.params(*make_inputs(N, T, D, H, cell.gates, np.float32))
    lengths = np.random.default_rng(4).integers(0, T + 1, N) if ragged else None
    dh = upstream((N, T, H), np.float32)
    dstates = (upstream((N, H), np.float32, 2), upstream((N, H), np.float32, 3))

    def run():
        h, states, cache = cell.forward(fastrnn, p, lengths)
        h_inferred, states_inferred = cell.inference(fastrnn, p, lengths)
        return [h, *states, h_inferred, *states_inferred,
                *cell.backward(fastrnn, dh, dstates, cache).values()]
    try:
        fastrnn.set_num_threads(1)
        assert fastrnn.get_num_threads() == 1
        one, again = run(), run()
        for a, b in zip(one, again):  # bit-identical run to run
            np.testing.assert_array_equal(a, b)
        fastrnn.set_num_threads(2)
        assert fastrnn.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        for a, b in zip(one, run()):  # and whatever the thread count: no sum is split
            np.testing.assert_array_equal(a, b)
    finally:
        fastrnn.set_num_threads(before)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        fastrnn.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an integer >= 1, got 1.5"):
        fastrnn.set_num_threads(1.5)


def test_split_step_is_bit_identical_for_any_thread_count_and_to_the_sequence_kernels():
    """A single step of one row tile with big H shares its hidden units out between the
    threads (_core.step_split): the same bits on one thread, on two, from four Python
    threads at once, and as lstm_forward over one step."""
    from concurrent.futures import ThreadPoolExecutor
    before = fastrnn.get_num_threads()
    N, D, H = 2, 512, 512
    assert 2 * N * (D + H) * 4 * H >= fastrnn._isa.STEP_SPLIT_MIN_FLOPS
    inputs = [make_inputs(N, 1, D, H, 4, np.float32, seed=s) for s in range(4)]

    def step(x, h0, c0, Wx, Wh, b):
        return fastrnn.lstm_step_forward(x[:, 0], h0, c0, Wx, Wh, b)[:2]
    try:
        fastrnn.set_num_threads(1)
        one = [step(*p) for p in inputs]
        fastrnn.set_num_threads(2)
        two = [step(*p) for p in inputs]
        if numba.config.NUMBA_NUM_THREADS > 1:  # the split ran (else this test proves little)
            from fastrnn.kernels.lstm import lstm_step_part
            assert lstm_step_part.signatures
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(lambda p: step(*p), inputs * 3))
    finally:
        fastrnn.set_num_threads(before)
    for p, a, b in zip(inputs, one, two):
        x, h0, c0, Wx, Wh, b_ = p
        h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b_, c0=c0)
        for got in (b, (h[:, 0], cache.final_c)):
            for u, v in zip(a, got):
                np.testing.assert_array_equal(u, v)
    for a, b in zip(one * 3, concurrent):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_concurrent_calls_from_python_threads_agree_with_serial_ones():
    """The kernels release the GIL; calls from several threads at once (one of them gets
    the worker threads, the others run serially) give the same bits as one at a time."""
    from concurrent.futures import ThreadPoolExecutor
    cell = CELLS[0]
    inputs = [cell.params(*make_inputs(24, 20, 33, 50, 4, np.float32, seed=s)) for s in range(6)]
    assert 2 * 24 * 20 * (33 + 50) * 4 * 50 >= fastrnn._isa.PARALLEL_MIN_FLOPS  # threaded
    dh = upstream((24, 20, 50), np.float32)
    dstates = (upstream((24, 50), np.float32, 2), upstream((24, 50), np.float32, 3))

    def run(p):
        h, states, cache = cell.forward(fastrnn, p)
        return [h, *states, *cell.backward(fastrnn, dh, dstates, cache).values()]
    expected = [run(p) for p in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(run, inputs * 3))
    for want, have in zip(expected * 3, got):
        for a, b in zip(want, have):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("N", [1, 5])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_cache_keeps_its_own_inputs_and_refers_to_the_weights(cell, N):
    """As the README says: changing x or the initial states between forward and backward
    changes nothing (the backward reads h0 and c0, and rebuilds the other h_{t-1} from its
    cache); changing a weight in place is seen by the backward (cs231n's convention)."""
    p = cell.params(*make_inputs(N, 4, 3, 5, cell.gates))
    dh = upstream((N, 4, 5))
    dstates = [upstream((N, 5), seed=2 + i) for i in range(len(cell.state_names))]
    _, _, cache = cell.forward(fastrnn, p)
    want = cell.backward(fastrnn, dh, dstates, cache)
    for name in ("x", "h0", "c0"):
        if name in p:
            p[name] += 1.0
    got = cell.backward(fastrnn, dh, dstates, cache)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"d{name}")
    p["Wx"] += 1.0  # dx = da @ Wx.T reads the weights the caller passed
    assert not np.array_equal(cell.backward(fastrnn, dh, dstates, cache)["x"], want["x"])


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_streamed_cache_writes_match_ordinary_ones(monkeypatch, cell, dtype, ragged):
    """Big forwards write their cache with non-temporal stores (kernels/stream.py): forced on
    for small calls, with rows that start at every alignment (odd D and H), the outputs, the
    cache the backward reads and the gradients are the same bits, on the serial and the
    threaded path."""
    import fastrnn._isa
    for N, T, D, H in ((3, 5, 7, 13), (37, 9, 41, 67)):
        p = cell.params(*make_inputs(N, T, D, H, cell.gates, dtype))
        lengths = np.random.default_rng(5).integers(0, T + 1, N) if ragged else None
        dh = upstream((N, T, H), dtype)
        dstates = tuple(upstream((N, H), dtype, 2 + k) for k in range(len(cell.state_names)))
        runs = []
        for threshold in (1 << 62, 0):
            monkeypatch.setattr(fastrnn._isa, "STREAM_MIN_BYTES", threshold)
            h, states, cache = cell.forward(fastrnn, p, lengths)
            kept = [np.array(getattr(cache, name)) for name in cache.__slots__
                    if isinstance(getattr(cache, name), np.ndarray)]
            runs.append([h, *states, *kept, *cell.backward(fastrnn, dh, dstates, cache).values()])
        assert len(runs[0]) == len(runs[1]) > 6
        for plain, streamed in zip(*runs):
            np.testing.assert_array_equal(streamed, plain)


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_projection_chunk_size_changes_no_bit(monkeypatch, cell, ragged):
    """The time loops project S steps of inputs at a time (_core.chunk_steps picks S from
    the sizes and the thread count, always a multiple of the micro-kernel's rows or all
    steps); any such S gives the same bits, training and inference, serial and threaded."""
    import fastrnn._isa
    from fastrnn._isa import MR
    for N, T, D, H in ((1, 27, 5, 13), (3, 14, 5, 13), (37, 9, 41, 67)):
        p = cell.params(*make_inputs(N, T, D, H, cell.gates, np.float32))
        lengths = np.random.default_rng(6).integers(0, T + 1, N) if ragged else None
        dh = upstream((N, T, H), np.float32)
        dstates = tuple(upstream((N, H), np.float32, 2 + k) for k in range(len(cell.state_names)))
        runs = []
        for S in (MR, 2 * MR, T):
            monkeypatch.setattr(fastrnn._isa, "CHUNK_BYTES_PER_ROW", 1)
            monkeypatch.setattr(fastrnn._isa, "MAX_CHUNK_STEPS", S)
            h, states, cache = cell.forward(fastrnn, p, lengths)
            h_inferred, states_inferred = cell.inference(fastrnn, p, lengths)
            runs.append([h, *states, h_inferred, *states_inferred,
                         *cell.backward(fastrnn, dh, dstates, cache).values()])
        for first, other in zip(runs[0], runs[1]):
            np.testing.assert_array_equal(other, first)
        for first, other in zip(runs[0], runs[2]):
            np.testing.assert_array_equal(other, first)


def test_shapes_cover_both_routes_to_dx():
    """The LSTM's and RNN's backward get dx from the time loop's product or from a GEMM after
    it (_core.dx_in_time_loop); the shapes above must exercise both, in each dtype."""
    from fastrnn._core import dx_in_time_loop
    for dtype in DTYPES:
        routes = {dx_in_time_loop(D, H, dtype) for N, T, D, H in SHAPES}
        assert routes == {True, False}, dtype


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (16, 40, 64, 128)])
def test_lstm_weight_gradients_transposed_are_the_transposes(shape):
    """lstm_backward(weights_transposed=True), what fastrnn.torch asks for: dWx.T and
    dWh.T in their places, from the small path (one numba call) and from the threaded
    one (the product da.T @ [h_prev | x | 1], summed as the other layout's product up to
    rounding), everything else as without it; the reference agrees."""
    import fastrnn
    from fastrnn import reference
    N, T, D, H = shape
    p = make_inputs(N, T, D, H, 4, np.float64)
    dh = np.random.default_rng(3).standard_normal((N, T, H))
    h, cache = fastrnn.lstm_forward(*p[:2], *p[3:])
    plain = fastrnn.lstm_backward(dh, cache, return_dc0=True)
    transposed = fastrnn.lstm_backward(dh, cache, return_dc0=True, weights_transposed=True)
    assert transposed[2].shape == (4 * H, D) and transposed[3].shape == (4 * H, H)
    for i, (a, b) in enumerate(zip(plain, transposed)):
        np.testing.assert_allclose(b.T if i in (2, 3) else b, a, rtol=1e-12, atol=1e-12)
    _, ref_cache = reference.lstm_forward(*p[:2], *p[3:])
    ref = reference.lstm_backward(dh, ref_cache, weights_transposed=True)
    np.testing.assert_allclose(transposed[3], ref[3], rtol=1e-10, atol=1e-10)
