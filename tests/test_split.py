"""The column-split time loops (kernels/split.py): a few sequences with big H, their hidden
units shared out between threads that meet once per step. The same bits as the row
schedule for any number of parts, on one thread when the split is called off, and from
several Python threads at once."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastrnn
from fastrnn import _core, reference
from cells import CELLS
from helpers import assert_close, make_inputs, upstream

SPLIT_CELLS = [c for c in CELLS if c.is_lstm or c.is_gru]

# (N, T, D, H): odd H (parts of unequal width, panels straddling gate blocks), a partial
# row tile, a chunk boundary (T over the projection chunk), H = 256 as in the benchmarks.
KERNEL_SHAPES = [(1, 9, 70, 90), (3, 13, 5, 37), (4, 8, 33, 64), (2, 40, 16, 256)]


def _sorted_batch(N, T, ragged, seed):
    """lengths in kernel order (longest first) and the BatchOrder the kernels take."""
    if not ragged:
        return None, _core.batch_order(None, N, T)
    lengths = -np.sort(-np.random.default_rng(seed).integers(0, T + 1, N))
    lengths[0] = T
    return lengths, _core.BatchOrder(lengths, N, T)


def _infer(kernel_inputs, order, parts):
    """lstm_inference's kernel on given inputs: the row schedule (parts None) or the split
    one with ``parts`` parts. Returns h_out, h, c."""
    x, h0, c0, Wx, Wh, b = kernel_inputs
    N, T, D = x.shape
    H = h0.shape[1]
    x_, h0_, c0_, h, c, h_out = fastrnn.lstm._start(x, h0, c0, order)
    S = min(T, 6)
    if parts is None:  # as lstm_inference's one-thread path: the training kernels, no rows
        L = fastrnn.lstm
        h_out, _, _, _, h, c = L.lstm_train_small(
            x_, h0_, c0_, Wx, Wh, b, S, 0, order.offsets, order.active, order.ragged,
            L.entry_address(L.lstm_train_steps, x.dtype, L.TRAIN_STEPS_ARGS),
            L.projection_address(x.dtype), L.product_address(x.dtype), L.cell_address(x.dtype))
    else:
        fastrnn.lstm._split_forward(x_, Wx, Wh, b, h, c, S, h_out, order,
                                    _core.unit_bounds(H, parts),
                                    *(_core.no_rows(x.dtype),) * 3)
    return h_out, h[:N], c


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_split_inference_kernel_equals_row_schedule_for_any_part_count(shape, dtype, ragged):
    N, T, D, H = shape
    inputs = make_inputs(N, T, D, H, 4, dtype)
    _, order = _sorted_batch(N, T, ragged, seed=N + T)
    want = _infer(inputs, order, None)
    for parts in (1, 2, 3):
        for name, a, b in zip(("h", "final h", "final c"), want, _infer(inputs, order, parts)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, {parts} parts")


def _infer_gru(kernel_inputs, order, parts, keep=False):
    """gru_inference's (or, ``keep``, gru_forward's) kernels on given inputs: the row
    schedule (parts None) or the split one with ``parts`` parts. Returns h_out, h, and when
    ``keep`` the rows the training forward keeps."""
    x, h0, _, Wx, Wh, b = kernel_inputs
    bx, bh = b, 0.7 * b[::-1].copy()
    N, T, D = x.shape
    H = h0.shape[1]
    G = fastrnn.gru
    x_, _, h, h_out = order.start(x, h0)
    S = min(T, 6)
    kept = order.rows(x.dtype, D, 3 * H, H, H) if keep else (_core.no_rows(x.dtype),) * 4
    if parts is None:
        _core.run_steps(G.gru_train_steps, 1, order.active[0], x_, G.weight_panels(Wx),
                        G.weight_panels(Wh), bx, bh, h, _core.chunk_scratch(S, N, 3 * H, x.dtype),
                        _core.step_scratch(N, 3 * H, x.dtype), np.empty((N, H), x.dtype),
                        kept[0], kept[1], h_out, kept[2], kept[3], order.offsets,
                        order.active, False, G.projection_address(x.dtype),
                        G.product_address(x.dtype), G.cell_address(x.dtype))
    else:
        G._split_forward(x_, Wx, Wh, bx, bh, h, S, h_out, order, _core.unit_bounds(H, parts),
                         *kept)
    return (h_out, h[:N]) + (tuple(a.copy() for a in kept) if keep else ())


@pytest.mark.parametrize("keep", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_gru_split_kernel_equals_row_schedule_for_any_part_count(shape, dtype, ragged, keep):
    """The GRU's split loop (kernels/gru.gru_split_part): its outputs, final state and the
    training forward's kept rows (x_t, gates, h_{t-1}, h_{t-1} Wh_n + bh_n) equal the row
    schedule's to the bit."""
    N, T, D, H = shape
    inputs = make_inputs(N, T, D, H, 3, dtype)
    _, order = _sorted_batch(N, T, ragged, seed=N + T)
    want = _infer_gru(inputs, order, None, keep)
    names = ("h", "final h", "x_rows", "gates", "h_prev", "hn_hist")
    for parts in (1, 2, 3):
        for name, a, b in zip(names, want, _infer_gru(inputs, order, parts, keep)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, {parts} parts")


def _infer_rnn(kernel_inputs, order, parts, keep, relu):
    """rnn_inference's (or, ``keep``, rnn_forward's) kernels on given inputs: the row
    schedule (parts None) or the split one with ``parts`` parts. Returns h_out, h, and when
    ``keep`` the rows the training forward keeps (x_t, h_t)."""
    x, h0, _, Wx, Wh, b = kernel_inputs
    N, T, D = x.shape
    H = h0.shape[1]
    R = fastrnn.rnn
    x_, _, h, h_out = order.start(x, h0)
    S = min(T, 6)
    kept = order.rows(x.dtype, D, H) if keep else (_core.no_rows(x.dtype),) * 2
    if parts is None:
        _core.run_steps(R.rnn_train_steps, 1, order.active[0], x_, R.weight_panels(Wx),
                        R.weight_panels(Wh), b, h, _core.chunk_scratch(S, N, H, x.dtype),
                        _core.step_scratch(N, H, x.dtype), kept[0], h_out, kept[1], relu,
                        order.offsets, order.active, False, R.projection_address(x.dtype),
                        R.product_address(x.dtype))
    else:
        R._split_forward(x_, Wx, Wh, b, h, S, h_out, order, _core.unit_bounds(H, parts),
                         *kept, relu)
    return (h_out, h[:N]) + (tuple(a.copy() for a in kept) if keep else ())


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("keep", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_rnn_split_kernel_equals_row_schedule_for_any_part_count(shape, dtype, ragged, keep,
                                                                 relu):
    """The RNN's split loop (kernels/rnn.rnn_split_part), tanh and relu: outputs, final
    state and the training forward's kept rows equal the row schedule's to the bit."""
    N, T, D, H = shape
    inputs = make_inputs(N, T, D, H, 1, dtype)
    _, order = _sorted_batch(N, T, ragged, seed=N + T)
    want = _infer_rnn(inputs, order, None, keep, relu)
    names = ("h", "final h", "x_rows", "h_rows")
    for parts in (1, 2, 3):
        for name, a, b in zip(names, want, _infer_rnn(inputs, order, parts, keep, relu)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}, {parts} parts")


def test_split_called_off_runs_every_part_on_one_thread(monkeypatch):
    """Workers run one after the other on one thread (as a threading layer or an
    oversubscribed machine may run them): the first must call the split off (not wait
    forever for the second) and do every part itself, to the same bits."""
    from fastrnn.kernels import split

    def one_after_the_other(function, workers, *args):
        for w in range(workers):
            function(w, workers, *args)

    inputs = make_inputs(2, 11, 20, 64, 4, np.float32)
    order = _core.batch_order(None, 2, 11)
    want = _infer(inputs, order, None)
    monkeypatch.setattr(split, "run_workers", one_after_the_other)
    got = _infer(inputs, order, 2)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


# Through the API: enough work per step for _core.loop_split (N within one row tile).
API_SHAPES = [(1, 32, 40, 256), (3, 32, 64, 129), (2, 27, 40, 200)]  # the last: dx in the row
# schedule's time loop (_core.dx_in_time_loop), from a GEMM in the split one


def _all_results(cell, p, lengths, dh, dstates, mod=fastrnn):
    """Everything a training step and an inference call give, in a flat list."""
    h, states, cache = cell.forward(mod, p, lengths)
    h_inferred, states_inferred = cell.inference(mod, p, lengths)
    grads = cell.backward(mod, dh, dstates, cache)
    return [h, *states, h_inferred, *states_inferred, *grads.values()], list(grads)


# The RNN's: one gate block, so more units for a step worth splitting.
RNN_API_SHAPES = [(1, 40, 64, 512), (3, 30, 33, 300)]
API_CASES = ([(c, shape) for c in SPLIT_CELLS for shape in API_SHAPES]
             + [(c, shape) for c in CELLS if c.gates == 1 for shape in RNN_API_SHAPES])


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("cell, shape", API_CASES,
                         ids=lambda a: a.name if hasattr(a, "name") else "N{}T{}D{}H{}".format(*a))
def test_split_loops_through_the_api_match_reference_and_any_thread_count(cell, shape,
                                                                          ragged):
    N, T, D, H = shape
    assert _core.loop_split(N, D, H, cell.gates, 2) is not None  # the split is what runs,
    assert 2 * N * T * (D + H) * cell.gates * H >= fastrnn._isa.PARALLEL_MIN_FLOPS  # threaded
    lengths, _ = _sorted_batch(N, T, ragged, seed=3)
    if lengths is not None:
        lengths = lengths[::-1].copy()  # any order: the API sorts
    for dtype in (np.float64, np.float32):
        p = cell.params(*make_inputs(N, T, D, H, cell.gates, dtype))
        dh = upstream((N, T, H), dtype)
        dstates = (upstream((N, H), dtype, 2), upstream((N, H), dtype, 3))
        before = fastrnn.get_num_threads()
        try:
            fastrnn.set_num_threads(1)
            one, names = _all_results(cell, p, lengths, dh, dstates)
            fastrnn.set_num_threads(2)
            two, _ = _all_results(cell, p, lengths, dh, dstates)
        finally:
            fastrnn.set_num_threads(before)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
        p64 = {k: v.astype(np.float64) for k, v in p.items()}
        want, _ = _all_results(cell, p64, lengths, dh.astype(np.float64),
                               tuple(d.astype(np.float64) for d in dstates), reference)
        labels = ["h", *cell.state_names, "inferred h", *cell.state_names, *names]
        for label, a, b in zip(labels, two, want):
            assert_close(label, a, b, dtype)


@pytest.mark.parametrize("cell", SPLIT_CELLS + [c for c in CELLS if c.gates == 1],
                         ids=lambda c: c.name)
def test_split_loops_from_four_python_threads_at_once(cell):
    """One call holds numba's threads (the others run on their own thread, see _threads.py);
    none waits forever, and all give the serial bits."""
    N, T, D, H = (1, 30, 64, 256) if cell.gates > 1 else (1, 30, 64, 512)
    assert _core.loop_split(N, D, H, cell.gates, 2) is not None
    inputs = [cell.params(*make_inputs(N, T, D, H, cell.gates, np.float32, seed=s))
              for s in range(4)]
    expected = [cell.inference(fastrnn, p) for p in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda p: cell.inference(fastrnn, p), inputs * 3))
    for want, have in zip(expected * 3, got):
        np.testing.assert_array_equal(want[0], have[0])
        for a, b in zip(want[1], have[1]):
            np.testing.assert_array_equal(a, b)


def test_gru_runs_the_row_schedule_while_a_helper_compiles_the_split(monkeypatch):
    """On a cold cache with a compile helper, the GRU's forward takes the row schedule
    (kernels already there) until the split loop's kernels are compiled, and asks the
    helper for them after its own: the same bits either way, and then the split."""
    from fastrnn import _compiling
    from fastrnn import gru as G
    cell = next(c for c in CELLS if c.is_gru)
    N, T, D, H = API_SHAPES[0]
    p = cell.params(*make_inputs(N, T, D, H, 3, np.float32))
    before = fastrnn.get_num_threads()
    split_calls, asked = [], []
    real_run = G.gru_split_run
    split_kernels = (real_run.worker, G.gru_split_part)
    monkeypatch.setattr(G, "gru_split_run", lambda *a: split_calls.append(1) or real_run(*a))
    monkeypatch.setattr(G, "_SPLIT_AHEAD", _compiling.Ahead(*G._SPLIT_AHEAD.kernels))
    monkeypatch.setattr(_compiling, "_helper_allowed", lambda: True)
    compiled = {"yes": False}
    real_available = _compiling._available
    monkeypatch.setattr(_compiling, "_available", lambda kernel, signature: (
        compiled["yes"] if kernel in split_kernels else real_available(kernel, signature)))
    monkeypatch.setattr(_compiling, "_start", lambda kernels, dtype: asked.append(kernels))
    for ahead in (G._INFERENCE_AHEAD, G._FORWARD_AHEAD):
        monkeypatch.setattr(ahead, "_then", {})  # each asks afresh for the split's kernels
    try:
        fastrnn.set_num_threads(2)
        assert _core.loop_split(N, D, H, 3, 2) is not None
        rows = cell.inference(fastrnn, p)
        assert not split_calls
        assert any(G.gru_split_part in [k for k, _ in kernels] for kernels in asked)
        compiled["yes"] = True  # the helper is done
        split = cell.inference(fastrnn, p)
        assert split_calls
    finally:
        fastrnn.set_num_threads(before)
    np.testing.assert_array_equal(rows[0], split[0])
    np.testing.assert_array_equal(rows[1][0], split[1][0])


def _gru_backward_loop(cache, dh, parts):
    """The GRU backward's time loop alone (kernels/gru.gru_backward_steps on one worker, or
    the split one with ``parts`` parts) on a forward's cache: dh_next (the gradient of h0),
    da_x and da_h."""
    G = fastrnn.gru
    order = cache.order
    N, T = order.shape
    H = cache.h0.shape[1]
    dtype = cache.h0.dtype
    dh_next = np.zeros((N, H), dtype)
    da_x, da_h = (np.full((order.real_steps, 3 * H), np.nan, dtype) for _ in range(2))
    dh = order.sort(dh)
    if parts is None:
        _core.run_steps(G.gru_backward_steps, 1, order.active[0], dh, cache.gates,
                        cache.hn_hist, cache.h_prev, G.weight_panels(cache.Wh, transpose=True),
                        dh_next, da_x, da_h, _core.step_operand(N, 3 * H, dtype),
                        _core.step_scratch(N, H, dtype), order.offsets, order.active,
                        G.product_address(dtype))
    else:
        G._split_backward(dh, cache, dh_next, da_x, da_h, _core.unit_bounds(H, parts))
    return dh_next, da_x, da_h


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_gru_split_backward_kernel_equals_row_schedule_for_any_part_count(shape, dtype,
                                                                          ragged):
    """The GRU's split backward loop (kernels/gru.gru_backward_part): dh_0 and every step's
    da (both sides) equal the row schedule's to the bit, for 1, 2 and 3 parts."""
    N, T, D, H = shape
    x, h0, _, Wx, Wh, b = make_inputs(N, T, D, H, 3, dtype)
    lengths, _ = _sorted_batch(N, T, ragged, seed=N + T)
    _, cache = fastrnn.gru_forward(x, h0, Wx, Wh, b, 0.7 * b[::-1].copy(), lengths=lengths)
    dh = upstream((N, T, H), dtype)
    want = _gru_backward_loop(cache, dh, None)
    for parts in (1, 2, 3):
        for name, a, b_ in zip(("dh0", "da_x", "da_h"), want,
                               _gru_backward_loop(cache, dh, parts)):
            np.testing.assert_array_equal(a, b_, err_msg=f"{name}, {parts} parts")


def _rnn_backward_loop(cache, dh, parts):
    """The RNN backward's time loop alone (rnn_backward_steps on one worker, or the split
    one with ``parts`` parts): dh_next (dh_0), da, the h_prev columns of the weight
    gradients' rows, and dx where the loop makes it."""
    R = fastrnn.rnn
    order = cache.order
    N, T = order.shape
    H = cache.h0.shape[1]
    dtype = cache.h0.dtype
    dh_next = np.zeros((N, H), dtype)
    da, grad_rows = _core.weight_grad_rows(order, cache.x_rows, H, H)
    da[...] = np.nan
    grad_rows[:, :H] = np.nan
    dh = order.sort(dh)
    if parts is None:
        dx, panels = _core.backward_dx(order, cache.Wh, cache.Wx)
        _core.run_steps(R.rnn_backward_steps, 1, order.active[0], dh, cache.h_rows, cache.h0,
                        panels, dh_next, da, grad_rows, dx, _core.step_operand(N, H, dtype),
                        _core.step_scratch(N, H + dx.shape[2], dtype), cache.relu,
                        order.offsets, order.active, R.product_address(dtype))
    else:
        dx = R._split_backward(dh, cache, dh_next, da, grad_rows, _core.unit_bounds(H, parts))
    return dh_next, da.copy(), grad_rows[:, :H].copy(), dx.copy()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", KERNEL_SHAPES + [(2, 7, 5, 40)],
                         ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_rnn_split_backward_kernel_equals_row_schedule_for_any_part_count(shape, dtype,
                                                                          ragged, nonlinearity):
    """The RNN's split backward loop (kernels/rnn.rnn_backward_part): dh_0, da, h_{t-1} and
    dx (where the loop makes it: (2, 7, 5, 40) float32 has dx in the loop, _core.
    dx_in_time_loop) equal the row schedule's to the bit, for 1, 2 and 3 parts."""
    N, T, D, H = shape
    x, h0, _, Wx, Wh, b = make_inputs(N, T, D, H, 1, dtype)
    lengths, _ = _sorted_batch(N, T, ragged, seed=N + T)
    _, cache = fastrnn.rnn_forward(x, h0, Wx, Wh, b, nonlinearity=nonlinearity,
                                   lengths=lengths)
    dh = upstream((N, T, H), dtype)
    want = _rnn_backward_loop(cache, dh, None)
    for parts in (1, 2, 3):
        for name, a, b_ in zip(("dh0", "da", "h_prev", "dx"), want,
                               _rnn_backward_loop(cache, dh, parts)):
            np.testing.assert_array_equal(a, b_, err_msg=f"{name}, {parts} parts")
