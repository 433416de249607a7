"""fastrnn.torch's LSTM, GRU and RNN modules against torch.nn's (skipped without torch):
outputs, final states and every gradient (input, hx, each parameter) over layers,
directions, batch_first, hx, packed and padded input, both dtypes; gradcheck; state_dict
both ways; an optimiser step; dropout; from_torch; errors."""

import itertools
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastrnn.torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
KINDS = {  # name: (torch class, fastrnn class, extra constructor options)
    "lstm": (torch.nn.LSTM, ft.LSTM, {}),
    "gru": (torch.nn.GRU, ft.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, ft.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, ft.RNN, {"nonlinearity": "relu"}),
}
T, N, D, H = 5, 3, 4, 7
LENGTHS = [5, 2, 4]  # unsorted: packed with enforce_sorted=False


def make_pair(kind, dtype=torch.float64, size=(D, H), **options):
    """(torch module, fastrnn module with the torch module's weights via load_state_dict)."""
    theirs_class, ours_class, extra = KINDS[kind]
    torch.manual_seed(0)
    theirs = theirs_class(*size, **extra, **options).to(dtype)
    ours = ours_class(*size, **extra, **options).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def rel_err(got, want):
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def assert_close(name, got, want, dtype):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err <= TOL[dtype], f"{name}: relative error {err:.2e} vs torch.nn"


def inputs(module, dtype, batch_first, with_hx, packed, seed=1):
    """Leaf tensors: x (padded, (T, N, D) or (N, T, D)) and hx (h0 or (h0, c0)) or None."""
    g = torch.Generator().manual_seed(seed)
    shape = (N, T, module.input_size)
    x = torch.randn(shape if batch_first else shape[1::-1] + shape[2:], generator=g,
                    dtype=dtype).requires_grad_()
    hx = None
    if with_hx:
        states = module.num_layers * (2 if module.bidirectional else 1)
        hx = [torch.randn(states, N, module.hidden_size, generator=g,
                          dtype=dtype).requires_grad_()
              for _ in range(2 if isinstance(module, torch.nn.LSTM) else 1)]
    return x, hx


def run(module, x, hx, packed, batch_first):
    """Forward, then backward of a loss touching output and every final state; returns
    (output as a tensor, final states list)."""
    arg = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first,
                               enforce_sorted=False) if packed else x
    hx_arg = None if hx is None else (tuple(hx) if len(hx) == 2 else hx[0])
    out, states = module(arg, hx_arg)
    finals = list(states) if isinstance(states, tuple) else [states]
    data = out.data if packed else out
    g = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
               for t in [data] + finals)
    loss.backward()
    return out, finals


def _pairwise(options):
    """Rows of itertools.product(*options), chosen greedily until every pair of values of
    any two options appears in some row: a covering set, far smaller than the product."""
    rows = list(itertools.product(*options))
    pairs = lambda row: {(i, a, j, b) for (i, a), (j, b) in
                         itertools.combinations(enumerate(row), 2)}
    missing = set().union(*map(pairs, rows))
    chosen = []
    while missing:
        best = max(rows, key=lambda row: len(pairs(row) & missing))
        chosen.append(best)
        missing -= pairs(best)
    return chosen


FEATURES = ((1, 2), (False, True), (False, True), (False, True), (False, True))
# float64, to 1e-9: every combination of layers, directions, batch_first, hx and packing.
# float32 runs the same module code on the other dtype's kernels (which test_kernels holds
# to the reference on their own): each pair of those choices once, per cell.
CASES = ([(kind, *case, torch.float64) for kind in KINDS
          for case in itertools.product(*FEATURES)]
         + [(kind, *case, torch.float32) for kind in KINDS for case in _pairwise(FEATURES)])


@pytest.mark.parametrize("kind, layers, bidirectional, batch_first, with_hx, packed, dtype",
                         CASES, ids=["-".join(str(c) for c in case[:-1])
                                     + ("-f64" if case[-1] == torch.float64 else "-f32")
                                     for case in CASES])
def test_matches_torch_nn(kind, layers, bidirectional, batch_first, with_hx, packed, dtype):
    theirs, ours = make_pair(kind, dtype, num_layers=layers, bidirectional=bidirectional,
                             batch_first=batch_first)
    results = []
    for module in (theirs, ours):
        x, hx = inputs(module, dtype, batch_first, with_hx, packed)
        out, finals = run(module, x, hx, packed, batch_first)
        results.append((out, finals, x, hx))
    (out_t, finals_t, x_t, hx_t), (out_o, finals_o, x_o, hx_o) = results
    if packed:
        assert isinstance(out_o, type(out_t))
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            assert torch.equal(getattr(out_o, field), getattr(out_t, field)), field
        out_t, out_o = out_t.data, out_o.data
    else:
        assert out_o.is_contiguous()
    assert_close("output", out_o, out_t, dtype)
    for i, (a, b) in enumerate(zip(finals_o, finals_t)):
        assert_close(f"final state {i}", a, b, dtype)
    assert_close("d input", x_o.grad, x_t.grad, dtype)
    for i, (a, b) in enumerate(zip(hx_o or [], hx_t or [])):
        assert_close(f"d hx[{i}]", a.grad, b.grad, dtype)
    for (name, p_o), (_, p_t) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(f"d {name}", p_o.grad, p_t.grad, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_and_no_bias(kind):
    theirs, ours = make_pair(kind, num_layers=2, bidirectional=True, bias=False)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(T, D, generator=g, dtype=torch.float64)
    h0 = torch.randn(4, H, generator=g, dtype=torch.float64)
    hx = (h0, h0 * 0.5) if kind == "lstm" else h0
    (out_t, st_t), (out_o, st_o) = theirs(x, hx), ours(x, hx)
    assert_close("output", out_o, out_t, torch.float64)
    for a, b in zip(st_o if kind == "lstm" else [st_o], st_t if kind == "lstm" else [st_t]):
        assert_close("final state", a, b, torch.float64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck(kind, packed):
    """torch.autograd.gradcheck through the input, hx and every parameter (float64,
    2 layers, bidirectional; small, as gradcheck evaluates the module twice per element)."""
    _, ours = make_pair(kind, size=(2, 3), num_layers=2, bidirectional=True, batch_first=True)
    x, hx = inputs(ours, torch.float64, True, True, packed)
    names = [n for n, _ in ours.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]

    def f(x, *rest):
        states, weights = rest[:len(hx)], rest[len(hx):]
        arg = (pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True,
                                    enforce_sorted=False) if packed else x)
        hx_arg = tuple(states) if len(states) == 2 else states[0]
        out, final = torch.func.functional_call(ours, dict(zip(names, weights)), (arg, hx_arg))
        finals = final if isinstance(final, tuple) else (final,)
        return (out.data if packed else out,) + finals

    assert torch.autograd.gradcheck(f, (x, *hx, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_of_gradients_raise_rather_than_come_out_wrong(kind):
    """Gradients made with create_graph=True cannot be differentiated again (fastrnn's
    backward is not itself differentiable): that raises, where a plain backward (grad mode
    off, once_differentiable's checks skipped) gives the gradients."""
    _, ours = make_pair(kind)
    x, hx = inputs(ours, torch.float64, False, True, False)
    out = ours(x, hx if len(hx) == 2 else hx[0])[0]
    (dx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        dx.sum().backward()
    out = ours(x, hx if len(hx) == 2 else hx[0])[0]
    (plain,) = torch.autograd.grad(out.square().sum(), x)
    assert torch.equal(plain, dx.detach())


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind):
    theirs, ours = make_pair(kind, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(1.5)  # different weights, to see them arrive
    fresh = KINDS[kind][0](D, H, **KINDS[kind][2], num_layers=2, bidirectional=True).double()
    fresh.load_state_dict(ours.state_dict())
    x = torch.randn(T, N, D, dtype=torch.float64)
    assert_close("output", ours(x)[0], fresh(x)[0], torch.float64)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_an_optimiser_step_gives_torchs_weights(kind):
    theirs, ours = make_pair(kind, num_layers=2)
    for module in (theirs, ours):
        optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
        for step in range(3):
            optimiser.zero_grad()
            x, _ = inputs(module, torch.float64, False, False, False, seed=10 + step)
            run(module, x, None, False, False)
            optimiser.step()
    for (name, p_o), (_, p_t) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(name, p_o, p_t, torch.float64)


def test_every_way_of_changing_the_weights_reaches_the_kernels():
    """The modules keep NumPy views of their parameters between calls; a change made in
    place, by assigning .data, by replacing a Parameter or by .to() must show in the next
    call as it does in torch's."""
    theirs, ours = make_pair("lstm", num_layers=2)
    x = torch.randn(T, N, D, dtype=torch.float64)

    def check(what):
        assert_close(what, ours(x)[0], theirs(x)[0], torch.float64)
        x_grad = x.clone().requires_grad_()
        ours(x_grad)[0].sum().backward()  # the training path reads the same views
        x_want = x.clone().requires_grad_()
        theirs(x_want)[0].sum().backward()
        assert_close(what + " (dx)", x_grad.grad, x_want.grad, torch.float64)

    check("first call")
    with torch.no_grad():
        for module in (theirs, ours):
            module.weight_hh_l1.mul_(1.5)
    check("in place")
    for module in (theirs, ours):
        module.weight_ih_l0.data = module.weight_ih_l0.data * -1.0
    check(".data assigned")
    bias = torch.randn(4 * H, dtype=torch.float64)
    for module in (theirs, ours):
        module.bias_hh_l0 = torch.nn.Parameter(bias.clone())
    check("a new Parameter")
    theirs, ours = theirs.float(), ours.float()
    x = x.float()
    assert_close(".to(float32)", ours(x)[0], theirs(x)[0], torch.float32)


def test_dropout_between_layers():
    """As torch applies it: only in training mode, between layers. p = 1 is deterministic
    (the second layer sees zeros), so it can be compared with torch's exactly."""
    theirs, ours = make_pair("lstm", num_layers=2, dropout=1.0)
    x = torch.randn(T, N, D, dtype=torch.float64)
    assert_close("train, p=1", ours(x)[0], theirs(x)[0], torch.float64)
    theirs.dropout = ours.dropout = 0.5
    theirs.eval(), ours.eval()
    assert_close("eval, p=0.5", ours(x)[0], theirs(x)[0], torch.float64)
    ours.train()
    torch.manual_seed(5)
    a = ours(x)[0]
    torch.manual_seed(5)
    assert torch.equal(ours(x)[0], a)  # the mask comes from torch's RNG
    assert rel_err(a, theirs(x)[0]) > 1e-3  # and it was applied


def test_from_torch_shares_the_parameters():
    theirs = torch.nn.GRU(D, H, num_layers=2, batch_first=True).double().eval()
    ours = ft.from_torch(theirs)
    assert isinstance(ours, torch.nn.GRU) and isinstance(ours, ft.GRU)
    assert not ours.training and ours.batch_first and ours.num_layers == 2
    assert all(a is b for a, b in zip(ours.parameters(), theirs.parameters()))
    x = torch.randn(N, T, D, dtype=torch.float64)
    assert_close("output", ours(x)[0], theirs(x)[0], torch.float64)
    relu = ft.from_torch(torch.nn.RNN(D, H, nonlinearity="relu"))
    assert isinstance(relu, ft.RNN) and relu.nonlinearity == "relu"
    with pytest.raises(TypeError, match="torch.nn.LSTM, GRU or RNN"):
        ft.from_torch(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="proj_size.*torch.nn.LSTM"):
        ft.from_torch(torch.nn.LSTM(D, H, proj_size=2))


def test_unsupported_and_bad_input_raise_clear_errors():
    with pytest.raises(ValueError, match="proj_size.*torch.nn.LSTM"):
        ft.LSTM(D, H, proj_size=2)
    lstm = ft.LSTM(D, H)
    x = torch.randn(T, N, D)
    with pytest.raises(TypeError, match="float16.*torch.nn.LSTM"):
        ft.LSTM(D, H).half()(x.half())
    with pytest.raises(TypeError, match="device meta.*torch.nn.GRU"):
        ft.GRU(D, H)(x.to("meta"))
    with pytest.raises(TypeError, match="float64.*module's parameters are torch.float32"):
        lstm(x.double())
    with pytest.raises(ValueError, match=f"{D} features"):
        lstm(torch.randn(T, N, D + 1))
    with pytest.raises(ValueError, match="3-D"):
        lstm(torch.randn(T))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h0\) must have shape \(L \* dirs, N, H\)"):
        lstm(x, (torch.zeros(1, N + 1, H), torch.zeros(1, N, H)))
    with pytest.raises(TypeError, match=r"pair \(h0, c0\)"):
        lstm(x, torch.zeros(1, N, H))
    with pytest.raises(ValueError, match=r"hx must have shape"):
        ft.RNN(D, H)(x, torch.zeros(2, N, H))


@pytest.mark.parametrize("kind", KINDS)
def test_the_modules_checks_reach_what_the_kernels_are_given(kind):
    """The modules hand their arrays to the cells' kernels without the public functions'
    checks (stack._ready_forward): a parameter replaced by one of the wrong shape still gets
    the checks' error, never a kernel reading past it; and with fastrnn's finite check on, a
    NaN in the input is named."""
    import fastrnn
    module = KINDS[kind][1](D, H, **KINDS[kind][2]).double()
    x = torch.randn(T, N, D, dtype=torch.float64, requires_grad=True)
    module.weight_hh_l0 = torch.nn.Parameter(module.weight_hh_l0.detach()[:, :-1].clone())
    with pytest.raises(ValueError, match=r"W[xh] must have shape"):
        module(x)
    module = KINDS[kind][1](D, H, **KINDS[kind][2]).double()
    bad = x.detach().clone()
    bad[1, 2, 3] = float("nan")
    assert torch.isnan(module(bad.requires_grad_())[0]).any()  # check off: NaN goes through
    previous = fastrnn.set_check_finite(True)
    try:
        with pytest.raises(ValueError, match=r"x holds nan at index \(2, 1, 3\)"):
            module(bad)
    finally:
        fastrnn.set_check_finite(previous)


def test_gradients_are_new_tensors_and_inputs_untouched():
    _, ours = make_pair("lstm", num_layers=2, bidirectional=True)
    x, hx = inputs(ours, torch.float64, False, True, False)
    before = [t.detach().clone() for t in [x, *hx, *ours.parameters()]]
    run(ours, x, hx, False, False)
    for a, b in zip(before, [x, *hx, *ours.parameters()]):
        assert torch.equal(a, b.detach())
    for p in ours.parameters():
        assert p.grad.is_contiguous() and p.grad.data_ptr() != p.data_ptr()


def test_importing_fastrnn_does_not_import_torch():
    code = "import sys, fastrnn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_bench_times_the_modules_after_checking_them(capsys):
    from fastrnn import bench
    result = bench.module_step_speedup("gru", (4, 2, 3, 5), "float64", rounds=2,
                                       min_seconds=0.001)
    assert result["max_rel_error"] < 1e-9 and result["torch_ms"] > 0
    assert result["speedup"] == pytest.approx(result["torch_ms"] / result["fastrnn_ms"])
    bench.print_module_table([("gru", (4, 2, 3, 5), "float64", result)])
    assert "fastrnn.torch modules vs torch.nn" in capsys.readouterr().out


def test_the_readme_example_runs():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### PyTorch modules: `fastrnn.torch`"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README fastrnn.torch", "exec"), namespace)
    assert namespace["out"].shape == (16, 100, 256)
    assert namespace["h_n"].shape == namespace["c_n"].shape == (4, 16, 128)
    assert all(p.grad is not None for p in namespace["lstm"].parameters())
    assert isinstance(namespace["gru"], torch.nn.GRU)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packed", [False, True])
def test_without_gradients_the_inference_path_runs(kind, packed, monkeypatch):
    """Under no_grad (or with nothing requiring grad) the forward keeps no cache: fastrnn's
    *_inference functions, and the same results as torch's."""
    theirs, ours = make_pair(kind, num_layers=2, bidirectional=True)
    x, hx = inputs(ours, torch.float64, False, True, packed)
    arg = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False) if packed else x
    hx = tuple(h.detach() for h in hx)
    hx = hx if kind == "lstm" else hx[0]
    with torch.no_grad():
        want_out, want_states = theirs(arg, hx)

    def no_training_forward(*args, **kwargs):
        raise AssertionError("the training forward ran under no_grad")
    for name in ("lstm_forward", "gru_forward", "rnn_forward"):
        monkeypatch.setattr(f"fastrnn.stack.{name}", no_training_forward)
    with torch.no_grad():
        out, states = ours(arg, hx)
    if packed:
        out, want_out = out.data, want_out.data
    assert out.grad_fn is None
    assert_close("output", out, want_out, torch.float64)
    for a, b in zip(states if kind == "lstm" else [states],
                    want_states if kind == "lstm" else [want_states]):
        assert_close("final state", a, b, torch.float64)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("used", ["output", "final h", "final c"])
def test_a_loss_of_some_outputs_only(kind, used):
    """Outputs the loss leaves out reach the backward as None (not materialised zeros)."""
    if kind == "gru" and used == "final c":
        pytest.skip("the GRU has no cell state")
    theirs, ours = make_pair(kind, num_layers=2, bidirectional=True)
    grads = []
    for module in (theirs, ours):
        x, hx = inputs(module, torch.float64, False, True, False)
        out, states = module(x, tuple(hx) if kind == "lstm" else hx[0])
        states = states if kind == "lstm" else (states,)
        chosen = {"output": out, "final h": states[0], "final c": states[-1]}[used]
        (chosen * torch.linspace(-1, 1, chosen.numel(), dtype=chosen.dtype).view_as(chosen)
         ).sum().backward()
        grads.append([x.grad, *(h.grad for h in hx), *(p.grad for p in module.parameters())])
    for i, (a, b) in enumerate(zip(grads[1], grads[0])):
        assert_close(f"gradient {i}", a, b, torch.float64)
