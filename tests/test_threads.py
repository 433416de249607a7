"""fastrnn's worker threads (_threads.run_workers): every share runs, on distinct threads,
errors reach the caller, and a forked child gets threads of its own."""

import multiprocessing
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _threads
from helpers import make_inputs


def test_every_worker_runs_its_share_on_its_own_thread():
    seen = {}

    def share(w, workers, out):
        seen[w] = threading.get_ident()
        out[w] = w + workers

    out = np.zeros(3)
    _threads.run_workers(share, 3, out)
    np.testing.assert_array_equal(out, [3, 4, 5])
    assert len(set(seen.values())) == 3 and seen[0] == threading.get_ident()


def test_a_failing_share_raises_in_the_caller_and_the_pool_keeps_working():
    def share(w, workers):
        if w == 1:
            raise ZeroDivisionError("share 1")

    with pytest.raises(ZeroDivisionError, match="share 1"):
        _threads.run_workers(share, 2)
    done = []
    _threads.run_workers(lambda w, workers: done.append(w), 2)
    assert sorted(done) == [0, 1]


def _threaded_forward_in_child(queue):
    p = make_inputs(32, 8, 40, 64, 4, np.float32)
    h, _ = fastrnn.lstm_forward(*p[:2], *p[3:])
    queue.put(h.sum())


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_runs_threaded_calls():
    """The parent's worker threads do not exist in a forked child (os.register_at_fork)."""
    p = make_inputs(32, 8, 40, 64, 4, np.float32)
    h, _ = fastrnn.lstm_forward(*p[:2], *p[3:])  # the parent's pool exists
    assert fastrnn.get_num_threads() == 1 or _threads._workers
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_threaded_forward_in_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == h.sum()
