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
# its dynamic raising off): what any process gets until a free happens to raise it. Its
# heap is never trimmed (M_TRIM_THRESHOLD), so that the faults counted are those of the
# big arrays, which the pool is for.
_FRESH_MAPPING_SCRIPT = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
assert libc.mallopt(-3, 128 * 1024) == 1 and libc.mallopt(-1, 1 << 30) == 1
import numpy as np
import fastrnn
sys.path.insert(0, sys.argv[1])
from helpers import make_inputs
def lstm(N, T, D, H):
    x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, gates=4, dtype=np.float32, seed=0)
    dh = np.ones((N, T, H), np.float32)
    return lambda: fastrnn.lstm_backward(dh, fastrnn.lstm_forward(x, h0, Wx, Wh, b)[1])
def gru(N, T, D, H):
    x, h0, c0, Wx, Wh, b = make_inputs(N, T, D, H, gates=3, dtype=np.float32, seed=0)
    dh = np.ones((N, T, H), np.float32)
    return lambda: fastrnn.gru_backward(dh, fastrnn.gru_forward(x, h0, Wx, Wh, b, b)[1])
# Row tiles on two threads; one sequence split by hidden units (with two threads); the GRU.
calls = [lstm(8, 20, 64, 128), lstm(1, 20, 256, 256), gru(8, 20, 64, 128)]
for _ in range(3):
    for call in calls:
        call()
faults = []
for call in calls:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        call()
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="pins glibc's malloc threshold")
def test_calls_do_not_page_fault_when_malloc_maps_blocks_fresh():
    """A forward + backward has a dozen arrays of 128 KB to a few MB (cache rows, packed
    weights, scratch, weight gradients); from fresh mappings, each page of them faulted
    on every call (hundreds of faults per call with the pool from 1 MB, several
    microseconds each on a virtual machine). From the pool: none, or a few."""
    out = subprocess.run([sys.executable, "-c", _FRESH_MAPPING_SCRIPT,
                          os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    faults_per_call = [float(f) for f in out.stdout.split()]
    assert max(faults_per_call) < 20, faults_per_call
