"""How many threads fastrnn's kernels use, the threads themselves, and a guard against
concurrent parallel launches.

fastrnn's kernels split their work over worker threads of its own (its GEMM and time loops;
no BLAS is called): each worker calls the same serial, GIL-free (nogil) kernel on its share,
so no kernel is compiled with numba's ``parallel=True``. That lowering made every
kernel compile two or three times over (the parfor's gufunc re-optimised the whole time
loop it called), and cost the first call of each function seconds. A launch of Python
threads costs ~20 us against ~3 us for numba's pool, paid once per call (a time loop runs
whole inside one launch; the weight-gradient products share one).

``set_num_threads`` sets the count for the calling Python thread (as numba's does).
Results are bit-identical for every thread count: no sum is ever split between threads
(see kernels/gemm.py).
"""

import operator
import os
import threading

import numba

from ._isa import PARALLEL_MIN_FLOPS

# One parallel call at a time: a second Python thread calling fastrnn meanwhile runs its
# kernel on one thread instead. That keeps two calls from oversubscribing the cores, and
# lets them share one pool of workers.
_parallel_launch = threading.Lock()

# Threads per Python thread: numba.config.NUMBA_NUM_THREADS (the cores this process may
# run on, or the NUMBA_NUM_THREADS environment variable) unless set_num_threads said less.
# Not numba.get_num_threads: asking it starts numba's threading layer, which no kernel
# uses (tenths of a second in a new process's first call).
_per_thread = threading.local()


def set_num_threads(n):
    """Let fastrnn's kernels use n threads (n >= 1; more than numba.config.
    NUMBA_NUM_THREADS, the machine's cores by default, counts as that many). Applies to
    calls made from the calling Python thread, as numba.set_num_threads does."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer >= 1, got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    _per_thread.threads = min(n, numba.config.NUMBA_NUM_THREADS)


def get_num_threads():
    """The number of threads fastrnn's kernels may use in calls from this thread."""
    return getattr(_per_thread, "threads", numba.config.NUMBA_NUM_THREADS)


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
            threads = get_num_threads()
            if threads > 1 and _parallel_launch.acquire(blocking=False):
                self.threads, self.locked = threads, True

    def __enter__(self):
        return self.threads

    def __exit__(self, *exc_info):
        if self.locked:
            _parallel_launch.release()


class _Worker:
    """A daemon thread that runs one job at a time for run_workers, handed over through two
    locks. A launch costs about 20 us against numba's 3 us, whatever the hand-over (GIL-free
    spinning on atomic counters measured the same): the worker needs the GIL to call its
    kernel, and getting it from the caller is a thread wake-up each way."""

    def __init__(self):
        self.job = None
        self.error = None
        self.start_lock = threading.Lock()
        self.start_lock.acquire()
        self.done_lock = threading.Lock()
        self.done_lock.acquire()
        threading.Thread(target=self._loop, daemon=True, name="fastrnn-worker").start()

    def _loop(self):
        while True:
            self.start_lock.acquire()
            function, args = self.job
            self.job = None
            try:
                function(*args)
            except BaseException as error:  # handed to the caller, which raises it
                self.error = error
            # No references kept to the arrays while idle: the memory pool reuses a block
            # only once nothing refers to it (_memory.py counts references).
            del function, args
            self.done_lock.release()

    def start(self, function, args):
        self.job = (function, args)
        self.start_lock.release()

    def wait(self):
        self.done_lock.acquire()
        error, self.error = self.error, None
        return error


_workers = []


def _forget_workers():
    """In a forked child: the parent's worker threads do not exist there."""
    _workers.clear()


os.register_at_fork(after_in_child=_forget_workers)


def run_workers(function, workers, *args):
    """function(w, workers, *args) for w < workers: w = 0 on the calling thread, the others
    on fastrnn's worker threads at the same time. The kernels release the GIL (nogil), so
    the workers run in parallel; the caller holds the _parallel_launch lock (kernel_threads,
    step_split), so one call at a time uses the pool."""
    while len(_workers) < workers - 1:
        _workers.append(_Worker())
    for w in range(1, workers):
        _workers[w - 1].start(function, (w, workers) + args)
    error = None
    try:
        function(0, workers, *args)
    except BaseException as raised:
        error = raised
    for w in range(1, workers):
        error = _workers[w - 1].wait() or error
    if error is not None:
        raise error
