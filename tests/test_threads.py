"""fastrnn's worker threads (_threads.run_workers), on its own threads and on an OpenMP
runtime's (libgomp, loaded by PyTorch; those tests skip without torch): every share runs,
on distinct threads, errors reach the caller, a nested call runs all its shares, results
match one thread's bits, and a forked child gets threads of its own."""

import multiprocessing
import os
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _threads
from helpers import make_inputs


@pytest.fixture(params=["fastrnn", "openmp"])
def pool(request, monkeypatch):
    """Which threads run_workers uses: fastrnn's own, or libgomp's through _OpenMPPool."""
    if request.param == "fastrnn":
        monkeypatch.setitem(_threads._openmp, "off", True)
    else:
        pytest.importorskip("torch")
        assert _threads._openmp_pool() is not None, "torch is imported but libgomp not found"
    return request.param


def test_every_worker_runs_its_share_on_its_own_thread(pool):
    seen = {}

    def share(w, workers, out):
        seen[w] = threading.get_ident()
        out[w] = w + workers

    out = np.zeros(3)
    _threads.run_workers(share, 3, out)
    np.testing.assert_array_equal(out, [3, 4, 5])
    assert len(set(seen.values())) == 3 and seen[0] == threading.get_ident()


def test_a_failing_share_raises_in_the_caller_and_the_pool_keeps_working(pool):
    def share(w, workers):
        if w == 1:
            raise ZeroDivisionError("share 1")

    with pytest.raises(ZeroDivisionError, match="share 1"):
        _threads.run_workers(share, 2)
    done = []
    _threads.run_workers(lambda w, workers: done.append(w), 2)
    assert sorted(done) == [0, 1]


def test_a_share_calling_run_workers_gets_all_its_shares_run(pool):
    """Nested: libgomp gives a parallel region inside another a team of one thread, which
    must then run every share itself. (fastrnn's own pool is never entered twice: a call
    holding _parallel_launch makes the others run on one thread.)"""
    if pool == "fastrnn":
        pytest.skip("fastrnn's own pool is not re-entrant, and never entered twice")
    done = []

    def inner(w, workers, outer):
        done.append((outer, w))

    def outer(w, workers):
        _threads.run_workers(inner, 2, w)

    _threads.run_workers(outer, 2)
    assert sorted(done) == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("N, D, H", [(1, 64, 256), (16, 40, 64)])
def test_threaded_calls_give_one_threads_bits(pool, N, D, H):
    """The row split and, at N = 1, the split time loop with its per-step barrier (which
    needs its workers to run at once) on either pool."""
    p = make_inputs(N, 30, D, H, 4, np.float32)
    dh = np.random.default_rng(1).standard_normal((N, 30, H)).astype(np.float32)
    results = []
    before = fastrnn.get_num_threads()
    try:
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            h, cache = fastrnn.lstm_forward(*p[:2], *p[3:])
            results.append((h,) + fastrnn.lstm_backward(dh, cache))
    finally:
        fastrnn.set_num_threads(before)
    for name, one, two in zip(("h", "dx", "dh0", "dWx", "dWh", "db"), *results):
        np.testing.assert_array_equal(two, one, err_msg=name)


def _threaded_forward_in_child(queue):
    p = make_inputs(32, 8, 40, 64, 4, np.float32)
    h, _ = fastrnn.lstm_forward(*p[:2], *p[3:])
    queue.put(h.sum())


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_runs_threaded_calls(pool):
    """The parent's worker threads do not exist in a forked child (os.register_at_fork)."""
    p = make_inputs(32, 8, 40, 64, 4, np.float32)
    h, _ = fastrnn.lstm_forward(*p[:2], *p[3:])  # the parent's pool exists
    assert fastrnn.get_num_threads() == 1 or _threads._workers or _threads._openmp["pool"]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_threaded_forward_in_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == h.sum()


def test_the_openmp_pool_can_be_switched_off_from_the_environment():
    """FASTRNN_OPENMP_POOL=0 keeps fastrnn off libgomp's threads although torch loaded it.
    (Without it the pool is found: this process, torch imported, finds libgomp, and the
    pool-parametrised tests run on it.)"""
    pytest.importorskip("torch")
    import subprocess
    from fastrnn import _threads
    assert _threads._loaded_libgomp() is not None
    code = ("import torch, fastrnn._threads as t; "
            "print(t._openmp_pool() is None)")
    env = dict(os.environ, FASTRNN_OPENMP_POOL="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "True"


def test_four_python_threads_at_once_give_one_threads_bits(pool):
    """Concurrent calls (one gets the pool, the others run serially) while, with the OpenMP
    pool, torch runs parallel regions of its own from another thread."""
    from concurrent.futures import ThreadPoolExecutor
    inputs = [make_inputs(24, 20, 33, 50, 4, np.float32, seed=s) for s in range(6)]
    dh = np.random.default_rng(2).standard_normal((24, 20, 50)).astype(np.float32)

    def run(p):
        h, cache = fastrnn.lstm_forward(*p[:2], *p[3:], c0=p[2])
        return (h,) + fastrnn.lstm_backward(dh, cache)
    expected = [run(p) for p in inputs]
    stop = threading.Event()

    def torch_work():
        import torch
        a = torch.randn(256, 256)
        while not stop.is_set():
            (a @ a).sum()
    with ThreadPoolExecutor(max_workers=5) as executor:
        background = executor.submit(torch_work) if pool == "openmp" else None
        try:
            got = list(executor.map(run, inputs * 3))
        finally:
            stop.set()
        if background is not None:
            background.result()
    for want, have in zip(expected * 3, got):
        for a, b in zip(want, have):
            np.testing.assert_array_equal(a, b)
