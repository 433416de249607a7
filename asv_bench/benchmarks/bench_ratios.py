"""Speed-ups as ratios measured side by side in one process, interleaved: absolute times on
these shared 2-core machines drift by +-30 % over minutes, ratios much less. These track
the claims in the README's speed tables (issues 5 and 11), so a regression in any of them
shows as a drop. Run under `scripts/isa --bench avx2` (or x86-64) for another ISA's figures.

- SpeedupVsTorch: torch time / fastrnn time, float32 and float64 (skipped without torch).
  "forward": fastrnn's training forward (keeps a cache) vs torch's forward under no_grad;
  "inference": fastrnn's cache-free forward vs the same; "forward_backward": both with
  gradients for x, h0 and all weights.
- GRUSmallBatchSpeedupVsTorch: the GRU at SpeedupVsTorch's one-to-four-sequence shapes
  (its forward's time loop split by hidden units), float32.
- GemmOverNumpy: fastrnn's GEMM rate over NumPy's matmul on (4096, 1024) @ (1024, 1024),
  in blocks with a pause between them (bench.gemm_rates); issue 11 asks >= 0.85 on AVX2.
- StepSpeedup: single steps at N = 1 (issue 12) vs torch's cells and the reference.
- SmallBatchStepSpeedup: an LSTM step of 2 or 4 rows, and of one row with big weights, vs
  torch.nn.LSTMCell (the in-place products' multi-row kernel and the split threshold).
- FractionOfGemm: fastrnn's LSTM forward rate over the rate of one matrix product with the
  same FLOP count, (T*N, D+H) @ (D+H, 4H), the faster of NumPy's and fastrnn's GEMM.
- ModuleStepSpeedup: fastrnn.torch's modules vs torch.nn's, a training step (issue 15).
- TokenInferenceSpeedup: serving a token at a time (T = 1): lstm_inference and
  fastrnn.torch.LSTM under no_grad vs torch.nn.LSTM under no_grad.
"""

import importlib.util
import time

import numpy as np

import fastrnn

from fastrnn import bench

from .common import parse, setup_impl

SHAPES = ["(50, 1, 32, 32)", "(100, 16, 64, 128)", "(100, 64, 256, 256)", "(200, 32, 512, 512)"]
# One to four sequences with big weights (issue 12), where torch is still faster (README,
# Speed): the time loop runs on one core while torch splits each step's product over both.
SMALL_BATCH_BIG_WEIGHTS = ["(100, 1, 256, 256)", "(100, 4, 256, 256)", "(100, 1, 512, 512)"]
KINDS = ["forward", "inference", "forward_backward"]
# float64 is tracked at the two smaller sizes only: each parameter set costs seconds of
# warm-up and interleaved rounds, and the float32 sizes are where the README's claims are.
FLOAT64_SHAPES = SHAPES[:2]


def interleaved_medians(functions, rounds):
    """Median seconds of each function, calling them in turn ``rounds`` times."""
    times = [[] for _ in functions]
    for _ in range(rounds):
        for spent, fn in zip(times, functions):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def _pair_with_torch(cell, shape, dtype, kind):
    """(fastrnn's call, torch's call) of ``kind`` for SpeedupVsTorch and its GRU twin, each
    warmed up (compiled) on the same inputs; NotImplementedError (skip) without torch.
    "inference" is fastrnn's cache-free forward against torch's forward under no_grad."""
    ours_warm = {"forward": ("forward",), "inference": (),
                 "forward_backward": ("forward_backward",)}[kind]
    theirs_warm = ("forward_backward",) if kind == "forward_backward" else ("forward",)
    p, fwd, fwdbwd = setup_impl(cell, shape, dtype, "fastrnn", ours_warm)
    _, torch_fwd, torch_fwdbwd = setup_impl(cell, shape, dtype, "torch", theirs_warm)
    infer = bench.numpy_impl(fastrnn, cell)[2]
    if kind == "inference":
        infer(p)
    ours = {"forward": fwd, "inference": infer, "forward_backward": fwdbwd}[kind]
    theirs = torch_fwdbwd if kind == "forward_backward" else torch_fwd
    return (lambda: ours(p), lambda: theirs(p))


class SpeedupVsTorch:
    params = (SHAPES + SMALL_BATCH_BIG_WEIGHTS, ["float32", "float64"], KINDS)
    param_names = ["shape (T, N, D, H)", "dtype", "kind"]
    unit = "torch time / fastrnn time"
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, shape, dtype, kind):
        if dtype == "float64" and shape not in FLOAT64_SHAPES:
            raise NotImplementedError("float64 is tracked at the two smaller sizes")
        self.pair = _pair_with_torch("lstm", shape, dtype, kind)
        T, N, D, H = parse(shape)
        self.rounds = 25 if N * H < 10_000 else 7

    def track_speedup(self, shape, dtype, kind):
        ours, theirs = interleaved_medians(self.pair, self.rounds)
        return theirs / ours


class GRUSmallBatchSpeedupVsTorch:
    """The GRU on one to four sequences with big weights (issue 12: the forward's time loop
    split by hidden units), float32: torch.nn.GRU time / fastrnn time, kinds as
    SpeedupVsTorch's. Skipped without torch."""
    params = (SMALL_BATCH_BIG_WEIGHTS, KINDS)
    param_names = ["shape (T, N, D, H)", "kind"]
    unit = "torch time / fastrnn time"
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, shape, kind):
        self.pair = _pair_with_torch("gru", shape, "float32", kind)

    def track_speedup(self, shape, kind):
        ours, theirs = interleaved_medians(self.pair, 7)
        return theirs / ours


class GemmOverNumpy:
    params = (["float32", "float64"],)
    param_names = ["dtype"]
    unit = "fastrnn GFLOP/s / NumPy GFLOP/s"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, dtype):
        bench.product_rates(64, 64, 64, dtype, repeats=1)  # compile the GEMM first

    def track_gemm_over_numpy(self, dtype):
        rates = bench.gemm_rates(dtype)
        return rates["fastrnn"] / rates["numpy"]


class FractionOfGemm:
    params = (SHAPES[1:],)
    param_names = ["shape (T, N, D, H)"]
    unit = "fraction"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, shape):
        self.p, self.fwd, _ = setup_impl("lstm", shape, "float32", "fastrnn", ("forward",))
        self.T, self.N, self.D, self.H = parse(shape)

    def track_forward_over_same_flop_product(self, shape):
        T, N, D, H = self.T, self.N, self.D, self.H
        forward_seconds = interleaved_medians([lambda: self.fwd(self.p)], 7)[0]
        product_gflops, _ = bench.product_gflops(T * N, D + H, 4 * H, "float32")
        forward_gflops = 2 * T * N * (D + H) * 4 * H / forward_seconds / 1e9
        return forward_gflops / product_gflops


class StepSpeedup:
    """One step of one sequence, as a sampling loop runs it (issue 12): N = 1, D = 64,
    H = 256, float32. Ratio other time / fastrnn time, interleaved. "torch": torch.nn.
    LSTMCell / GRUCell / RNNCell under no_grad ("forward") or forward + autograd backward
    of all inputs and weights ("forward_backward"); "reference": fastrnn.reference's step
    functions. (The GRU and RNN backward through torch are not timed here.)"""
    params = (["lstm", "gru", "rnn"], ["torch", "reference"], ["forward", "forward_backward"])
    param_names = ["cell", "other", "kind"]
    unit = "other time / fastrnn time"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, cell, other, kind):
        import fastrnn.reference as reference
        if kind == "forward_backward" and cell != "lstm":
            raise NotImplementedError("forward_backward timed for the LSTM step")
        N, D, H = 1, 64, 256
        x, h, c, Wx, Wh, b = _step_inputs(N, D, H, bench.GATES[cell])
        args = {"lstm": (x, h, c, Wx, Wh, b), "gru": (x, h, Wx, Wh, b, b),
                "rnn": (x, h, Wx, Wh, b)}[cell]

        def step_pair(lib):
            forward = getattr(lib, f"{cell}_step_forward")
            if kind == "forward":
                return lambda: forward(*args)
            backward = lib.lstm_step_backward

            def forward_backward():
                next_h, next_c, cache = forward(*args)
                backward(next_h, next_c, cache)
            return forward_backward
        ours = step_pair(fastrnn)
        if other == "reference":
            theirs = step_pair(reference)
        else:
            theirs = _torch_cell_step(cell, kind, x, h, c, D, H)
        ours()
        theirs()
        self.pair = (ours, theirs)

    def track_speedup(self, cell, other, kind):
        ours, theirs = interleaved_medians(self.pair, 300)
        return theirs / ours


class SmallBatchStepSpeedup:
    """One LSTM step of a few rows or of big weights (issue 12), float32: torch.nn.LSTMCell
    under no_grad time / fastrnn.lstm_step_forward time, interleaved. (N, D, H): 2 and 4
    rows go through the in-place products' MR_STEP-row kernel (which had run at 14 GB/s
    there on AVX-512), (1, 512, 512) is a step of 8 MB of weights, below the split
    threshold."""
    params = (["(2, 64, 256)", "(4, 64, 256)", "(1, 512, 512)"],)
    param_names = ["shape"]
    unit = "torch time / fastrnn time"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, shape):
        N, D, H = parse(shape)
        x, h, c, Wx, Wh, b = _step_inputs(N, D, H, 4)
        theirs = _torch_cell_step("lstm", "forward", x, h, c, D, H)

        def ours():
            fastrnn.lstm_step_forward(x, h, c, Wx, Wh, b)
        ours()
        theirs()
        self.pair = (ours, theirs)

    def track_speedup(self, shape):
        ours, theirs = interleaved_medians(self.pair, 200)
        return theirs / ours


def _step_inputs(N, D, H, gates):
    """Float32 x (N, D), h and c (N, H), Wx (D, G), Wh (H, G) and zero b (G,), G = gates * H,
    for the step benchmarks."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    c = rng.standard_normal((N, H)).astype(np.float32)
    Wx = (rng.standard_normal((D, gates * H)) / np.sqrt(D)).astype(np.float32)
    Wh = (rng.standard_normal((H, gates * H)) / np.sqrt(H)).astype(np.float32)
    return x, h, c, Wx, Wh, np.zeros(gates * H, np.float32)


def _torch_cell_step(cell, kind, x, h, c, D, H):
    """torch.nn.LSTMCell / GRUCell / RNNCell on the same shapes (its own weights: only the
    time is compared), as a function of no arguments; NotImplementedError without torch."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    module = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell,
              "rnn": torch.nn.RNNCell}[cell](D, H)
    tx, th, tc = (torch.from_numpy(a) for a in (x, h, c))
    state = (th, tc) if cell == "lstm" else th
    if kind == "forward":
        def forward():
            with torch.no_grad():
                module(tx, state)
        return forward

    def forward_backward():
        xs, hs, cs = (a.clone().requires_grad_() for a in (tx, th, tc))
        next_h, next_c = module(xs, (hs, cs))
        (next_h.sum() + next_c.sum()).backward()
    return forward_backward


class ModuleStepSpeedup:
    """fastrnn.torch's LSTM / GRU / RNN modules against torch.nn's (issue 15): a training
    step (zero_grad, forward, output.backward, every gradient) on the same weights, torch
    time / fastrnn.torch time, interleaved (bench.module_step_speedup). Skipped without
    torch."""
    params = (["lstm", "gru", "rnn"], ["(50, 1, 32, 32)", "(100, 16, 64, 128)"])
    param_names = ["cell", "shape (T, N, D, H)"]
    unit = "torch time / fastrnn.torch time"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, cell, shape):
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("torch is not installed")

    def track_speedup(self, cell, shape):
        return bench.module_step_speedup(cell, parse(shape), "float32")["speedup"]


class TokenInferenceSpeedup:
    """Serving a token at a time: a sequence of T = 1 through lstm_inference ("functional",
    the step kernels: _core.in_steps) or fastrnn.torch.LSTM under no_grad ("module", which
    also converts its weights every call), against torch.nn.LSTM under no_grad on the same
    shapes, float32: torch time / fastrnn time, interleaved. Skipped without torch."""
    params = (["(1, 1, 256, 256)", "(1, 1, 512, 512)", "(1, 16, 256, 256)"],
              ["functional", "module"])
    param_names = ["shape (T, N, D, H)", "api"]
    unit = "torch time / fastrnn time"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, shape, api):
        try:
            import torch
            import fastrnn.torch as fastrnn_torch
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        T, N, D, H = parse(shape)
        torch.manual_seed(0)
        theirs = torch.nn.LSTM(D, H)
        x = torch.randn(T, N, D)

        def torch_call():
            with torch.no_grad():
                theirs(x)
        if api == "module":
            ours_module = fastrnn_torch.from_torch(theirs)

            def ours():
                with torch.no_grad():
                    ours_module(x)
        else:
            xs, h, _, Wx, Wh, b = _step_inputs(N, D, H, 4)
            xs = xs[:, None, :]

            def ours():
                fastrnn.lstm_inference(xs, h, Wx, Wh, b)
        ours()
        torch_call()
        self.pair = (ours, torch_call)

    def track_speedup(self, shape, api):
        ours, theirs = interleaved_medians(self.pair, 200)
        return theirs / ours
