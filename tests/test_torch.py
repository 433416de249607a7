"""Cross-checks against PyTorch's CPU RNN/LSTM/GRU (skipped when torch is not installed).

Install the CPU build with `pip install torch==2.13.0`.
"""

import numpy as np
import pytest

import fastrnn
from cells import CELLS, GRU
from helpers import make_inputs, upstream

torch = pytest.importorskip("torch")

TORCH_TOL = {np.float64: 1e-9, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def rel_err(got, want):
    want = np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    return float(np.abs(np.asarray(got, np.float64) - want).max(initial=0.0)) / scale


def assert_matches_torch(name, got, want, dtype):
    err = rel_err(got, want)
    assert err <= TORCH_TOL[dtype], f"{name}: relative error {err:.2e} vs torch"


def torch_module(cell, D, H, dtype, num_layers=1, bidirectional=False, seed=0):
    torch.manual_seed(seed)
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell.name, torch.nn.RNN)
    kw = {"nonlinearity": cell.nonlinearity} if kind is torch.nn.RNN else {}
    module = kind(D, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **kw)
    return module.to(TORCH_DTYPE[dtype])


def torch_grads_as_fastrnn(module, cell_name):
    """The module's parameter gradients in fastrnn's layout, weights[l][d] structure."""
    H = module.hidden_size
    order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H] if cell_name == "lstm" else slice(None)
    grads = []
    for l in range(module.num_layers):
        layer = []
        for d in range(2 if module.bidirectional else 1):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            g = {n: getattr(module, n + sfx).grad.numpy() for n in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            dWx, dWh = g["weight_ih"].T[:, order], g["weight_hh"].T[:, order]
            if cell_name == "gru":
                layer.append((dWx, dWh, g["bias_ih"], g["bias_hh"]))
            else:  # fastrnn's b = bias_ih + bias_hh, so dL/db = dL/dbias_ih
                layer.append((dWx, dWh, g["bias_ih"][order]))
        grads.append(layer)
    return grads


def run_torch(module, x, h0, c0, dout, dh_n, dc_n, lengths=None):
    """Forward on (packed, if lengths) x; backward of sum(out * dout) + final states * grads.

    Returns out (padded, zeros past lengths), h_n, c_n, dx, dh0, dc0 as NumPy arrays.
    """
    xt = torch.from_numpy(x).requires_grad_(True)
    h0t = torch.from_numpy(h0).requires_grad_(True)
    c0t = None if c0 is None else torch.from_numpy(c0).requires_grad_(True)
    state = h0t if c0t is None else (h0t, c0t)
    if lengths is None:
        out, final = module(xt, state)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.from_numpy(np.asarray(lengths)), batch_first=True, enforce_sorted=False)
        out_packed, final = module(packed, state)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True,
                                                        total_length=x.shape[1])
    h_n, c_n = final if c0t is not None else (final, None)
    loss = (out * torch.from_numpy(dout)).sum() + (h_n * torch.from_numpy(dh_n)).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.from_numpy(dc_n)).sum()
    loss.backward()
    return (out.detach().numpy(), h_n.detach().numpy(), None if c_n is None else c_n.detach().numpy(),
            xt.grad.numpy(), h0t.grad.numpy(), None if c0t is None else c0t.grad.numpy())


def compare_stack(cell, N, T, D, H, dtype, lengths, num_layers, bidirectional):
    module = torch_module(cell, D, H, dtype, num_layers, bidirectional)
    name, weights, options = fastrnn.weights_from_torch(module)
    dirs = 2 if bidirectional else 1
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    h0 = rng.standard_normal((num_layers * dirs, N, H)).astype(dtype)
    c0 = rng.standard_normal((num_layers * dirs, N, H)).astype(dtype) if cell.is_lstm else None
    dout = rng.standard_normal((N, T, dirs * H)).astype(dtype)
    dh_n = rng.standard_normal(h0.shape).astype(dtype)
    dc_n = rng.standard_normal(h0.shape).astype(dtype) if cell.is_lstm else None

    out_t, h_n_t, c_n_t, dx_t, dh0_t, dc0_t = run_torch(module, x, h0, c0, dout, dh_n, dc_n, lengths)
    out, final, cache = fastrnn.stack_forward(name, x, weights, h0=h0, c0=c0, lengths=lengths,
                                              **options)
    dx, dinit, dweights = fastrnn.stack_backward(dout, cache, dh_n=dh_n, dc_n=dc_n)
    h_n, c_n = final if cell.is_lstm else (final, None)
    dh0, dc0 = dinit if cell.is_lstm else (dinit, None)
    if lengths is not None:
        assert not out[np.arange(T)[None, :] >= np.asarray(lengths)[:, None]].any()
    pairs = [("out", out, out_t), ("h_n", h_n, h_n_t), ("dx", dx, dx_t), ("dh0", dh0, dh0_t)]
    if cell.is_lstm:
        pairs += [("c_n", c_n, c_n_t), ("dc0", dc0, dc0_t)]
    for l, layer in enumerate(torch_grads_as_fastrnn(module, name)):
        for d, grads in enumerate(layer):
            for k, (g, gt) in enumerate(zip(dweights[l][d], grads)):
                pairs.append((f"d{('Wx', 'Wh', 'b', 'bh')[k]}[{l}][{d}]", g, gt))
    for label, got, want in pairs:
        assert_matches_torch(label, got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 7, 5, 11), (16, 13, 9, 37)],
                         ids=lambda s: "N{}T{}D{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_single_layer_matches_torch(cell, shape, dtype):
    compare_stack(cell, *shape, dtype, None, 1, False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_ragged_matches_torch_per_sequence(cell, dtype):
    """Each sequence run by torch alone at its own length (no packing), as the issue asks;
    lengths include 0 and the full length, unsorted."""
    N, T, D, H = 5, 6, 4, 3
    lengths = np.array([4, 0, 6, 1, 6])
    p = cell.params(*make_inputs(N, T, D, H, cell.gates, dtype))
    dh = upstream((N, T, H), dtype)
    dstates = tuple(upstream((N, H), dtype, 2 + k) for k in range(len(cell.state_names)))
    h, states, cache = cell.forward(fastrnn, p, lengths)
    grads = cell.backward(fastrnn, dh, dstates, cache)
    module = torch_module(cell, D, H, dtype)
    with torch.no_grad():  # give torch fastrnn's weights (b goes to bias_ih, bias_hh = bh or 0)
        order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H] if cell.is_lstm else np.arange(cell.gates * H)
        inv = np.argsort(order)
        module.weight_ih_l0.copy_(torch.from_numpy(p["Wx"][:, inv].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["Wh"][:, inv].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy((p["bx"] if cell.is_gru else p["b"])[inv].copy()))
        module.bias_hh_l0.copy_(torch.from_numpy(p["bh"][inv].copy()) if cell.is_gru
                                else torch.zeros(cell.gates * H, dtype=TORCH_DTYPE[dtype]))
    for n in range(N):
        L = lengths[n]
        if L == 0:  # torch refuses empty sequences; the state passes through untouched
            assert_matches_torch("final_h", states[0][n], p["h0"][n], dtype)
            assert_matches_torch("dh0", grads["h0"][n], dstates[0][n], dtype)
            continue
        module.zero_grad()
        c0 = p["c0"][None, n:n + 1].copy() if cell.is_lstm else None
        dc_n = dstates[1][None, n:n + 1].copy() if cell.is_lstm else None
        out_t, h_n_t, c_n_t, dx_t, dh0_t, dc0_t = run_torch(
            module, p["x"][n:n + 1, :L].copy(), p["h0"][None, n:n + 1].copy(), c0,
            dh[n:n + 1, :L].copy(), dstates[0][None, n:n + 1].copy(), dc_n)
        assert_matches_torch("h", h[n, :L], out_t[0], dtype)
        assert_matches_torch("final_h", states[0][n], h_n_t[0, 0], dtype)
        assert_matches_torch("dx", grads["x"][n, :L], dx_t[0], dtype)
        assert_matches_torch("dh0", grads["h0"][n], dh0_t[0, 0], dtype)
        if cell.is_lstm:
            assert_matches_torch("final_c", states[1][n], c_n_t[0, 0], dtype)
            assert_matches_torch("dc0", grads["c0"][n], dc0_t[0, 0], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_two_layer_bidirectional_with_lengths_matches_torch_packed(cell, dtype):
    # Unsorted, with the full length; no 0 here: torch's packing rejects empty sequences.
    compare_stack(cell, 6, 7, 5, 4, dtype, np.array([7, 3, 1, 5, 7, 2]), 2, True)


def test_gru_matches_torch_gru_float64_odd_shapes():
    for shape in [(1, 1, 1, 1), (2, 3, 5, 7), (7, 11, 13, 17)]:
        compare_stack(GRU, *shape, np.float64, None, 1, False)
