"""Multi-layer / bidirectional stacks and truncated BPTT, without PyTorch (test_torch.py
cross-checks the stacks against torch.nn.LSTM/GRU/RNN when it is installed)."""

import numpy as np
import pytest

import fastrnn
from cells import CELLS
from helpers import assert_close, assert_gradients, make_inputs, numerical_gradient, upstream


def stack_weights(cell, D, H, num_layers, dirs, seed=0):
    """weights[l][d] for stack_forward, from the cell's own (Wx, Wh, biases) layout."""
    weights = []
    for l in range(num_layers):
        layer = []
        for d in range(dirs):
            inputs = make_inputs(1, 1, D if l == 0 else dirs * H, H, cell.gates, seed=seed + 10 * l + d)
            p = cell.params(*inputs)
            layer.append(tuple(p[n] for n in cell.param_names if n not in ("x", "h0", "c0")))
        weights.append(layer)
    return weights


def stack_name(cell):
    return "rnn" if cell.nonlinearity else cell.name


def run_stack(cell, x, weights, h0, c0, lengths, bidirectional):
    kw = {"nonlinearity": cell.nonlinearity} if cell.nonlinearity else {}
    return fastrnn.stack_forward(stack_name(cell), x, weights, h0=h0, c0=c0 if cell.is_lstm else None,
                                 lengths=lengths, bidirectional=bidirectional, **kw)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_one_layer_stack_is_the_layer(cell):
    N, T, D, H = 3, 5, 4, 6
    p = cell.params(*make_inputs(N, T, D, H, cell.gates))
    weights = [[tuple(p[n] for n in cell.param_names if n not in ("x", "h0", "c0"))]]
    c0 = p.get("c0")
    out, final, _ = run_stack(cell, p["x"], weights, p["h0"][None],
                              None if c0 is None else c0[None], None, False)
    h, states, _ = cell.forward(fastrnn, p)
    np.testing.assert_array_equal(out, h)
    finals = final if cell.is_lstm else (final,)
    for s, f in zip(states, finals):
        np.testing.assert_array_equal(f[0], s)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_reverse_direction_reads_each_sequence_backwards(cell):
    N, T, D, H = 4, 6, 3, 5
    lengths = np.array([6, 0, 2, 5])
    p = cell.params(*make_inputs(N, T, D, H, cell.gates))
    w = tuple(p[n] for n in cell.param_names if n not in ("x", "h0", "c0"))
    zeros = np.zeros((2, N, H))
    out, final, _ = run_stack(cell, p["x"], [[w, w]], zeros, zeros, lengths, True)
    # By hand: the layer on the reversed sequences, its output reversed back.
    x_rev = fastrnn.reverse_within_lengths(p["x"], lengths)
    h_rev, states_rev, _ = cell.forward(fastrnn, {**p, "x": x_rev, "h0": zeros[1],
                                                  **({"c0": zeros[1]} if cell.is_lstm else {})},
                                        lengths)
    assert_close("reverse half", out[:, :, H:], fastrnn.reverse_within_lengths(h_rev, lengths),
                 np.float64)
    final_h = final[0] if cell.is_lstm else final
    assert_close("reverse final_h", final_h[1], states_rev[0], np.float64)
    # The reverse direction's final state is its output at t = 0 (zero-length: h0 = 0).
    assert_close("final_h is out[:, 0]", final_h[1], out[:, 0, H:], np.float64)
    assert not out[np.arange(T)[None, :] >= lengths[:, None]].any()


def test_reverse_within_lengths_is_an_involution():
    a = np.arange(2 * 5 * 1.0).reshape(2, 5, 1)
    r = fastrnn.reverse_within_lengths(a, [3, 0])
    np.testing.assert_array_equal(r[0, :, 0], [2, 1, 0, 3, 4])
    np.testing.assert_array_equal(r[1, :, 0], [5, 6, 7, 8, 9])
    np.testing.assert_array_equal(fastrnn.reverse_within_lengths(r, [3, 0]), a)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_two_layer_bidirectional_gradients_match_finite_differences(cell):
    N, T, D, H, L = 3, 4, 2, 2, 2
    lengths = np.array([4, 0, 2])
    weights = stack_weights(cell, D, H, L, 2, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((2 * L, N, H))
    c0 = rng.standard_normal((2 * L, N, H))
    dout = rng.standard_normal((N, T, 2 * H))
    dh_n = rng.standard_normal((2 * L, N, H))
    dc_n = rng.standard_normal((2 * L, N, H))

    def loss(x, weights, h0, c0):
        out, final, _ = run_stack(cell, x, weights, h0, c0, lengths, True)
        h_n, c_n = final if cell.is_lstm else (final, None)
        total = np.sum(out * dout) + np.sum(h_n * dh_n)
        return float(total + (np.sum(c_n * dc_n) if cell.is_lstm else 0))

    _, _, cache = run_stack(cell, x, weights, h0, c0, lengths, True)
    dx, dinit, dweights = fastrnn.stack_backward(dout, cache, dh_n=dh_n,
                                                 dc_n=dc_n if cell.is_lstm else None)
    dh0, dc0 = dinit if cell.is_lstm else (dinit, None)
    assert_gradients("x", dx, numerical_gradient(lambda v: loss(v, weights, h0, c0), x))
    assert_gradients("h0", dh0, numerical_gradient(lambda v: loss(x, weights, v, c0), h0))
    if cell.is_lstm:
        assert_gradients("c0", dc0, numerical_gradient(lambda v: loss(x, weights, h0, v), c0))
    for l in range(L):
        for d in range(2):
            for k in range(len(weights[l][d])):
                def loss_of(v, l=l, d=d, k=k):
                    w = [[list(t) for t in layer] for layer in weights]
                    w[l][d][k] = v
                    return loss(x, w, h0, c0)
                assert_gradients(f"weights[{l}][{d}][{k}]", dweights[l][d][k],
                                 numerical_gradient(loss_of, weights[l][d][k]))


def test_stack_errors_name_layer_and_direction():
    cell = CELLS[0]
    weights = stack_weights(cell, 3, 4, 2, 2)
    x = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match=r"weights\[0\] must hold 1 direction"):
        fastrnn.stack_forward("lstm", x, weights)
    with pytest.raises(ValueError, match=r"weights\[0\]\[0\] must be the tuple \(Wx, Wh, bx, bh\)"):
        fastrnn.stack_forward("gru", x, weights, bidirectional=True)
    bad = [layer[:] for layer in weights]
    bad[1] = [(weights[1][0][0][:-1], *weights[1][0][1:]), weights[1][1]]
    with pytest.raises(ValueError, match=r"layer 1, direction 0: Wx must have shape \(D, 4H\) = \(8, 16\)"):
        fastrnn.stack_forward("lstm", x, bad, bidirectional=True)
    with pytest.raises(ValueError, match=r"h0 must have shape \(L \* dirs, N, H\) = \(4, 2, 4\)"):
        fastrnn.stack_forward("lstm", x, weights, bidirectional=True, h0=np.zeros((2, 2, 4)))
    broken = [[(weights[0][0][0], None, weights[0][0][2])]]
    with pytest.raises(TypeError, match=r"weights\[0\]\[0\]\[1\] \(Wh\) must be a float32 or float64 array"):
        fastrnn.stack_forward("lstm", x, broken)
    with pytest.raises(ValueError, match="cell must be one of"):
        fastrnn.stack_forward("lstmm", x, weights)
    _, _, cache = fastrnn.stack_forward("lstm", x, weights, bidirectional=True)
    with pytest.raises(ValueError, match=r"dout must have shape \(N, T, dirs \* H\) = \(2, 5, 8\)"):
        fastrnn.stack_backward(np.zeros((2, 5, 4)), cache)


# ------------------------------------------------------------------------ truncated BPTT


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_truncated_bptt_chunks_equal_full_sequence(cell):
    """Carrying the final states forward and the initial-state gradients back, chunk by
    chunk, gives full BPTT's outputs and gradients (float64, 1e-10)."""
    N, T, D, H = 3, 12, 4, 5
    p = cell.params(*make_inputs(N, T, D, H, cell.gates))
    dh = upstream((N, T, H))
    dstates = tuple(upstream((N, H), seed=2 + k) for k in range(len(cell.state_names)))
    h_full, states_full, cache = cell.forward(fastrnn, p)
    g_full = cell.backward(fastrnn, dh, dstates, cache)

    bounds = [(0, 5), (5, 6), (6, 12)]
    chunk_p, hs, caches = dict(p), [], []
    for t0, t1 in bounds:
        h, states, chunk_cache = cell.forward(fastrnn, {**chunk_p, "x": p["x"][:, t0:t1]})
        chunk_p.update(zip(("h0", "c0"), states))  # carry (h, c) into the next chunk
        hs.append(h)
        caches.append(chunk_cache)
    assert_close("h", np.concatenate(hs, axis=1), h_full, np.float64)
    for name, s, s_full in zip(cell.state_names, states, states_full):
        assert_close(name, s, s_full, np.float64)

    d_last, dxs, sums = dstates, [], {}
    for (t0, t1), chunk_cache in reversed(list(zip(bounds, caches))):
        g = cell.backward(fastrnn, dh[:, t0:t1], d_last, chunk_cache)
        d_last = tuple(g[n] for n in ("h0", "c0") if n in g)  # into the previous chunk
        dxs.insert(0, g.pop("x"))
        for n in g:
            if n not in ("h0", "c0"):
                sums[n] = sums.get(n, 0) + g[n]
    assert_close("dx", np.concatenate(dxs, axis=1), g_full["x"], np.float64)
    for n, d in zip(("h0", "c0"), d_last):
        assert_close("d" + n, d, g_full[n], np.float64)
    for n, total in sums.items():
        assert_close("d" + n, total, g_full[n], np.float64)
