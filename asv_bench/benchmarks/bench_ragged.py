"""Ragged batches: forward+backward with lengths spread evenly over 0..T (shuffled) against
the same batch at full length. The cost should follow the real work (half of it here)."""

import time

import numpy as np

import fastrnn
from fastrnn import bench

SHAPES = ["(100, 16, 64, 128)", "(100, 64, 256, 256)"]
CELLS = ["lstm", "gru", "rnn"]


def spread_lengths(N, T, seed=0):
    """N lengths evenly spread over 0..T, in random order (mean T / 2)."""
    return np.random.default_rng(seed).permutation(np.linspace(0, T, N).round().astype(np.int64))


def forward_backward(cell, p, lengths):
    if cell == "lstm":
        h, cache = fastrnn.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], lengths=lengths)
        return fastrnn.lstm_backward(p["dh"], cache)
    if cell == "gru":
        h, cache = fastrnn.gru_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], p["bh"],
                                       lengths=lengths)
        return fastrnn.gru_backward(p["dh"], cache)
    h, cache = fastrnn.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], lengths=lengths)
    return fastrnn.rnn_backward(p["dh"], cache)


class Ragged:
    params = (CELLS, SHAPES, ["full", "spread"])
    param_names = ["cell", "shape (T, N, D, H)", "lengths"]

    def setup(self, cell, shape, lengths):
        T, N, D, H = (int(v) for v in shape.strip("()").split(","))
        self.p = bench.make_inputs(cell, T, N, D, H, "float32")
        self.lengths = None if lengths == "full" else spread_lengths(N, T)
        forward_backward(cell, self.p, self.lengths)

    def time_forward_backward(self, cell, shape, lengths):
        forward_backward(cell, self.p, self.lengths)


class RaggedCostRatio:
    """Median time with spread lengths over median time at full length, measured
    interleaved in one process (target: <= 0.75 for a batch whose real work is 0.5)."""
    params = (CELLS, SHAPES)
    param_names = ["cell", "shape (T, N, D, H)"]
    unit = "ratio"
    number = 1
    repeat = 1

    def setup(self, cell, shape):
        T, N, D, H = (int(v) for v in shape.strip("()").split(","))
        self.p = bench.make_inputs(cell, T, N, D, H, "float32")
        self.spread = spread_lengths(N, T)
        forward_backward(cell, self.p, None)
        forward_backward(cell, self.p, self.spread)

    def track_ragged_over_full(self, cell, shape):
        times = {"full": [], "spread": []}
        for _ in range(7):
            for name, lengths in (("full", None), ("spread", self.spread)):
                t0 = time.perf_counter()
                forward_backward(cell, self.p, lengths)
                times[name].append(time.perf_counter() - t0)
        return float(np.median(times["spread"]) / np.median(times["full"]))
