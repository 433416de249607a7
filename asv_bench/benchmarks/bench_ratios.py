"""Speed-ups as ratios measured side by side in one process, interleaved: absolute times on
these shared 2-core machines drift by +-30 % over minutes, ratios much less. These track
the claims in the README's speed tables (issues 5 and 11), so a regression in any of them
shows as a drop. Run under `scripts/isa --bench avx2` (or x86-64) for another ISA's figures.

- SpeedupVsTorch: torch time / fastrnn time, float32 and float64 (skipped without torch).
  "forward": fastrnn's training forward (keeps a cache) vs torch's forward under no_grad;
  "inference": fastrnn's cache-free forward vs the same; "forward_backward": both with
  gradients for x, h0 and all weights.
- GemmOverNumpy: fastrnn's GEMM rate over NumPy's matmul on (4096, 1024) @ (1024, 1024),
  in blocks with a pause between them (bench.gemm_rates); issue 11 asks >= 0.85 on AVX2.
- FractionOfGemm: fastrnn's LSTM forward rate over the rate of one matrix product with the
  same FLOP count, (T*N, D+H) @ (D+H, 4H), the faster of NumPy's and fastrnn's GEMM.
"""

import time

import numpy as np

import fastrnn

from fastrnn import bench

from .common import parse, setup_impl

SHAPES = ["(50, 1, 32, 32)", "(100, 16, 64, 128)", "(100, 64, 256, 256)", "(200, 32, 512, 512)"]
# Where torch is still faster (README, Speed): one sequence with big weights, whose time loop
# runs on one core while torch splits each step's product over both.
SMALL_BATCH_BIG_WEIGHTS = ["(100, 1, 256, 256)"]
KINDS = ["forward", "inference", "forward_backward"]


def interleaved_medians(functions, rounds):
    """Median seconds of each function, calling them in turn ``rounds`` times."""
    times = [[] for _ in functions]
    for _ in range(rounds):
        for spent, fn in zip(times, functions):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


class SpeedupVsTorch:
    params = (SHAPES + SMALL_BATCH_BIG_WEIGHTS, ["float32", "float64"], KINDS)
    param_names = ["shape (T, N, D, H)", "dtype", "kind"]
    unit = "torch time / fastrnn time"
    number = 1
    repeat = 1
    timeout = 600

    def setup(self, shape, dtype, kind):
        self.p, fwd, fwdbwd = setup_impl("lstm", shape, dtype, "fastrnn")
        _, torch_fwd, torch_fwdbwd = setup_impl("lstm", shape, dtype, "torch")
        infer = bench.numpy_impl(fastrnn, "lstm")[2]
        infer(self.p)
        ours = {"forward": fwd, "inference": infer, "forward_backward": fwdbwd}[kind]
        theirs = torch_fwdbwd if kind == "forward_backward" else torch_fwd
        self.pair = (lambda: ours(self.p), lambda: theirs(self.p))
        T, N, D, H = parse(shape)
        self.rounds = 25 if N * H < 10_000 else 7

    def track_speedup(self, shape, dtype, kind):
        ours, theirs = interleaved_medians(self.pair, self.rounds)
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
        self.p, self.fwd, _ = setup_impl("lstm", shape, "float32", "fastrnn")
        self.T, self.N, self.D, self.H = parse(shape)

    def track_forward_over_same_flop_product(self, shape):
        T, N, D, H = self.T, self.N, self.D, self.H
        forward_seconds = interleaved_medians([lambda: self.fwd(self.p)], 7)[0]
        product_gflops, _ = bench.product_gflops(T * N, D + H, 4 * H, "float32")
        forward_gflops = 2 * T * N * (D + H) * 4 * H / forward_seconds / 1e9
        return forward_gflops / product_gflops
