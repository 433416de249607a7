"""fastrnn's memory pool (_memory.py): big per-call arrays reuse blocks, but never one that a
caller still holds, in whole or through a view."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _memory

from helpers import make_inputs, upstream

BIG = (64, 40, 64, 128)  # N, T, D, H: the LSTM cache block is ~8 MB, well above the threshold


@pytest.fixture(autouse=True)
def empty_pool():
    fastrnn.release_memory()
    yield
    fastrnn.release_memory()


def lstm_args(seed):
    x, h0, c0, Wx, Wh, b = make_inputs(*BIG, gates=4, dtype=np.float32, seed=seed)
    return x, h0, Wx, Wh, b


def test_held_results_are_never_overwritten():
    h, cache = fastrnn.lstm_forward(*lstm_args(0))
    gates_view = cache.gates[5:9]  # a view keeps the block alive after the cache goes
    h_copy, gates_copy = h.copy(), gates_view.copy()
    del cache
    for seed in (1, 2, 3):
        h2, cache2 = fastrnn.lstm_forward(*lstm_args(seed))
        fastrnn.lstm_backward(upstream(h2.shape, np.float32), cache2)
        del h2, cache2
    np.testing.assert_array_equal(h, h_copy)
    np.testing.assert_array_equal(gates_view, gates_copy)


def test_dropped_results_are_reused_and_give_the_same_answer():
    args = lstm_args(0)
    h, cache = fastrnn.lstm_forward(*args)
    first = h.copy()
    # h and the cache hold pooled blocks; the call's scratch (the packed weights) is idle.
    used, idle = _memory.pooled_bytes()
    assert used > 0
    del h, cache
    used_after, idle_after = _memory.pooled_bytes()
    assert used_after == 0 and idle_after == used + idle
    h, cache = fastrnn.lstm_forward(*args)  # served from the idle blocks: no new memory
    assert _memory.pooled_bytes() == (used, idle)
    np.testing.assert_array_equal(h, first)


def test_release_memory_and_bounds():
    arrays = [_memory.empty((1 << 18,), np.float32) for _ in range(_memory.MAX_BLOCKS + 4)]
    assert len(_memory._blocks) == _memory.MAX_BLOCKS + 4  # all in use: none may be dropped
    del arrays
    _memory.empty((1 << 18,), np.float32)
    assert len(_memory._blocks) <= _memory.MAX_BLOCKS
    fastrnn.release_memory()
    assert _memory.pooled_bytes() == (0, 0)


def test_small_arrays_are_not_pooled_and_blocks_are_aligned():
    small = _memory.empty((10, 10), np.float64)
    assert _memory.pooled_bytes() == (0, 0) and small.shape == (10, 10)
    big = _memory.zeros((1000, 1000), np.float32)
    assert big.ctypes.data % 64 == 0 and big.flags.c_contiguous and not big.any()


# Run in a fresh interpreter whose malloc maps every block of 128 KB and more fresh from the
# OS and unmaps it on free (glibc's M_MMAP_THRESHOLD pinned at its default, which switches
# its dynamic raising off): what any process gets until a free happens to raise it.
_FRESH_MAPPING_SCRIPT = """
import ctypes, resource, sys
assert ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024) == 1  # M_MMAP_THRESHOLD
import numpy as np
import fastrnn
sys.path.insert(0, sys.argv[1])
from helpers import make_inputs
x, h0, c0, Wx, Wh, b = make_inputs(8, 20, 64, 128, gates=4, dtype=np.float32, seed=0)
dh = np.ones((8, 20, 128), np.float32)
def call():
    h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
    fastrnn.lstm_backward(dh, cache)
for _ in range(3):
    call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    call()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="pins glibc's malloc threshold")
def test_calls_do_not_page_fault_when_malloc_maps_blocks_fresh():
    """An LSTM forward + backward at (N, T, D, H) = (8, 20, 64, 128) has a dozen arrays of
    128 KB to 1 MB (cache rows, packed weights, weight gradients); from fresh mappings,
    each page of them faulted on every call (about 200 faults a call with the pool from
    1 MB, several microseconds each on a virtual machine). From the pool: a few dozen."""
    out = subprocess.run([sys.executable, "-c", _FRESH_MAPPING_SCRIPT,
                          os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    faults_per_call = float(out.stdout.split()[-1])
    assert faults_per_call < 80, faults_per_call
