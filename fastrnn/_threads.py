"""How many threads fastrnn's kernels use, and a guard against concurrent parallel launches.

fastrnn's kernels split their work over numba's threads (its own GEMM and time loops; no
BLAS is called). ``set_num_threads`` sets numba's count for the calling thread (numba keeps
it per thread). Results are bit-identical for every thread count: no sum is ever split
between threads (see kernels/gemm.py).
"""

import operator
import threading

import numba

from ._isa import PARALLEL_MIN_FLOPS

# One parallel kernel at a time: a second Python thread calling fastrnn meanwhile runs its
# kernel on one thread instead. That keeps two calls from oversubscribing the cores, and is
# needed with numba's "workqueue" threading layer (used when neither OpenMP nor TBB is
# installed), which must not be entered from two threads at once.
_parallel_launch = threading.Lock()


def set_num_threads(n):
    """Let fastrnn's kernels use n threads (n >= 1; more than numba's pool, numba.config.
    NUMBA_NUM_THREADS, the machine's cores by default, counts as the pool). Applies to
    calls made from the calling Python thread, as numba.set_num_threads does."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer >= 1, got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads():
    """The number of threads fastrnn's kernels may use in calls from this thread."""
    return numba.get_num_threads()


class kernel_threads:
    """``with kernel_threads(N, T, D, H, gates) as threads:`` how many threads the kernels of
    one call may use: numba's count from PARALLEL_MIN_FLOPS floating-point operations in the
    forward (below, waking the threads costs more than it saves), else 1; and 1 while
    another Python thread's parallel kernels run. The kernels take the count as an argument:
    numba cannot cache a kernel that asks for it. (A class, not contextlib: this runs on
    every call, and the generator version cost a microsecond.)"""

    __slots__ = ("threads", "locked")

    def __init__(self, N, T, D, H, gates):
        self.threads = 1
        self.locked = False
        if 2 * N * T * (D + H) * gates * H >= PARALLEL_MIN_FLOPS:
            threads = numba.get_num_threads()
            if threads > 1 and _parallel_launch.acquire(blocking=False):
                self.threads, self.locked = threads, True

    def __enter__(self):
        return self.threads

    def __exit__(self, *exc_info):
        if self.locked:
            _parallel_launch.release()
