"""Compare fastrnn with the NumPy reference (and PyTorch's CPU LSTM/GRU/RNN when installed).

    python -m fastrnn.bench                 # default grid, float32, under a minute
    python -m fastrnn.bench --dtype float64 --shapes 100,16,64,128 --output out.json
    fastrnn-bench --plot timings.png        # adds sweeps over T and H, needs matplotlib

For every shape (T, N, D, H), dtype and cell it first checks that all implementations agree
on the inputs it times (a fast wrong kernel is not fast), then times forward (the training
forward, which keeps a cache), inference (no cache; torch: its forward under no_grad) and
forward+backward: one warm-up call (compilation is never timed), then the median of repeats
with the spread (min-max) beside it. Speed-ups are ratios measured side by side in one
process. GFLOP/s count the matrix products only; "%peak" is the forward's rate over that of
one matrix product with the same FLOP count, (T*N, D+H) @ (D+H, gates*H), timed in the same
run with NumPy's matmul and with fastrnn's own GEMM, whichever is faster.
"""

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import fastrnn
from fastrnn import reference

DEFAULT_SHAPES = [(50, 1, 32, 32), (100, 16, 64, 128), (100, 64, 256, 256), (200, 32, 512, 512)]
DEFAULT_RNN_SHAPES = [(50, 1, 32, 32), (100, 16, 64, 128)]
DEFAULT_GRU_SHAPES = [(50, 1, 32, 32), (100, 16, 64, 128)]
# fastrnn.torch's modules against torch.nn's: a training step (issue 15's sizes).
DEFAULT_MODULE_SHAPES = [(50, 1, 32, 32), (100, 16, 64, 128)]
SWEEP_T = [(T, 16, 64, 128) for T in (25, 50, 100, 200, 400)]
SWEEP_H = [(50, 16, 64, H) for H in (32, 64, 128, 256, 512)]
AGREEMENT = {"float64": 1e-9, "float32": 1e-4}
# Pause between the NumPy timings and fastrnn's: OpenBLAS's spinning threads are asleep by then.
SETTLE_SECONDS = 0.3


@dataclass
class Row:
    cell: str
    T: int
    N: int
    D: int
    H: int
    dtype: str
    impl: str
    fwd_ms: float
    fwd_spread_ms: tuple
    fwdbwd_ms: float
    fwdbwd_spread_ms: tuple
    fwd_gflops: float
    fwdbwd_gflops: float
    fwd_peak_fraction: float
    max_rel_error: float
    infer_ms: float = float("nan")
    infer_spread_ms: tuple = (float("nan"), float("nan"))
    speedup: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- timing


def time_call(fn, repeats, min_seconds=0.2):
    """Median and (min, max) in ms of fn() after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), (float(min(times)), float(max(times)))


def product_rates(M, K, P, dtype, repeats=5, blocks=1):
    """GFLOP/s of one (M, K) @ (K, P) product with NumPy's matmul (its BLAS) and with
    fastrnn's own GEMM (kernels/gemm.py): {"numpy": rate, "fastrnn": rate}, the best of
    ``blocks`` blocks of each, with a pause after each NumPy block (its BLAS threads spin
    for a while after a product and would slow fastrnn's)."""
    from fastrnn._core import matmul
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, P)).astype(dtype)
    c = np.empty((M, P), dtype)
    threads = fastrnn.get_num_threads()
    best = {"numpy": float("inf"), "fastrnn": float("inf")}
    for _ in range(blocks):
        best["numpy"] = min(best["numpy"], time_call(lambda: np.matmul(a, b, out=c), repeats)[0])
        time.sleep(SETTLE_SECONDS)
        best["fastrnn"] = min(best["fastrnn"], time_call(lambda: matmul(a, b, c, threads),
                                                         repeats)[0])
    return {name: 2 * M * K * P / (ms * 1e-3) / 1e9 for name, ms in best.items()}


def product_gflops(M, K, P, dtype, repeats=5):
    """GFLOP/s of one (M, K) @ (K, P) product, the faster of NumPy's matmul and fastrnn's
    GEMM, and which one it was."""
    rates = product_rates(M, K, P, dtype, repeats)
    best = max(rates, key=rates.get)
    return rates[best], best


def gemm_rates(dtype, repeats=5):
    """product_rates of one large product, (4096, 1024) @ (1024, 1024), in three blocks: the
    machine's practical GEMM rate with NumPy's BLAS and with fastrnn's GEMM."""
    return product_rates(4096, 1024, 1024, dtype, repeats, blocks=3)


GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def flops(cell, T, N, D, H):
    """Multiply-add FLOPs of the matrix products: forward, and forward+backward (3x)."""
    G = GATES[cell] * H
    fwd = 2 * N * T * (D + H) * G
    return fwd, 3 * fwd


# ----------------------------------------------------------------------------- implementations


def make_inputs(cell, T, N, D, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    x = rng.standard_normal((N, T, D)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((N, H))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((N, H))).astype(dtype)
    Wx = (rng.standard_normal((D, G)) / np.sqrt(D)).astype(dtype)
    Wh = (rng.standard_normal((H, G)) / np.sqrt(H)).astype(dtype)
    b = (0.1 * rng.standard_normal(G)).astype(dtype)
    bh = (0.1 * rng.standard_normal(G)).astype(dtype)  # the GRU's second bias
    dh = rng.standard_normal((N, T, H)).astype(dtype)
    return dict(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b, bh=bh, dh=dh)


def numpy_impl(mod, cell):
    """(forward, forward+backward, inference) closures for fastrnn or fastrnn.reference.

    forward+backward returns (h, grads) where grads is (dx, dh0, dWx, dWh, db) (GRU: db,
    dbh), for the agreement check.
    """
    if cell == "lstm":
        def fwd(p):
            return mod.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], c0=p["c0"])

        def infer(p):
            return mod.lstm_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], c0=p["c0"])

        def fwdbwd(p):
            h, cache = fwd(p)
            return h, mod.lstm_backward(p["dh"], cache)
    elif cell == "gru":
        def fwd(p):
            return mod.gru_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], p["bh"])

        def infer(p):
            return mod.gru_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], p["bh"])

        def fwdbwd(p):
            h, cache = fwd(p)
            return h, mod.gru_backward(p["dh"], cache)
    else:
        def fwd(p):
            return mod.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])

        def infer(p):
            return mod.rnn_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])

        def fwdbwd(p):
            h, cache = fwd(p)
            return h, mod.rnn_backward(p["dh"], cache)
    return fwd, fwdbwd, infer


def torch_impl(cell, p):
    """torch.nn.LSTM / GRU / RNN on the CPU with the same weights, or None without torch.

    PyTorch packs LSTM gates i, f, g, o (fastrnn: i, f, o, g) and stores weights transposed.
    """
    try:
        import torch
    except ImportError:
        return None
    dtype = torch.float32 if p["x"].dtype == np.float32 else torch.float64
    D, G = p["Wx"].shape
    H = p["h0"].shape[1]
    # fastrnn column j is torch row order[j] (the LSTM permutation is its own inverse).
    if cell == "lstm":
        order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
        module = torch.nn.LSTM(D, H, batch_first=True)
    elif cell == "gru":
        order = np.arange(G)
        module = torch.nn.GRU(D, H, batch_first=True)
    else:
        order = np.arange(G)
        module = torch.nn.RNN(D, H, batch_first=True, nonlinearity="tanh")
    module = module.to(dtype)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(p["Wx"][:, order].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["Wh"][:, order].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(p["b"][order].copy()))
        if cell == "gru":
            module.bias_hh_l0.copy_(torch.from_numpy(p["bh"].copy()))
        else:
            module.bias_hh_l0.zero_()
    x = torch.from_numpy(p["x"]).requires_grad_(True)
    h0 = torch.from_numpy(p["h0"][None].copy()).requires_grad_(True)
    state = (h0, torch.from_numpy(p["c0"][None].copy())) if cell == "lstm" else h0
    dh = torch.from_numpy(p["dh"])

    def fwd(_):
        with torch.no_grad():
            return module(x, state)[0].numpy(), None

    def fwdbwd(_):
        module.zero_grad(set_to_none=True)
        x.grad = h0.grad = None
        out = module(x, state)[0]
        out.backward(dh)
        grads = [x.grad.numpy(), h0.grad.numpy()[0],
                 module.weight_ih_l0.grad.numpy().T[:, order],
                 module.weight_hh_l0.grad.numpy().T[:, order],
                 module.bias_ih_l0.grad.numpy()[order]]
        if cell == "gru":
            grads.append(module.bias_hh_l0.grad.numpy())
        return out.detach().numpy(), tuple(grads)
    return fwd, fwdbwd, fwd  # torch's inference is its forward under no_grad


def max_rel_error(got, want):
    """Largest error over h and all gradients, each relative to its own largest entry."""
    errs = []
    for g, w in zip(got, want):
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-30)
        errs.append(float(np.max(np.abs(np.asarray(g, np.float64) - w), initial=0.0)) / scale)
    return max(errs)


def flatten(result):
    h, grads = result
    return [h, *grads]


# ----------------------------------------------------------------------------- the run


def run_case(cell, shape, dtype, repeats, with_torch, log):
    T, N, D, H = shape
    p = make_inputs(cell, T, N, D, H, dtype)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    impls = {"fastrnn": numpy_impl(fastrnn, cell), "reference": numpy_impl(reference, cell)}
    if with_torch:
        t = torch_impl(cell, p)
        if t is not None:
            impls["torch"] = t
    # Ground truth: the reference in float64 on the same (dtype-rounded) inputs.
    truth = flatten(impls["reference"][1](p64))
    fwd_flops, fwdbwd_flops = flops(cell, T, N, D, H)
    for name, (fwd, fwdbwd, infer) in impls.items():
        log(f"  {cell} {shape} {dtype} {name}: checking ...")
        inferred = infer(p)
        inferred = inferred[0] if isinstance(inferred, tuple) else inferred  # h
        err = max_rel_error(flatten(fwdbwd(p)) + [inferred], truth + truth[:1])
        if err > AGREEMENT[dtype]:
            raise SystemExit(f"MISMATCH: {name} {cell} {shape} {dtype}: max relative error "
                             f"{err:.2e} > {AGREEMENT[dtype]:.0e}; not reporting its times")
        impls[name] += (err,)
    # NumPy first (the reference, and the same-FLOP product): OpenBLAS's threads spin for a
    # while after each product and slowed the next fastrnn calls 2-7x here, so the others
    # are timed after they have gone to sleep.
    order = ["reference"] + [name for name in impls if name != "reference"]
    product, _ = product_gflops(T * N, D + H, GATES[cell] * H, dtype, repeats)
    rows = {}
    for name in order:
        fwd, fwdbwd, infer, err = impls[name]
        if name == "fastrnn":
            time.sleep(SETTLE_SECONDS)
        log(f"  {cell} {shape} {dtype} {name}: timing ...")
        fwd_ms, fwd_spread = time_call(lambda: fwd(p), repeats)
        infer_ms, infer_spread = ((fwd_ms, fwd_spread) if infer is fwd
                                  else time_call(lambda: infer(p), repeats))
        fb_ms, fb_spread = time_call(lambda: fwdbwd(p), repeats)
        rows[name] = Row(cell, T, N, D, H, dtype, name, fwd_ms, fwd_spread, fb_ms, fb_spread,
                         fwd_flops / fwd_ms / 1e6, fwdbwd_flops / fb_ms / 1e6, float("nan"),
                         err, infer_ms, infer_spread)
    rows = [rows[name] for name in impls]  # fastrnn first in the table
    fast = rows[0]
    for r in rows:
        r.fwd_peak_fraction = r.fwd_gflops / product
        fast.speedup[f"fwd_vs_{r.impl}"] = r.fwd_ms / fast.fwd_ms
        fast.speedup[f"infer_vs_{r.impl}"] = r.infer_ms / fast.infer_ms
        fast.speedup[f"fwdbwd_vs_{r.impl}"] = r.fwdbwd_ms / fast.fwdbwd_ms
    return rows


def module_step_speedup(cell, shape, dtype, rounds=15, min_seconds=0.02):
    """torch.nn.LSTM / GRU / RNN's training step over fastrnn.torch's on the same weights
    (fastrnn.torch.from_torch), or None without torch: a step is zero_grad, the forward of
    x (T, N, D) (requiring grad, as a layer's input inside a model does) and
    output.backward(dout), every gradient computed. Checks first that both give the same
    output and gradients, then times them interleaved, ``rounds`` times a batch of calls
    lasting at least ``min_seconds``. Returns {"torch_ms", "fastrnn_ms", "speedup",
    "max_rel_error"}, the times medians per step."""
    try:
        import torch
        import fastrnn.torch as fastrnn_torch
    except ImportError:
        return None
    T, N, D, H = shape
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    torch.manual_seed(0)
    theirs = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](D, H)
    theirs = theirs.to(torch_dtype)
    ours = fastrnn_torch.from_torch(theirs)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(T, N, D, generator=generator, dtype=torch_dtype).requires_grad_()
    dout = torch.randn(T, N, H, generator=generator, dtype=torch_dtype)

    def step(module):
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)[0]
        out.backward(dout)
        return [out.detach().numpy(), x.grad.numpy()] + [p.grad.numpy()
                                                       for p in module.parameters()]

    err = max_rel_error(step(ours), step(theirs))
    if err > AGREEMENT[dtype]:
        raise SystemExit(f"MISMATCH: fastrnn.torch {cell} {shape} {dtype}: max relative "
                         f"error {err:.2e} > {AGREEMENT[dtype]:.0e}")
    t0 = time.perf_counter()
    step(ours)
    calls = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    times = {"torch": [], "fastrnn": []}
    for _ in range(rounds):
        for name, module in (("torch", theirs), ("fastrnn", ours)):
            t0 = time.perf_counter()
            for _ in range(calls):
                step(module)
            times[name].append((time.perf_counter() - t0) / calls)
    torch_ms, fastrnn_ms = (float(np.median(times[k])) * 1e3 for k in ("torch", "fastrnn"))
    return {"torch_ms": torch_ms, "fastrnn_ms": fastrnn_ms, "speedup": torch_ms / fastrnn_ms,
            "max_rel_error": err}


def print_module_table(results, out=None):
    """results: [(cell, shape, dtype, module_step_speedup's dict)]."""
    out = out or sys.stdout
    print("\nfastrnn.torch modules vs torch.nn, training step (zero_grad, forward, backward; "
          "medians):", file=out)
    print(f"{'cell':>5} {'(T, N, D, H)':>20} {'dtype':>8} {'torch.nn':>10} {'fastrnn.torch':>14}"
          f" {'speed-up':>9}", file=out)
    for cell, shape, dtype, r in results:
        print(f"{cell:>5} {str(shape):>20} {dtype:>8} {r['torch_ms']:>8.2f}ms "
              f"{r['fastrnn_ms']:>12.2f}ms {r['speedup']:>8.2f}x", file=out)


def environment():
    """The target fastrnn compiles for, thread counts and BLAS in use, so the numbers can
    be read correctly (and the ISA caps, when a run emulates a narrower machine)."""
    import numba
    from fastrnn import _isa
    target = _isa.describe()
    info = {"fastrnn_isa": target["isa"], "fastrnn_cpu": target["cpu"],
            "fastrnn_tile": f"f32 {target['gemm_tile_float32']}, "
                            f"f64 {target['gemm_tile_float64']}",
            **{name: os.environ[name] for name in
               ("NUMBA_CPU_NAME", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
               if name in os.environ},
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "fastrnn": fastrnn.__version__,
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "fastrnn_threads": fastrnn.get_num_threads(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    # NumPy's BLAS serves the reference and the NumPy side of %peak; fastrnn calls none.
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [f"{d['internal_api']} {d.get('version')} {d.get('architecture')} "
                        f"{d['num_threads']} threads ({os.path.basename(d['filepath'])})"
                        for d in threadpool_info() if d["user_api"] == "blas"]
    except ImportError:
        info["blas"] = ["install threadpoolctl to see NumPy's BLAS and its threads"]
    try:
        import torch
        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        info["torch"] = None
    return info


def print_table(rows, peak_by_dtype, out=None):
    out = out or sys.stdout  # looked up per call, so a redirected stdout gets the table
    head = (f"{'cell':5} {'T':>4} {'N':>3} {'D':>4} {'H':>4} {'dtype':7} {'impl':9} "
            f"{'fwd ms':>9} {'±%':>4} {'infer ms':>9} {'±%':>4} {'fwd+bwd ms':>11} {'±%':>4} "
            f"{'GFLOP/s':>8} {'%peak':>6} {'fwd x':>7} {'inf x':>7} {'f+b x':>7}")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        fast = next(f for f in rows if f.impl == "fastrnn" and (f.cell, f.T, f.N, f.D, f.H, f.dtype)
                    == (r.cell, r.T, r.N, r.D, r.H, r.dtype))
        # Speed-up of fastrnn over this row's implementation (1.00 on fastrnn's own row).
        print(f"{r.cell:5} {r.T:>4} {r.N:>3} {r.D:>4} {r.H:>4} {r.dtype:7} {r.impl:9} "
              f"{r.fwd_ms:>9.3f} {spread(r.fwd_ms, r.fwd_spread_ms):>4.0f} "
              f"{r.infer_ms:>9.3f} {spread(r.infer_ms, r.infer_spread_ms):>4.0f} "
              f"{r.fwdbwd_ms:>11.3f} {spread(r.fwdbwd_ms, r.fwdbwd_spread_ms):>4.0f} "
              f"{r.fwd_gflops:>8.1f} {100 * r.fwd_peak_fraction:>5.0f}% "
              f"{r.fwd_ms / fast.fwd_ms:>7.2f} {r.infer_ms / fast.infer_ms:>7.2f} "
              f"{r.fwdbwd_ms / fast.fwdbwd_ms:>7.2f}", file=out)
    print("\n'fwd x', 'inf x', 'f+b x': that row's time over fastrnn's (how many times faster "
          "fastrnn is); torch's inference is its forward under no_grad. '±%': half the "
          "min-max range of the repeats, in % of the median. GFLOP/s: forward. %peak: forward "
          "over one product with the same FLOP count, the faster of NumPy and fastrnn's GEMM. "
          "One large product, (4096, 1024) @ (1024, 1024), GFLOP/s: "
          + "; ".join(f"{k} fastrnn {v['fastrnn']:.0f}, NumPy {v['numpy']:.0f} (fastrnn / NumPy "
                      f"{v['fastrnn'] / v['numpy']:.2f})" for k, v in peak_by_dtype.items()),
          file=out)


def spread(median, min_max):
    return 50 * (min_max[1] - min_max[0]) / median


def save(rows, env, peaks, path):
    if path.endswith(".csv"):
        with open(path, "w", newline="") as f:
            fields = [k for k in asdict(rows[0]) if k != "speedup"]
            speedups = sorted({k for r in rows for k in r.speedup})
            writer = csv.writer(f)
            writer.writerow(fields + speedups)
            for r in rows:
                d = asdict(r)
                writer.writerow([d[k] for k in fields] + [r.speedup.get(k, "") for k in speedups])
    else:
        with open(path, "w") as f:
            json.dump({"environment": env, "gemm_gflops": peaks,
                       "rows": [asdict(r) for r in rows]}, f, indent=1)


def plot(rows, path):
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, sweep, var in ((axes[0], SWEEP_T, "T"), (axes[1], SWEEP_H, "H")):
        keys = {s for s in sweep}
        # One colour per implementation; solid forward, dashed forward+backward.
        for color, impl in enumerate(sorted({r.impl for r in rows})):
            for kind, style in (("fwd", "-"), ("fwdbwd", "--")):
                pts = sorted((getattr(r, var), getattr(r, f"{kind}_ms")) for r in rows
                             if r.impl == impl and r.cell == "lstm" and (r.T, r.N, r.D, r.H) in keys)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=f"C{color}",
                            label=f"{impl} {'forward' if kind == 'fwd' else 'forward+backward'}")
        fixed = "N=16, D=64, H=128" if var == "T" else "T=50, N=16, D=64"
        ax.set(xscale="log", yscale="log", xlabel=f"{var} ({'time steps' if var == 'T' else 'hidden size'})",
               ylabel="time per call (ms)", title=f"LSTM, {rows[0].dtype}, {fixed}")
        ax.set_xticks([shape["TNDH".index(var)] for shape in sweep])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_shapes(text):
    """'T,N,D,H;T,N,D,H' -> [(T, N, D, H), ...]; an empty string is no shapes."""
    shapes = []
    for part in filter(None, text.split(";")):
        values = tuple(int(v) for v in part.replace(" ", "").split(","))
        if len(values) != 4:
            raise argparse.ArgumentTypeError(f"a shape is T,N,D,H, got {part!r}")
        shapes.append(values)
    return shapes


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastrnn-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=parse_shapes, default=None,
                        help="LSTM shapes 'T,N,D,H;T,N,D,H' (default: the four reference sizes)")
    parser.add_argument("--rnn-shapes", type=parse_shapes, default=None,
                        help="vanilla RNN shapes (default: the two smallest; '' for none)")
    parser.add_argument("--gru-shapes", type=parse_shapes, default=None,
                        help="GRU shapes (default: the two smallest; '' for none)")
    parser.add_argument("--module-shapes", type=parse_shapes, default=None,
                        help="shapes for fastrnn.torch's modules vs torch.nn's (default: "
                             "(50,1,32,32) and (100,16,64,128); '' for none; needs torch)")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (min)")
    parser.add_argument("--threads", type=int, default=None,
                        help="fastrnn's, NumPy's BLAS and torch's threads (default: all cores)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--output", help="save the rows as JSON (.json) or CSV (.csv)")
    parser.add_argument("--plot", help="also sweep T and H and save a PNG plot here")
    args = parser.parse_args(argv)

    if args.threads is not None:
        fastrnn.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(args.threads, user_api="blas")  # the reference's NumPy
        except ImportError:
            pass
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    cases = [("lstm", s) for s in (args.shapes or DEFAULT_SHAPES)]
    cases += [("rnn", s) for s in (args.rnn_shapes if args.rnn_shapes is not None
                                   else DEFAULT_RNN_SHAPES)]
    cases += [("gru", s) for s in (args.gru_shapes if args.gru_shapes is not None
                                   else DEFAULT_GRU_SHAPES)]
    if args.plot:
        cases += [("lstm", s) for s in SWEEP_T + SWEEP_H if ("lstm", s) not in cases]

    env = environment()
    print("fastrnn benchmark:", ", ".join(f"{k}={v}" for k, v in env.items() if k != "blas"))
    for line in env["blas"]:
        print("  BLAS:", line)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    rows, peaks = [], {}
    started = time.perf_counter()
    for dtype in dtypes:
        peaks[dtype] = gemm_rates(dtype)
        for k, (cell, shape) in enumerate(cases, 1):
            log(f"[{k}/{len(cases)} {dtype}, {time.perf_counter() - started:.0f} s]")
            rows += run_case(cell, shape, dtype, args.repeats, not args.no_torch, log)
    module_shapes = (args.module_shapes if args.module_shapes is not None
                     else DEFAULT_MODULE_SHAPES)
    module_results = []
    for dtype, cell, shape in ([] if args.no_torch else
                               [(d, c, s) for d in dtypes for c in ("lstm", "gru", "rnn")
                                for s in module_shapes]):
        log(f"  fastrnn.torch {cell} {shape} {dtype}: checking and timing ...")
        result = module_step_speedup(cell, shape, dtype)
        if result is None:  # no torch
            break
        module_results.append((cell, shape, dtype, result))
    print()
    print_table(rows, peaks)
    if module_results:
        print_module_table(module_results)
    if args.output:
        save(rows, env, peaks, args.output)
        print(f"saved {len(rows)} rows to {args.output}")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot saved to {args.plot}")
    print(f"all implementations agreed with the float64 reference; took "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
