"""fastrnn._compiling: a kernel compiles under a lock other processes wait on, and a helper
process compiles a call's kernels into numba's cache, which the call then loads without
compiling them and runs to the reference's results."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from fastrnn import _compiling
from fastrnn._config import JIT_OPTIONS

needs_locks = pytest.mark.skipif(not JIT_OPTIONS["cache"] or _compiling.fcntl is None,
                                 reason="numba's cache is off, or no fcntl locks here")


@needs_locks
def test_a_kernel_lock_waits_for_the_process_holding_it(tmp_path):
    path = str(tmp_path / "kernel.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, sys, time
            with open({path!r}, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                print("held", flush=True)
                time.sleep(1.0)
            """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with _compiling._kernel_lock(path):
            waited = time.monotonic() - start
            assert path in _compiling._held
        assert path not in _compiling._held
    finally:
        holder.wait()
    assert waited > 0.5  # it waited for the holder's second, not a free lock's microseconds


@needs_locks
def test_a_kernel_lock_is_reentrant_within_a_process(tmp_path):
    path = str(tmp_path / "kernel.lock")
    with _compiling._kernel_lock(path):
        start = time.monotonic()
        with _compiling._kernel_lock(path):  # a nested compile of the same kernel
            pass
        assert time.monotonic() - start < 0.5
        assert path in _compiling._held


# In a fresh process with an empty cache: ask for the helper of the LSTM's training forward
# (float64), wait for it, then run lstm_forward and lstm_backward, counting the compiles of
# the kernels the helper took; print them and the largest difference from the reference.
HELPED = """
import json
import numpy as np
from numba.core import event
import fastrnn
from fastrnn import _compiling, lstm

compiled = []
class Listener(event.Listener):
    def on_start(self, e):
        compiled.append(e.data["dispatcher"].py_func.__name__)
    def on_end(self, e):
        pass
lstm._FORWARD_AHEAD.ask(np.dtype(np.float64))
started = len(_compiling._helpers)
for helper in _compiling._helpers:
    helper.wait()
event.register("numba:compile", Listener())
rng = np.random.default_rng(0)
N, T, D, H = 3, 5, 4, 7
x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
Wx, Wh, b = (rng.standard_normal(s) * 0.3 for s in ((D, 4 * H), (H, 4 * H), (4 * H,)))
dh = rng.standard_normal((N, T, H))
got_h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
got = (got_h,) + fastrnn.lstm_backward(dh, cache)
want_h, ref_cache = fastrnn.reference.lstm_forward(x, h0, Wx, Wh, b)
want = (want_h,) + fastrnn.reference.lstm_backward(dh, ref_cache)
error = max(float(np.max(np.abs(g - w)) / np.max(np.abs(w))) for g, w in zip(got, want))
helped = [kernel.py_func.__name__ for kernel, _ in lstm._FORWARD_AHEAD.kernels]
lstm._FORWARD_AHEAD.asked.clear()
lstm._FORWARD_AHEAD.ask(np.dtype(np.float64))  # everything in the cache now: no helper
print(json.dumps({"started": started, "compiled_here": [n for n in helped if n in compiled],
                  "error": error, "started_again": len(_compiling._helpers) - started}))
"""


@needs_locks
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no helper")
def test_the_helper_compiles_into_the_cache_what_the_call_then_loads(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("FASTRNN_COMPILE_AHEAD", None)  # conftest turns helpers off in xdist workers
    done = subprocess.run([sys.executable, "-c", HELPED], capture_output=True, text=True,
                          env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["started"] == 1
    assert result["compiled_here"] == []  # every kernel the helper took came from the cache
    assert result["error"] < 1e-10
    assert result["started_again"] == 0
    assert any(name.endswith(".lock") for _, _, names in os.walk(tmp_path) for name in names)


def test_no_helper_when_turned_off(monkeypatch):
    monkeypatch.setenv("FASTRNN_COMPILE_AHEAD", "0")
    assert not _compiling._helper_allowed()
