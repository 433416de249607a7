"""fastrnn._compiling: a kernel compiles under a lock other processes wait on, and a helper
process compiles a call's kernels into numba's cache, which the call then loads without
compiling them and runs to the reference's results."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import _compiling
from fastrnn._config import JIT_OPTIONS

needs_locks = pytest.mark.skipif(not JIT_OPTIONS["cache"] or _compiling.fcntl is None,
                                 reason="numba's cache is off, or no fcntl locks here")


@needs_locks
def test_a_kernel_lock_waits_for_the_process_holding_it(tmp_path):
    path = str(tmp_path / "kernel.lock")
    with subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import fcntl, sys, time
                with open({path!r}, "a") as f:
                    fcntl.flock(f, fcntl.LOCK_EX)
                    print("held", flush=True)
                    time.sleep(0.5)
                """)], stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with _compiling._kernel_lock(path):
            waited = time.monotonic() - start
            assert path in _compiling._held
        assert path not in _compiling._held
    assert waited > 0.25  # it waited for the holder, not a free lock's microseconds


@needs_locks
def test_a_kernel_lock_is_reentrant_within_a_process(tmp_path):
    path = str(tmp_path / "kernel.lock")
    with _compiling._kernel_lock(path):
        start = time.monotonic()
        with _compiling._kernel_lock(path):  # a nested compile of the same kernel
            pass
        assert time.monotonic() - start < 0.5
        assert path in _compiling._held


@needs_locks
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_keep_a_lock_its_parent_released(tmp_path):
    """A child forked while a compile holds a lock (another thread's, in a program using
    fork) must not keep that lock after the parent releases it."""
    path = str(tmp_path / "kernel.lock")
    with _compiling._kernel_lock(path):
        child = os.fork()
        if child == 0:  # the child outlives the parent's lock by a second
            time.sleep(1.0)
            os._exit(0)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(f"""
                import fcntl
                with open({path!r}, "a") as f:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                """)], capture_output=True, text=True)
    finally:
        os.waitpid(child, 0)
    assert probe.returncode == 0, probe.stderr  # free, though the child still runs


# In a fresh process with an empty cache: ask for a helper compiling gemm.pack_panels
# (a small kernel: the test's cost) for float64, wait for it, then pack a matrix through
# the API's weight_panels, counting pack_panels' compiles; print them, the helpers started
# and whether the panels are right.
HELPED = """
import json
import numpy as np
from numba.core import event
from fastrnn import _compiling, _core
from fastrnn.kernels.gemm import pack_panels, panel_width

compiled = []
class Listener(event.Listener):
    def on_start(self, e):
        compiled.append(e.data["dispatcher"].py_func.__name__)
    def on_end(self, e):
        pass
ahead = _compiling.Ahead((pack_panels, "2b1"))
ahead.ask(np.dtype(np.float64))
started = len(_compiling._helpers)
_compiling.wait_for_helpers()
event.register("numba:compile", Listener())
W = np.random.default_rng(0).standard_normal((5, 11))
panels = _core.weight_panels(W)
NR = panel_width(W)
padded = np.zeros((5, -(-11 // NR) * NR))
padded[:, :11] = W
want = padded.reshape(5, -1, NR).transpose(1, 0, 2).ravel()
ahead.asked.clear()
ahead.ask(np.dtype(np.float64))  # in the cache now: no helper
print(json.dumps({"started": started, "compiled_here": compiled.count("pack_panels"),
                  "right": bool(np.array_equal(panels, want)),
                  "started_again": len(_compiling._helpers)}))
"""


@needs_locks
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no helper")
def test_the_helper_compiles_into_the_cache_what_the_call_then_loads(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("FASTRNN_COMPILE_AHEAD", None)  # conftest turns helpers off in xdist workers
    done = subprocess.run([sys.executable, "-c", HELPED], capture_output=True, text=True,
                          env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"started": 1, "compiled_here": 0, "right": True, "started_again": 0}
    assert any(name.endswith(".lock") for _, _, names in os.walk(tmp_path) for name in names)


@pytest.mark.skipif(fastrnn.get_num_threads() < 2, reason="the split paths need 2 threads")
def test_every_path_compiles_the_types_it_names_for_its_helper():
    """Each Ahead of the cells' modules names argument types its path compiles (or loads)
    its kernels for: a helper compiling other types would save what no call looks up.
    Runs every path once, float64, then looks for the named signatures."""
    from fastrnn import gru, lstm, rnn
    from fastrnn.kernels.address import array_types
    from helpers import make_inputs
    # small, rows, split (the LSTM's and the GRU's), the RNN's split
    shapes = [(2, 3, 5, 8), (40, 8, 64, 128), (1, 26, 64, 256), (1, 24, 64, 512)]
    for N, T, D, H in shapes[:3]:
        x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, gates=4, dtype=np.float64, seed=0)
        h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
        fastrnn.lstm_backward(h, cache)
        fastrnn.lstm_inference(x, h0, Wx, Wh, b)
    for N in (1, 16):  # one row tile (its own backward), several (the sequences')
        x, h0, c0, Wx, Wh, b = make_inputs(N, 1, 16, 32, gates=4, dtype=np.float64, seed=0)
        next_h, next_c, cache = fastrnn.lstm_step_forward(x[:, 0], h0, c0, Wx, Wh, b)
        fastrnn.lstm_step_backward(next_h, next_c, cache)
    for N, T, D, H in shapes:  # the GRU and the RNN likewise
        for cell in ("gru", "rnn"):
            x, h0, _, Wx, Wh, b = make_inputs(N, T, D, H, gates=3 if cell == "gru" else 1,
                                              dtype=np.float64, seed=0)
            biases = (b, b) if cell == "gru" else (b,)
            h, cache = getattr(fastrnn, f"{cell}_forward")(x, h0, Wx, Wh, *biases)
            getattr(fastrnn, f"{cell}_backward")(h, cache)
            getattr(fastrnn, f"{cell}_inference")(x, h0, Wx, Wh, *biases)
    aheads = [value for module in (lstm, gru, rnn) for value in vars(module).values()
              if isinstance(value, _compiling.Ahead)]
    assert len(aheads) >= 17  # (the stand-ins' combined ones, Ahead.then, are of these)
    for ahead in aheads:
        for kernel, layout in ahead.kernels:
            assert array_types("float64", layout) in kernel.signatures, (kernel, layout)


def test_then_is_the_stand_ins_kernels_first_made_once_per_pair():
    """Ahead.then: the stand-in's kernels, then the ones it stands in for (the helper
    compiles them in that order), one Ahead per pair, so that its ``asked`` holds across
    calls; other pairs get their own."""
    from fastrnn import gru
    row, split = gru._FORWARD_AHEAD, gru._SPLIT_AHEAD
    combined = row.then(split)
    assert combined.kernels == row.kernels + split.kernels
    assert row.then(split) is combined
    assert row.then(gru._SPLIT_BACKWARD_AHEAD) is not combined
    assert split.then(row).kernels == split.kernels + row.kernels


def test_no_helper_when_turned_off(monkeypatch):
    monkeypatch.setenv("FASTRNN_COMPILE_AHEAD", "0")
    assert not _compiling._helper_allowed()


STAMPED = """
import json, sys
import numpy as np
import fastrnn
from fastrnn import _compiling, _config
from fastrnn.kernels.gemm import pack_panels
from fastrnn.kernels.address import array_types
signature = array_types("float64", "2b1")
before = _compiling._available(pack_panels, signature)
if sys.argv[1] == "compile":
    pack_panels.compile(signature)
print(json.dumps({"cached": before, "package": fastrnn.__file__,
                  "stamp_is_the_package's": pack_panels._cache._cache_file._source_stamp
                  == _config._SOURCES_STAMP}))
"""


def test_editing_any_kernel_source_makes_every_cached_kernel_stale(tmp_path):
    """numba stamps a kernel's cache with its own file, though its code holds what it calls
    from others (the split loops sync.py's barrier): a kernel cached, then another kernel
    file edited (here only its modification time), must compile again, not load its old
    code (_config.kernel_sources_stamp). On a copy of the package, a fresh cache."""
    import shutil
    copy = tmp_path / "package"
    shutil.copytree(os.path.dirname(fastrnn.__file__), copy / "fastrnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), FASTRNN_COMPILE_AHEAD="0",
               PYTHONPATH=str(copy))

    def run(what):
        done = subprocess.run([sys.executable, "-c", STAMPED, what], capture_output=True,
                              text=True, env=env, check=True, cwd=tmp_path)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result.pop("package").startswith(str(copy))
        return result

    assert run("compile") == {"cached": False, "stamp_is_the_package's": True}
    assert run("look")["cached"]  # loads from the cache
    sync = copy / "fastrnn" / "kernels" / "sync.py"  # not gemm.py, pack_panels' own file
    status = sync.stat()
    os.utime(sync, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    assert run("look") == {"cached": False, "stamp_is_the_package's": True}
