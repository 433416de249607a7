"""Memory of the training cache vs the cache-free inference path, and first-call compile time."""

import os
import subprocess
import sys
import tempfile
import tracemalloc

import fastrnn

from .common import SHAPE_IDS, setup_impl


class LSTMMemory:
    """Bytes allocated beyond the inputs (NumPy reports its allocations to tracemalloc)."""
    params = (SHAPE_IDS, ["training", "inference"])
    param_names = ["shape (T, N, D, H)", "path"]
    unit = "bytes"

    def setup(self, shape, path):
        self.p, _, _ = setup_impl("lstm", shape, "float32", "fastrnn")
        self.run(path)

    def run(self, path):
        p = self.p
        if path == "training":
            return fastrnn.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
        return fastrnn.lstm_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])

    def track_peak_bytes(self, shape, path):
        """Peak bytes allocated during the call, output and cache included."""
        tracemalloc.start()
        try:
            self.run(path)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def track_retained_bytes(self, shape, path):
        """Bytes still held after the call returns: the output h plus, in training, the cache."""
        tracemalloc.start()
        try:
            kept = self.run(path)  # noqa: F841  (keep it alive while measuring)
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    def peakmem_call(self, shape, path):
        self.run(path)


FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np, fastrnn
x = np.ones((2, 3, 4), np.float32); h0 = np.zeros((2, 5), np.float32)
h, cache = fastrnn.lstm_forward(x, h0, np.ones((4, 20), np.float32),
                                np.ones((5, 20), np.float32), np.ones(20, np.float32))
fastrnn.lstm_backward(np.ones_like(h), cache)
print(time.perf_counter() - t0)
"""


class CompileTime:
    """Import + first lstm_forward + lstm_backward (float32) in a fresh process, with an empty
    on-disk kernel cache (cold: compiles) and with it filled by a previous process (warm)."""
    params = ["cold", "warm"]
    param_names = ["cache"]
    unit = "seconds"
    number = 1
    repeat = 1
    timeout = 300

    def setup(self, cache):
        self.cache_dir = tempfile.TemporaryDirectory()
        if cache == "warm":
            self.first_call()

    def teardown(self, cache):
        self.cache_dir.cleanup()

    def first_call(self):
        env = dict(os.environ, NUMBA_CACHE_DIR=self.cache_dir.name)
        out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                             capture_output=True, text=True)
        return float(out.stdout.strip())

    def track_first_call_seconds(self, cache):
        return self.first_call()
